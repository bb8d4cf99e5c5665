//! Runs one build: prepares its source, drives [`berth_runner::run`], and turns each runner
//! event into committed state, a log append and an announced event — in that order, so that
//! whatever a watcher was told is already on disk. Whatever way the build ends, everything
//! labelled with its owner is reaped before its final status is recorded.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use berth_engine::{Owner, labels};
use berth_runner::{BuildSummary, JobEvent, RunEvent, RunOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::events::{Update, is_recorded};
use crate::request::{BuildRequest, SourceSpec, parse_docker_mode};
use crate::source::{self, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the build's input is missing from the database")]
    Missing,
    #[error("the stored request is unreadable: {0}")]
    Request(serde_json::Error),
    #[error("the pipeline no longer parses:\n{0}")]
    Pipeline(berth_pipeline::Diagnostics),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Run(#[from] berth_runner::RunError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// The build's final status from the runner's summary.
pub fn final_status(summary: &BuildSummary) -> &'static str {
    match summary.exit_code() {
        _ if summary.cancelled => "cancelled",
        0 => "success",
        3 => "error",
        _ => "failure",
    }
}

/// How long a build that lost the daemon waits for it, to remove what it left, before its end
/// is recorded (then `berth gc` or the next start's recovery removes it).
const DAEMON_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run_build(state: AppState, id: i64, owner: Owner, cancel: CancellationToken) {
    let watcher = watch_daemon(&state, id, &owner);
    let result = execute(&state, id, &owner, &cancel).await;
    let (status, message) = match &result {
        _ if cancel.is_cancelled() && state.queue.is_stopping() => (
            "interrupted",
            Some("the server was stopped while this build ran".to_string()),
        ),
        Ok(summary) => (final_status(summary), None),
        Err(_) if cancel.is_cancelled() => ("cancelled", None),
        Err(e) => ("error", Some(e.to_string())),
    };
    // A safety net under the runner's own cleanup: nothing of this build may outlive it. After
    // the daemon went away mid-build (state `error`), the runner's removals failed; wait
    // (bounded) for it to come back and remove what the build left then.
    let wait = if status == "error" {
        DAEMON_WAIT
    } else {
        std::time::Duration::ZERO
    };
    let waiting = |e: &berth_engine::EngineError| {
        tracing::warn!(
            "build {id}: {e}; waiting up to {} s for the daemon to remove what the build left",
            DAEMON_WAIT.as_secs()
        )
    };
    match berth_engine::reap_when_reachable(
        state.engine.as_ref(),
        labels::OWNER,
        owner.id(),
        wait,
        waiting,
    )
    .await
    {
        Ok(report) if !report.is_clean() => {
            tracing::warn!(
                "build {id}: {} object(s) could not be removed",
                report.failed.len()
            )
        }
        Err(e) => tracing::warn!("build {id}: failed to reap its objects: {e}"),
        Ok(_) => {}
    }
    // Let the daemon's last events (die, destroy) arrive, then stop watching.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    watcher.abort();
    if let Err(e) = state.log.set_status(id, status, message.as_deref()).await {
        tracing::error!("build {id}: failed to record its end: {e}");
    }
    drop(owner);
    state.queue.finished(id);
}

/// Records the daemon's events for everything labelled with the build's owner.
fn watch_daemon(state: &AppState, id: i64, owner: &Owner) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    let mut events = state
        .engine
        .events(&format!("{}={}", labels::OWNER, owner.id()));
    let log = state.log.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => {
                    if let Err(err) = log.record(id, Update::Docker(&e)).await {
                        tracing::error!("build {id}: failed to record a daemon event: {err}");
                    }
                }
                Err(e) => {
                    tracing::warn!("build {id}: daemon event stream ended: {e}");
                    return;
                }
            }
        }
    })
}

async fn execute(
    state: &AppState,
    id: i64,
    owner: &Owner,
    cancel: &CancellationToken,
) -> Result<BuildSummary, ExecError> {
    let (text, request) = crate::db::build_input(&state.pool, id)
        .await?
        .ok_or(ExecError::Missing)?;
    let request: BuildRequest = serde_json::from_value(request).map_err(ExecError::Request)?;
    let pipeline = berth_pipeline::parse(&text, &request.file).map_err(ExecError::Pipeline)?;
    let dir = state.build_dir(id);
    let src = dir.join("src");
    match &request.source {
        SourceSpec::None => std::fs::create_dir_all(&src).map_err(SourceError::from)?,
        SourceSpec::Tar { .. } => {
            let (tar, dest) = (dir.join("source.tar"), src.clone());
            tokio::task::spawn_blocking(move || source::unpack(&tar, &dest))
                .await
                .map_err(|e| SourceError::Io(std::io::Error::other(e)))??;
        }
        SourceSpec::Git { url, git_ref } => {
            let clone = source::Clone {
                engine: state.engine.as_ref(),
                owner,
                build: id,
                image: &state.config.git_image,
                url,
                git_ref,
            };
            source::clone(clone, &src, cancel).await?;
        }
    }
    source::isolate_from_enclosing_repo(&src).map_err(SourceError::from)?;

    let mut opts = RunOptions::new(src, dir.join("out"), request.start());
    opts.params = request.parameters.clone();
    opts.secrets = state.queue.take_secrets(id);
    opts.pipeline_id = "server".to_string();
    // Jobs see the server's build id (SD_BUILD_ID) and their objects carry it (io.berth.build).
    opts.build_id = Some(id.to_string());
    opts.default_docker_mode = request
        .docker_mode
        .as_deref()
        .and_then(parse_docker_mode)
        .unwrap_or(state.config.default_docker_mode);
    opts.scoped_policy = state.config.scoped_policy.clone();
    if let Some(n) = state.config.parallel {
        opts.parallel = n.max(1);
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(SourceError::from)?;

    let (tx, mut rx) = mpsc::channel(256);
    let run = berth_runner::run(
        state.engine.clone(),
        owner,
        &pipeline,
        opts,
        tx,
        cancel.clone(),
    );
    let consume = async {
        let mut files = LogFiles::new(&logs);
        while let Some(event) = rx.recv().await {
            files.append(&event);
            if is_recorded(&event)
                && let Err(e) = state.log.record(id, Update::Run(&event)).await
            {
                tracing::error!("build {id}: failed to record an event: {e}");
            }
        }
    };
    let (result, ()) = tokio::join!(run, consume);
    Ok(result?)
}

/// The build's job logs, appended (unbuffered) as output arrives, so that a crash loses nothing
/// that was announced.
struct LogFiles<'a> {
    dir: &'a Path,
    open: HashMap<String, std::fs::File>,
}

impl<'a> LogFiles<'a> {
    fn new(dir: &'a Path) -> LogFiles<'a> {
        LogFiles {
            dir,
            open: HashMap::new(),
        }
    }

    fn append(&mut self, event: &RunEvent) {
        let RunEvent::Job { job, detail } = event else {
            return;
        };
        let text: std::borrow::Cow<'_, [u8]> = match detail {
            JobEvent::Output { data, .. } => data[..].into(),
            JobEvent::StepStarted { step, .. } => {
                format!("\x1b[1;36m$ {step}\x1b[0m\n").into_bytes().into()
            }
            JobEvent::StepFinished {
                step, exit_code, ..
            } if *exit_code != 0 => format!("\x1b[1;31m! {step} exited {exit_code}\x1b[0m\n")
                .into_bytes()
                .into(),
            JobEvent::Finished { result, .. } => {
                format!("\x1b[1m{result}\x1b[0m\n").into_bytes().into()
            }
            _ => return,
        };
        let path = self.dir.join(log_file_name(job));
        let file = match self.open.entry(job.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                Ok(f) => v.insert(f),
                Err(e) => {
                    tracing::error!("failed to open log {}: {e}", path.display());
                    return;
                }
            },
        };
        if let Err(e) = file.write_all(&text) {
            tracing::error!("failed to append to log {}: {e}", path.display());
        }
    }
}

/// Job names are validated by the pipeline parser, but a log path must never escape its folder.
pub fn log_file_name(job: &str) -> String {
    let safe: String = job
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c == '\0' {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{}.log", safe.trim_start_matches('.'))
}
