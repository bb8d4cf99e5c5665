//! Images: pulls, builds (classic builder, no host-reaching options), tags and commits. Every
//! tag a job creates is job-local (`<scope>_<repo>:<tag>`), so shared tags are never overwritten;
//! the scope's tag marker is created before its first job-local tag, and every build carries
//! the scope's labels, so `berth gc` finds both after a crash.

use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;

use super::*;

impl Handler<'_> {
    pub(super) async fn image_pull(&self, auth: Option<HeaderValue>) -> Answer {
        for k in ["fromSrc", "repo", "changes", "message"] {
            if self.q.single(k)?.is_some() {
                return Err(Refusal::rule(
                    rules::IMPORT,
                    "importing images is not allowed; pull or build instead",
                ));
            }
        }
        let qs = QueryOut::new()
            .copy(self.q, &["fromImage", "tag", "platform"])?
            .finish();
        let path = format!("{}{qs}", self.path(&["images", "create"]));
        let extra: Vec<(&str, HeaderValue)> =
            auth.into_iter().map(|a| ("x-registry-auth", a)).collect();
        let resp = self
            .send(Method::POST, &path, forward::empty(), None, &extra)
            .await?;
        self.stream_back(resp).await
    }

    /// The tag rule: every tag a job creates is job-local on the daemon (`<scope>_<repo>:<tag>`),
    /// so a shared tag can never be overwritten; the job reads its own tag under the plain name.
    /// Tags naming a registry host have no local form: they may only be created when they do not
    /// exist yet. Returns the daemon's tag.
    pub(super) async fn claim_tag(&self, tag: &str) -> Result<String, Refusal> {
        if let Some(local) = self.scope().local_tag(tag) {
            self.state.tag_marker().await?;
            self.scope().add_tag(&local);
            return Ok(local);
        }
        if self.scope().owns_tag(tag) {
            return Ok(tag.to_string());
        }
        let (status, _, _) = self
            .call(Method::GET, &self.path(&["images", tag, "json"]), None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            self.scope().add_tag(tag);
            Ok(tag.to_string())
        } else {
            Err(Refusal::rule(
                rules::IMAGE_TAGS,
                format!(
                    "tag `{tag}` already exists and was not created by this job; shared tags cannot be overwritten"
                ),
            ))
        }
    }

    pub(super) async fn image_tag(&self, name: &str) -> Answer {
        let repo = self.q.single("repo")?.unwrap_or_default();
        let tag = self.q.single("tag")?.unwrap_or_default();
        if repo.is_empty() {
            return Err(Refusal::bad("repo is required"));
        }
        let full = if tag.is_empty() {
            repo.to_string()
        } else {
            format!("{repo}:{tag}")
        };
        let daemon_tag = self.claim_tag(&full).await?;
        let (repo, tag) = split_tag(&daemon_tag);
        let qs = QueryOut::new().push("repo", repo).push("tag", tag).finish();
        let source = self.scope().image_ref(name);
        let path = format!("{}{qs}", self.path(&["images", &source, "tag"]));
        self.pass(Method::POST, &path, forward::empty(), None).await
    }

    pub(super) async fn image_remove(&self, name: &str) -> Answer {
        let local = self.scope().image_ref(name);
        if !self.scope().owns_tag(&local) {
            return Err(Refusal::rule(
                rules::IMAGE_TAGS,
                format!("image `{name}` is shared; a job can only remove tags it created"),
            ));
        }
        let qs = QueryOut::new().copy(self.q, &["noprune"])?.finish();
        let path = format!("{}{qs}", self.path(&["images", &local]));
        self.pass(Method::DELETE, &path, forward::empty(), None)
            .await
    }

    pub(super) async fn build(
        &self,
        body: Incoming,
        registry_config: Option<HeaderValue>,
    ) -> Answer {
        let q = self.q;
        if q.single("remote")?.is_some_and(|r| !r.is_empty()) {
            return Err(Refusal::rule(
                rules::BUILD_HOST,
                "remote build contexts are not allowed",
            ));
        }
        let net = q.single("networkmode")?.unwrap_or_default();
        if !matches!(net, "" | "default" | "bridge" | "none") {
            return Err(Refusal::rule(
                rules::BUILD_HOST,
                format!("build network mode `{net}` is not allowed"),
            ));
        }
        if q.single("cgroupparent")?.is_some_and(|c| !c.is_empty()) {
            return Err(Refusal::rule(
                rules::BUILD_HOST,
                "build cgroup parent is not allowed",
            ));
        }
        if !matches!(q.single("version")?.unwrap_or("1"), "" | "1") {
            return Err(Refusal::rule(
                rules::BUILD_HOST,
                "BuildKit builds are not served through the scoped socket yet; set DOCKER_BUILDKIT=0, or use `docker: dind`",
            ));
        }
        for k in ["isolation", "outputs", "session", "squash"] {
            if q.single(k)?
                .is_some_and(|v| !v.is_empty() && v != "default" && v != "0" && v != "false")
            {
                return Err(Refusal::rule(
                    rules::BUILD_HOST,
                    format!("build option `{k}` is not allowed"),
                ));
            }
        }
        let mut tags = Vec::new();
        for t in q.multi("t") {
            tags.push(self.claim_tag(t).await?);
        }
        let mut qo = QueryOut::new();
        for t in &tags {
            qo.push("t", t);
        }
        qo.copy(
            q,
            &[
                "dockerfile",
                "q",
                "nocache",
                "pull",
                "memory",
                "memswap",
                "cpushares",
                "cpusetcpus",
                "cpuperiod",
                "cpuquota",
                "shmsize",
                "platform",
                "target",
                "extrahosts",
                "networkmode",
            ],
        )?;
        qo.push("rm", "1").push("forcerm", "1");
        // Build steps run in containers too: the same default memory limit applies.
        if q.single("memory")?.is_none() && self.state.policy.default_memory > 0 {
            qo.push("memory", &self.state.policy.default_memory.to_string());
        }
        for k in ["buildargs", "cachefrom", "ulimits"] {
            if let Some(v) = q.single(k)? {
                let parsed = body::parse_strict(v.as_bytes())
                    .map_err(|e| Refusal::bad(format!("{k}: {e}")))?;
                qo.push(k, &parsed.to_string());
            }
        }
        let given = match q.single("labels")? {
            Some(l) => Some(
                body::parse_strict(l.as_bytes())
                    .map_err(|e| Refusal::bad(format!("labels: {e}")))?,
            ),
            None => None,
        };
        let labels = policy::own_labels(given.as_ref(), self.scope().labels())?;
        qo.push("labels", &labels.to_string());
        let path = format!("{}{}", self.path(&["build"]), qo.finish());
        let extra: Vec<(&str, HeaderValue)> = registry_config
            .into_iter()
            .map(|a| ("x-registry-config", a))
            .collect();
        let resp = self
            .send(
                Method::POST,
                &path,
                forward::stream(body),
                Some("application/x-tar"),
                &extra,
            )
            .await?;
        self.stream_back(resp).await
    }

    pub(super) async fn commit(&self) -> Answer {
        let r = self.q.single("container")?.unwrap_or_default();
        let id = self.container(r).await?;
        let repo = self.q.single("repo")?.unwrap_or_default();
        let tag = self.q.single("tag")?.unwrap_or_default();
        let mut qo = QueryOut::new();
        qo.push("container", &id);
        if !repo.is_empty() {
            let full = if tag.is_empty() {
                repo.to_string()
            } else {
                format!("{repo}:{tag}")
            };
            let daemon_tag = self.claim_tag(&full).await?;
            let (repo, tag) = split_tag(&daemon_tag);
            qo.push("repo", repo).push("tag", tag);
        }
        qo.copy(self.q, &["comment", "author", "pause"])?;
        if !self.q.multi("changes").is_empty() {
            return Err(Refusal::rule(
                rules::ENDPOINT,
                "commit with changes is not supported",
            ));
        }
        let path = format!("{}{}", self.path(&["commit"]), qo.finish());
        self.pass(Method::POST, &path, forward::empty(), None).await
    }
}
