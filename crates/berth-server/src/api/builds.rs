//! Build handlers: submit (tar, git or no source), list, show, cancel, re-run, event streams.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::auth::Caller;
use crate::db::now_ms;
use crate::request::{BuildRequest, SourceSpec, parse_docker_mode, parse_event};
use crate::{AppState, db, queue};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    /// The pipeline file's text.
    pipeline: String,
    /// Its name in messages; default `screwdriver.yaml`.
    #[serde(default)]
    file: Option<String>,
    /// A tar of the source tree, base64; decoded into a spool file while the JSON is parsed.
    #[serde(default)]
    source_tar: Option<SourceTar>,
    #[serde(default)]
    git: Option<GitSource>,
    #[serde(default)]
    jobs: Vec<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    docker_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitSource {
    url: String,
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// `POST /api/builds`: validates, stores and queues a build; answers 202 with its id.
/// The body is spooled to a file under `<data>/tmp/` first (limit and deadline: `body`), and
/// `source_tar` is decoded from there into the build's `source.tar` in pieces.
pub async fn submit(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    if !json {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Expected request with `Content-Type: application/json`",
        ));
    }
    let limits = crate::body::Limits {
        max: state.config.max_body,
        timeout: state.config.body_timeout,
    };
    let spooled = match crate::body::spool(body, &state.config.data, limits).await {
        Ok(s) => s,
        Err(answer) => return Ok(answer),
    };
    let data = state.config.data.clone();
    let (s, tar) = tokio::task::spawn_blocking(move || parse_submission(&spooled, &data))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let file = s.file.clone().unwrap_or_else(|| "screwdriver.yaml".into());
    let pipeline = match berth_pipeline::parse(&s.pipeline, &file) {
        Ok(p) => p,
        Err(diags) => {
            let text = diags.to_string();
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "message": format!("the pipeline is invalid:\n{text}"),
                    "errors": text.lines().filter(|l| l.contains(": error: ")).collect::<Vec<_>>(),
                })),
            )
                .into_response());
        }
    };
    let event = s.event.clone().unwrap_or_else(|| "commit".into());
    if parse_event(&event).is_none() {
        return Err(unprocessable(format!(
            "unknown event `{event}`: use commit, pr, tag or release"
        )));
    }
    if let Some(m) = &s.docker_mode
        && parse_docker_mode(m).is_none()
    {
        return Err(unprocessable(format!(
            "unknown docker_mode `{m}`: use none, socket, dind or scoped"
        )));
    }
    let source = match (&tar, &s.git) {
        (Some(_), Some(_)) => return Err(unprocessable("give either source_tar or git, not both")),
        (Some((_, bytes)), None) => SourceSpec::Tar { bytes: *bytes },
        (None, Some(g)) => {
            if g.url.trim().is_empty() {
                return Err(unprocessable("git.url is empty"));
            }
            SourceSpec::Git {
                url: g.url.clone(),
                git_ref: g.git_ref.clone().unwrap_or_else(|| "HEAD".into()),
            }
        }
        (None, None) => SourceSpec::None,
    };
    let request = BuildRequest {
        file,
        source,
        jobs: s.jobs.clone(),
        event,
        branch: s.branch.clone().unwrap_or_else(|| "main".into()),
        tag: s.tag.clone(),
        parameters: s.parameters.clone(),
        secret_names: s.secrets.keys().cloned().collect(),
        docker_mode: s.docker_mode.clone(),
    };
    berth_pipeline::Scheduler::new(&pipeline, &request.start())
        .map_err(|e| unprocessable(e.to_string()))?;
    let id = enqueue(
        &state,
        &s.pipeline,
        &request,
        &pipeline,
        tar.as_ref().map(|(t, _)| Upload::Move(t)),
        s.secrets,
        &caller.0,
        None,
    )
    .await?;
    accepted(&state, id).await
}

enum Upload<'a> {
    /// A decoded upload, renamed into the build's folder.
    Move(&'a crate::body::Spooled),
    CopyOf(std::path::PathBuf),
}

thread_local! {
    /// The data directory a [`SourceTar`] being deserialized on this thread spools into.
    static SPOOL_DATA: std::cell::RefCell<Option<std::path::PathBuf>> =
        const { std::cell::RefCell::new(None) };
}

/// `source_tar`, decoded from the JSON string as serde_json hands it over (borrowed from its
/// scratch buffer) straight into a spool file: the base64 text is never copied into a String.
#[derive(Debug)]
struct SourceTar(Result<(crate::body::Spooled, u64), String>);

impl<'de> Deserialize<'de> for SourceTar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SourceTar, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SourceTar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SourceTar, E> {
                let data = SPOOL_DATA
                    .with_borrow(Clone::clone)
                    .ok_or_else(|| E::custom("no spool directory"))?;
                Ok(SourceTar(decode_to_spool(v, &data)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

fn decode_to_spool(
    b64: &str,
    data: &std::path::Path,
) -> Result<(crate::body::Spooled, u64), String> {
    let io = |e: std::io::Error| format!("failed to store the upload: {e}");
    let tar = crate::body::Spooled::new(data, "source").map_err(io)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tar.path).map_err(io)?);
    let mut decoder = base64::read::DecoderReader::new(
        b64.trim().as_bytes(),
        &base64::engine::general_purpose::STANDARD,
    );
    let bytes = match std::io::copy(&mut decoder, &mut out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(format!("source_tar is not base64: {e}"));
        }
        Err(e) => return Err(io(e)),
    };
    std::io::Write::flush(&mut out).map_err(io)?;
    Ok((tar, bytes))
}

/// Parses a spooled submission; its `source_tar` lands in another spool file (with its size).
fn parse_submission(
    body: &crate::body::Spooled,
    data: &std::path::Path,
) -> Result<(Submit, Option<(crate::body::Spooled, u64)>), ApiError> {
    let file = std::fs::File::open(&body.path)?;
    SPOOL_DATA.set(Some(data.to_path_buf()));
    let parsed = serde_json::from_reader::<_, Submit>(std::io::BufReader::new(file));
    SPOOL_DATA.set(None);
    let mut s = parsed.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })?;
    match s.source_tar.take() {
        None => Ok((s, None)),
        Some(SourceTar(Ok(tar))) => Ok((s, Some(tar))),
        Some(SourceTar(Err(e))) => Err(unprocessable(e)),
    }
}

/// Stores a build (`submitting` until its source is on disk), then queues it.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per kind of submission"
)]
async fn enqueue(
    state: &AppState,
    text: &str,
    request: &BuildRequest,
    pipeline: &berth_pipeline::Pipeline,
    upload: Option<Upload<'_>>,
    secrets: BTreeMap<String, String>,
    caller: &str,
    rerun_of: Option<i64>,
) -> Result<i64, ApiError> {
    let graph: Vec<_> = pipeline
        .jobs
        .values()
        .map(|j| json!({"name": j.name, "image": j.image, "requires": requires(j)}))
        .collect();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO builds (status, pipeline, request, graph, submitted_by, rerun_of, created_at) \
         VALUES ('submitting', ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(text)
    .bind(serde_json::to_string(request).unwrap_or_default())
    .bind(serde_json::Value::from(graph).to_string())
    .bind(caller)
    .bind(rerun_of)
    .bind(now_ms())
    .fetch_one(&state.pool)
    .await?;
    let dir = state.build_dir(id);
    std::fs::create_dir_all(&dir)?;
    match upload {
        Some(Upload::Move(spooled)) => {
            tokio::fs::rename(&spooled.path, dir.join("source.tar")).await?
        }
        Some(Upload::CopyOf(from)) => {
            tokio::fs::copy(from, dir.join("source.tar")).await?;
        }
        None => {}
    }
    state.queue.set_secrets(id, secrets);
    state.log.set_status(id, "queued", None).await?;
    state.queue.wake();
    Ok(id)
}

async fn accepted(state: &AppState, id: i64) -> Result<Response, ApiError> {
    let build = db::get_build(&state.pool, id).await?;
    let (status, position) = build
        .map(|b| (b.status, b.position))
        .unwrap_or(("queued".into(), None));
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, format!("/api/builds/{id}"))],
        Json(json!({"id": id, "status": status, "position": position})),
    )
        .into_response())
}

fn requires(job: &berth_pipeline::Job) -> Vec<String> {
    use berth_pipeline::{Event, Requirement};
    job.requires
        .iter()
        .map(|r| match r {
            Requirement::Job { name, any } => format!("{}{name}", if *any { "~" } else { "" }),
            Requirement::Trigger { event, .. } => match event {
                Event::Commit => "~commit",
                Event::Pr => "~pr",
                Event::Tag => "~tag",
                Event::Release => "~release",
            }
            .to_string(),
            Requirement::Remote { pipeline, job, any } => {
                format!("{}sd@{pipeline}:{job}", if *any { "~" } else { "" })
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /api/builds?status=&limit=&offset=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let offset = q.offset.unwrap_or(0).max(0);
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let (builds, total) = db::list_builds(&state.pool, status, limit, offset).await?;
    Ok(Json(
        json!({"builds": builds, "total": total, "limit": limit, "offset": offset}),
    ))
}

/// `GET /api/builds/{id}`: the build with its jobs and steps.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<db::BuildRow>, ApiError> {
    db::get_build(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no build {id}")))
}

/// `POST /api/builds/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    if db::build_status(&state.pool, id).await?.is_none() {
        return Err(ApiError::not_found(format!("no build {id}")));
    }
    let (code, what) = match queue::cancel(&state, id).await? {
        queue::Cancelled::Dequeued => (StatusCode::OK, "cancelled"),
        queue::Cancelled::Stopping => (StatusCode::ACCEPTED, "cancelling"),
        queue::Cancelled::AlreadyFinished => (StatusCode::CONFLICT, "already finished"),
    };
    let status = db::build_status(&state.pool, id).await?;
    Ok((
        code,
        Json(json!({"id": id, "result": what, "status": status})),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

/// `POST /api/builds/{id}/rerun`: a new build with the same pipeline, source and options
/// (secret values are not kept: pass them again in the body).
pub async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Option<Json<Rerun>>,
) -> Result<Response, ApiError> {
    let (text, request) = db::build_input(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no build {id}")))?;
    let mut request: BuildRequest = serde_json::from_value(request).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("stored request unreadable: {e}"),
        )
    })?;
    let pipeline = berth_pipeline::parse(&text, &request.file)
        .map_err(|d| unprocessable(format!("the pipeline is invalid:\n{d}")))?;
    let secrets = body.map(|Json(b)| b.secrets).unwrap_or_default();
    request.secret_names = secrets.keys().cloned().collect();
    let upload = matches!(request.source, SourceSpec::Tar { .. })
        .then(|| Upload::CopyOf(state.build_dir(id).join("source.tar")));
    let new = enqueue(
        &state,
        &text,
        &request,
        &pipeline,
        upload,
        secrets,
        &caller.0,
        Some(id),
    )
    .await?;
    accepted(&state, new).await
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Same as `Last-Event-ID`, for clients that cannot set headers; `now` skips history.
    after: Option<String>,
}

impl EventsQuery {
    async fn after(&self, state: &AppState) -> Result<Option<i64>, ApiError> {
        match self.after.as_deref() {
            None => Ok(None),
            Some("now") => Ok(Some(state.log.latest_id().await?)),
            Some(n) => n.parse().map(Some).map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "`after` is an event id or `now`")
            }),
        }
    }
}

/// `GET /api/builds/{id}/events`: SSE of one build.
pub async fn build_events(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    if db::build_status(&state.pool, id).await?.is_none() {
        return Err(ApiError::not_found(format!("no build {id}")));
    }
    let after = crate::sse::start_after(&headers, q.after(&state).await?);
    Ok(crate::sse::stream(state.log.clone(), Some(id), after).into_response())
}

/// `GET /api/events`: SSE of every build.
pub async fn all_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let after = crate::sse::start_after(&headers, q.after(&state).await?);
    Ok(crate::sse::stream(state.log.clone(), None, after).into_response())
}
