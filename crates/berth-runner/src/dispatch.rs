//! The dispatcher: one loop that owns the job graph, starts ready jobs (at most `parallel` at
//! once), records how each ended, and reports skipped jobs. Jobs run as tasks; the loop is the
//! only place that decides what runs next.

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_engine::{Engine, Owner};
use berth_pipeline::{Pipeline, Scheduler};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::build::{allocate_build_dir, build_dir_named};
use crate::job::{Context, ImageCache, run_job};
use crate::{BuildSummary, JobResult, JobSummary, RunError, RunEvent, RunOptions, source};

/// Runs the pipeline's jobs as `opts` asks; returns when every started job has ended and its
/// resources are gone. Cancelling `cancel` stops running jobs and starts no new ones.
pub async fn run(
    engine: Arc<dyn Engine>,
    owner: &Owner,
    pipeline: &Pipeline,
    opts: RunOptions,
    events: mpsc::Sender<RunEvent>,
    cancel: CancellationToken,
) -> Result<BuildSummary, RunError> {
    let mut scheduler = Scheduler::new(pipeline, &opts.start)?;
    let reachable = reachable_jobs(&scheduler);
    let declared: Vec<String> = pipeline
        .jobs
        .values()
        .filter(|j| reachable.contains(&j.name))
        .flat_map(|j| j.secrets.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let secrets = crate::resolve_secrets(&declared, &opts.secrets, |n| std::env::var(n).ok())?;

    let output_dir = opts.output_dir.clone();
    let exclude = vec![output_dir.clone(), opts.source_dir.join(".berth")];
    let files =
        source::list_source_files(&opts.source_dir, &exclude).map_err(|e| RunError::Source {
            path: opts.source_dir.clone(),
            source: e,
        })?;
    let allocated = match &opts.build_id {
        Some(id) => build_dir_named(&output_dir, id),
        None => allocate_build_dir(&output_dir),
    };
    let (build_id, build_dir) = allocated.map_err(|e| RunError::Output {
        path: output_dir.clone(),
        source: e,
    })?;
    let _ = events
        .send(RunEvent::BuildStarted {
            build_id: build_id.clone(),
            owner: owner.id().to_string(),
            output_dir: build_dir.clone(),
        })
        .await;

    let ctx = Arc::new(Context {
        engine,
        owner_labels: owner.labels(),
        owner_id: owner.id().to_string(),
        build_id: build_id.clone(),
        build_dir: build_dir.clone(),
        parameters: pipeline.parameters.clone(),
        secrets,
        files,
        images: ImageCache::default(),
        privileged_refused: Default::default(),
        events: events.clone(),
        cancel: cancel.clone(),
        opts,
    });

    let permits = Arc::new(Semaphore::new(ctx.opts.parallel.max(1)));
    let mut running = JoinSet::new();
    let mut finished: Vec<JobSummary> = Vec::new();
    loop {
        if !cancel.is_cancelled() {
            for name in scheduler.take_ready() {
                let job = pipeline.jobs[&name].clone();
                let ctx = ctx.clone();
                let permits = permits.clone();
                running.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    if ctx.cancel.is_cancelled() {
                        return JobSummary {
                            job: job.name,
                            result: JobResult::Cancelled,
                            duration_ms: 0,
                        };
                    }
                    run_job(ctx, job).await
                });
            }
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let summary = match done {
            Ok(s) => s,
            Err(e) => JobSummary {
                job: "?".into(),
                result: JobResult::Error {
                    message: format!("job task failed: {e}"),
                },
                duration_ms: 0,
            },
        };
        scheduler.finish(&summary.job, summary.result.is_success());
        finished.push(summary);
    }

    let skipped: Vec<(String, String)> = if cancel.is_cancelled() {
        Vec::new()
    } else {
        scheduler
            .skipped()
            .into_iter()
            .map(|s| (s.job, s.reason))
            .collect()
    };
    for (job, reason) in &skipped {
        let _ = events
            .send(RunEvent::JobSkipped {
                job: job.clone(),
                reason: reason.clone(),
            })
            .await;
    }
    let summary = BuildSummary {
        build_id,
        output_dir: build_dir,
        jobs: finished,
        skipped,
        cancelled: cancel.is_cancelled(),
    };
    let _ = events
        .send(RunEvent::BuildFinished {
            summary: summary.clone(),
        })
        .await;
    Ok(summary)
}

/// Every job that could run if all jobs succeeded (for checking secrets up front).
fn reachable_jobs(scheduler: &Scheduler) -> BTreeSet<String> {
    let mut sim = scheduler.clone();
    let mut seen = BTreeSet::new();
    loop {
        let ready = sim.take_ready();
        if ready.is_empty() {
            return seen;
        }
        for j in ready {
            sim.finish(&j, true);
            seen.insert(j);
        }
    }
}
