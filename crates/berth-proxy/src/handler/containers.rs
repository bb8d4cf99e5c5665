//! Containers: list (own only), create (the rules of `policy`, then ownership of every
//! container, network and volume the configuration names, bind translation, the scope network).
//! Must not: forward a configuration that was not normalized and checked here.

use http::Method;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::*;

impl Handler<'_> {
    pub(super) async fn container_list(&self) -> Answer {
        let mut qo = QueryOut::new();
        qo.copy(self.q, &["all", "limit", "size"])?;
        let f = self.q.single("filters")?.unwrap_or("");
        qo.push(
            "filters",
            &reserialize_filters(f, Some(&self.scope_label()))?,
        );
        let path = format!("{}{}", self.path(&["containers", "json"]), qo.finish());
        let ws = self.state.workspace.clone();
        self.rewritten(Method::GET, &path, None, move |scope, v| {
            if let Value::Array(a) = v {
                a.retain(|c| c["Id"].as_str().is_some_and(|id| scope.owns_container(id)));
                // Bind sources as the job knows them, as in inspect.
                if let Some(ws) = &ws {
                    for c in a.iter_mut() {
                        crate::rewrite::binds_to_job_view(ws, c);
                    }
                }
            }
        })
        .await
    }

    pub(super) async fn container_create(&self, body: Incoming) -> Answer {
        let name = match self.q.single("name")? {
            Some(n) if !n.is_empty() => {
                Some((n.trim_start_matches('/').to_string(), self.new_name(n)?))
            }
            _ => None,
        };
        let platform = self.q.single("platform")?;
        let mut cfg = json_body(self.state, body, &body::CREATE).await?;
        let labels = policy::own_labels(cfg.get("Labels"), self.scope().labels())?;
        cfg.insert("Labels".into(), labels);
        if let Some(Value::String(image)) = cfg.get("Image") {
            let image = self.readable_image(image).await?;
            cfg.insert("Image".into(), json!(image));
        }
        let mut hc = match cfg.remove("HostConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(Refusal::bad("HostConfig must be an object")),
        };
        policy::check_host_config(&self.state.policy, &mut hc)?;
        for key in ["PidMode", "IpcMode"] {
            let allowed: &[&str] = if key == "PidMode" {
                &[""]
            } else {
                &["", "private", "shareable", "none"]
            };
            if let Some(r) = policy::namespace_mode(&hc, key, allowed, true)? {
                let id = self.container(&r).await.map_err(|_| {
                    Refusal::rule(
                        rules::NAMESPACES,
                        format!("{key} names container `{r}`, which this job does not own"),
                    )
                })?;
                hc.insert(key.into(), json!(format!("container:{id}")));
            }
        }
        let mut volumes_from = Vec::new();
        for v in strings_field(&hc, "VolumesFrom")? {
            let (r, mode) = match v.split_once(':') {
                Some((r, m)) => (r.to_string(), format!(":{m}")),
                None => (v.clone(), String::new()),
            };
            let id = self.container(&r).await.map_err(|_| {
                Refusal::rule(
                    rules::NAMESPACES,
                    format!("VolumesFrom names container `{r}`, which this job does not own"),
                )
            })?;
            volumes_from.push(json!(format!("{id}{mode}")));
        }
        if !volumes_from.is_empty() {
            hc.insert("VolumesFrom".into(), Value::Array(volumes_from));
        }
        let links = self.links(&hc).await?;
        if let Some(l) = links {
            hc.insert("Links".into(), l);
        }
        let mut binds = Vec::new();
        let mut subpath_mounts = Vec::new();
        for b in strings_field(&hc, "Binds")? {
            match self.bind(&b).await? {
                Bind::Bind(s) => binds.push(json!(s)),
                Bind::Subpath(m) => subpath_mounts.push(m),
            }
        }
        if binds.is_empty() {
            hc.remove("Binds");
        } else {
            hc.insert("Binds".into(), Value::Array(binds));
        }
        let mut uses_subpath = !subpath_mounts.is_empty();
        if let Some(Value::Array(mounts)) = hc.get_mut("Mounts") {
            for m in mounts.iter_mut() {
                if let Value::Object(m) = m {
                    uses_subpath |= self.mount(m).await?;
                }
            }
        }
        if !subpath_mounts.is_empty() {
            match hc.get_mut("Mounts") {
                Some(Value::Array(mounts)) => mounts.extend(subpath_mounts),
                _ => {
                    hc.insert("Mounts".into(), Value::Array(subpath_mounts));
                }
            }
        }
        // Networks: the job's own, under the daemon's names; the default bridge becomes the
        // scope's network so siblings reach each other by their job-visible names.
        let mut networking = match cfg.remove("NetworkingConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(Refusal::bad("NetworkingConfig must be an object")),
        };
        let mut endpoints = match networking.remove("EndpointsConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(Refusal::bad("EndpointsConfig must be an object")),
        };
        let mode = string_field(&hc, "NetworkMode")?.to_string();
        let mode = if let Some(r) = mode.strip_prefix("container:") {
            let id = self.container(r).await.map_err(|_| {
                Refusal::rule(
                    rules::NAMESPACES,
                    format!("NetworkMode names container `{r}`, which this job does not own"),
                )
            })?;
            format!("container:{id}")
        } else if matches!(mode.as_str(), "" | "default" | "bridge") {
            self.state.scope_network().await?
        } else if mode == "none" {
            mode
        } else {
            self.network(&mode).await?;
            self.scope().daemon_name(&mode)
        };
        hc.insert("NetworkMode".into(), json!(mode));
        let mut new_endpoints = Map::new();
        for (k, v) in std::mem::take(&mut endpoints) {
            let Value::Object(mut ep) = v else {
                if v.is_null() {
                    continue;
                }
                return Err(Refusal::bad("endpoint configurations must be objects"));
            };
            policy::check_endpoint(&ep)?;
            if let Some(l) = self.links(&ep).await? {
                ep.insert("Links".into(), l);
            }
            let key = if matches!(k.as_str(), "bridge" | "default") {
                self.state.scope_network_name()
            } else {
                self.network(&k).await?;
                self.scope().daemon_name(&k)
            };
            new_endpoints.insert(key, Value::Object(ep));
        }
        if mode == self.state.scope_network_name() {
            let entry = new_endpoints
                .entry(mode.clone())
                .or_insert_with(|| json!({}));
            if let (Some((job_name, _)), Value::Object(ep)) = (&name, entry) {
                let mut aliases = strings_field(ep, "Aliases")?;
                if !aliases.contains(job_name) {
                    aliases.push(job_name.clone());
                }
                ep.insert("Aliases".into(), json!(aliases));
            }
        }
        networking.insert("EndpointsConfig".into(), Value::Object(new_endpoints));
        cfg.insert("HostConfig".into(), Value::Object(hc));
        cfg.insert("NetworkingConfig".into(), Value::Object(networking));

        let mut qo = QueryOut::new();
        if let Some((_, dn)) = &name {
            qo.push("name", dn);
        }
        if let Some(p) = platform {
            qo.push("platform", p);
        }
        // The daemon reads `VolumeOptions.Subpath` only on requests of API ≥ 1.45: an older
        // client's create that now carries one is forwarded at 1.45.
        let mut target = self.target.clone();
        if uses_subpath
            && target
                .version
                .is_some_and(|v| v < crate::state::SUBPATH_API)
        {
            target.version = Some(crate::state::SUBPATH_API);
        }
        let path = format!(
            "{}{}",
            target.forward_path(&["containers", "create"]),
            qo.finish()
        );
        self.rewritten(Method::POST, &path, Some(Value::Object(cfg)), |scope, v| {
            if let Some(id) = v["Id"].as_str() {
                scope.add_container(id);
            }
        })
        .await
    }

    /// `Links` entries (`name[:alias]`) must name owned containers; rewritten to full ids.
    pub(super) async fn links(&self, m: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
        let links = strings_field(m, "Links")?;
        if links.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::new();
        for l in links {
            let (r, alias) = l.split_once(':').unwrap_or((&l, &l));
            let r = r.trim_start_matches('/');
            let id = self.container(r).await.map_err(|_| {
                Refusal::rule(
                    rules::NAMESPACES,
                    format!("Links names container `{r}`, which this job does not own"),
                )
            })?;
            out.push(json!(format!("{id}:{}", alias.trim_start_matches('/'))));
        }
        Ok(Some(Value::Array(out)))
    }

    /// A `Binds` entry: host paths are translated into the workspace (or become a `Subpath`
    /// mount of the workspace volume), volume names namespaced.
    pub(super) async fn bind(&self, b: &str) -> Result<Bind, Refusal> {
        let parts: Vec<&str> = b.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [dst] => return anonymous_ok(dst).map(Bind::Bind),
            [src, dst] => (*src, *dst, None),
            [src, dst, mode] => (*src, *dst, Some(*mode)),
            _ => return Err(Refusal::bad(format!("invalid bind `{b}`"))),
        };
        if let Some(mode) = mode {
            for m in mode.split(',') {
                match m {
                    "ro" | "rw" | "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated"
                    | "private" | "rprivate" | "slave" | "rslave" => {}
                    "shared" | "rshared" => {
                        return Err(Refusal::rule(
                            rules::PROPAGATION,
                            format!("propagation `{m}` is not allowed"),
                        ));
                    }
                    _ => return Err(Refusal::bad(format!("unknown bind option `{m}`"))),
                }
            }
        }
        if src.starts_with('/')
            && let Some(sub) = self.subpath(src)
        {
            // Propagation, SELinux relabelling and consistency do not apply to volume mounts.
            let read_only = mode.is_some_and(|m| m.split(',').any(|o| o == "ro"));
            return Ok(Bind::Subpath(subpath_mount(sub?, dst, read_only)));
        }
        let src = if src.starts_with('/') {
            self.translate(src)?
        } else {
            self.named_volume(src).await?
        };
        Ok(Bind::Bind(match mode {
            Some(m) => format!("{src}:{dst}:{m}"),
            None => format!("{src}:{dst}"),
        }))
    }

    /// A bind source inside the workspace → (workspace volume, subpath), when binds become
    /// `Subpath` mounts on this endpoint (see [`crate::state::State::subpath_mounts`]).
    fn subpath(&self, src: &str) -> Option<Result<(String, String), Refusal>> {
        if !self.state.subpath_mounts() {
            return None;
        }
        self.state.workspace.as_ref()?.subpath(src)
    }

    pub(super) fn translate(&self, src: &str) -> Result<String, Refusal> {
        match &self.state.workspace {
            Some(ws) => ws.translate(src),
            None => Err(Refusal::rule(
                rules::BIND_OUTSIDE,
                format!(
                    "bind source `{src}`: this scoped socket has no workspace, so nothing can be bind-mounted"
                ),
            )),
        }
    }

    /// A named volume used by a container: the scope's volume, created (labelled) if missing.
    pub(super) async fn named_volume(&self, name: &str) -> Result<String, Refusal> {
        if !valid_object_name(name) {
            return Err(Refusal::bad(format!("invalid volume name `{name}`")));
        }
        let dn = self.scope().daemon_name(name);
        if self.scope().owns_volume(&dn) {
            return Ok(dn);
        }
        self.create_volume(&dn, Map::new()).await?;
        Ok(dn)
    }

    /// Checks and rewrites one `Mounts` entry; true when it became a `Subpath` mount.
    pub(super) async fn mount(&self, m: &mut Map<String, Value>) -> Result<bool, Refusal> {
        let ty = string_field(m, "Type")?.to_string();
        let source = string_field(m, "Source")?.to_string();
        match ty.as_str() {
            "bind" => {
                if let Some(Value::Object(o)) = m.get("BindOptions") {
                    let p = string_field(o, "Propagation")?;
                    if !matches!(p, "" | "private" | "rprivate" | "slave" | "rslave") {
                        return Err(Refusal::rule(
                            rules::PROPAGATION,
                            format!("propagation `{p}` is not allowed"),
                        ));
                    }
                }
                if !matches!(m.get("VolumeOptions"), None | Some(Value::Null)) {
                    return Err(Refusal::bad("VolumeOptions on a bind mount"));
                }
                if let Some(sub) = self.subpath(&source) {
                    let target = string_field(m, "Target")?.to_string();
                    let read_only = match m.get("ReadOnly") {
                        None | Some(Value::Null) => false,
                        Some(Value::Bool(b)) => *b,
                        Some(_) => return Err(Refusal::bad("ReadOnly must be a boolean")),
                    };
                    let Value::Object(new) = subpath_mount(sub?, &target, read_only) else {
                        unreachable!("subpath_mount builds an object")
                    };
                    *m = new;
                    return Ok(true);
                }
                let host = self.translate(&source)?;
                m.insert("Source".into(), json!(host));
            }
            "volume" => {
                if !matches!(m.get("BindOptions"), None | Some(Value::Null)) {
                    return Err(Refusal::bad("BindOptions on a volume mount"));
                }
                if let Some(Value::Object(vo)) = m.get("VolumeOptions")
                    && let Some(Value::Object(dc)) = vo.get("DriverConfig")
                {
                    let name = string_field(dc, "Name")?;
                    let opts_empty = matches!(dc.get("Options"), None | Some(Value::Null))
                        || dc
                            .get("Options")
                            .and_then(Value::as_object)
                            .is_some_and(Map::is_empty);
                    if !matches!(name, "" | "local") || !opts_empty {
                        return Err(Refusal::rule(
                            rules::VOLUME_OPTIONS,
                            "volume mounts may not set driver options",
                        ));
                    }
                }
                if !source.is_empty() {
                    let dn = self.named_volume(&source).await?;
                    m.insert("Source".into(), json!(dn));
                }
            }
            "tmpfs" => {
                if !source.is_empty() {
                    return Err(Refusal::bad("tmpfs mounts take no source"));
                }
            }
            other => {
                return Err(Refusal::rule(
                    rules::MOUNT_TYPE,
                    format!("mount type `{other}` is not allowed"),
                ));
            }
        }
        Ok(false)
    }
}

/// What a `Binds` entry becomes: a `Binds` entry, or a `Mounts` entry.
pub(super) enum Bind {
    Bind(String),
    Subpath(Value),
}

/// A volume mount of (workspace volume, subpath) at `target`; an empty subpath mounts the whole
/// volume. `NoCopy`: the image's content at the target must not be copied into the workspace.
fn subpath_mount((volume, sub): (String, String), target: &str, read_only: bool) -> Value {
    let mut opts = json!({"NoCopy": true});
    if !sub.is_empty() {
        opts["Subpath"] = json!(sub);
    }
    json!({
        "Type": "volume",
        "Source": volume,
        "Target": target,
        "ReadOnly": read_only,
        "VolumeOptions": opts,
    })
}
