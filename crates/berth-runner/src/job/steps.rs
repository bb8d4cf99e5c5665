//! Running the steps: each step is one exec of berth's wrapper, which restores the shell state
//! (exported variables, working directory) the previous step left. Regular steps stop at the
//! first failure; `teardown-*` steps always run.
//!
//! The first step's exec also unpacks the setup archive, fed on its standard input to the
//! image's `tar`: one daemon call per job fewer than an archive upload (whose extraction the
//! daemon runs in a process of its own). An image without a working `tar` gets the archive
//! through the Engine API instead, and the step runs again, before any of its own code ran.

use std::time::{Duration, Instant};

use berth_engine::{EngineError, ExecSpec};
use berth_pipeline::Job;
use futures_util::StreamExt;

use super::docker_mode::dind;
use super::log::JobLog;
use super::{Context, JobError, stop};
use crate::source::{UNPACKED, setup_step_command, step_command, step_path};
use crate::{JobEvent, JobResult, Masker};

/// Exit code of a process killed by SIGKILL (the OOM killer's signal).
const SIGKILL_EXIT: i64 = 137;
/// How long (polls × interval) a SIGKILLed step waits for the daemon to tell whether its
/// container is going away.
const SETTLE_POLLS: u32 = 20;
const SETTLE_POLL: Duration = Duration::from_millis(50);
/// Exit code of [`setup_step_command`] when the image could not unpack the setup archive.
const SETUP_FAILED: i64 = 254;

pub(crate) async fn run_all(
    ctx: &Context,
    job: &Job,
    container: &str,
    timeout: Duration,
    mut setup: Option<bytes::Bytes>,
    dind: Option<&str>,
    log: &mut JobLog,
) -> JobResult {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut current: Option<String> = None;
    let regular: Vec<_> = job
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.teardown)
        .collect();
    let timed = async {
        for (index, step) in &regular {
            current = Some(step.name.clone());
            match run_step(ctx, job, container, *index, &mut setup, log).await {
                // A step may shrug off its daemon's death (`docker … || true`); its job may not.
                Ok(0) => {
                    if let Some(id) = dind
                        && let Some(what) = dind::check(ctx, id).await
                    {
                        return JobResult::Error {
                            message: dind::lost_message(ctx, dind, &what, Some(&step.name)).await,
                        };
                    }
                }
                Ok(code) => {
                    return step_failure(ctx, container, dind, &step.name, code).await;
                }
                Err(e) => return step_error(ctx, container, dind, &step.name, e).await,
            }
        }
        JobResult::Success
    };
    // A nested daemon that dies under a step may leave its docker CLI waiting on a connection
    // nobody will close: watch it, rather than trust the step to notice.
    let watch = async {
        match dind {
            Some(id) => dind::stopped(ctx, id).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        r = tokio::time::timeout_at(deadline, timed) => Ok(r),
        what = watch => Err(what),
    };
    let mut result = match ended {
        Ok(Ok(r)) => r,
        Err(what) => JobResult::Error {
            message: dind::lost_message(ctx, dind, &what, current.as_deref()).await,
        },
        Ok(Err(_)) => {
            log.line(&format!(
                "berth: job timed out after {} min; stopping its processes",
                timeout.as_secs_f64() / 60.0
            ));
            stop::terminate_processes(ctx, container, ctx.opts.stop_grace).await;
            JobResult::TimedOut {
                step: current.clone(),
            }
        }
    };
    if !result.is_success() {
        let after_current = regular
            .iter()
            .skip_while(|(_, s)| Some(&s.name) != current.as_ref());
        for (_, step) in after_current.skip(1) {
            ctx.emit(
                &job.name,
                JobEvent::StepSkipped {
                    step: step.name.clone(),
                },
            )
            .await;
        }
    }
    if matches!(result, JobResult::Error { .. }) {
        return result;
    }
    for (index, step) in job.steps.iter().enumerate().filter(|(_, s)| s.teardown) {
        let r = tokio::time::timeout(
            ctx.opts.teardown_timeout,
            run_step(ctx, job, container, index, &mut setup, log),
        )
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(code)) => {
                if result.is_success() {
                    result = step_failure(ctx, container, dind, &step.name, code).await;
                }
            }
            Ok(Err(e)) => {
                if result.is_success() {
                    result = step_error(ctx, container, dind, &step.name, e).await;
                }
            }
            Err(_) => {
                stop::terminate_processes(ctx, container, ctx.opts.stop_grace).await;
                if result.is_success() {
                    result = JobResult::TimedOut {
                        step: Some(step.name.clone()),
                    };
                }
            }
        }
    }
    result
}

/// A step that exited non-zero: its failure, unless what it ran on went away under it (the job
/// container stopped or removed from outside, the nested daemon died), which berth reports as
/// an infrastructure error instead, or the kernel's OOM killer struck.
async fn step_failure(
    ctx: &Context,
    container: &str,
    dind: Option<&str>,
    step: &str,
    code: i64,
) -> JobResult {
    if let Some(lost) = infrastructure_lost(ctx, container, dind, step, Some(code)).await {
        return lost;
    }
    if code == SIGKILL_EXIT && oom_killed(ctx, container).await {
        return JobResult::OomKilled {
            step: step.to_string(),
        };
    }
    JobResult::Failure {
        step: step.to_string(),
        exit_code: code,
    }
}

/// A step berth could not run to its end: explained by what went away under it when that is
/// what happened (a daemon connection error stays as it is: the daemon itself went away).
async fn step_error(
    ctx: &Context,
    container: &str,
    dind: Option<&str>,
    step: &str,
    e: JobError,
) -> JobResult {
    if !matches!(&e, JobError::Engine(engine) if engine.is_connection())
        && let Some(lost) = infrastructure_lost(ctx, container, dind, step, None).await
    {
        return lost;
    }
    super::error_result(e)
}

/// What went away under step `step`, if anything: the job container (stopped or removed from
/// outside berth; an OOM kill of its main process stays an OOM result) or the job's nested
/// daemon. `None` while both still run, or when the daemon cannot tell.
async fn infrastructure_lost(
    ctx: &Context,
    container: &str,
    dind: Option<&str>,
    step: &str,
    code: Option<i64>,
) -> Option<JobResult> {
    let again = "run the job again, and find what on this host stops or removes berth's containers";
    let removed = format!(
        "the job's container was removed outside berth while step `{step}` ran (e.g. `docker rm -f`); {again}"
    );
    let mut inspected = ctx.engine.inspect_container(container).await;
    // A step SIGKILLed (137) because its container is being killed or removed can end before
    // the daemon has noticed the container's own end: give the daemon a moment to catch up
    // (an OOM-killed step, whose container runs on, pays this wait: bounded, once).
    let mut settle = 0;
    while code == Some(SIGKILL_EXIT)
        && settle < SETTLE_POLLS
        && inspected.as_ref().is_ok_and(|i| i.running && !i.removing)
    {
        tokio::time::sleep(SETTLE_POLL).await;
        inspected = ctx.engine.inspect_container(container).await;
        settle += 1;
    }
    let message = match inspected {
        Ok(info) if info.running => None,
        Ok(info) if info.removing => Some(removed),
        Ok(info) if info.oom_killed => {
            return Some(JobResult::OomKilled {
                step: step.to_string(),
            });
        }
        Ok(info) => Some(format!(
            "the job's container was stopped outside berth while step `{step}` ran (its main process ended with {}, e.g. `docker kill` or `docker stop`); {again}",
            info.exit_code
                .map_or("no exit code".to_string(), |c| format!("exit code {c}"))
        )),
        Err(EngineError::NotFound { .. }) => Some(removed),
        Err(_) => None,
    };
    if let Some(message) = message {
        return Some(JobResult::Error { message });
    }
    let what = dind::check(ctx, dind?).await?;
    Some(JobResult::Error {
        message: dind::lost_message(ctx, dind, &what, Some(step)).await,
    })
}

/// Whether the kernel's OOM killer struck in the job container. The daemon records OOMKilled
/// only for the main process, so also read the cgroup's own counter (v1 and v2 spellings).
async fn oom_killed(ctx: &Context, container: &str) -> bool {
    if ctx
        .engine
        .inspect_container(container)
        .await
        .is_ok_and(|i| i.oom_killed)
    {
        return true;
    }
    let probe =
        "cat /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events 2>/dev/null";
    let out = stop::run_quiet(ctx, container, probe).await;
    String::from_utf8_lossy(&out).lines().any(|l| {
        l.strip_prefix("oom_kill ")
            .is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
    })
}

/// Runs step `index` of the job; returns its exit code.
async fn run_step(
    ctx: &Context,
    job: &Job,
    container: &str,
    index: usize,
    setup: &mut Option<bytes::Bytes>,
    log: &mut JobLog,
) -> Result<i64, JobError> {
    let step = &job.steps[index];
    let started = Instant::now();
    ctx.emit(
        &job.name,
        JobEvent::StepStarted {
            step: step.name.clone(),
            index,
        },
    )
    .await;
    log.line(&format!("$ step {}", step.name));
    let env = job
        .secrets
        .iter()
        .filter_map(|n| ctx.secrets.get(n).map(|v| format!("{n}={v}")))
        .collect();
    let mut spec = ExecSpec {
        cmd: step_command(&step_path(index)),
        env,
        ..Default::default()
    };
    // Taken at once: a step cut short (timeout) must not make a teardown step unpack again.
    let mut pending = setup.take();
    let code = loop {
        let mut handle = match pending.clone() {
            Some(tar) => {
                let plain = spec.clone();
                spec.cmd = setup_step_command(&step_path(index));
                match ctx.engine.exec_with_stdin(container, &spec, tar).await? {
                    Some(h) => h,
                    None => {
                        unpack_through_api(ctx, container, &mut pending).await?;
                        spec = plain;
                        ctx.engine.exec(container, &spec).await?
                    }
                }
            }
            None => ctx.engine.exec(container, &spec).await?,
        };
        let mut masker = Masker::new(ctx.secrets.values());
        while let Some(chunk) = handle.output.next().await {
            let chunk = chunk?;
            let data = masker.push(&chunk);
            emit_output(ctx, job, &step.name, data, log).await;
        }
        emit_output(ctx, job, &step.name, masker.finish(), log).await;
        let code = exit_code(ctx, &handle.id).await?;
        // Exit 254 is also a step's own code: only a missing marker means no unpack.
        if pending.is_some() && code == SETUP_FAILED && !unpacked(ctx, container).await {
            unpack_through_api(ctx, container, &mut pending).await?;
            spec.cmd = step_command(&step_path(index));
            continue;
        }
        break code;
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    log.line(&format!(
        "berth: step {} exited {code} after {:.1}s",
        step.name,
        duration_ms as f64 / 1000.0
    ));
    if let Some(m) = log.flush() {
        ctx.warn(&job.name, m).await;
    }
    ctx.emit(
        &job.name,
        JobEvent::StepFinished {
            step: step.name.clone(),
            exit_code: code,
            duration_ms,
        },
    )
    .await;
    Ok(code)
}

/// Uploads the setup archive through the Engine API (the daemon extracts it).
async fn unpack_through_api(
    ctx: &Context,
    container: &str,
    setup: &mut Option<bytes::Bytes>,
) -> Result<(), JobError> {
    if let Some(tar) = setup.take() {
        ctx.engine.put_archive(container, "/", tar).await?;
    }
    Ok(())
}

/// Whether the first step's exec unpacked the setup archive (its marker exists).
async fn unpacked(ctx: &Context, container: &str) -> bool {
    let probe = format!("test -e {UNPACKED} && echo yes");
    String::from_utf8_lossy(&stop::run_quiet(ctx, container, &probe).await).trim() == "yes"
}

async fn emit_output(ctx: &Context, job: &Job, step: &str, data: Vec<u8>, log: &mut JobLog) {
    if data.is_empty() {
        return;
    }
    log.write(&data);
    ctx.emit(
        &job.name,
        JobEvent::Output {
            step: step.to_string(),
            data: data.into(),
        },
    )
    .await;
}

/// The exec's exit code once the daemon has recorded it (right after its stream ends).
async fn exit_code(ctx: &Context, exec_id: &str) -> Result<i64, JobError> {
    for attempt in 0..100u64 {
        if let Some(code) = ctx.engine.exec_exit_code(exec_id).await? {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(5 * attempt.min(20))).await;
    }
    Err(JobError::Message(format!(
        "the daemon never reported the exit code of exec {exec_id}"
    )))
}
