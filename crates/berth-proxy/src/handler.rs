//! One request: parse, authorize, rewrite, forward, rewrite the answer.
//!
//! Owns: the route table (default deny), the per-endpoint list of understood query parameters,
//! ownership checks that need the daemon (names, ids, `container:` modes, links, volumes-from),
//! and the answer rewriting of lists and inspects.
//! **Invariant: the daemon only ever receives a request line, headers and body built here** —
//! a path from canonical segments, a query rebuilt from understood parameters, a fixed header
//! set, and either no body, a re-serialized JSON body, or a tar stream on the two tar endpoints.
//! Must not: parse bytes itself (`parse`, `body`) or hold ownership state (`scope`).

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use crate::body::{self, Schema};
use crate::forward::{self, BoxBody, Daemon, MAX_ANSWER};
use crate::parse::{Query, QueryOut, Target, parse_path};
use crate::policy::{self, rules, string_field, strings_field};
use crate::refusal::Refusal;
use crate::rewrite::strip_names;
use crate::scope::{Scope, valid_object_name};
use crate::state::State;

type Answer = Result<Response<BoxBody>, Refusal>;

/// Serves one request; never fails (refusals become Docker-style answers).
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<BoxBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match route(&state, req).await {
        Ok(r) => r,
        Err(refusal) => {
            tracing::info!(%method, %path, rule = refusal.rule_name(), "refused: {refusal}");
            refusal.into_response()
        }
    }
}

async fn route(state: &Arc<State>, mut req: Request<Incoming>) -> Answer {
    check_framing(&req)?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    let target = parse_path(req.uri().path())?;
    let q = Query::parse(req.uri().query())?;
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let registry_auth = parts.headers.get("x-registry-auth").cloned();
    let segs = target.seg();
    let h = Handler {
        state,
        target: &target,
        q: &q,
    };
    match (method.as_str(), segs.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) => {
            no_body(body).await?;
            h.pass(method, &h.path(&["_ping"]), forward::empty(), None)
                .await
        }
        ("GET", ["version"]) => {
            no_body(body).await?;
            h.pass(Method::GET, &h.path(&["version"]), forward::empty(), None)
                .await
        }
        ("GET", ["info"]) => {
            no_body(body).await?;
            h.info().await
        }
        ("GET", ["containers", "json"]) => {
            no_body(body).await?;
            h.container_list().await
        }
        ("POST", ["containers", "create"]) => h.container_create(body).await,
        ("GET", ["containers", r, "json"]) => {
            no_body(body).await?;
            let id = h.container(r).await?;
            let qs = QueryOut::new().copy(&q, &["size"])?.finish();
            h.rewritten(
                Method::GET,
                &format!("{}{qs}", h.path(&["containers", &id, "json"])),
                None,
                |_, _| {},
            )
            .await
        }
        ("DELETE", ["containers", r]) => {
            no_body(body).await?;
            if q.flag("link")? {
                return Err(Refusal::rule(
                    rules::ENDPOINT,
                    "removing links is not supported",
                ));
            }
            let id = h.container(r).await?;
            let qs = QueryOut::new().copy(&q, &["v", "force"])?.finish();
            h.pass(
                Method::DELETE,
                &format!("{}{qs}", h.path(&["containers", &id])),
                forward::empty(),
                None,
            )
            .await
        }
        ("POST", ["containers", r, action]) => {
            let action = *action;
            let params: &[&str] = match action {
                "start" => &["detachKeys"],
                "stop" | "restart" => &["t"],
                "kill" => &["signal"],
                "wait" => &["condition"],
                "pause" | "unpause" => &[],
                "resize" => &["h", "w"],
                "attach" => &["detachKeys", "logs", "stream", "stdin", "stdout", "stderr"],
                "rename" => &[],
                "exec" => return h.exec_create(r, body).await,
                _ => return Err(unsupported(&method, &segs)),
            };
            no_body(body).await?;
            let id = h.container(r).await?;
            let mut qo = QueryOut::new();
            qo.copy(&q, params)?;
            if action == "rename" {
                let name = q.single("name")?.unwrap_or_default();
                qo.push("name", &h.new_name(name)?);
            }
            let path = format!("{}{}", h.path(&["containers", &id, action]), qo.finish());
            if action == "attach" && wants_upgrade {
                return h.upgrade(path, forward::empty(), client_upgrade).await;
            }
            h.pass(Method::POST, &path, forward::empty(), None).await
        }
        (
            "GET",
            [
                "containers",
                r,
                action @ ("logs" | "top" | "stats" | "changes" | "export"),
            ],
        ) => {
            no_body(body).await?;
            let params: &[&str] = match *action {
                "logs" => &[
                    "follow",
                    "stdout",
                    "stderr",
                    "since",
                    "until",
                    "timestamps",
                    "tail",
                    "details",
                ],
                "top" => &["ps_args"],
                "stats" => &["stream", "one-shot"],
                _ => &[],
            };
            let id = h.container(r).await?;
            let qs = QueryOut::new().copy(&q, params)?.finish();
            h.pass(
                Method::GET,
                &format!("{}{qs}", h.path(&["containers", &id, action])),
                forward::empty(),
                None,
            )
            .await
        }
        ("GET" | "HEAD" | "PUT", ["containers", r, "archive"]) => {
            let id = h.container(r).await?;
            let path = h.path(&["containers", &id, "archive"]);
            if method == Method::PUT {
                let qs = QueryOut::new()
                    .copy(&q, &["path", "noOverwriteDirNonDir", "copyUIDGID"])?
                    .finish();
                h.pass(
                    Method::PUT,
                    &format!("{path}{qs}"),
                    forward::stream(body),
                    Some("application/x-tar"),
                )
                .await
            } else {
                no_body(body).await?;
                let qs = QueryOut::new().copy(&q, &["path"])?.finish();
                h.pass(method, &format!("{path}{qs}"), forward::empty(), None)
                    .await
            }
        }
        ("POST", ["exec", id, "start"]) => {
            h.exec_start(id, body, wants_upgrade, client_upgrade).await
        }
        ("POST", ["exec", id, "resize"]) => {
            no_body(body).await?;
            let id = state.scope.resolve_exec(id)?;
            let qs = QueryOut::new().copy(&q, &["h", "w"])?.finish();
            h.pass(
                Method::POST,
                &format!("{}{qs}", h.path(&["exec", &id, "resize"])),
                forward::empty(),
                None,
            )
            .await
        }
        ("GET", ["exec", id, "json"]) => {
            no_body(body).await?;
            let id = state.scope.resolve_exec(id)?;
            h.rewritten(
                Method::GET,
                &h.path(&["exec", &id, "json"]),
                None,
                |_, _| {},
            )
            .await
        }
        ("GET", ["networks"]) => {
            no_body(body).await?;
            h.network_list().await
        }
        ("POST", ["networks", "create"]) => h.network_create(body).await,
        ("GET", ["networks", r]) => {
            no_body(body).await?;
            let id = h.network(r).await?;
            let qs = QueryOut::new().copy(&q, &["verbose", "scope"])?.finish();
            h.rewritten(
                Method::GET,
                &format!("{}{qs}", h.path(&["networks", &id])),
                None,
                |_, _| {},
            )
            .await
        }
        ("DELETE", ["networks", r]) => {
            no_body(body).await?;
            let id = h.network(r).await?;
            h.pass(
                Method::DELETE,
                &h.path(&["networks", &id]),
                forward::empty(),
                None,
            )
            .await
        }
        ("POST", ["networks", r, action @ ("connect" | "disconnect")]) => {
            h.network_connect(r, action, body).await
        }
        ("GET", ["volumes"]) => {
            no_body(body).await?;
            h.volume_list().await
        }
        ("POST", ["volumes", "create"]) => h.volume_create(body).await,
        ("GET", ["volumes", name]) => {
            no_body(body).await?;
            let dn = state.scope.resolve_volume(name)?;
            h.rewritten(Method::GET, &h.path(&["volumes", &dn]), None, |_, _| {})
                .await
        }
        ("DELETE", ["volumes", name]) => {
            no_body(body).await?;
            let dn = state.scope.resolve_volume(name)?;
            let qs = QueryOut::new().copy(&q, &["force"])?.finish();
            h.pass(
                Method::DELETE,
                &format!("{}{qs}", h.path(&["volumes", &dn])),
                forward::empty(),
                None,
            )
            .await
        }
        ("GET", ["images", "json"]) => {
            no_body(body).await?;
            let mut qo = QueryOut::new();
            qo.copy(&q, &["all", "digests"])?;
            if let Some(f) = q.single("filters")? {
                qo.push("filters", &reserialize_filters(f, None)?);
            }
            h.pass(
                Method::GET,
                &format!("{}{}", h.path(&["images", "json"]), qo.finish()),
                forward::empty(),
                None,
            )
            .await
        }
        ("GET", ["images", name @ .., action @ ("json" | "history")]) if !name.is_empty() => {
            no_body(body).await?;
            let name = state.scope.image_ref(&name.join("/"));
            h.pass(
                Method::GET,
                &h.path(&["images", &name, action]),
                forward::empty(),
                None,
            )
            .await
        }
        ("POST", ["images", "create"]) => {
            no_body(body).await?;
            h.image_pull(registry_auth).await
        }
        ("POST", ["images", name @ .., "tag"]) if !name.is_empty() => {
            no_body(body).await?;
            h.image_tag(&name.join("/")).await
        }
        ("DELETE", ["images", name @ ..]) if !name.is_empty() => {
            no_body(body).await?;
            h.image_remove(&name.join("/")).await
        }
        ("POST", ["build"]) => {
            h.build(body, parts.headers.get("x-registry-config").cloned())
                .await
        }
        ("POST", ["commit"]) => {
            no_body(body).await?;
            h.commit().await
        }
        ("GET", ["events"]) => {
            no_body(body).await?;
            crate::events::events(state, &target, &q).await
        }
        ("GET", ["system", "df"]) => {
            no_body(body).await?;
            h.system_df().await
        }
        _ => Err(unsupported(&method, &segs)),
    }
}

fn unsupported(method: &Method, segs: &[&str]) -> Refusal {
    Refusal::rule(
        rules::ENDPOINT,
        format!(
            "{method} /{} is not available through the scoped socket",
            segs.join("/")
        ),
    )
}

/// Content-Length together with Transfer-Encoding is ambiguous: refused (the daemon would let
/// chunked win; a filter in front of it must not have to guess).
fn check_framing<B>(req: &Request<B>) -> Result<(), Refusal> {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(Refusal::bad(
            "Content-Length together with Transfer-Encoding is ambiguous",
        ));
    }
    if h.get_all(header::CONTENT_LENGTH).iter().count() > 1
        || h.get_all(header::TRANSFER_ENCODING).iter().count() > 1
    {
        return Err(Refusal::bad("repeated framing headers"));
    }
    Ok(())
}

/// Endpoints that take no body: anything but whitespace is refused (old API versions read host
/// configuration from a `start` body, for example).
async fn no_body(body: Incoming) -> Result<(), Refusal> {
    let bytes = Limited::new(body, 4096)
        .collect()
        .await
        .map_err(|_| Refusal::bad("this endpoint takes no request body"))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(())
    } else {
        Err(Refusal::bad("this endpoint takes no request body"))
    }
}

async fn json_body(
    state: &State,
    body: Incoming,
    schema: &'static Schema,
) -> Result<Map<String, Value>, Refusal> {
    let limit = state.policy.max_body_bytes;
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| {
            Refusal::bad(format!(
                "request body larger than {limit} bytes or cut short"
            ))
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v = body::parse_strict(&bytes).map_err(|e| Refusal::bad(e.to_string()))?;
    body::normalize(v, schema).map_err(|e| Refusal::bad(e.to_string()))
}

/// Parses a `filters` JSON (map of name → list or set of values), refusing duplicates, and
/// re-serializes it, appending `label=<extra>` when given (the daemon ANDs label filters).
fn reserialize_filters(raw: &str, extra_label: Option<&str>) -> Result<String, Refusal> {
    let mut m = if raw.trim().is_empty() {
        Map::new()
    } else {
        match body::parse_strict(raw.as_bytes())
            .map_err(|e| Refusal::bad(format!("filters: {e}")))?
        {
            Value::Object(m) => m,
            _ => return Err(Refusal::bad("filters must be a JSON object")),
        }
    };
    for v in m.values_mut() {
        // Both the old list form and the map-of-true form; the daemon accepts either.
        let values: Vec<String> = match v {
            Value::Array(a) => a
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| Refusal::bad("filter values must be strings"))?,
            Value::Object(o) => {
                if !o.values().all(|b| b == &Value::Bool(true)) {
                    return Err(Refusal::bad("filter maps must map values to true"));
                }
                o.keys().cloned().collect()
            }
            _ => return Err(Refusal::bad("filter values must be lists or maps")),
        };
        *v = Value::Object(values.into_iter().map(|s| (s, Value::Bool(true))).collect());
    }
    if let Some(label) = extra_label {
        let entry = m
            .entry("label")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = entry {
            o.insert(label.to_string(), Value::Bool(true));
        }
    }
    Ok(Value::Object(m).to_string())
}

/// Copies the daemon's answer headers a client may need; framing headers are hyper's business.
fn copy_headers(from: &http::HeaderMap, to: &mut http::HeaderMap, keep_length: bool) {
    for (k, v) in from {
        let hop = matches!(
            k.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "upgrade"
                | "proxy-connection"
                | "te"
                | "trailer"
        );
        if hop || (!keep_length && k == header::CONTENT_LENGTH) {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

struct Handler<'a> {
    state: &'a Arc<State>,
    target: &'a Target,
    q: &'a Query,
}

impl Handler<'_> {
    fn scope(&self) -> &Scope {
        &self.state.scope
    }
    fn daemon(&self) -> &Daemon {
        &self.state.daemon
    }

    fn path(&self, segs: &[&str]) -> String {
        self.target.forward_path(segs)
    }

    async fn container(&self, r: &str) -> Result<String, Refusal> {
        self.scope().resolve_container(self.daemon(), r).await
    }

    async fn network(&self, r: &str) -> Result<String, Refusal> {
        self.scope().resolve_network(self.daemon(), r).await
    }

    /// A new object name given by the job → the daemon name.
    fn new_name(&self, name: &str) -> Result<String, Refusal> {
        let name = name.strip_prefix('/').unwrap_or(name);
        if !valid_object_name(name) {
            return Err(Refusal::rule(
                rules::NAMES,
                format!("invalid name `{name}`: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
            ));
        }
        Ok(self.scope().daemon_name(name))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: BoxBody,
        content_type: Option<&str>,
        extra: &[(&str, HeaderValue)],
    ) -> Result<Response<Incoming>, Refusal> {
        let mut b = Daemon::request(method, path);
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        for (k, v) in extra {
            b = b.header(*k, v.clone());
        }
        let req = b.body(body).map_err(|e| Refusal::Daemon(e.to_string()))?;
        self.daemon()
            .send(req)
            .await
            .map_err(|e| Refusal::Daemon(e.to_string()))
    }

    /// Forwards and streams the answer back unchanged (error messages aside).
    async fn pass(&self, method: Method, path: &str, body: BoxBody, ct: Option<&str>) -> Answer {
        let resp = self.send(method, path, body, ct, &[]).await?;
        self.stream_back(resp).await
    }

    async fn stream_back(&self, resp: Response<Incoming>) -> Answer {
        let (parts, body) = resp.into_parts();
        if parts.status.is_client_error() || parts.status.is_server_error() {
            // Error bodies are small JSON; strip scoped names from them.
            let bytes = forward::read_limited(body, MAX_ANSWER)
                .await
                .map_err(|e| Refusal::Daemon(e.to_string()))?;
            let text =
                crate::rewrite::strip_message(self.scope(), &String::from_utf8_lossy(&bytes));
            let mut out = Response::new(forward::full(text));
            *out.status_mut() = parts.status;
            copy_headers(&parts.headers, out.headers_mut(), false);
            return Ok(out);
        }
        let mut out = Response::new(forward::stream(body));
        *out.status_mut() = parts.status;
        copy_headers(&parts.headers, out.headers_mut(), true);
        Ok(out)
    }

    /// Forwards, then rewrites a JSON answer: `edit` on success, then scoped names stripped.
    async fn rewritten(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        edit: impl FnOnce(&Scope, &mut Value),
    ) -> Answer {
        let (status, headers, v) = self.call(method, path, body).await?;
        let mut v = v;
        if status.is_success() {
            edit(self.scope(), &mut v);
        }
        strip_names(self.scope(), &mut v);
        if let Some(m) = v
            .get_mut("message")
            .and_then(|m| m.as_str().map(str::to_string))
        {
            v["message"] = Value::String(crate::rewrite::strip_message(self.scope(), &m));
        }
        let mut out = Response::new(forward::full(if v.is_null() {
            String::new()
        } else {
            v.to_string()
        }));
        *out.status_mut() = status;
        copy_headers(&headers, out.headers_mut(), false);
        Ok(out)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, http::HeaderMap, Value), Refusal> {
        let (b, ct) = match body {
            Some(v) => (forward::full(v.to_string()), Some("application/json")),
            None => (forward::empty(), None),
        };
        let resp = self.send(method, path, b, ct, &[]).await?;
        let (parts, body) = resp.into_parts();
        let bytes = forward::read_limited(body, MAX_ANSWER)
            .await
            .map_err(|e| Refusal::Daemon(e.to_string()))?;
        let v = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(
                |_| json!({ "message": String::from_utf8_lossy(&bytes).trim().to_string() }),
            )
        };
        Ok((parts.status, parts.headers, v))
    }

    /// Hijacked streams (attach, exec start): forwarded only after authorization, spliced only
    /// after the daemon answered 101.
    async fn upgrade(
        &self,
        path: String,
        body: BoxBody,
        client: hyper::upgrade::OnUpgrade,
    ) -> Answer {
        let ct = if path.contains("/exec/") {
            Some("application/json")
        } else {
            None
        };
        let mut resp = self
            .send(
                Method::POST,
                &path,
                body,
                ct,
                &[
                    ("connection", HeaderValue::from_static("Upgrade")),
                    ("upgrade", HeaderValue::from_static("tcp")),
                ],
            )
            .await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self.stream_back(resp).await;
        }
        let daemon = hyper::upgrade::on(&mut resp);
        let mut out = Response::new(forward::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_headers(resp.headers(), out.headers_mut(), false);
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        out.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        let cancel = self.state.cancel.clone();
        self.state.tracker.spawn(async move {
            let (Ok(c), Ok(d)) = tokio::join!(client, daemon) else {
                return;
            };
            let mut c = hyper_util::rt::TokioIo::new(c);
            let mut d = hyper_util::rt::TokioIo::new(d);
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut c, &mut d) => {
                    if let Err(e) = r { tracing::debug!("hijacked stream ended: {e}"); }
                }
                () = cancel.cancelled() => {}
            }
        });
        Ok(out)
    }

    async fn info(&self) -> Answer {
        let count = self.scope().container_count();
        self.rewritten(Method::GET, &self.path(&["info"]), None, move |_, v| {
            const KEEP: &[&str] = &[
                "ID", "Images", "Driver", "MemoryLimit", "SwapLimit", "KernelMemory", "KernelMemoryTCP",
                "CpuCfsPeriod", "CpuCfsQuota", "CPUShares", "CPUSet", "PidsLimit", "IPv4Forwarding",
                "BridgeNfIptables", "BridgeNfIp6tables", "OomKillDisable", "SystemTime", "LoggingDriver",
                "CgroupDriver", "CgroupVersion", "KernelVersion", "OperatingSystem", "OSVersion", "OSType",
                "Architecture", "IndexServerAddress", "NCPU", "MemTotal", "ServerVersion", "DefaultRuntime",
                "ExperimentalBuild", "SecurityOptions", "Isolation", "Plugins",
            ];
            let Value::Object(m) = v else { return };
            m.retain(|k, _| KEEP.contains(&k.as_str()));
            m.insert("Name".into(), json!("berth-scoped"));
            m.insert("Containers".into(), json!(count));
            for k in ["ContainersRunning", "ContainersPaused", "ContainersStopped", "NFd", "NGoroutines", "NEventsListener"] {
                m.insert(k.into(), json!(0));
            }
            m.insert("Debug".into(), json!(false));
            m.insert("Labels".into(), json!([]));
            m.insert("Runtimes".into(), json!({"runc": {"path": "runc"}}));
            m.insert("Swarm".into(), json!({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null}));
            m.insert("Warnings".into(), json!([]));
        })
        .await
    }

    fn scope_label(&self) -> String {
        format!("{}={}", crate::scope::SCOPE_LABEL, self.scope().name())
    }

    async fn container_list(&self) -> Answer {
        let mut qo = QueryOut::new();
        qo.copy(self.q, &["all", "limit", "size"])?;
        let f = self.q.single("filters")?.unwrap_or("");
        qo.push(
            "filters",
            &reserialize_filters(f, Some(&self.scope_label()))?,
        );
        let path = format!("{}{}", self.path(&["containers", "json"]), qo.finish());
        self.rewritten(Method::GET, &path, None, |scope, v| {
            if let Value::Array(a) = v {
                a.retain(|c| c["Id"].as_str().is_some_and(|id| scope.owns_container(id)));
            }
        })
        .await
    }

    async fn container_create(&self, body: Incoming) -> Answer {
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
            let image = self.scope().image_ref(image);
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
        for b in strings_field(&hc, "Binds")? {
            binds.push(json!(self.bind(&b).await?));
        }
        if !binds.is_empty() {
            hc.insert("Binds".into(), Value::Array(binds));
        }
        if let Some(Value::Array(mounts)) = hc.get_mut("Mounts") {
            for m in mounts.iter_mut() {
                if let Value::Object(m) = m {
                    self.mount(m).await?;
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
        let path = format!("{}{}", self.path(&["containers", "create"]), qo.finish());
        self.rewritten(Method::POST, &path, Some(Value::Object(cfg)), |scope, v| {
            if let Some(id) = v["Id"].as_str() {
                scope.add_container(id);
            }
        })
        .await
    }

    /// `Links` entries (`name[:alias]`) must name owned containers; rewritten to full ids.
    async fn links(&self, m: &Map<String, Value>) -> Result<Option<Value>, Refusal> {
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

    /// A `Binds` entry: host paths are translated into the workspace, volume names namespaced.
    async fn bind(&self, b: &str) -> Result<String, Refusal> {
        let parts: Vec<&str> = b.split(':').collect();
        let (src, dst, mode) = match parts.as_slice() {
            [dst] => return Ok((*dst).to_string()).and_then(|d| anonymous_ok(&d)),
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
        let src = if src.starts_with('/') {
            self.translate(src)?
        } else {
            self.named_volume(src).await?
        };
        Ok(match mode {
            Some(m) => format!("{src}:{dst}:{m}"),
            None => format!("{src}:{dst}"),
        })
    }

    fn translate(&self, src: &str) -> Result<String, Refusal> {
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
    async fn named_volume(&self, name: &str) -> Result<String, Refusal> {
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

    async fn create_volume(
        &self,
        dn: &str,
        mut spec: Map<String, Value>,
    ) -> Result<Value, Refusal> {
        spec.insert("Name".into(), json!(dn));
        let labels = policy::own_labels(spec.get("Labels"), self.scope().labels())?;
        spec.insert("Labels".into(), labels);
        let (status, _, v) = self
            .call(
                Method::POST,
                &self.path(&["volumes", "create"]),
                Some(Value::Object(spec)),
            )
            .await?;
        if !status.is_success() {
            let msg = v["message"].as_str().unwrap_or("volume create failed");
            return Err(Refusal::Daemon(crate::rewrite::strip_message(
                self.scope(),
                msg,
            )));
        }
        // Volume create returns an existing volume of that name: only ours may be adopted.
        if crate::rewrite::label(&v, crate::scope::SCOPE_LABEL) != Some(self.scope().name())
            || crate::rewrite::label(&v, berth_engine::labels::OWNER)
                != self
                    .scope()
                    .labels()
                    .get(berth_engine::labels::OWNER)
                    .map(String::as_str)
        {
            return Err(Refusal::rule(
                rules::NAMES,
                format!("volume `{dn}` exists and is not this job's"),
            ));
        }
        self.scope().add_volume(dn);
        Ok(v)
    }

    async fn mount(&self, m: &mut Map<String, Value>) -> Result<(), Refusal> {
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
                let host = self.translate(&source)?;
                m.insert("Source".into(), json!(host));
            }
            "volume" => {
                if !matches!(m.get("BindOptions"), None | Some(Value::Null)) {
                    return Err(Refusal::bad("BindOptions on a volume mount"));
                }
                if let Some(Value::Object(vo)) = m.get("VolumeOptions") {
                    if let Some(Value::Object(dc)) = vo.get("DriverConfig") {
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
        Ok(())
    }

    async fn exec_create(&self, r: &str, body: Incoming) -> Answer {
        let cfg = json_body(self.state, body, &body::EXEC_CREATE).await?;
        policy::check_exec(&cfg)?;
        let id = self.container(r).await?;
        let path = self.path(&["containers", &id, "exec"]);
        self.rewritten(Method::POST, &path, Some(Value::Object(cfg)), |scope, v| {
            if let Some(id) = v["Id"].as_str() {
                scope.add_exec(id);
            }
        })
        .await
    }

    async fn exec_start(
        &self,
        id: &str,
        body: Incoming,
        wants_upgrade: bool,
        client: hyper::upgrade::OnUpgrade,
    ) -> Answer {
        let id = self.scope().resolve_exec(id)?;
        let cfg = json_body(self.state, body, &body::EXEC_START).await?;
        let detach = cfg.get("Detach") == Some(&Value::Bool(true));
        let path = self.path(&["exec", &id, "start"]);
        let body = forward::full(Value::Object(cfg).to_string());
        if wants_upgrade && !detach {
            return self.upgrade(path, body, client).await;
        }
        self.pass(Method::POST, &path, body, Some("application/json"))
            .await
    }

    async fn network_list(&self) -> Answer {
        let f = self.q.single("filters")?.unwrap_or("");
        let qs = QueryOut::new()
            .push(
                "filters",
                &reserialize_filters(f, Some(&self.scope_label()))?,
            )
            .finish();
        self.rewritten(
            Method::GET,
            &format!("{}{qs}", self.path(&["networks"])),
            None,
            |scope, v| {
                if let Value::Array(a) = v {
                    a.retain(|n| n["Id"].as_str().is_some_and(|id| scope.owns_network(id)));
                }
            },
        )
        .await
    }

    async fn network_create(&self, body: Incoming) -> Answer {
        let mut cfg = json_body(self.state, body, &body::NETWORK_CREATE).await?;
        policy::check_network_create(&cfg)?;
        let name = string_field(&cfg, "Name")?.to_string();
        let dn = self.new_name(&name)?;
        cfg.insert("Name".into(), json!(dn));
        cfg.insert("CheckDuplicate".into(), json!(true));
        let labels = policy::own_labels(cfg.get("Labels"), self.scope().labels())?;
        cfg.insert("Labels".into(), labels);
        self.rewritten(
            Method::POST,
            &self.path(&["networks", "create"]),
            Some(Value::Object(cfg)),
            |scope, v| {
                if let Some(id) = v["Id"].as_str() {
                    scope.add_network(id);
                }
            },
        )
        .await
    }

    async fn network_connect(&self, r: &str, action: &str, body: Incoming) -> Answer {
        let schema = if action == "connect" {
            &body::NETWORK_CONNECT
        } else {
            &body::NETWORK_DISCONNECT
        };
        let mut cfg = json_body(self.state, body, schema).await?;
        let id = self.network(r).await?;
        let c = string_field(&cfg, "Container")?.to_string();
        let cid = self.container(&c).await?;
        cfg.insert("Container".into(), json!(cid));
        if let Some(Value::Object(ep)) = cfg.get_mut("EndpointConfig") {
            policy::check_endpoint(ep)?;
            if let Some(l) = self.links(ep).await? {
                ep.insert("Links".into(), l);
            }
        }
        let path = self.path(&["networks", &id, action]);
        self.rewritten(Method::POST, &path, Some(Value::Object(cfg)), |_, _| {})
            .await
    }

    async fn volume_list(&self) -> Answer {
        let f = self.q.single("filters")?.unwrap_or("");
        let qs = QueryOut::new()
            .push(
                "filters",
                &reserialize_filters(f, Some(&self.scope_label()))?,
            )
            .finish();
        self.rewritten(
            Method::GET,
            &format!("{}{qs}", self.path(&["volumes"])),
            None,
            |scope, v| {
                if let Some(Value::Array(a)) = v.get_mut("Volumes") {
                    a.retain(|n| n["Name"].as_str().is_some_and(|n| scope.owns_volume(n)));
                }
            },
        )
        .await
    }

    async fn volume_create(&self, body: Incoming) -> Answer {
        let cfg = json_body(self.state, body, &body::VOLUME_CREATE).await?;
        policy::check_volume_create(&cfg)?;
        let name = string_field(&cfg, "Name")?.to_string();
        let name = if name.is_empty() { random_name() } else { name };
        let dn = self.new_name(&name)?;
        let mut spec = Map::new();
        if let Some(l) = cfg.get("Labels") {
            spec.insert("Labels".into(), l.clone());
        }
        let mut v = self.create_volume(&dn, spec).await?;
        strip_names(self.scope(), &mut v);
        let mut out = Response::new(forward::full(v.to_string()));
        *out.status_mut() = StatusCode::CREATED;
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(out)
    }

    async fn image_pull(&self, auth: Option<HeaderValue>) -> Answer {
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
    async fn claim_tag(&self, tag: &str) -> Result<String, Refusal> {
        if let Some(local) = self.scope().local_tag(tag) {
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
                format!("tag `{tag}` already exists and was not created by this job; shared tags cannot be overwritten"),
            ))
        }
    }

    async fn image_tag(&self, name: &str) -> Answer {
        let repo = self.q.single("repo")?.unwrap_or_default();
        let tag = self.q.single("tag")?.unwrap_or_default();
        if repo.is_empty() {
            return Err(Refusal::bad("repo is required"));
        }
        let full = if tag.is_empty() { repo.to_string() } else { format!("{repo}:{tag}") };
        let daemon_tag = self.claim_tag(&full).await?;
        let (repo, tag) = split_tag(&daemon_tag);
        let qs = QueryOut::new().push("repo", repo).push("tag", tag).finish();
        let source = self.scope().image_ref(name);
        let path = format!("{}{qs}", self.path(&["images", &source, "tag"]));
        self.pass(Method::POST, &path, forward::empty(), None).await
    }

    async fn image_remove(&self, name: &str) -> Answer {
        let local = self.scope().image_ref(name);
        if !self.scope().owns_tag(&local) {
            return Err(Refusal::rule(
                rules::IMAGE_TAGS,
                format!("image `{name}` is shared; a job can only remove tags it created"),
            ));
        }
        let qs = QueryOut::new().copy(self.q, &["noprune"])?.finish();
        let path = format!("{}{qs}", self.path(&["images", &local]));
        self.pass(Method::DELETE, &path, forward::empty(), None).await
    }

    async fn build(&self, body: Incoming, registry_config: Option<HeaderValue>) -> Answer {
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
                "BuildKit builds are not available through the scoped socket yet (set DOCKER_BUILDKIT=0)",
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

    async fn commit(&self) -> Answer {
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

    async fn system_df(&self) -> Answer {
        self.rewritten(
            Method::GET,
            &self.path(&["system", "df"]),
            None,
            |scope, v| {
                if let Some(Value::Array(a)) = v.get_mut("Containers") {
                    a.retain(|c| c["Id"].as_str().is_some_and(|id| scope.owns_container(id)));
                }
                if let Some(Value::Array(a)) = v.get_mut("Volumes") {
                    a.retain(|n| n["Name"].as_str().is_some_and(|n| scope.owns_volume(n)));
                }
                if let Some(Value::Array(a)) = v.get_mut("Images") {
                    a.retain(|i| {
                        i["RepoTags"].as_array().is_some_and(|t| {
                            t.iter()
                                .filter_map(Value::as_str)
                                .any(|t| scope.owns_tag(t))
                        })
                    });
                }
                v["BuildCache"] = json!([]);
            },
        )
        .await
    }
}

/// `repo:tag` → (`repo`, `tag`), the tag defaulting to `latest`.
fn split_tag(t: &str) -> (&str, &str) {
    let last_slash = t.rfind('/').map_or(0, |i| i + 1);
    match t[last_slash..].rfind(':') {
        Some(i) => (&t[..last_slash + i], &t[last_slash + i + 1..]),
        None => (t, "latest"),
    }
}

fn anonymous_ok(dst: &str) -> Result<String, Refusal> {
    if dst.starts_with('/') {
        Ok(dst.to_string())
    } else {
        Err(Refusal::bad(format!("invalid bind `{dst}`")))
    }
}

/// A random name for an anonymous volume created through `/volumes/create`.
fn random_name() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
