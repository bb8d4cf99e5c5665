//! One job's life: image → workspace and container → steps (with timeout) → artifacts →
//! cleanup. Each phase lives in its own file; this one sequences them and guarantees cleanup.
//!
//! **Invariant: whatever happens (failure, timeout, cancellation, daemon errors), everything
//! created for the job is removed before `run_job` returns**, and cleanup errors are reported as
//! warnings alongside the job's result, never instead of it.

mod artifacts;
mod cleanup;
mod docker_mode;
mod image;
mod log;
mod network;
mod probe;
mod services;
mod setup;
mod steps;
mod stop;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use berth_engine::{Engine, EngineError, Labels};
use berth_pipeline::{Job, Parameter};
use indexmap::IndexMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) use image::ImageCache;

use crate::{JobEvent, JobResult, JobSummary, RunEvent, RunOptions};

/// What every job of a build shares.
pub(crate) struct Context {
    pub engine: Arc<dyn Engine>,
    pub owner_labels: Labels,
    pub owner_id: String,
    pub build_id: String,
    pub build_dir: PathBuf,
    pub parameters: IndexMap<String, Parameter>,
    /// Values of every secret of the run (all are masked in every job's output).
    pub secrets: BTreeMap<String, String>,
    /// Source files to copy, relative to `opts.source_dir`.
    pub files: Vec<PathBuf>,
    pub images: ImageCache,
    /// Set once the daemon has refused a privileged container: later dind jobs go straight to
    /// the explicit capability set.
    pub privileged_refused: std::sync::atomic::AtomicBool,
    pub events: mpsc::Sender<RunEvent>,
    pub cancel: CancellationToken,
    pub opts: RunOptions,
}

impl Context {
    pub(crate) async fn emit(&self, job: &str, event: JobEvent) {
        // A closed receiver means nobody is listening any more; the job goes on regardless.
        let _ = self
            .events
            .send(RunEvent::Job {
                job: job.to_string(),
                detail: event,
            })
            .await;
    }

    pub(crate) async fn warn(&self, job: &str, message: String) {
        let _ = self
            .events
            .send(RunEvent::Warning {
                job: Some(job.to_string()),
                message,
            })
            .await;
    }

    /// Labels for an object of this job.
    pub(crate) fn labels(&self, job: &str, role: &str) -> Labels {
        let mut l = self.owner_labels.clone();
        l.insert(berth_engine::labels::BUILD.into(), self.build_id.clone());
        l.insert(berth_engine::labels::JOB.into(), job.to_string());
        l.insert(berth_engine::labels::ROLE.into(), role.to_string());
        l
    }

    /// Docker object name prefix, unique per berth process, build and job.
    pub(crate) fn object_name(&self, job: &str) -> String {
        format!("berth-{}-{}-{}", self.owner_id, self.build_id, job)
    }
}

/// What the job created, for cleanup (filled in as it is created, so a failure half-way
/// leaves a record of exactly what exists).
#[derive(Debug, Default)]
pub(crate) struct Resources {
    pub container: Option<String>,
    pub volume: Option<String>,
    /// Where the workspace is inside the job container.
    pub layout: crate::source::Layout,
    /// The job's own network (id).
    pub network: Option<String>,
    pub services: Vec<services::Started>,
    pub dind: Option<docker_mode::dind::Daemon>,
    pub socket: Option<docker_mode::socket::Session>,
    pub scoped: Option<docker_mode::scoped::Session>,
    /// The setup archive until the first step's exec has unpacked it.
    pub setup: Option<bytes::Bytes>,
}

pub(crate) async fn run_job(ctx: Arc<Context>, job: Job) -> JobSummary {
    let started = Instant::now();
    let mut log = log::JobLog::create(&ctx, &job.name).await;
    let mut res = Resources::default();
    let result = tokio::select! {
        r = run_phases(&ctx, &job, &mut res, &mut log) => r,
        () = ctx.cancel.cancelled() => JobResult::Cancelled,
    };
    if matches!(result, JobResult::Cancelled) {
        log.line(&format!("berth: job `{}` cancelled", job.name));
    }
    if let Some(container) = &res.container
        && !matches!(result, JobResult::Cancelled)
        && let Err(e) =
            artifacts::collect(&ctx, &job.name, container, &res.layout.artifacts()).await
    {
        ctx.warn(&job.name, format!("failed to copy artifacts: {e}"))
            .await;
    }
    for problem in cleanup::remove(&ctx, &job.name, &mut res).await {
        ctx.warn(&job.name, problem).await;
    }
    log.line(&format!("berth: job `{}` {}", job.name, result));
    let message = log.finish();
    if let Some(m) = message {
        ctx.warn(&job.name, m).await;
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    ctx.emit(
        &job.name,
        JobEvent::Finished {
            result: result.clone(),
            duration_ms,
        },
    )
    .await;
    JobSummary {
        job: job.name,
        result,
        duration_ms,
    }
}

async fn run_phases(
    ctx: &Context,
    job: &Job,
    res: &mut Resources,
    log: &mut log::JobLog,
) -> JobResult {
    match prepare(ctx, job, res).await {
        Ok(container) => {
            let timeout = job.timeout.unwrap_or(ctx.opts.default_timeout);
            let setup = res.setup.take();
            let dind = res.dind.as_ref().and_then(|d| d.container.clone());
            steps::run_all(ctx, job, &container, timeout, setup, dind.as_deref(), log).await
        }
        Err(e) => error_result(e),
    }
}

/// Everything before the first step: images, network, workspace, Docker access, services and
/// the job container; returns the job container once every service and daemon is ready.
async fn prepare(ctx: &Context, job: &Job, res: &mut Resources) -> Result<String, JobError> {
    let access = docker_mode::resolve(ctx, job)?;
    image::ensure(ctx, &job.name, &job.image).await?;
    for svc in &job.services {
        image::ensure(ctx, &job.name, &svc.image).await?;
    }
    if matches!(access, docker_mode::Access::Dind(_)) {
        image::ensure(ctx, &job.name, &ctx.opts.dind_image).await?;
    }
    // Scoped jobs live on their endpoint's network (with their siblings); others get their own.
    let mut network = if matches!(access, docker_mode::Access::Scoped) {
        None
    } else if !job.services.is_empty() || access.needs_network() {
        Some(network::create(ctx, &job.name, res).await?)
    } else {
        None
    };
    let mut volume = None;
    let docker = match &access {
        // Nothing else mounts the workspace: it stays in the container's own filesystem.
        docker_mode::Access::None => docker_mode::JobDocker::default(),
        docker_mode::Access::Socket => {
            let (docker, session) =
                docker_mode::socket::prepare(ctx, &job.name, &job.image).await?;
            res.socket = Some(session);
            docker
        }
        docker_mode::Access::Scoped => {
            let (docker, session, net) =
                docker_mode::scoped::prepare(ctx, &job.name, &job.image).await?;
            res.scoped = Some(session);
            network = Some(net);
            docker
        }
        docker_mode::Access::Dind(opts) => {
            let ws = setup::workspace_volume(ctx, job, res).await?;
            let net = network.as_deref().unwrap_or_default();
            let daemon = res.dind.insert(docker_mode::dind::Daemon::default());
            let docker = docker_mode::dind::start(ctx, &job.name, opts, net, &ws, daemon).await?;
            volume = Some(ws);
            docker
        }
    };
    res.layout = docker.layout.clone().unwrap_or_default();
    if let Some(net) = &network {
        services::start(ctx, job, net, res).await?;
    }
    let (container, archive) = setup::create(
        ctx,
        job,
        res,
        volume.as_deref(),
        network.as_deref(),
        &docker,
    )
    .await?;
    res.setup = Some(archive);
    ctx.emit(
        &job.name,
        JobEvent::Started {
            image: job.image.clone(),
            container: container.clone(),
        },
    )
    .await;
    let net = network.unwrap_or_default();
    let dind_ready = async {
        match &res.dind {
            Some(d) => docker_mode::dind::wait_ready(ctx, d).await,
            None => Ok(()),
        }
    };
    tokio::try_join!(
        services::wait_all(ctx, &container, &net, &res.services),
        dind_ready
    )?;
    Ok(container)
}

pub(crate) fn error_result(e: JobError) -> JobResult {
    JobResult::Error {
        message: e.to_string(),
    }
}

/// Why a job could not be done (infrastructure, not the job's own failure).
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Message(String),
}
