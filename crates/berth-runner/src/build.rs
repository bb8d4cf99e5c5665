//! A build: its id, its output directory, and its outcome.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum JobResult {
    Success,
    /// A step exited non-zero.
    Failure {
        step: String,
        exit_code: i64,
    },
    /// The job ran past its timeout and was stopped.
    TimedOut {
        step: Option<String>,
    },
    /// The kernel killed a process of the job for exceeding its memory limit.
    OomKilled {
        step: String,
    },
    /// The run was interrupted.
    Cancelled,
    /// berth could not do its work (daemon, image, workspace).
    Error {
        message: String,
    },
}

impl JobResult {
    pub fn is_success(&self) -> bool {
        matches!(self, JobResult::Success)
    }
    /// Short word for tables.
    pub fn label(&self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failure { .. } => "failure",
            JobResult::TimedOut { .. } => "timeout",
            JobResult::OomKilled { .. } => "oom-killed",
            JobResult::Cancelled => "cancelled",
            JobResult::Error { .. } => "error",
        }
    }
}

impl std::fmt::Display for JobResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobResult::Success => write!(f, "success"),
            JobResult::Failure { step, exit_code } => {
                write!(f, "failed: step `{step}` exited {exit_code}")
            }
            JobResult::TimedOut { step: Some(s) } => write!(f, "timed out in step `{s}`"),
            JobResult::TimedOut { step: None } => write!(f, "timed out"),
            JobResult::OomKilled { step } => {
                write!(
                    f,
                    "out of memory: step `{step}` was killed by the kernel (raise screwdriver.cd/ram)"
                )
            }
            JobResult::Cancelled => write!(f, "cancelled"),
            JobResult::Error { message } => write!(f, "error: {message}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub job: String,
    pub result: JobResult,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    pub build_id: String,
    pub output_dir: PathBuf,
    pub jobs: Vec<JobSummary>,
    pub skipped: Vec<(String, String)>,
    pub cancelled: bool,
}

impl BuildSummary {
    /// 0 all passed; 1 a job failed or timed out; 3 berth could not do its work; 130 interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.cancelled {
            130
        } else if self
            .jobs
            .iter()
            .any(|j| matches!(j.result, JobResult::Error { .. }))
        {
            3
        } else if self.jobs.iter().all(|j| j.result.is_success()) && self.skipped.is_empty() {
            0
        } else {
            1
        }
    }
}

/// Creates `<output>/<n>` with the next free number, safe against concurrent runs.
pub(crate) fn allocate_build_dir(output: &Path) -> std::io::Result<(String, PathBuf)> {
    std::fs::create_dir_all(output)?;
    loop {
        let next = std::fs::read_dir(output)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let dir = output.join(next.to_string());
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok((next.to_string(), dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Creates `<output>/<id>` for a build id chosen by the caller (e.g. the server's own ids).
pub(crate) fn build_dir_named(output: &Path, id: &str) -> std::io::Result<(String, PathBuf)> {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(std::io::Error::other(format!(
            "build id `{id}` must be 1-64 letters, digits, `-` or `_`"
        )));
    }
    let dir = output.join(id);
    std::fs::create_dir_all(&dir)?;
    Ok((id.to_string(), dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_count_up() {
        let dir = std::env::temp_dir().join(format!("berth-build-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(allocate_build_dir(&dir).unwrap().0, "1");
        assert_eq!(allocate_build_dir(&dir).unwrap().0, "2");
        assert_eq!(build_dir_named(&dir, "srv-7").unwrap().0, "srv-7");
        assert!(build_dir_named(&dir, "../x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
