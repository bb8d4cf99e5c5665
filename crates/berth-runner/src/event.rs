//! What a run reports while it goes. Renderers (terminal, JSON, server) consume these.

use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;

use crate::{BuildSummary, JobResult};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    BuildStarted {
        build_id: String,
        /// The berth process instance (`io.berth.owner` label of everything this run creates).
        owner: String,
        output_dir: PathBuf,
    },
    Job {
        job: String,
        #[serde(flatten)]
        detail: JobEvent,
    },
    /// A job that will not run, and why.
    JobSkipped {
        job: String,
        reason: String,
    },
    /// Something the user should know that is not an error of a job.
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        job: Option<String>,
        message: String,
    },
    BuildFinished {
        summary: BuildSummary,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// The image is being pulled.
    Pulling {
        image: String,
    },
    /// Pull progress of one layer (not included in JSON output).
    #[serde(skip)]
    PullProgress {
        layer: String,
        current: Option<u64>,
        total: Option<u64>,
    },
    /// The job's container is up and its workspace is ready.
    Started {
        image: String,
        container: String,
    },
    StepStarted {
        step: String,
        index: usize,
    },
    /// Step output, secrets already masked. Raw bytes: may be binary, may split lines.
    Output {
        step: String,
        #[serde(serialize_with = "lossy")]
        data: Bytes,
    },
    StepFinished {
        step: String,
        exit_code: i64,
        duration_ms: u64,
    },
    /// A step that did not run because an earlier one failed.
    StepSkipped {
        step: String,
    },
    Finished {
        result: JobResult,
        duration_ms: u64,
    },
}

fn lossy<S: serde::Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}
