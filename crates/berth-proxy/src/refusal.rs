//! The answers the proxy gives instead of forwarding: refusals by a named rule (403), objects that
//! do not exist for this scope (404, worded exactly like the daemon), malformed input (400) and
//! daemon trouble (502).
//!
//! Owns: the mapping from a typed [`Refusal`] to a Docker-style `{"message": ...}` response.
//! Must not: decide anything; the rules live in `policy`, the parsing in `parse`/`body`.

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::forward::BoxBody;

/// Why a request is answered by the proxy itself.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A policy rule refused the request.
    #[error("berth scoped socket: {rule}: {detail}")]
    Rule { rule: &'static str, detail: String },
    /// The object does not exist for this scope; `message` is the daemon's own wording.
    #[error("{message}")]
    NotFound { message: String },
    /// The request could not be parsed unambiguously.
    #[error("berth scoped socket: bad-request: {0}")]
    BadRequest(String),
    /// The daemon could not be reached or answered nonsense.
    #[error("berth scoped socket: daemon: {0}")]
    Daemon(String),
}

impl Refusal {
    pub fn rule(rule: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal::Rule {
            rule,
            detail: detail.into(),
        }
    }

    pub fn bad(detail: impl Into<String>) -> Refusal {
        Refusal::BadRequest(detail.into())
    }

    pub fn no_such_container(reference: &str) -> Refusal {
        Refusal::NotFound {
            message: format!("No such container: {reference}"),
        }
    }

    pub fn no_such_network(reference: &str) -> Refusal {
        Refusal::NotFound {
            message: format!("network {reference} not found"),
        }
    }

    pub fn no_such_volume(reference: &str) -> Refusal {
        Refusal::NotFound {
            message: format!("get {reference}: no such volume"),
        }
    }

    pub fn no_such_image(reference: &str) -> Refusal {
        Refusal::NotFound {
            message: format!("No such image: {reference}"),
        }
    }

    pub fn no_such_exec(reference: &str) -> Refusal {
        Refusal::NotFound {
            message: format!("No such exec instance: {reference}"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Rule { .. } => StatusCode::FORBIDDEN,
            Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Daemon(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The rule name, for logs and tests.
    pub fn rule_name(&self) -> &'static str {
        match self {
            Refusal::Rule { rule, .. } => rule,
            Refusal::NotFound { .. } => "not-found",
            Refusal::BadRequest(_) => "bad-request",
            Refusal::Daemon(_) => "daemon",
        }
    }

    pub fn into_response(self) -> Response<BoxBody> {
        json_message(self.status(), &self.to_string())
    }
}

/// A Docker-style error answer: `{"message": "..."}`.
pub fn json_message(status: StatusCode, message: &str) -> Response<BoxBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = Response::new(crate::forward::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert("x-berth-proxy", http::HeaderValue::from_static("refused"));
    resp
}
