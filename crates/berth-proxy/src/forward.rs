//! The proxy's side of the daemon connection.
//!
//! Owns: one HTTP/1.1 connection to the daemon's unix socket per forwarded request (so nothing a
//! client sends can ever share a connection with another request), re-framing (hyper writes the
//! framing of the request we build, never the client's), and small JSON calls the proxy makes on
//! its own behalf (lookups, reaping).
//! Must not: copy client headers or bodies it was not given explicitly by the handler.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
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

/// A streamed body passed through.
pub fn stream(b: Incoming) -> BoxBody {
    b.map_err(|e| Box::new(e) as BoxError).boxed()
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

/// The real daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    pub fn new(socket: impl Into<PathBuf>) -> Daemon {
        Daemon {
            socket: socket.into(),
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

    /// Sends one request on a fresh connection; upgrades are possible on the answer.
    pub async fn send(&self, req: Request<BoxBody>) -> Result<Response<Incoming>, ForwardError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ForwardError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, BoxBody>(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("daemon connection ended: {e}");
            }
        });
        Ok(sender.send_request(req).await?)
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

/// Collects a body up to `limit` bytes.
pub async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ForwardError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(h) => Err(ForwardError::Http(*h)),
            Err(_) => Err(ForwardError::TooLarge(limit)),
        },
    }
}
