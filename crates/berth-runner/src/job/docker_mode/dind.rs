//! `docker: dind`: a Docker daemon of the job's own, run as a service with alias `docker` on
//! the job's network.
//!
//! Owns: the daemon's container and command line (berth passes `dockerd`'s flags itself, so any
//! image with `dockerd` works, with or without the official `dind` wrapper), TLS with fresh
//! per-job certificates (or plain TCP with `tls: false`), privileged mode with the automatic
//! fallback to an explicit capability set on hosts that refuse privileged containers, the
//! daemon's `/var/lib/docker` (per-job volume or a locked cache volume), and waiting until the
//! daemon answers `/_ping`. The workspace volume is mounted at the same path in the daemon as
//! in the job, so `docker run -v "$PWD:/src"` from a step names the job's files.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_engine::{ContainerSpec, EngineError, Mount};
use berth_pipeline::DindOptions;

use super::JobDocker;
use super::cache;
use super::certs::{CLIENT_DIR, DindCerts, SERVER_DIR};
use crate::job::{Context, JobError, probe, services};
use crate::source::{ExtraFile, WORKSPACE};

/// The daemon's name on the job network.
pub(crate) const ALIAS: &str = "docker";
/// The least time the nested daemon gets to answer (it starts slower than most services).
const MIN_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon on a cache volume gets to shut down cleanly.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Starts dockerd through the official `dind` wrapper when the image has it (it prepares
/// cgroups and mounts), else directly.
const LAUNCH: &str =
    r#"if command -v dind >/dev/null 2>&1; then exec dind dockerd "$@"; fi; exec dockerd "$@""#;

/// The nested daemon of a job, as far as it got (for cleanup).
#[derive(Debug, Default)]
pub(crate) struct Daemon {
    pub container: Option<String>,
    /// Per-job storage volume, removed with the job.
    pub storage_volume: Option<String>,
    /// Held while the daemon uses a cache volume; dropping it lets the next job in.
    pub cache_lock: Option<File>,
    pub tls: bool,
}

/// What dockerd is told on its command line.
fn dockerd_args(tls: bool) -> Vec<String> {
    let mut args = vec!["--host=unix:///var/run/docker.sock".to_string()];
    if tls {
        args.extend([
            "--host=tcp://0.0.0.0:2376".to_string(),
            "--tlsverify".to_string(),
            format!("--tlscacert={SERVER_DIR}/ca.pem"),
            format!("--tlscert={SERVER_DIR}/cert.pem"),
            format!("--tlskey={SERVER_DIR}/key.pem"),
        ]);
    } else {
        args.extend([
            "--host=tcp://0.0.0.0:2375".to_string(),
            "--tls=false".to_string(),
        ]);
    }
    args
}

/// The environment that points a job's docker CLI at its daemon.
fn client_env(tls: bool) -> Vec<String> {
    if tls {
        vec![
            format!("DOCKER_HOST=tcp://{ALIAS}:2376"),
            "DOCKER_TLS_VERIFY=1".to_string(),
            format!("DOCKER_CERT_PATH={CLIENT_DIR}"),
        ]
    } else {
        vec![format!("DOCKER_HOST=tcp://{ALIAS}:2375")]
    }
}

/// Runs the daemon without `--privileged`: every capability but the ones the host withholds,
/// unconfined seccomp and apparmor, all devices, writable cgroups.
fn unprivileged(spec: &mut ContainerSpec) {
    spec.privileged = false;
    spec.cap_add = vec!["ALL".into()];
    spec.cap_drop = vec!["SYS_RESOURCE".into()];
    spec.security_opt = vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()];
    spec.device_cgroup_rules = vec!["a *:* rwm".into()];
    spec.mounts.push(Mount::Bind {
        source: "/sys/fs/cgroup".into(),
        target: "/sys/fs/cgroup".into(),
        read_only: false,
    });
}

/// Whether a start failure means "this host does not allow privileged containers".
fn privileged_refused(e: &EngineError) -> bool {
    let m = e.to_string();
    m.contains("unable to apply caps") || m.contains("operation not permitted")
}

fn certs_tar(certs: &DindCerts) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in certs.daemon_files() {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, path.trim_start_matches('/'), data.as_bytes())?;
    }
    b.into_inner()
}

/// Creates and starts the job's daemon; returns what the job container needs to talk to it.
pub(crate) async fn start(
    ctx: &Context,
    job: &str,
    opts: &DindOptions,
    network: &str,
    workspace_volume: &str,
    daemon: &mut Daemon,
) -> Result<JobDocker, JobError> {
    daemon.tls = opts.tls;
    if !opts.tls {
        ctx.warn(job, "dind: {tls: false}: the job's daemon listens on plain TCP 2375, unauthenticated, to anything on the job network".to_string()).await;
    }
    let certs = if opts.tls {
        Some(DindCerts::generate().map_err(|e| {
            JobError::Message(format!("failed to generate TLS certificates for dind: {e}"))
        })?)
    } else {
        None
    };
    let storage = match &opts.cache {
        Some(name) => {
            let limit = ctx.opts.default_timeout;
            daemon.cache_lock = Some(cache::lock(ctx, job, name, limit).await?);
            cache::ensure_volume(ctx, name).await?
        }
        None => {
            let volume = format!("{}-dind", ctx.object_name(job));
            ctx.engine
                .create_volume(&volume, &ctx.labels(job, "dind"))
                .await?;
            daemon.storage_volume = Some(volume.clone());
            volume
        }
    };
    let mut spec = ContainerSpec {
        name: Some(format!("{}-docker", ctx.object_name(job))),
        image: ctx.opts.dind_image.clone(),
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            LAUNCH.into(),
            "dockerd".into(),
        ]),
        cmd: Some(dockerd_args(opts.tls)),
        // Keeps the official image's entrypoint habits (generating its own certs) out of the way.
        env: vec!["DOCKER_TLS_CERTDIR=".into()],
        labels: ctx.labels(job, "dind"),
        network: Some(network.to_string()),
        network_aliases: vec![ALIAS.to_string()],
        mounts: vec![
            Mount::Volume {
                source: storage,
                target: "/var/lib/docker".into(),
                read_only: false,
            },
            Mount::Volume {
                source: workspace_volume.to_string(),
                target: WORKSPACE.into(),
                read_only: false,
            },
        ],
        ..Default::default()
    };
    let mut notice = false;
    if let Some(runtime) = &opts.runtime {
        spec.runtime = Some(runtime.clone());
    } else if ctx.privileged_refused.load(Ordering::Relaxed) {
        unprivileged(&mut spec);
        notice = true;
    } else {
        spec.privileged = true;
    }
    let tar = match &certs {
        Some(c) => Some(
            certs_tar(c)
                .map_err(|e| JobError::Message(format!("failed to pack dind certificates: {e}")))?,
        ),
        None => None,
    };
    let started = create_and_start(ctx, &spec, tar.as_deref(), daemon).await;
    match started {
        Err(e) if spec.privileged && privileged_refused(&e) => {
            ctx.privileged_refused.store(true, Ordering::Relaxed);
            if let Some(id) = daemon.container.take() {
                ctx.engine.remove_container(&id).await?;
            }
            unprivileged(&mut spec);
            notice = true;
            create_and_start(ctx, &spec, tar.as_deref(), daemon)
                .await
                .map_err(|e| {
                    JobError::Message(format!(
                        "failed to start the dind daemon ({}) even without --privileged: {e}",
                        spec.image
                    ))
                })?;
        }
        Err(e) => {
            return Err(JobError::Message(format!(
                "failed to start the dind daemon ({}): {e}",
                spec.image
            )));
        }
        Ok(()) => {}
    }
    if notice {
        ctx.warn(job, "this Docker host refuses privileged containers, so the dind daemon runs with an explicit capability set instead (all but SYS_RESOURCE, seccomp and apparmor unconfined, writable cgroups)".to_string()).await;
    }
    let files = certs
        .as_ref()
        .map(|c| {
            c.client_files()
                .into_iter()
                .map(|(path, data)| ExtraFile {
                    path,
                    data: data.as_bytes().to_vec(),
                    mode: 0o644,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(JobDocker {
        env: client_env(opts.tls),
        mounts: Vec::new(),
        files,
        layout: None,
    })
}

async fn create_and_start(
    ctx: &Context,
    spec: &ContainerSpec,
    certs: Option<&[u8]>,
    daemon: &mut Daemon,
) -> Result<(), EngineError> {
    let id = ctx.engine.create_container(spec).await?;
    daemon.container = Some(id.clone());
    if let Some(tar) = certs {
        ctx.engine
            .put_archive(&id, "/", bytes::Bytes::copy_from_slice(tar))
            .await?;
    }
    ctx.engine.start_container(&id).await
}

/// The readiness probe, run inside the daemon's container: `/_ping` with curl when the image
/// has it, else the docker CLI; over TLS with the client certificate when TLS is on.
fn ping_command(tls: bool) -> Vec<String> {
    let script = if tls {
        format!(
            "if command -v curl >/dev/null 2>&1; then exec curl -fsS -o /dev/null --max-time 2 --cacert {c}/ca.pem --cert {c}/cert.pem --key {c}/key.pem https://127.0.0.1:2376/_ping; fi; \
             exec docker --tlsverify --tlscacert {c}/ca.pem --tlscert {c}/cert.pem --tlskey {c}/key.pem -H tcp://127.0.0.1:2376 version",
            c = CLIENT_DIR
        )
    } else {
        "if command -v curl >/dev/null 2>&1; then exec curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:2375/_ping; fi; \
         exec docker -H tcp://127.0.0.1:2375 version"
            .to_string()
    };
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{{ {script}; }} >/dev/null 2>&1"),
    ]
}

/// Waits until the daemon answers `/_ping`, bounded by the service timeout (at least 60 s).
pub(crate) async fn wait_ready(ctx: &Context, daemon: &Daemon) -> Result<(), JobError> {
    let Some(id) = &daemon.container else {
        return Ok(());
    };
    let limit = ctx.opts.service_timeout.max(MIN_READY_TIMEOUT);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = ctx.engine.inspect_container(id).await?;
        if !state.running {
            return Err(failed(ctx, id, "exited before it answered").await);
        }
        if probe::exec_code(ctx, id, ping_command(daemon.tls))
            .await
            .is_ok_and(|c| c == 0)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let what = format!("did not answer /_ping within {} s", limit.as_secs());
            return Err(failed(ctx, id, &what).await);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn failed(ctx: &Context, id: &str, what: &str) -> JobError {
    let tail = services::last_lines(ctx, id, 20).await;
    JobError::Message(format!(
        "the dind daemon ({}) {what}; its last log lines:\n{}",
        ctx.opts.dind_image,
        tail.trim_end()
    ))
}

/// How often a running job's daemon is checked on (one inspect each time).
const WATCH: Duration = Duration::from_secs(1);

/// What happened to the job's daemon when it no longer runs (`exited with exit code 137`,
/// `was removed`); `None` while it runs or when the daemon cannot tell.
pub(crate) async fn check(ctx: &Context, id: &str) -> Option<String> {
    match ctx.engine.inspect_container(id).await {
        Ok(s) if s.running => None,
        Ok(s) => Some(match s.exit_code {
            Some(c) => format!("stopped (exit code {c})"),
            None => "stopped".to_string(),
        }),
        Err(EngineError::NotFound { .. }) => Some("was removed".to_string()),
        Err(_) => None,
    }
}

/// Resolves once the job's daemon has stopped, with what happened to it (see [`check`]).
pub(crate) async fn stopped(ctx: &Context, id: &str) -> String {
    loop {
        tokio::time::sleep(WATCH).await;
        if let Some(what) = check(ctx, id).await {
            return what;
        }
    }
}

/// The job's error when its daemon went away under step `step` (`what`: see [`check`]), with
/// the daemon's last log lines.
pub(crate) async fn lost_message(
    ctx: &Context,
    id: Option<&str>,
    what: &str,
    step: Option<&str>,
) -> String {
    let during = step.map_or(String::new(), |s| format!(" while step `{s}` ran"));
    let tail = match id {
        Some(id) => services::last_lines(ctx, id, 10).await,
        None => String::new(),
    };
    format!(
        "the job's dind daemon ({}) {what}{during}, so its steps lost their Docker daemon (crashed or killed: berth does not restart it); run the job again; the daemon's last log lines:\n{}",
        ctx.opts.dind_image,
        tail.trim_end()
    )
}

/// Stops a daemon on a cache volume with SIGTERM first, so its data directory is left clean.
pub(crate) async fn stop_gracefully(ctx: &Context, daemon: &Daemon) {
    let (Some(id), Some(_)) = (&daemon.container, &daemon.cache_lock) else {
        return;
    };
    let _ = ctx.engine.kill_container(id, "TERM").await;
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while tokio::time::Instant::now() < deadline {
        match ctx.engine.inspect_container(id).await {
            Ok(s) if s.running => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_daemons_listen_only_on_2376() {
        let args = dockerd_args(true).join(" ");
        assert!(args.contains("tcp://0.0.0.0:2376") && args.contains("--tlsverify"));
        assert!(!args.contains("2375"));
        assert!(dockerd_args(false).join(" ").contains("tcp://0.0.0.0:2375"));
        assert!(client_env(true).contains(&"DOCKER_TLS_VERIFY=1".to_string()));
    }
}
