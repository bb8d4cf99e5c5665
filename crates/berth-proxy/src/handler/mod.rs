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
use crate::forward::{self, BoxBody, Daemon, DaemonBody, MAX_ANSWER};
use crate::parse::{Query, QueryOut, Target, parse_path};
use crate::policy::{self, rules, string_field, strings_field};
use crate::refusal::Refusal;
use crate::rewrite::strip_names;
use crate::scope::{Scope, valid_object_name};
use crate::state::State;

mod buildkit;
mod containers;
mod exec;
mod grpc;
mod images;
mod networks;
mod system;
mod volumes;

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
            let ws = state.workspace.clone();
            h.rewritten(
                Method::GET,
                &format!("{}{qs}", h.path(&["containers", &id, "json"])),
                None,
                move |_, v| {
                    if let Some(ws) = &ws {
                        crate::rewrite::binds_to_job_view(ws, v);
                    }
                },
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
        ("POST", [kind @ ("containers" | "networks" | "volumes"), "prune"]) => {
            no_body(body).await?;
            h.prune(kind).await
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
            h.image_list().await
        }
        ("GET", ["images", name @ .., action @ ("json" | "history")]) if !name.is_empty() => {
            no_body(body).await?;
            h.image_read(&name.join("/"), action).await
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
        ("POST", ["session"]) => {
            no_body(body).await?;
            h.session(&parts.headers, client_upgrade).await
        }
        ("POST", ["grpc"]) => {
            no_body(body).await?;
            h.grpc(&parts.headers, client_upgrade).await
        }
        ("POST", ["build", "cancel"]) => {
            no_body(body).await?;
            h.build_cancel().await
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
pub(crate) fn check_framing<B>(req: &Request<B>) -> Result<(), Refusal> {
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

/// Reads and discards a request body, up to `limit` bytes or `within`, whichever comes first.
async fn drain(mut body: Incoming, limit: usize, within: std::time::Duration) {
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
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
pub(crate) fn reserialize_filters(raw: &str, extra_label: Option<&str>) -> Result<String, Refusal> {
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
    pub(super) fn scope(&self) -> &Scope {
        &self.state.scope
    }
    pub(super) fn daemon(&self) -> &Daemon {
        &self.state.daemon
    }

    pub(super) fn path(&self, segs: &[&str]) -> String {
        self.target.forward_path(segs)
    }

    pub(super) async fn container(&self, r: &str) -> Result<String, Refusal> {
        self.scope().resolve_container(self.daemon(), r).await
    }

    pub(super) async fn network(&self, r: &str) -> Result<String, Refusal> {
        self.scope().resolve_network(self.daemon(), r).await
    }

    /// A new object name given by the job → the daemon name.
    pub(super) fn new_name(&self, name: &str) -> Result<String, Refusal> {
        let name = name.strip_prefix('/').unwrap_or(name);
        if !valid_object_name(name) {
            return Err(Refusal::rule(
                rules::NAMES,
                format!("invalid name `{name}`: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
            ));
        }
        Ok(self.scope().daemon_name(name))
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: BoxBody,
        content_type: Option<&str>,
        extra: &[(&str, HeaderValue)],
    ) -> Result<Response<DaemonBody>, Refusal> {
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
    pub(super) async fn pass(
        &self,
        method: Method,
        path: &str,
        body: BoxBody,
        ct: Option<&str>,
    ) -> Answer {
        let resp = self.send(method, path, body, ct, &[]).await?;
        self.stream_back(resp).await
    }

    pub(super) async fn stream_back(&self, resp: Response<DaemonBody>) -> Answer {
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
    pub(super) async fn rewritten(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        edit: impl FnOnce(&Scope, &mut Value),
    ) -> Answer {
        let (status, headers, v) = self.call(method, path, body).await?;
        Ok(self.json_answer(status, &headers, v, edit))
    }

    /// A JSON answer the proxy already has: `edit` on success, then scoped names stripped.
    pub(super) fn json_answer(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        v: Value,
        edit: impl FnOnce(&Scope, &mut Value),
    ) -> Response<BoxBody> {
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
        copy_headers(headers, out.headers_mut(), false);
        out
    }

    pub(super) async fn call(
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
    pub(super) async fn upgrade(
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
        self.upgrade_as(path, body, ct, "tcp", &[], client).await
    }

    /// Forwards an authorized request asking for protocol `proto` (`tcp`, or `h2c` for a BuildKit
    /// session) with the given extra headers; splices the two streams once the daemon answered 101.
    pub(super) async fn upgrade_as(
        &self,
        path: String,
        body: BoxBody,
        ct: Option<&str>,
        proto: &'static str,
        extra: &[(&str, HeaderValue)],
        client: hyper::upgrade::OnUpgrade,
    ) -> Answer {
        let mut headers = vec![
            ("connection", HeaderValue::from_static("Upgrade")),
            ("upgrade", HeaderValue::from_static(proto)),
        ];
        headers.extend(extra.iter().cloned());
        let mut resp = self.send(Method::POST, &path, body, ct, &headers).await?;
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
            .insert(header::UPGRADE, HeaderValue::from_static(proto));
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

    pub(super) fn scope_label(&self) -> String {
        format!("{}={}", crate::scope::SCOPE_LABEL, self.scope().name())
    }

    /// The query `?filters=…` of a list or prune: the client's filters, re-serialized, with the
    /// scope's label filter appended (label filters AND on the daemon).
    pub(super) fn scoped_filters_query(&self) -> Result<String, Refusal> {
        let f = self.q.single("filters")?.unwrap_or("");
        Ok(QueryOut::new()
            .push(
                "filters",
                &reserialize_filters(f, Some(&self.scope_label()))?,
            )
            .finish())
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

/// A `Binds` entry with only a destination: an anonymous volume.
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
