//! Exit codes and the failures that map to them.

/// berth's documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every job passed (or `validate`/`gc` succeeded).
    Success = 0,
    /// A job failed, timed out, or was OOM-killed; or downstream jobs were skipped.
    JobFailed = 1,
    /// Usage or pipeline-file error: fix the command line or the file.
    Usage = 2,
    /// berth could not do its work: daemon unreachable, image missing, I/O.
    Infrastructure = 3,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl ExitCode {
    pub fn from_code(code: i32) -> ExitCode {
        match code {
            0 => ExitCode::Success,
            1 => ExitCode::JobFailed,
            2 => ExitCode::Usage,
            130 => ExitCode::Interrupted,
            _ => ExitCode::Infrastructure,
        }
    }
}

/// A failure of berth itself (not of a job), rendered as `berth: <message>` plus causes.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: ExitCode::Usage,
            message: message.into(),
            hint: None,
        }
    }
    pub fn infra(message: impl Into<String>) -> Failure {
        Failure {
            code: ExitCode::Infrastructure,
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Pipeline diagnostics carry their own `file:line:col:` prefix.
        if self.message.contains(": error:") || self.message.contains(": warning:") {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "berth: {}", self.message)?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl From<berth_engine::EngineError> for Failure {
    fn from(e: berth_engine::EngineError) -> Failure {
        let f = Failure::infra(e.to_string());
        match e {
            berth_engine::EngineError::Unreachable { .. } => f.with_hint(
                "check that dockerd is running (`docker info`), or point --docker-host / DOCKER_HOST at it",
            ),
            _ => f,
        }
    }
}
