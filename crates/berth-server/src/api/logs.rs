//! `GET /api/builds/{id}/jobs/{job}/log[?follow=true]`: the job's log file (secrets already
//! masked by the runner), streamed; with `follow` the stream goes on until the job ends.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ApiError;
use crate::{AppState, db};

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// Job states after which its log grows no more.
const JOB_FINAL: [&str; 8] = [
    "success",
    "failure",
    "timeout",
    "oom-killed",
    "cancelled",
    "error",
    "skipped",
    "interrupted",
];

pub async fn log(
    State(state): State<AppState>,
    Path((id, job)): Path<(i64, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let Some(build) = db::get_build(&state.pool, id).await? else {
        return Err(ApiError::not_found(format!("no build {id}")));
    };
    let in_graph = build
        .graph
        .as_ref()
        .and_then(|g| g.as_array())
        .is_some_and(|jobs| jobs.iter().any(|j| j["name"] == job.as_str()));
    if !in_graph {
        return Err(ApiError::not_found(format!(
            "build {id} has no job `{job}`"
        )));
    }
    let path = state
        .build_dir(id)
        .join("logs")
        .join(crate::executor::log_file_name(&job));
    let follow = q.follow;
    let stream = futures_util::stream::unfold(
        (state, path, 0u64, false),
        move |(state, path, mut pos, done)| {
            let job = job.clone();
            async move {
                if done {
                    return None;
                }
                let mut live = state.log.subscribe();
                loop {
                    // Decide "finished" before reading, so the last read sees everything written.
                    let finished = !follow || is_finished(&state, id, &job).await;
                    match read_from(&path, pos).await {
                        Ok(chunk) if !chunk.is_empty() => {
                            pos += chunk.len() as u64;
                            return Some((
                                Ok::<Bytes, std::io::Error>(chunk),
                                (state, path, pos, false),
                            ));
                        }
                        Ok(_) if finished => return None,
                        Ok(_) => {}
                        Err(e) => return Some((Err(e), (state, path, pos, true))),
                    }
                    // Wake on any new event (or poll now and then), then look again.
                    let _ = tokio::time::timeout(Duration::from_millis(500), live.recv()).await;
                }
            }
        },
    );
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn is_finished(state: &AppState, id: i64, job: &str) -> bool {
    let build = db::build_status(&state.pool, id).await.ok().flatten();
    if build.as_deref().is_none_or(db::is_final) {
        return true;
    }
    db::job_status(&state.pool, id, job)
        .await
        .ok()
        .flatten()
        .is_some_and(|s| JOB_FINAL.contains(&s.as_str()))
}

/// Up to 64 KiB of `path` from `pos`; nothing if the file does not exist yet.
async fn read_from(path: &std::path::Path, pos: u64) -> std::io::Result<Bytes> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Bytes::new()),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(pos)).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = file.read(&mut buf).await?;
    buf.truncate(n);
    Ok(Bytes::from(buf))
}
