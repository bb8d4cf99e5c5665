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
        let f = Failure::infra(e.to_string().trim_end().to_string());
        match e {
            berth_engine::EngineError::Unreachable { address, reason } => {
                f.with_hint(unreachable_hint(&address, &reason))
            }
            _ => f,
        }
    }
}

/// What to fix when the daemon cannot be reached, from what went wrong.
fn unreachable_hint(address: &berth_engine::DaemonAddress, reason: &str) -> String {
    let r = reason.to_ascii_lowercase();
    if r.contains("http request to an https server") {
        return "the daemon requires TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the \
                directory with ca.pem, cert.pem and key.pem"
            .to_string();
    }
    if let Some(tls) = &address.tls
        && (r.contains("certificate") || r.contains("tls") || r.contains("pem"))
    {
        let dir = tls.ca.parent().unwrap_or(std::path::Path::new("."));
        return format!(
            "check the TLS files in {} (ca.pem, cert.pem, key.pem; DOCKER_CERT_PATH), or unset \
             DOCKER_TLS_VERIFY if the daemon does not use TLS",
            dir.display()
        );
    }
    "check that dockerd is running (`docker info`), or point --docker-host / DOCKER_HOST at it"
        .to_string()
}
