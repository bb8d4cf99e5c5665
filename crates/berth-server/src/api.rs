//! The HTTP surface: the route table (also the source of truth the OpenAPI test checks), the
//! build handlers, and the "rescue" that turns errors into JSON `{"message": ...}` answers.

mod artifacts;
mod builds;
mod logs;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use tower_http::trace::TraceLayer;

use crate::AppState;

/// An error answer: a status and a message a person can act on.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("database error: {e}"),
        )
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("i/o error: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

/// The authenticated API: (path, methods, handler). `openapi.json` must describe exactly these.
pub(crate) fn api_routes() -> Vec<(
    &'static str,
    &'static [&'static str],
    MethodRouter<AppState>,
)> {
    vec![
        (
            "/api/builds",
            &["get", "post"],
            get(builds::list).post(builds::submit),
        ),
        ("/api/builds/{id}", &["get"], get(builds::show)),
        ("/api/builds/{id}/cancel", &["post"], post(builds::cancel)),
        ("/api/builds/{id}/rerun", &["post"], post(builds::rerun)),
        ("/api/builds/{id}/jobs/{job}/log", &["get"], get(logs::log)),
        (
            "/api/builds/{id}/artifacts/{job}",
            &["get"],
            get(artifacts::artifacts),
        ),
        (
            "/api/builds/{id}/events",
            &["get"],
            get(builds::build_events),
        ),
        ("/api/events", &["get"], get(builds::all_events)),
    ]
}

/// Routes without auth: health, metrics, the OpenAPI document and the UI's static files.
pub(crate) fn open_routes() -> Vec<(
    &'static str,
    &'static [&'static str],
    MethodRouter<AppState>,
)> {
    vec![
        ("/healthz", &["get"], get(healthz)),
        ("/metrics", &["get"], get(metrics)),
        ("/api/openapi.json", &["get"], get(crate::openapi::document)),
    ]
}

pub(crate) fn router(state: AppState) -> Router {
    let limits = crate::body::Limits {
        max: state.config.max_body,
        timeout: state.config.body_timeout,
    };
    let mut api = Router::new();
    for (path, _, handler) in api_routes() {
        api = api.route(path, handler);
    }
    let api = api.layer(axum::middleware::from_fn_with_state(
        state.pool.clone(),
        crate::auth::require_token,
    ));
    let mut open = Router::new();
    for (path, _, handler) in open_routes() {
        open = open.route(path, handler);
    }
    open.merge(api)
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::not_found("no such page or API route") })
        // Uploaded source trees arrive base64-encoded in the JSON body; `submit` spools that
        // to a file itself, other extractors buffer at most this much.
        .layer(axum::extract::DefaultBodyLimit::max(limits.max as usize))
        .layer(axum::middleware::from_fn_with_state(
            limits,
            crate::body::bound,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
    Ok("ok\n")
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&state).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
