//! The OpenAPI document, served at `/api/openapi.json`. It is written by hand next to the route
//! table; a test checks that both name exactly the same paths and methods.

use axum::response::{IntoResponse, Response};

pub const DOCUMENT: &str = include_str!("../assets/openapi.json");

pub async fn document() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn openapi_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid json");
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("operations")
                    .keys()
                    .map(move |m| (path.clone(), m.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = crate::api::api_routes()
            .into_iter()
            .chain(crate::api::open_routes())
            .flat_map(|(path, methods, _)| {
                methods
                    .iter()
                    .map(move |m| (path.to_string(), m.to_string()))
            })
            .collect();
        assert_eq!(
            documented, routed,
            "assets/openapi.json and api.rs disagree"
        );
    }
}
