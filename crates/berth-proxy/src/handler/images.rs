//! Images: pulls, builds (classic builder, no host-reaching options), tags and commits. Every
//! tag a job creates is job-local (`<scope>_<repo>:<tag>`), so shared tags are never overwritten;
//! the scope's tag marker is created before its first job-local tag, and every build carries
//! the scope's labels, so `berth gc` finds both after a crash.

use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::*;

/// A daemon answer already read: status, headers, JSON.
type Inspected = (StatusCode, http::HeaderMap, Value);

/// Other scopes' images: their job-local tags (`<scope>_…`, for every scope that has a tag
/// marker on the daemon) and the images they built (labelled with their `io.berth.scope`).
pub(super) struct Foreign {
    own: String,
    scopes: Vec<String>,
}

impl Foreign {
    pub(super) fn tag(&self, tag: &str) -> bool {
        self.scopes.iter().any(|s| {
            tag.strip_prefix(s.as_str())
                .is_some_and(|r| r.starts_with('_'))
        })
    }

    /// An image (list entry or inspect) another scope built.
    pub(super) fn built(&self, image: &Value) -> bool {
        let labels = if image.get("Config").is_some() {
            &image["Config"]["Labels"]
        } else {
            &image["Labels"]
        };
        labels[crate::scope::SCOPE_LABEL]
            .as_str()
            .is_some_and(|s| s != self.own)
    }

    /// Drops other scopes' tags and shows the job's own under their plain names. Returns false
    /// when the image is another scope's (built by it, or tagged only by it).
    pub(super) fn rewrite(&self, image: &mut Value) -> bool {
        if self.built(image) {
            return false;
        }
        let own = format!("{}_", self.own);
        if let Some(Value::Array(tags)) = image.get_mut("RepoTags") {
            let had = !tags.is_empty();
            tags.retain(|t| t.as_str().is_some_and(|t| !self.tag(t)));
            for t in tags.iter_mut() {
                if let Some(plain) = t.as_str().and_then(|s| s.strip_prefix(&own)) {
                    *t = Value::String(plain.to_string());
                }
            }
            if had && tags.is_empty() {
                return false;
            }
        }
        true
    }
}

impl Handler<'_> {
    /// The scopes whose job-local tags exist on the daemon (their tag markers), but this one.
    pub(super) async fn foreign(&self) -> Result<Foreign, Refusal> {
        let f = format!("{{\"label\":[\"{}\"]}}", berth_engine::labels::TAGS_OF);
        let qs = QueryOut::new().push("filters", &f).finish();
        let (status, _, v) = self
            .call(
                Method::GET,
                &format!("{}{qs}", self.path(&["volumes"])),
                None,
            )
            .await?;
        if !status.is_success() {
            return Err(Refusal::Daemon(format!("listing tag markers: {status}")));
        }
        let own = self.scope().name().to_string();
        let scopes = v["Volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["Labels"][berth_engine::labels::TAGS_OF].as_str())
            .filter(|s| *s != own)
            .map(str::to_string)
            .collect();
        Ok(Foreign { own, scopes })
    }

    /// An image reference the job may read: its own job-local tag, or a shared image — never
    /// another scope's tag or build, which answer as if they did not exist. Returns the daemon's
    /// reference.
    pub(super) async fn readable_image(&self, r: &str) -> Result<String, Refusal> {
        Ok(self.readable_image_inspected(r).await?.0)
    }

    /// [`Self::readable_image`], with the daemon's inspect answer when it had to ask for it.
    async fn readable_image_inspected(
        &self,
        r: &str,
    ) -> Result<(String, Option<Inspected>), Refusal> {
        let d = self.scope().image_ref(r);
        if self.scope().owns_tag(&d) || self.state.readable_recently(&d) {
            return Ok((d, None));
        }
        // Scope names have no `_`, so only the part before the first `_` can name another
        // scope; it does when that scope's tag marker exists.
        if let Some((cand, _)) = d.split_once('_')
            && cand != self.scope().name()
            && crate::scope::validate_scope(cand).is_ok()
        {
            let marker = format!("{cand}.berth-tags");
            let (status, _, _) = self
                .call(Method::GET, &self.path(&["volumes", &marker]), None)
                .await?;
            if status.is_success() {
                return Err(Refusal::no_such_image(r));
            }
        }
        let (status, headers, v) = self
            .call(Method::GET, &self.path(&["images", &d, "json"]), None)
            .await?;
        let own = self.scope().name();
        let built_by_other = v["Config"]["Labels"][crate::scope::SCOPE_LABEL]
            .as_str()
            .is_some_and(|s| s != own);
        if status.is_success() && built_by_other {
            return Err(Refusal::no_such_image(r));
        }
        if status.is_success() {
            self.state.remember_readable(&d);
        }
        Ok((d, Some((status, headers, v))))
    }

    pub(super) async fn image_list(&self) -> Answer {
        let mut qo = QueryOut::new();
        qo.copy(self.q, &["all", "digests"])?;
        if let Some(f) = self.q.single("filters")? {
            qo.push("filters", &super::reserialize_filters(f, None)?);
        }
        let foreign = self.foreign().await?;
        self.rewritten(
            Method::GET,
            &format!("{}{}", self.path(&["images", "json"]), qo.finish()),
            None,
            move |_, v| {
                if let Value::Array(a) = v {
                    a.retain_mut(|i| foreign.rewrite(i));
                }
            },
        )
        .await
    }

    pub(super) async fn image_read(&self, name: &str, action: &str) -> Answer {
        let (d, inspected) = self.readable_image_inspected(name).await?;
        let path = self.path(&["images", &d, action]);
        if action != "json" {
            return self.pass(Method::GET, &path, forward::empty(), None).await;
        }
        let (status, headers, v) = match inspected {
            Some(i) => i,
            None => self.call(Method::GET, &path, None).await?,
        };
        let foreign = self.foreign().await?;
        Ok(self.json_answer(status, &headers, v, move |_, v| {
            foreign.rewrite(v);
        }))
    }

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
        let source = self.readable_image(name).await?;
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

    /// A refused build's context is read (up to a bound) before the refusal is sent, so the
    /// client, still writing it, reads the reason instead of a broken pipe.
    pub(super) async fn build(
        &self,
        body: Incoming,
        registry_config: Option<HeaderValue>,
    ) -> Answer {
        let mut body = Some(body);
        let answer = self.build_checked(&mut body, registry_config).await;
        if answer.is_err()
            && let Some(b) = body.take()
        {
            super::drain(b, 256 << 20, std::time::Duration::from_secs(60)).await;
        }
        answer
    }

    async fn build_checked(
        &self,
        body: &mut Option<Incoming>,
        registry_config: Option<HeaderValue>,
    ) -> Answer {
        if !self.state.policy.builds {
            return Err(super::buildkit::builds_off());
        }
        let q = self.q;
        let buildkit = match q.single("version")?.unwrap_or_default() {
            "" | "1" => false,
            "2" if self.state.policy.buildkit => true,
            "2" => return Err(super::buildkit::buildkit_off()),
            v => return Err(Refusal::bad(format!("unknown builder version `{v}`"))),
        };
        let session = q.single("session")?.filter(|s| !s.is_empty());
        // BuildKit's context from the client's session; any other remote is a URL the daemon
        // would fetch (git, http), from the host's network.
        let client_session = match q.single("remote")?.unwrap_or_default() {
            "" => false,
            "client-session" if buildkit && session.is_some() => true,
            "client-session" => {
                return Err(Refusal::bad(
                    "remote=client-session needs version=2 and a session",
                ));
            }
            _ => {
                return Err(Refusal::rule(
                    rules::BUILD_HOST,
                    "remote build contexts are not allowed",
                ));
            }
        };
        if session.is_some() && !buildkit {
            return Err(Refusal::bad("a build session needs version=2 (BuildKit)"));
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
        // `outputs` would let BuildKit's exporters name (tag) images past the tag rule.
        for k in ["isolation", "outputs", "squash"] {
            if q.single(k)?
                .is_some_and(|v| !v.is_empty() && v != "default" && v != "0" && v != "false")
            {
                return Err(Refusal::rule(
                    rules::BUILD_HOST,
                    format!("build option `{k}` is not allowed"),
                ));
            }
        }
        // Both builders leave these out of the cache key of a step while they change what the
        // step fetches: a layer built with them would be reused by every other job's identical
        // step on the shared daemon.
        if q.single("extrahosts")?
            .is_some_and(|v| !v.trim().is_empty())
        {
            return Err(Refusal::rule(
                rules::BUILD_CACHE,
                "build --add-host is not allowed: the build cache does not record it, so other jobs would reuse layers built with it; put the host in the Dockerfile's RUN steps instead",
            ));
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
                "networkmode",
            ],
        )?;
        qo.push("rm", "1").push("forcerm", "1");
        // Build steps run in containers too: the same default memory limit applies.
        if q.single("memory")?.is_none() && self.state.policy.default_memory > 0 {
            qo.push("memory", &self.state.policy.default_memory.to_string());
        }
        for k in ["cachefrom", "ulimits"] {
            if let Some(v) = q.single(k)? {
                let parsed = body::parse_strict(v.as_bytes())
                    .map_err(|e| Refusal::bad(format!("{k}: {e}")))?;
                qo.push(k, &parsed.to_string());
            }
        }
        let args = build_args(
            q.single("buildargs")?,
            buildkit.then(|| self.scope().name()),
        )?;
        if !args.is_empty() {
            qo.push("buildargs", &Value::Object(args).to_string());
        }
        if buildkit {
            qo.push("version", "2");
            if let Some(s) = session {
                qo.push("session", &self.scoped_id("session", s)?);
            }
            if client_session {
                qo.push("remote", "client-session");
            }
        }
        if let Some(id) = q.single("buildid")?.filter(|s| !s.is_empty()) {
            qo.push("buildid", &self.scoped_id("build", id)?);
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
        // With the context in the session, the daemon reads no body: none is forwarded.
        let body = body
            .take()
            .ok_or_else(|| Refusal::bad("the request body was already read"))?;
        let body = if client_session {
            super::no_body(body).await?;
            forward::empty()
        } else {
            forward::stream(body)
        };
        let resp = self
            .send(Method::POST, &path, body, Some("application/x-tar"), &extra)
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

/// The build arguments a job may pass, re-serialized. The proxy variables are refused: both
/// builders leave them out of the cache key (so that changing a proxy does not invalidate the
/// cache), which would let a job route its build's downloads through a server of its choosing
/// and have other jobs reuse the layers. For BuildKit builds, `BUILDKIT_CACHE_MOUNT_NS` is set to
/// the scope: `RUN --mount=type=cache` directories are then the job's own, not shared with every
/// build on the daemon.
pub(super) fn build_args(
    raw: Option<&str>,
    cache_ns: Option<&str>,
) -> Result<Map<String, Value>, Refusal> {
    let args = match raw {
        None => Map::new(),
        Some(v) if v.trim().is_empty() => Map::new(),
        Some(v) => match body::parse_strict(v.as_bytes())
            .map_err(|e| Refusal::bad(format!("buildargs: {e}")))?
        {
            Value::Object(m) => m,
            _ => return Err(Refusal::bad("buildargs must be a JSON object")),
        },
    };
    check_build_args(args, cache_ns)
}

/// [`build_args`] on arguments already parsed (BuildKit's frontend options carry them as
/// `build-arg:NAME` entries).
pub(super) fn check_build_args(
    mut args: Map<String, Value>,
    cache_ns: Option<&str>,
) -> Result<Map<String, Value>, Refusal> {
    for (k, v) in &args {
        if !(v.is_string() || v.is_null()) {
            return Err(Refusal::bad(format!(
                "build argument `{k}` must be a string"
            )));
        }
        let upper = k.to_ascii_uppercase();
        if matches!(
            upper.as_str(),
            "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
        ) {
            return Err(Refusal::rule(
                rules::BUILD_CACHE,
                format!(
                    "build argument `{k}` is not allowed: the build cache does not record proxy settings, so other jobs would reuse layers fetched through it; configure the proxy on the daemon instead"
                ),
            ));
        }
        if upper.starts_with("BUILDKIT_") && upper != "BUILDKIT_INLINE_CACHE" {
            return Err(Refusal::rule(
                rules::BUILD_CACHE,
                format!("build argument `{k}` is set by the scoped socket, not by the job"),
            ));
        }
    }
    if let Some(ns) = cache_ns {
        args.insert(
            "BUILDKIT_CACHE_MOUNT_NS".to_string(),
            Value::String(format!("berth-{ns}")),
        );
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_refuse_proxies_and_set_the_cache_namespace() {
        let a = build_args(Some(r#"{"A":"1","B":null}"#), Some("s1")).unwrap();
        assert_eq!(a["A"], "1");
        assert_eq!(a["BUILDKIT_CACHE_MOUNT_NS"], "berth-s1");
        assert!(
            build_args(Some(r#"{"A":"1"}"#), None)
                .unwrap()
                .get("BUILDKIT_CACHE_MOUNT_NS")
                .is_none()
        );
        for bad in [
            r#"{"HTTP_PROXY":"http://x"}"#,
            r#"{"https_proxy":"http://x"}"#,
            r#"{"BUILDKIT_CACHE_MOUNT_NS":"other"}"#,
            r#"{"buildkit_syntax":"x/y"}"#,
            r#"{"A":1}"#,
            r#"{"A":"1","A":"2"}"#,
            "[]",
        ] {
            assert!(build_args(Some(bad), Some("s")).is_err(), "{bad}");
        }
    }
}
