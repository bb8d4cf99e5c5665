//! Running the steps: each step is one exec of berth's wrapper, which restores the shell state
//! (exported variables, working directory) the previous step left. Regular steps stop at the
//! first failure; `teardown-*` steps always run.

use std::time::{Duration, Instant};

use berth_engine::ExecSpec;
use berth_pipeline::Job;
use futures_util::StreamExt;

use super::log::JobLog;
use super::{Context, JobError, stop};
use crate::source::{step_command, step_path};
use crate::{JobEvent, JobResult, Masker};

/// Exit code of a process killed by SIGKILL (the OOM killer's signal).
const SIGKILL_EXIT: i64 = 137;

pub(crate) async fn run_all(
    ctx: &Context,
    job: &Job,
    container: &str,
    timeout: Duration,
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
            match run_step(ctx, job, container, *index, log).await {
                Ok(0) => {}
                Ok(code) => {
                    return step_failure(ctx, container, &step.name, code).await;
                }
                Err(e) => return super::error_result(e),
            }
        }
        JobResult::Success
    };
    let mut result = match tokio::time::timeout_at(deadline, timed).await {
        Ok(r) => r,
        Err(_) => {
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
            run_step(ctx, job, container, index, log),
        )
        .await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(code)) => {
                if result.is_success() {
                    result = step_failure(ctx, container, &step.name, code).await;
                }
            }
            Ok(Err(e)) => {
                if result.is_success() {
                    result = super::error_result(e);
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

async fn step_failure(ctx: &Context, container: &str, step: &str, code: i64) -> JobResult {
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
    let spec = ExecSpec {
        cmd: step_command(&step_path(index)),
        env,
        ..Default::default()
    };
    let mut handle = ctx.engine.exec(container, &spec).await?;
    let mut masker = Masker::new(ctx.secrets.values());
    while let Some(chunk) = handle.output.next().await {
        let chunk = chunk?;
        let data = masker.push(&chunk);
        emit_output(ctx, job, &step.name, data, log).await;
    }
    emit_output(ctx, job, &step.name, masker.finish(), log).await;
    let code = exit_code(ctx, &handle.id).await?;
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
