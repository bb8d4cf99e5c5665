//! The proxy's side of the daemon connection.
//!
//! Owns: the HTTP/1.1 connections to the daemon's unix socket — a small bounded pool of idle
//! keep-alive connections, and a fresh, never-pooled connection for every request that may
//! hijack its connection (attach, exec start, anything carrying `Upgrade` or `Connection`) —
//! re-framing (hyper writes the framing of the request we build, never the client's), and small
//! JSON calls the proxy makes on its own behalf (lookups, reaping).
//!
//! **Invariant: a daemon connection is reused only after one complete exchange** — the request
//! body we built reached its end without error and the daemon's answer was read to its end
//! without error ([`DaemonBody`] hands the connection back only then; dropped early or failed,
//! the connection is closed). Reuse is therefore invisible to the daemon: what it reads on a
//! pooled connection is a sequence of requests each framed by hyper from a request the handler
//! rebuilt, exactly as on a fresh connection. Nothing a client sends is ever written raw, so no
//! client can leave bytes behind on a connection that another scope's request then follows.
//! Must not: copy client headers or bodies it was not given explicitly by the handler; pool a
//! connection whose exchange did not complete, or one that was (or may be) upgraded.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Error type of bodies the proxy sends or answers with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Any body: a buffered one the proxy built, or a stream passed through.
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A buffered body.
pub fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An empty body.
pub fn empty() -> BoxBody {
    full(Bytes::new())
}

/// A streamed body passed through: a client's request body, or the daemon's answer.
pub fn stream<B>(b: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("failed to connect to the daemon at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to talk to the daemon: {0}")]
    Http(#[from] hyper::Error),
    #[error("failed to build the request to the daemon: {0}")]
    Build(#[from] http::Error),
    #[error("the daemon's answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// Largest daemon answer the proxy buffers to rewrite.
pub const MAX_ANSWER: usize = 64 << 20;

/// Most idle daemon connections kept per endpoint; more are closed when handed back.
pub const MAX_IDLE: usize = 32;
/// Idle connections older than this are closed instead of reused.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// A pooled connection that does not become ready within this is dropped (it never should: it
/// went idle after a complete exchange); a fresh one is opened instead.
const READY_WAIT: Duration = Duration::from_secs(1);

/// The real daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    socket: PathBuf,
    pool: Arc<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Mutex<Vec<(SendRequest<BoxBody>, Instant)>>,
    /// Daemon connections whose connection task is still running.
    live: Arc<AtomicUsize>,
    /// Daemon connections opened in total.
    opened: AtomicUsize,
}

impl Pool {
    fn put(&self, sender: SendRequest<BoxBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    fn take(&self) -> Option<SendRequest<BoxBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        idle.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < MAX_IDLE_AGE);
        idle.pop().map(|(s, _)| s)
    }
}

/// Counts a connection task as live until it ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a request may hijack its connection: such requests never use a pooled connection
/// and their connection is never handed back. The daemon hijacks attach and exec start even
/// without an `Upgrade` header (the raw stream then runs until the connection closes).
fn may_hijack<B>(req: &Request<B>) -> bool {
    if req.headers().contains_key(header::UPGRADE) || req.headers().contains_key(header::CONNECTION)
    {
        return true;
    }
    let path = req.uri().path();
    path.ends_with("/attach")
        || path.ends_with("/attach/ws")
        || (path.contains("/exec/") && path.ends_with("/start"))
}

impl Daemon {
    pub fn new(socket: impl Into<PathBuf>) -> Daemon {
        Daemon {
            socket: socket.into(),
            pool: Arc::default(),
        }
    }

    /// A request builder with the fixed headers every forwarded request carries.
    pub fn request(method: Method, path_and_query: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, "docker")
            .header(header::USER_AGENT, "berth-scoped-socket")
    }

    /// Daemon connections currently open (idle or in use), and opened in total.
    pub fn connections(&self) -> (usize, usize) {
        (
            self.pool.live.load(Ordering::SeqCst),
            self.pool.opened.load(Ordering::SeqCst),
        )
    }

    /// Idle connections in the pool.
    pub fn idle_connections(&self) -> usize {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    async fn connect(&self) -> Result<SendRequest<BoxBody>, ForwardError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ForwardError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, BoxBody>(TokioIo::new(stream)).await?;
        self.pool.opened.fetch_add(1, Ordering::SeqCst);
        self.pool.live.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(self.pool.live.clone());
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("daemon connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// A pooled connection that is ready for a request, if there is one.
    async fn pooled(&self) -> Option<SendRequest<BoxBody>> {
        while let Some(mut s) = self.pool.take() {
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, s.ready()).await {
                return Some(s);
            }
        }
        None
    }

    /// Sends one request. Requests that may hijack their connection go on a fresh connection
    /// (upgrades are possible on the answer) that is never reused; others take an idle pooled
    /// connection when there is one, and the answer's body hands it back once read to its end.
    pub async fn send(&self, req: Request<BoxBody>) -> Result<Response<DaemonBody>, ForwardError> {
        if may_hijack(&req) {
            let mut sender = self.connect().await?;
            let resp = sender.send_request(req).await?;
            return Ok(resp.map(|b| DaemonBody::new(b, None)));
        }
        let done = Arc::new(ExchangeState::default());
        let req = req.map(|b| {
            ReqBody {
                inner: b,
                state: done.clone(),
            }
            .boxed()
        });
        let req = match self.pooled().await {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.answer(resp, sender, done)),
                Err(mut e) => match e.take_message() {
                    // The daemon closed the idle connection before reading the request: the
                    // request was not sent, so it goes on a fresh connection instead.
                    Some(req) => req,
                    None => return Err(e.into_error().into()),
                },
            },
            None => req,
        };
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await?;
        Ok(self.answer(resp, sender, done))
    }

    fn answer(
        &self,
        resp: Response<Incoming>,
        sender: SendRequest<BoxBody>,
        state: Arc<ExchangeState>,
    ) -> Response<DaemonBody> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return resp.map(|b| DaemonBody::new(b, None));
        }
        let back = HandBack {
            pool: self.pool.clone(),
            sender,
            state,
        };
        resp.map(|b| DaemonBody::new(b, Some(back)))
    }

    /// A JSON call on the proxy's own behalf; the answer is parsed when it is JSON.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ForwardError> {
        let mut b = Daemon::request(method, path_and_query);
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                full(v.to_string())
            }
            None => empty(),
        };
        let resp = self.send(b.body(body)?).await?;
        let status = resp.status();
        let bytes = read_limited(resp.into_body(), MAX_ANSWER).await?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        // Plain-text answers (`/_ping`, some errors) come back as a JSON string.
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, v))
    }
}

/// How far one exchange on a poolable connection got.
#[derive(Debug, Default)]
struct ExchangeState {
    /// The request body reached its end without error.
    request_done: AtomicBool,
    /// The request body failed: the connection is never reused.
    failed: AtomicBool,
}

/// The request body as sent on a poolable connection: records whether it completed.
struct ReqBody {
    inner: BoxBody,
    state: Arc<ExchangeState>,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.state.request_done.store(true, Ordering::SeqCst),
            Poll::Ready(Some(Err(_))) => self.state.failed.store(true, Ordering::SeqCst),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => {
                self.state.request_done.store(true, Ordering::SeqCst);
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.state.request_done.store(true, Ordering::SeqCst);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What hands a connection back to the pool when its exchange completed.
struct HandBack {
    pool: Arc<Pool>,
    sender: SendRequest<BoxBody>,
    state: Arc<ExchangeState>,
}

/// The daemon's answer body. On a poolable connection it hands the connection back to the pool
/// when it is dropped after being read to its end without error, and the request body we sent
/// completed; in every other case the connection is closed.
pub struct DaemonBody {
    inner: Incoming,
    back: Option<HandBack>,
    ended: bool,
}

impl std::fmt::Debug for DaemonBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonBody")
            .field("poolable", &self.back.is_some())
            .field("ended", &self.ended)
            .finish()
    }
}

impl DaemonBody {
    fn new(inner: Incoming, back: Option<HandBack>) -> DaemonBody {
        DaemonBody {
            inner,
            back,
            ended: false,
        }
    }
}

impl Body for DaemonBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for DaemonBody {
    fn drop(&mut self) {
        let Some(back) = self.back.take() else {
            return;
        };
        let complete = (self.ended || self.inner.is_end_stream())
            && back.state.request_done.load(Ordering::SeqCst)
            && !back.state.failed.load(Ordering::SeqCst);
        if complete {
            back.pool.put(back.sender);
        }
    }
}

/// Collects a body up to `limit` bytes.
pub async fn read_limited(body: DaemonBody, limit: usize) -> Result<Bytes, ForwardError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(h) => Err(ForwardError::Http(*h)),
            Err(_) => Err(ForwardError::TooLarge(limit)),
        },
    }
}

#[cfg(test)]
mod tests {
    //! The reuse rules against a fake daemon that counts its connections.

    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::StreamBody;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;

    use super::*;

    struct Fake {
        _dir: tempfile::TempDir,
        daemon: Daemon,
        accepted: Arc<AtomicUsize>,
    }

    /// A daemon that answers every request with its path after reading the whole body, and
    /// `/big` with a large chunked body.
    async fn fake() -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("d.sock");
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let accepted = Arc::new(AtomicUsize::new(0));
        let acc = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let got = req.into_body().collect().await.map(|c| c.to_bytes().len());
                        let body = match (path.as_str(), got) {
                            ("/big", _) => full(vec![b'x'; 1 << 20]),
                            (_, Ok(n)) => full(format!("{path} {n}")),
                            (_, Err(_)) => full("body failed"),
                        };
                        Ok::<_, Infallible>(Response::new(body))
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Fake {
            daemon: Daemon::new(sock),
            _dir: dir,
            accepted,
        }
    }

    async fn get(d: &Daemon, path: &str) -> String {
        let (_, v) = d.call(Method::GET, path, None).await.expect("call");
        v.as_str().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn sequential_exchanges_share_one_connection() {
        let f = fake().await;
        for i in 0..20 {
            assert_eq!(get(&f.daemon, &format!("/r{i}")).await, format!("/r{i} 0"));
        }
        assert_eq!(f.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(f.daemon.idle_connections(), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let f = fake().await;
        let req = Daemon::request(Method::GET, "/big")
            .body(empty())
            .expect("req");
        let mut resp = f.daemon.send(req).await.expect("send");
        let _ = resp.body_mut().frame().await;
        drop(resp);
        assert_eq!(f.daemon.idle_connections(), 0);
        assert_eq!(get(&f.daemon, "/next").await, "/next 0");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_body_that_fails_midway_closes_its_connection() {
        let f = fake().await;
        assert_eq!(get(&f.daemon, "/warm").await, "/warm 0");
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err("client went away".into()),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
        let req = Daemon::request(Method::PUT, "/archive")
            .body(body)
            .expect("req");
        if let Ok(resp) = f.daemon.send(req).await {
            let _ = read_limited(resp.into_body(), 1 << 20).await;
        }
        assert_eq!(f.daemon.idle_connections(), 0);
        assert_eq!(get(&f.daemon, "/next").await, "/next 0");
        assert_eq!(f.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn requests_that_may_hijack_never_use_or_feed_the_pool() {
        let f = fake().await;
        assert_eq!(get(&f.daemon, "/warm").await, "/warm 0");
        for path in ["/containers/x/attach", "/v1.41/exec/y/start"] {
            let req = Daemon::request(Method::POST, path)
                .body(empty())
                .expect("req");
            let resp = f.daemon.send(req).await.expect("send");
            let _ = read_limited(resp.into_body(), 1 << 20).await;
        }
        let req = Daemon::request(Method::GET, "/up")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "tcp")
            .body(empty())
            .expect("req");
        let resp = f.daemon.send(req).await.expect("send");
        let _ = read_limited(resp.into_body(), 1 << 20).await;
        assert_eq!(f.accepted.load(Ordering::SeqCst), 4);
        assert_eq!(f.daemon.idle_connections(), 1);
    }

    #[tokio::test]
    async fn the_pool_stays_bounded_under_concurrency() {
        let f = fake().await;
        for _ in 0..3 {
            let calls = (0..3 * MAX_IDLE).map(|i| {
                let d = f.daemon.clone();
                tokio::spawn(async move { get(&d, &format!("/c{i}")).await })
            });
            for c in calls.collect::<Vec<_>>() {
                assert!(c.await.expect("task").starts_with("/c"));
            }
            assert!(f.daemon.idle_connections() <= MAX_IDLE);
        }
        // Connections beyond the bound were closed, not kept: their tasks end once the
        // daemon side sees the close (waited for, not timed).
        let mut open = f.daemon.connections().0;
        for _ in 0..500 {
            if open <= MAX_IDLE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            open = f.daemon.connections().0;
        }
        assert!(open <= MAX_IDLE, "{open} daemon connections still open");
        assert!(
            f.daemon.connections().1 > MAX_IDLE,
            "the test never went past the bound"
        );
    }
}
