//! BuildKit's control API (`POST /grpc`, `Upgrade: h2c`), what buildx and Docker CLI 23+ use
//! for `docker build`: the proxy terminates HTTP/2 on both sides and authorizes every gRPC call.
//!
//! Owns: the call allowlist, the checks of the two solve requests (the control API's, which
//! carries the build's entitlements, exporters and session, and the gateway's, which names the
//! frontend and its options), and the per-scope namespacing of build refs, session ids and
//! gateway build ids — the same rules as `/build?version=2` (images.rs, buildkit.rs).
//! **Invariant: the daemon only receives calls on the allowlist, with headers built here, and
//! the two solve requests only as re-encoded from fields this module understood.** Calls the
//! proxy does not understand (disk usage and prune of the shared cache, build history, gateway
//! containers, the control API's session stream, content and traces) answer PERMISSION_DENIED.
//! Must not: forward a client's raw HTTP/2 frames or headers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::TokioExecutor;

use super::*;
use crate::proto::{Message, Value as PValue};

const CONTROL: &str = "/moby.buildkit.v1.Control/";
const GATEWAY: &str = "/moby.buildkit.v1.frontend.LLBBridge/";
/// gRPC metadata naming the build a gateway call belongs to.
const BUILD_ID: &str = "buildkit-controlapi-buildid";
/// Largest solve request read (they are small: options and names).
const MAX_SOLVE: usize = 4 << 20;

/// Where a solve request keeps what [`Handler::dockerfile_build`] checks (field numbers).
struct SolveFields {
    definition: u32,
    frontend: u32,
    attrs: u32,
    inputs: u32,
    /// The frontend may be empty (the control API's solve, when the gateway runs the frontend).
    no_frontend_ok: bool,
}

/// What the proxy does with one gRPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Forwarded unchanged (request body streamed): reads of the job's own build.
    Pass,
    /// The control API's solve: checked and rebuilt.
    ControlSolve,
    /// The control API's status stream: its build ref namespaced.
    Status,
    /// The gateway's solve: checked and rebuilt.
    GatewaySolve,
}

fn call_of(path: &str) -> Option<Call> {
    if let Some(m) = path.strip_prefix(CONTROL) {
        return match m {
            "Solve" => Some(Call::ControlSolve),
            "Status" => Some(Call::Status),
            "ListWorkers" | "Info" => Some(Call::Pass),
            _ => None,
        };
    }
    if let Some(m) = path.strip_prefix(GATEWAY) {
        return match m {
            "Solve" => Some(Call::GatewaySolve),
            "ResolveImageConfig" | "ResolveSourceMeta" | "ReadFile" | "ReadDir" | "StatFile"
            | "Evaluate" | "Ping" | "Return" | "Inputs" | "Warn" => Some(Call::Pass),
            _ => None,
        };
    }
    (path == "/grpc.health.v1.Health/Check").then_some(Call::Pass)
}

impl Handler<'_> {
    pub(super) async fn grpc(
        &self,
        headers: &HeaderMap,
        client: hyper::upgrade::OnUpgrade,
    ) -> Answer {
        self.buildkit_stream_allowed(headers, "BuildKit's API")?;
        let mut resp = self
            .send(
                Method::POST,
                &self.path(&["grpc"]),
                forward::empty(),
                None,
                &[
                    ("connection", HeaderValue::from_static("Upgrade")),
                    ("upgrade", HeaderValue::from_static("h2c")),
                ],
            )
            .await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self.stream_back(resp).await;
        }
        let daemon = hyper::upgrade::on(&mut resp);
        let mut out = Response::new(forward::empty());
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        out.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        let state = self.state.clone();
        let target = self.target.clone();
        let cancel = self.state.cancel.clone();
        self.state.tracker.spawn(async move {
            let (Ok(c), Ok(d)) = tokio::join!(client, daemon) else {
                return;
            };
            let Ok((sender, conn)) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), d).await
            else {
                return;
            };
            let daemon_conn = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("BuildKit daemon stream ended: {e}");
                }
            });
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                let target = target.clone();
                let sender = sender.clone();
                async move { Ok::<_, Infallible>(grpc_call(state, target, sender, req).await) }
            });
            let server = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(c, svc);
            tokio::select! {
                r = server => if let Err(e) = r { tracing::debug!("BuildKit client stream ended: {e}"); },
                () = cancel.cancelled() => {}
            }
            daemon_conn.abort();
        });
        Ok(out)
    }
}

/// A gRPC error answer (trailers-only: status and message in the headers).
fn grpc_error(code: u32, message: &str) -> Response<BoxBody> {
    let mut r = Response::new(forward::empty());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    let msg: String = message
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&msg) {
        h.insert("grpc-message", v);
    }
    r
}

/// gRPC status codes used here.
const INVALID_ARGUMENT: u32 = 3;
const PERMISSION_DENIED: u32 = 7;
const UNAVAILABLE: u32 = 14;

fn refusal_to_grpc(r: &Refusal) -> Response<BoxBody> {
    let code = if r.status() == StatusCode::FORBIDDEN {
        PERMISSION_DENIED
    } else {
        INVALID_ARGUMENT
    };
    grpc_error(code, &r.to_string())
}

async fn grpc_call(
    state: Arc<State>,
    target: Target,
    mut sender: SendRequest<BoxBody>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    let Some(call) = (req.method() == Method::POST)
        .then(|| call_of(&path))
        .flatten()
    else {
        tracing::info!(%path, rule = rules::BUILDKIT, "refused gRPC call");
        return grpc_error(
            PERMISSION_DENIED,
            &format!(
                "berth scoped socket: rule {}: BuildKit call {path} is not available through the scoped socket",
                rules::BUILDKIT
            ),
        );
    };
    let q = Query::default();
    let h = Handler {
        state: &state,
        target: &target,
        q: &q,
    };
    let (parts, body) = req.into_parts();
    let built = async {
        let mut b = Request::builder().method(Method::POST).uri(path.as_str());
        for k in [
            "content-type",
            "te",
            "grpc-timeout",
            "grpc-accept-encoding",
            "user-agent",
        ] {
            if let Some(v) = parts.headers.get(k) {
                b = b.header(k, v.clone());
            }
        }
        if let Some(id) = parts.headers.get(BUILD_ID) {
            let id = id.to_str().map_err(|_| Refusal::bad("invalid build id"))?;
            b = b.header(BUILD_ID, h.scoped_id("build", id)?);
        }
        let body = match call {
            Call::Pass => {
                if let Some(v) = parts.headers.get("grpc-encoding") {
                    b = b.header("grpc-encoding", v.clone());
                }
                forward::stream(body)
            }
            _ => {
                if parts
                    .headers
                    .get("grpc-encoding")
                    .is_some_and(|v| v.as_bytes() != b"identity")
                {
                    return Err(Refusal::bad("compressed solve requests are not accepted"));
                }
                let msg = read_one_message(body).await?;
                let rebuilt = match call {
                    Call::ControlSolve => h.control_solve(msg).await?,
                    Call::GatewaySolve => h.gateway_solve(msg)?,
                    _ => h.status_request(msg)?,
                };
                forward::full(frame(&rebuilt.encode()))
            }
        };
        b.body(body).map_err(|e| Refusal::Daemon(e.to_string()))
    }
    .await;
    let req = match built {
        Ok(r) => r,
        Err(r) => {
            tracing::info!(%path, rule = r.rule_name(), "refused gRPC call: {r}");
            return refusal_to_grpc(&r);
        }
    };
    if sender.ready().await.is_err() {
        return grpc_error(UNAVAILABLE, "the daemon's BuildKit stream is closed");
    }
    match sender.send_request(req).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let mut out = Response::new(forward::stream(body));
            *out.status_mut() = parts.status;
            for (k, v) in &parts.headers {
                if !matches!(k.as_str(), "connection" | "transfer-encoding" | "upgrade") {
                    out.headers_mut().append(k.clone(), v.clone());
                }
            }
            out
        }
        Err(e) => grpc_error(UNAVAILABLE, &format!("daemon: {e}")),
    }
}

/// The single message of a unary request: `[flag][length][message]`, uncompressed.
async fn read_one_message(body: Incoming) -> Result<Message, Refusal> {
    let mut all = Limited::new(body, MAX_SOLVE + 5)
        .collect()
        .await
        .map_err(|_| Refusal::bad("solve request too large or cut short"))?
        .to_bytes();
    if all.len() < 5 {
        return Err(Refusal::bad("truncated gRPC message"));
    }
    let compressed = all.get_u8();
    let len = all.get_u32() as usize;
    if compressed != 0 {
        return Err(Refusal::bad("compressed solve requests are not accepted"));
    }
    if len != all.len() {
        return Err(Refusal::bad("exactly one gRPC message expected"));
    }
    Message::parse(&all).map_err(|e| Refusal::bad(e.to_string()))
}

fn frame(msg: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    Bytes::from(out)
}

fn proto_err(e: crate::proto::ProtoError) -> Refusal {
    Refusal::bad(e.to_string())
}

fn only_fields(m: &Message, allowed: &[u32], what: &str) -> Result<(), Refusal> {
    match m.numbers().into_iter().find(|n| !allowed.contains(n)) {
        Some(n) => Err(Refusal::rule(
            rules::BUILDKIT,
            format!("{what}: field {n} is not understood by the scoped socket"),
        )),
        None => Ok(()),
    }
}

impl Handler<'_> {
    /// `Control.Solve` (buildkit control.proto): Ref 1, Definition 2, ExporterDeprecated 3,
    /// ExporterAttrsDeprecated 4, Session 5, Frontend 6, FrontendAttrs 7, Cache 8,
    /// Entitlements 9, FrontendInputs 10, Internal 11, SourcePolicy 12, Exporters 13.
    async fn control_solve(&self, mut m: Message) -> Result<Message, Refusal> {
        only_fields(
            &m,
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
            "solve request",
        )?;
        let ents = m.strings(9).map_err(proto_err)?;
        if !ents.is_empty() {
            return Err(Refusal::rule(
                rules::BUILD_HOST,
                format!(
                    "entitlements {} are not allowed (they reach the host)",
                    ents.join(", ")
                ),
            ));
        }
        // The control solve names no frontend when buildx runs it through the gateway.
        self.dockerfile_build(
            &mut m,
            SolveFields {
                definition: 2,
                frontend: 6,
                attrs: 7,
                inputs: 10,
                no_frontend_ok: true,
            },
        )?;
        let r = m.string(1).map_err(proto_err)?;
        if !r.is_empty() {
            m.set_string(1, &self.scoped_id("build", &r)?);
        }
        let s = m.string(5).map_err(proto_err)?;
        if !s.is_empty() {
            m.set_string(5, &self.scoped_id("session", &s)?);
        }
        // Exporters: clients send the list (13) and, for daemons older than it, the same first
        // exporter in the deprecated fields (3, 4); newer daemons ignore those when the list is
        // there. Each is checked and rewritten where it is.
        let old = m.string(3).map_err(proto_err)?;
        if !old.is_empty() {
            let attrs = self
                .exporter(&old, m.string_map(4).map_err(proto_err)?)
                .await?;
            m.set_string_map(4, &attrs);
        } else if m.has(4) {
            return Err(Refusal::bad("exporter attributes without an exporter"));
        }
        let mut rebuilt = Vec::new();
        for e in m.bytes(13).map_err(proto_err)? {
            let e = Message::parse(e).map_err(proto_err)?;
            only_fields(&e, &[1, 2], "exporter")?;
            let kind = e.string(1).map_err(proto_err)?;
            let attrs = self
                .exporter(&kind, e.string_map(2).map_err(proto_err)?)
                .await?;
            let mut out = Message::default();
            out.set_string(1, &kind);
            out.set_string_map(2, &attrs);
            rebuilt.push(PValue::Bytes(out.encode()));
        }
        m.set(13, rebuilt);
        Ok(m)
    }

    /// Exporters whose output goes to the client (through its session) pass; the daemon's image
    /// store exporter (`moby`) only with job-local names (the tag rule); anything that writes
    /// elsewhere (`image` with its push and store options) is refused.
    async fn exporter(
        &self,
        kind: &str,
        mut attrs: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        match kind {
            "local" | "tar" | "oci" | "docker" => Ok(attrs),
            "moby" => {
                // `load` is buildx's marker for `--load`; a push would send the job-local name.
                if let Some((k, v)) = attrs.iter().find(|(k, v)| match k.as_str() {
                    "name" | "load" => false,
                    "push" => !matches!(v.as_str(), "" | "false"),
                    _ => true,
                }) {
                    return Err(Refusal::rule(
                        rules::BUILD_HOST,
                        format!("image exporter option `{k}={v}` is not allowed"),
                    ));
                }
                if let Some(names) = attrs.get("name").cloned() {
                    let mut out = Vec::new();
                    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        out.push(self.claim_tag(n).await?);
                    }
                    attrs.insert("name".into(), out.join(","));
                }
                Ok(attrs)
            }
            other => Err(Refusal::rule(
                rules::BUILD_HOST,
                format!("exporter `{other}` is not allowed; use --load (or local/tar outputs)"),
            )),
        }
    }

    /// `LLBBridge.Solve` (gateway.proto): Definition 1, Frontend 2, FrontendOpt 3,
    /// allowResultReturn 5, allowResultArrayRef 6, Final 10, ExporterAttr 11, CacheImports 12,
    /// FrontendInputs 13, Evaluate 14, SourcePolicies 15.
    fn gateway_solve(&self, mut m: Message) -> Result<Message, Refusal> {
        only_fields(
            &m,
            &[1, 2, 3, 5, 6, 10, 11, 12, 13, 14, 15],
            "gateway solve",
        )?;
        self.dockerfile_build(
            &mut m,
            SolveFields {
                definition: 1,
                frontend: 2,
                attrs: 3,
                inputs: 13,
                no_frontend_ok: false,
            },
        )?;
        Ok(m)
    }

    /// What both solve requests must be — a build of the built-in Dockerfile frontend, from no
    /// client-made graph (LLB) and no frontend inputs — with the frontend's options checked and
    /// rewritten (`frontend_attrs`).
    fn dockerfile_build(&self, m: &mut Message, f: SolveFields) -> Result<(), Refusal> {
        if m.bytes(f.definition)
            .map_err(proto_err)?
            .iter()
            .any(|d| !d.is_empty())
        {
            return Err(Refusal::rule(
                rules::BUILDKIT,
                "builds from a client-made build graph (LLB) are not allowed; use a Dockerfile",
            ));
        }
        if m.has(f.inputs) {
            return Err(Refusal::rule(
                rules::BUILDKIT,
                "frontend inputs (named build contexts from LLB) are not allowed",
            ));
        }
        let frontend = m.string(f.frontend).map_err(proto_err)?;
        if !(frontend == "dockerfile.v0" || (f.no_frontend_ok && frontend.is_empty())) {
            return Err(Refusal::rule(
                rules::BUILDKIT,
                format!(
                    "frontend `{frontend}` is not allowed; the built-in Dockerfile frontend is"
                ),
            ));
        }
        let attrs = m.string_map(f.attrs).map_err(proto_err)?;
        m.set_string_map(f.attrs, &frontend_attrs(attrs, self.scope())?);
        Ok(())
    }

    /// `Control.Status` (StatusRequest: Ref 1): only the job's own builds.
    fn status_request(&self, mut m: Message) -> Result<Message, Refusal> {
        only_fields(&m, &[1], "status request")?;
        let r = m.string(1).map_err(proto_err)?;
        m.set_string(1, &self.scoped_id("build", &r)?);
        Ok(m)
    }
}

/// The Dockerfile frontend's options, checked like `/build`'s query: nothing that reaches the
/// host (host network, cgroup parent, remote contexts), nothing the shared cache does not
/// record (`add-hosts`, proxy build arguments), no `BUILDKIT_*` arguments but the inline cache;
/// the cache-mount namespace is the scope's, and the image carries the scope's labels (as
/// `/build` adds them), so `berth gc` and other scopes recognise it.
fn frontend_attrs(
    attrs: BTreeMap<String, String>,
    scope: &crate::scope::Scope,
) -> Result<BTreeMap<String, String>, Refusal> {
    let mut out = BTreeMap::new();
    let mut args = serde_json::Map::new();
    for (k, v) in attrs {
        if let Some(name) = k.strip_prefix("build-arg:") {
            args.insert(name.to_string(), serde_json::Value::String(v));
            continue;
        }
        if k.strip_prefix("label:")
            .is_some_and(|l| l.starts_with("io.berth."))
        {
            return Err(Refusal::rule(
                rules::LABELS,
                format!("label `{}` is reserved for berth", &k["label:".len()..]),
            ));
        }
        let refuse = |why: &str| {
            Err(Refusal::rule(
                rules::BUILD_HOST,
                format!("frontend option `{k}`: {why}"),
            ))
        };
        match k.as_str() {
            "force-network-mode" if !matches!(v.as_str(), "" | "default" | "sandbox" | "none") => {
                return refuse("only the default network or none");
            }
            "add-hosts" if !v.trim().is_empty() => {
                return Err(Refusal::rule(
                    rules::BUILD_CACHE,
                    "build --add-host is not allowed: the build cache does not record the address",
                ));
            }
            "cgroup-parent" | "cmdline" | "source" | "gateway-devel" => {
                return refuse("not allowed");
            }
            _ if k == "context" || k == "dockerfile" || k.starts_with("context:") => {
                let local = ["local:", "input:", "docker-image://", "oci-layout://"];
                if !local.iter().any(|p| v.starts_with(p)) {
                    return refuse("remote build contexts are not allowed");
                }
            }
            _ => {}
        }
        out.insert(k, v);
    }
    for (k, v) in scope.labels() {
        out.insert(format!("label:{k}"), v.clone());
    }
    for (k, v) in super::images::check_build_args(args, Some(scope.name()))? {
        if let serde_json::Value::String(v) = v {
            out.insert(format!("build-arg:{k}"), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn scope() -> crate::scope::Scope {
        crate::scope::Scope::new("s1", BTreeMap::new()).unwrap()
    }

    #[test]
    fn frontend_options_are_checked_and_namespaced() {
        let ok = frontend_attrs(
            attrs(&[
                ("filename", "Dockerfile"),
                ("build-arg:A", "1"),
                ("context:x", "local:x"),
            ]),
            &scope(),
        )
        .unwrap();
        assert_eq!(ok["label:io.berth.scope"], "s1");
        assert_eq!(ok["build-arg:A"], "1");
        assert_eq!(ok["build-arg:BUILDKIT_CACHE_MOUNT_NS"], "berth-s1");
        for bad in [
            ("force-network-mode", "host"),
            ("add-hosts", "pypi.org=1.2.3.4"),
            ("cgroup-parent", "/"),
            ("context", "https://github.com/x/y.git"),
            ("context:x", "git@github.com:x/y"),
            ("build-arg:HTTP_PROXY", "http://x"),
            ("build-arg:BUILDKIT_CACHE_MOUNT_NS", "other"),
            ("cmdline", "x"),
            ("label:io.berth.owner", "someone-else"),
        ] {
            assert!(frontend_attrs(attrs(&[bad]), &scope()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn calls_default_deny() {
        assert_eq!(
            call_of("/moby.buildkit.v1.Control/Solve"),
            Some(Call::ControlSolve)
        );
        for denied in [
            "/moby.buildkit.v1.Control/Prune",
            "/moby.buildkit.v1.Control/DiskUsage",
            "/moby.buildkit.v1.Control/Session",
            "/moby.buildkit.v1.Control/ListenBuildHistory",
            "/moby.buildkit.v1.frontend.LLBBridge/NewContainer",
            "/moby.buildkit.v1.frontend.LLBBridge/ExecProcess",
            "/containerd.services.content.v1.Content/Read",
            "/moby.buildkit.v1.Control/Solve/x",
        ] {
            assert_eq!(call_of(denied), None, "{denied}");
        }
    }
}
