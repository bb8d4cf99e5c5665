//! The web UI: one HTML page, a stylesheet and a script, embedded in the binary (no build step,
//! nothing fetched from the internet). The page routes on the client side (`/` and
//! `/builds/{id}`) and talks to the same JSON API and SSE streams as any other client.

use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/builds/{id}", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

async fn script() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE,
    )
        .into_response()
}
