//! berth's executor: runs a validated pipeline's jobs in containers.
//!
//! Owns: the build (id, output directory), the dispatcher that follows the job graph, each job's
//! lifecycle (setup, steps, timeout, cancellation, artifacts, teardown), secret masking and the
//! job log files. Talks to Docker only through [`berth_engine::Engine`]; reports progress as
//! [`RunEvent`]s. Must not: know about terminals, HTTP or how events are rendered.

mod build;
mod dispatch;
mod event;
mod job;
mod mask;
mod options;
mod secrets;
mod source;

/// The rules of `docker: scoped` jobs' endpoints (`--scoped-policy`).
pub use berth_proxy::Policy as ScopedPolicy;
pub use build::{BuildSummary, JobResult, JobSummary};
pub use dispatch::run;
pub use event::{JobEvent, RunEvent};
pub use mask::Masker;
pub use options::{DefaultDockerMode, PullPolicy, RunOptions};
pub use secrets::{SecretError, parse_dotenv, resolve_secrets};

/// Errors that stop a run before any job starts (exit 2 for the user's mistakes, 3 otherwise).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Select(#[from] berth_pipeline::SelectError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("failed to create the build output directory {path}: {source}")]
    Output {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read the source tree {path}: {source}")]
    Source {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl RunError {
    /// Whether the user can fix this by changing their input (exit 2) rather than the machine.
    pub fn is_usage(&self) -> bool {
        matches!(self, RunError::Select(_) | RunError::Secret(_))
    }
}
