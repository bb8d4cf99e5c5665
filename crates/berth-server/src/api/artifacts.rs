//! `GET /api/builds/{id}/artifacts/{job}`: the job's artifacts (what it wrote under
//! `$SD_ARTIFACTS_DIR`) as a tar stream, built on a blocking thread into a bounded channel so a
//! large artifact tree never sits in memory.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiError;
use crate::AppState;

/// Adapts a bounded channel to `std::io::Write` for the tar builder.
struct ChannelWriter(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn artifacts(
    State(state): State<AppState>,
    Path((id, job)): Path<(i64, String)>,
) -> Result<Response, ApiError> {
    if crate::db::build_status(&state.pool, id).await?.is_none() {
        return Err(ApiError::not_found(format!("no build {id}")));
    }
    if job.contains('/') || job.starts_with('.') {
        return Err(ApiError::not_found(format!(
            "build {id} has no job `{job}`"
        )));
    }
    // One runner output directory per server build: `out/<n>/<job>/artifacts`.
    let out = state.build_dir(id).join("out");
    let dir = std::fs::read_dir(&out)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(&job).join("artifacts"))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            ApiError::not_found(format!("build {id} has no artifacts for job `{job}`"))
        })?;
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let err = tx.clone();
        let mut builder = tar::Builder::new(ChannelWriter(tx));
        builder.follow_symlinks(false);
        let result = builder
            .append_dir_all(".", &dir)
            .and_then(|()| builder.finish());
        if let Err(e) = result {
            let _ = err.blocking_send(Err(e));
        }
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/x-tar".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"build-{id}-{job}-artifacts.tar\""),
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}
