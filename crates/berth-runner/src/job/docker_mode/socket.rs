//! `docker: socket`: the host daemon's unix socket bound into the job.
//!
//! Owns: refusing when there is no local socket, the host-directory workspace mounted at the
//! same absolute path inside the job (so `docker run -v "$PWD:/src"` from a step names the job's
//! files on the host), the per-job `COMPOSE_PROJECT_NAME` and the removal of that compose
//! project, the warning about containers the job left on the daemon, and removing the host
//! directory (through a container when the job left files berth itself cannot delete).
//! Must not: pretend to contain the job: through the raw socket a step controls the host's
//! Docker; berth does what it can and says the rest (scoped mode is the contained variant).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_engine::{ContainerSpec, Mount, labels};

use super::JobDocker;
use crate::job::{Context, JobError};
use crate::source::Layout;

/// Where the socket appears inside the job.
const SOCKET_IN_JOB: &str = "/var/run/docker.sock";

/// What socket mode set up for a job, for its end.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The host directory backing the workspace (also its path inside the job).
    pub host_dir: PathBuf,
    pub compose_project: String,
    /// Containers on the daemon when the job started.
    pub baseline: BTreeSet<String>,
    /// Image used to delete files the job's containers left as another user.
    pub image: String,
}

/// The daemon's socket path, or why socket mode cannot work with this daemon.
pub(crate) fn socket_path(ctx: &Context) -> Result<PathBuf, JobError> {
    let address = ctx.engine.address();
    address.unix_socket().ok_or_else(|| {
        JobError::Message(format!(
            "docker: socket needs the Docker daemon on a local unix socket, but berth reaches it at {address}; use docker: dind, or run berth on the daemon's host"
        ))
    })
}

/// Root of the host directories backing socket-mode workspaces.
pub(crate) fn workspaces_root() -> PathBuf {
    let tmp = std::env::temp_dir();
    std::fs::canonicalize(&tmp)
        .unwrap_or(tmp)
        .join("berth-workspaces")
}

/// Creates the host directory that backs a job's workspace (socket and scoped modes); it is
/// mounted at the same absolute path inside the job.
pub(crate) fn create_host_workspace(object_name: &str) -> Result<PathBuf, JobError> {
    let host_dir = workspaces_root().join(object_name);
    std::fs::create_dir_all(&host_dir).map_err(|e| {
        JobError::Message(format!(
            "failed to create the workspace directory {}: {e}",
            host_dir.display()
        ))
    })?;
    Ok(host_dir)
}

/// What socket and scoped modes give the job container: a Docker socket (`socket`, on the host)
/// at `/var/run/docker.sock` with `DOCKER_HOST` pointing there, plus `env`, and the host
/// workspace `dir` mounted at the same absolute path.
pub(crate) fn socket_at_workspace(socket: &Path, dir: &str, env: Vec<String>) -> JobDocker {
    let mut all = vec![format!("DOCKER_HOST=unix://{SOCKET_IN_JOB}")];
    all.extend(env);
    JobDocker {
        env: all,
        mounts: vec![
            Mount::Bind {
                source: socket.display().to_string(),
                target: SOCKET_IN_JOB.into(),
                read_only: false,
            },
            Mount::Bind {
                source: dir.to_string(),
                target: dir.to_string(),
                read_only: false,
            },
        ],
        files: Vec::new(),
        layout: Some(Layout {
            workspace: dir.to_string(),
        }),
    }
}

/// A compose project name unique to the job: lowercase letters, digits, `-` and `_`.
pub(crate) fn compose_project(object_name: &str) -> String {
    object_name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '_',
        })
        .collect()
}

/// Creates the host workspace and snapshots the daemon's containers; returns what the job
/// container needs and the session to end later.
pub(crate) async fn prepare(
    ctx: &Context,
    job: &str,
    image: &str,
) -> Result<(JobDocker, Session), JobError> {
    let socket = socket_path(ctx)?;
    let name = ctx.object_name(job);
    let host_dir = create_host_workspace(&name)?;
    let dir = host_dir.display().to_string();
    let baseline = ctx
        .engine
        .list_containers()
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let compose_project = compose_project(&name);
    let docker = socket_at_workspace(
        &socket,
        &dir,
        vec![format!("COMPOSE_PROJECT_NAME={compose_project}")],
    );
    ctx.warn(
        job,
        "docker: socket gives this job root-level control of the host's Docker daemon (use docker: dind to isolate it)".to_string(),
    )
    .await;
    let session = Session {
        host_dir,
        compose_project,
        baseline,
        image: image.to_string(),
    };
    Ok((docker, session))
}

/// Removes the job's compose project and reports containers the job left on the daemon.
/// Runs before berth's own containers go, so it sees the daemon as the job left it.
pub(crate) async fn finish(ctx: &Context, job: &str, session: &Session) -> Vec<String> {
    let mut problems = Vec::new();
    match berth_engine::reap(
        ctx.engine.as_ref(),
        "com.docker.compose.project",
        &session.compose_project,
    )
    .await
    {
        Ok(report) => {
            for (o, e) in report.failed {
                problems.push(format!(
                    "failed to remove compose {} {}: {e}",
                    o.kind, o.name
                ));
            }
        }
        Err(e) => problems.push(format!("failed to list the job's compose project: {e}")),
    }
    match ctx.engine.list_containers().await {
        Ok(all) => {
            let left: Vec<String> = all
                .into_iter()
                .filter(|c| {
                    !session.baseline.contains(&c.id) && !c.labels.contains_key(labels::OWNER)
                })
                .map(|c| c.name)
                .collect();
            if !left.is_empty() {
                ctx.warn(
                    job,
                    format!(
                        "{} container(s) created on the host daemon while this job ran are still there: {} (socket mode cannot tell whose they are; remove them in a teardown- step, or use docker: scoped once available)",
                        left.len(),
                        left.join(", ")
                    ),
                )
                .await;
            }
        }
        Err(e) => problems.push(format!("failed to list containers left by the job: {e}")),
    }
    problems
}

/// Removes the host workspace; files the job's containers created as another user are
/// removed through a container (with the job's image) when berth cannot remove them itself.
pub(crate) async fn remove_host_dir(
    ctx: &Context,
    job: &str,
    dir: &Path,
    image: &str,
) -> Option<String> {
    if remove_dir(dir).is_ok() {
        return None;
    }
    let root = workspaces_root();
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Some(format!("failed to remove {}", dir.display()));
    };
    let spec = ContainerSpec {
        name: Some(format!("{}-rm", ctx.object_name(job))),
        image: image.to_string(),
        entrypoint: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "rm -rf \"/w/$0\"".into(),
            name,
        ]),
        cmd: Some(vec![]),
        labels: ctx.labels(job, "cleanup"),
        mounts: vec![Mount::Bind {
            source: root.display().to_string(),
            target: "/w".into(),
            read_only: false,
        }],
        ..Default::default()
    };
    let result = async {
        let id = ctx.engine.create_container(&spec).await?;
        let run = async {
            ctx.engine.start_container(&id).await?;
            for _ in 0..600 {
                if !ctx.engine.inspect_container(&id).await?.running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<(), berth_engine::EngineError>(())
        }
        .await;
        let removed = ctx.engine.remove_container(&id).await;
        run.and(removed)
    }
    .await;
    match (result, remove_dir(dir)) {
        (_, Ok(())) => None,
        (Err(e), Err(_)) => Some(format!("failed to remove {}: {e}", dir.display())),
        (Ok(()), Err(e)) => Some(format!("failed to remove {}: {e}", dir.display())),
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::compose_project;

    #[test]
    fn compose_project_names_are_valid() {
        assert_eq!(
            compose_project("berth-ab12-3-Build.App"),
            "berth-ab12-3-build_app"
        );
    }
}
