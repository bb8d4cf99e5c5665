//! Request bodies: the size limit (413, from the declared length or while reading) and the read
//! deadline (408 and the connection closed for a client that trickles or stalls its body), for
//! every route; and spooling a body to a temporary file under `<data>/tmp/` so an upload is
//! never held in memory as it arrives. Must not: parse bodies (handlers do).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::api::ApiError;

/// The bounds every request body is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max: u64,
    pub timeout: Duration,
}

/// Marks a request whose body missed its deadline, so the answer becomes 408 whichever
/// extractor noticed.
#[derive(Clone, Default)]
pub(crate) struct TimedOut(Arc<AtomicBool>);

fn too_large(max: u64, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body ({what}) is over the limit of {} MiB; send a smaller source tree \
             (leave out build outputs) or use a git source",
            max >> 20
        ),
    )
}

fn timed_out(timeout: Duration) -> Response {
    let mut r = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {} s; send it faster or in a smaller upload",
            timeout.as_secs_f64()
        ),
    )
    .into_response();
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Middleware: 413 for a declared oversize body at once; a deadline on reading the body.
pub(crate) async fn bound(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared
        && len > limits.max
    {
        return too_large(limits.max, &format!("{len} bytes")).into_response();
    }
    let flag = TimedOut::default();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(flag.clone());
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut stream = body.into_data_stream();
    let mut done = false;
    let mut sleep = Box::pin(tokio::time::sleep_until(deadline));
    let marker = flag.clone();
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        if done {
            return std::task::Poll::Ready(None);
        }
        if let std::task::Poll::Ready(item) = stream.poll_next_unpin(cx) {
            return std::task::Poll::Ready(item);
        }
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(()) => {
                done = true;
                marker.0.store(true, Ordering::SeqCst);
                std::task::Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request body deadline passed",
                )))))
            }
        }
    }));
    let response = next.run(Request::from_parts(parts, body)).await;
    if flag.0.load(Ordering::SeqCst) {
        return timed_out(limits.timeout);
    }
    response
}

/// A file under `<data>/tmp/`, removed when dropped (a rename away keeps it).
#[derive(Debug)]
pub(crate) struct Spooled {
    pub path: PathBuf,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spooled {
    pub fn new(data: &Path, what: &str) -> std::io::Result<Spooled> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = data.join("tmp");
        std::fs::create_dir_all(&dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(Spooled {
            path: dir.join(format!("{what}-{}-{n}", std::process::id())),
        })
    }
}

/// Writes the request body to a new spool file, at most `limits.max` bytes.
pub(crate) async fn spool(body: Body, data: &Path, limits: Limits) -> Result<Spooled, Response> {
    let file = Spooled::new(data, "upload").map_err(|e| ApiError::from(e).into_response())?;
    let mut out = tokio::io::BufWriter::with_capacity(
        256 * 1024,
        tokio::fs::File::create(&file.path)
            .await
            .map_err(|e| ApiError::from(e).into_response())?,
    );
    let mut stream = body.into_data_stream();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        // A missed deadline is answered 408 by `bound`, whatever is returned here.
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("failed to read the request body: {e}"),
            )
            .into_response()
        })?;
        n += chunk.len() as u64;
        if n > limits.max {
            return Err(too_large(limits.max, &format!("more than {n} bytes")).into_response());
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    Ok(file)
}
