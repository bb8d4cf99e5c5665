//! Engine errors, classified so callers can tell "the daemon is gone" from "the request failed".

use crate::DaemonAddress;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The daemon could not be reached at all.
    #[error("cannot reach the Docker daemon at {address}: {reason}")]
    Unreachable {
        address: DaemonAddress,
        reason: String,
    },
    /// The object does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The daemon answered with an error.
    #[error("the Docker daemon refused: {message} (HTTP {status})")]
    Api { status: u16, message: String },
    /// An image could not be pulled.
    #[error("failed to pull image {image}: {message}")]
    Pull { image: String, message: String },
    /// A request took longer than its bound.
    #[error("the Docker daemon did not answer within {seconds} s ({what})")]
    Timeout { what: String, seconds: u64 },
    /// Anything else on the wire (broken stream, bad response).
    #[error("Docker API error: {0}")]
    Transport(String),
}

impl EngineError {
    /// True when the failure says the daemon is unreachable or the connection broke
    /// (an infrastructure failure, not a failure of the job).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            EngineError::Unreachable { .. }
                | EngineError::Transport(_)
                | EngineError::Timeout { .. }
        )
    }

    pub(crate) fn from_bollard(err: bollard::errors::Error, what: impl FnOnce() -> String) -> Self {
        use bollard::errors::Error as B;
        match err {
            B::DockerResponseServerError {
                status_code: 404, ..
            } => EngineError::NotFound { what: what() },
            B::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Api {
                status: status_code,
                message: message.trim().to_string(),
            },
            B::RequestTimeoutError => EngineError::Timeout {
                what: what(),
                seconds: 120,
            },
            other => {
                let text = other.to_string();
                // hyper's "client error (Connect)" / "connection closed" say nothing to a user:
                // the daemon went away (stopped, crashed or restarting) under this request.
                if text.contains("(Connect)")
                    || text.contains("connection closed")
                    || text.contains("connection reset")
                    || text.contains("Broken pipe")
                {
                    EngineError::Transport(format!(
                        "lost the connection to the Docker daemon (stopped or restarting?): {text}"
                    ))
                } else {
                    EngineError::Transport(text)
                }
            }
        }
    }
}
