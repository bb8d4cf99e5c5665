//! `services:` containers of a job: started on the job's network under their aliases, waited
//! for before the first step, their logs saved next to the job log, removed with the job.
//!
//! Readiness, in order of preference: the image's HEALTHCHECK reports healthy; else the first
//! exposed TCP port accepts connections, probed from inside the job network (bash's `/dev/tcp`
//! in the job container; when the job image has no bash, a connect from berth to the
//! service's address, which needs the daemon on this host); else the
//! container is running. A service that exits, or is not ready within its timeout, fails the
//! job with its last log lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_engine::ContainerSpec;
use berth_pipeline::{Job, Service};
use futures_util::StreamExt;

use super::{Context, JobError, Resources};

/// Log lines of a failed service quoted in the job's error.
const LOG_TAIL: usize = 20;
const POLL: Duration = Duration::from_millis(250);
/// Exit code of the probe script when the job image has no bash.
const NO_PROBE_TOOL: i64 = 99;

/// Probes `$0:$1` over TCP with bash's `/dev/tcp` (nc is no help: busybox's has no `-z`).
const PROBE: &str = r#"if command -v bash >/dev/null 2>&1; then exec bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$0" "$1" 2>/dev/null; fi
exit 99"#;

/// A started service container.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub id: String,
    /// The name its log file and messages use (its first alias).
    pub alias: String,
    pub image: String,
    pub timeout: Duration,
    /// Set once the service was ready, so a later exit is reported as happening mid-job.
    pub ready: Arc<AtomicBool>,
}

/// How a service tells it is ready.
#[derive(Debug, Clone, PartialEq)]
enum Check {
    Health,
    Port(u16),
    Running,
}

/// Creates and starts every service of the job on `network`.
pub(crate) async fn start(
    ctx: &Context,
    job: &Job,
    network: &str,
    res: &mut Resources,
) -> Result<(), JobError> {
    for (i, svc) in job.services.iter().enumerate() {
        let alias = svc
            .aliases
            .first()
            .cloned()
            .unwrap_or_else(|| format!("service-{i}"));
        let spec = ContainerSpec {
            name: Some(format!("{}-svc{i}", ctx.object_name(&job.name))),
            image: svc.image.clone(),
            entrypoint: svc.entrypoint.clone(),
            cmd: svc.command.clone(),
            env: svc
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            labels: ctx.labels(&job.name, "service"),
            network: Some(network.to_string()),
            network_aliases: svc.aliases.clone(),
            ..Default::default()
        };
        let id = ctx.engine.create_container(&spec).await?;
        res.services.push(Started {
            id: id.clone(),
            alias: alias.clone(),
            image: svc.image.clone(),
            timeout: timeout(ctx, svc),
            ready: Arc::default(),
        });
        ctx.engine.start_container(&id).await.map_err(|e| {
            JobError::Message(format!(
                "failed to start service `{alias}` ({}): {e}",
                svc.image
            ))
        })?;
    }
    Ok(())
}

fn timeout(ctx: &Context, svc: &Service) -> Duration {
    svc.ready_timeout.unwrap_or(ctx.opts.service_timeout)
}

/// Waits until every service is ready (concurrently); the first failure wins.
pub(crate) async fn wait_all(
    ctx: &Context,
    job_container: &str,
    network: &str,
    services: &[Started],
) -> Result<(), JobError> {
    let waits = services
        .iter()
        .map(|s| wait_ready(ctx, job_container, network, s));
    futures_util::future::try_join_all(waits).await.map(|_| ())
}

async fn wait_ready(
    ctx: &Context,
    job_container: &str,
    network: &str,
    svc: &Started,
) -> Result<(), JobError> {
    let info = ctx.engine.image_info(&svc.image).await?;
    let check = if info.healthcheck.is_some() {
        Check::Health
    } else if let Some(port) = info
        .exposed_ports
        .iter()
        .find_map(|p| p.strip_suffix("/tcp").and_then(|n| n.parse::<u16>().ok()))
    {
        Check::Port(port)
    } else {
        Check::Running
    };
    let deadline = tokio::time::Instant::now() + svc.timeout;
    let mut use_exec = true;
    loop {
        let state = ctx.engine.inspect_container(&svc.id).await?;
        if !state.running {
            let code = state
                .exit_code
                .map(|c| format!(" with code {c}"))
                .unwrap_or_default();
            return Err(failed(ctx, svc, &format!("exited{code} before it was ready")).await);
        }
        let ready = match check {
            Check::Running => true,
            Check::Health => state.health.as_deref() == Some("healthy"),
            Check::Port(port) => {
                let mut ok = false;
                if use_exec {
                    match probe_exec(ctx, job_container, &svc.alias, port).await {
                        Some(r) => ok = r,
                        None => use_exec = false,
                    }
                }
                if !use_exec {
                    let ip = state.networks.get(network).cloned().unwrap_or_default();
                    ok = probe_direct(&ip, port).await;
                }
                ok
            }
        };
        if ready {
            svc.ready.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let what = match check {
                Check::Health => "its healthcheck did not pass".to_string(),
                Check::Port(p) => format!("port {p}/tcp did not accept connections"),
                Check::Running => "it did not start".to_string(),
            };
            let msg = format!("was not ready after {} s ({what})", svc.timeout.as_secs());
            return Err(failed(ctx, svc, &msg).await);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Some(open)` from a probe run inside the job container; `None` when the image has no tool
/// to probe with.
async fn probe_exec(ctx: &Context, container: &str, host: &str, port: u16) -> Option<bool> {
    let cmd = vec![
        "/bin/sh".into(),
        "-c".into(),
        PROBE.into(),
        host.into(),
        port.to_string(),
    ];
    match super::probe::exec_code(ctx, container, cmd).await {
        Ok(NO_PROBE_TOOL) => None,
        Ok(code) => Some(code == 0),
        Err(_) => Some(false),
    }
}

async fn probe_direct(ip: &str, port: u16) -> bool {
    if ip.is_empty() {
        return false;
    }
    let connect = tokio::net::TcpStream::connect((ip, port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// A warning when a service that was ready no longer runs at the end of the job (it exited or
/// was killed while the steps ran). The job's result stands (its steps decide it); this says
/// why a step may have lost its service.
pub(crate) async fn exited_during_job(ctx: &Context, job: &str, svc: &Started) -> Option<String> {
    if !svc.ready.load(Ordering::Relaxed) {
        return None;
    }
    let state = ctx.engine.inspect_container(&svc.id).await.ok()?;
    if state.running {
        return None;
    }
    let code = state
        .exit_code
        .map(|c| format!(" with code {c}"))
        .unwrap_or_default();
    let oom = if state.oom_killed {
        " (OOM-killed)"
    } else {
        ""
    };
    Some(format!(
        "service `{}` ({}) exited{code}{oom} while the job ran; its log is in {job}.{}.log",
        svc.alias, svc.image, svc.alias
    ))
}

/// The job's error for a service that failed, quoting its last log lines.
async fn failed(ctx: &Context, svc: &Started, what: &str) -> JobError {
    let tail = last_lines(ctx, &svc.id, LOG_TAIL).await;
    let mut msg = format!("service `{}` ({}) {what}", svc.alias, svc.image);
    if tail.trim().is_empty() {
        msg.push_str("; it logged nothing");
    } else {
        msg.push_str(&format!("; its last log lines:\n{}", tail.trim_end()));
    }
    JobError::Message(msg)
}

/// The container's last `n` log lines (stdout and stderr), lossily decoded.
pub(crate) async fn last_lines(ctx: &Context, id: &str, n: usize) -> String {
    let mut stream = ctx.engine.container_logs(id, false, Some(n));
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes a container's whole log to `<build>/<job>.<name>.log`; returns a problem, if any.
pub(crate) async fn save_log(ctx: &Context, job: &str, name: &str, id: &str) -> Option<String> {
    let path = ctx.build_dir.join(format!("{job}.{name}.log"));
    let mut stream = ctx.engine.container_logs(id, false, None);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => return Some(format!("failed to read the log of `{name}`: {e}")),
        }
    }
    let mut masker = crate::Masker::new(ctx.secrets.values());
    let mut masked = masker.push(&out);
    masked.extend(masker.finish());
    std::fs::write(&path, masked)
        .err()
        .map(|e| format!("failed to write {}: {e}", path.display()))
}
