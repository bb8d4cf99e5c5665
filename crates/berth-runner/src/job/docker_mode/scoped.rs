//! `docker: scoped`: a per-job scoped Docker API endpoint (berth-proxy) bound into the job at
//! `/var/run/docker.sock`. The job's docker CLI and compose use the host daemon and its image
//! cache, but see and touch only what they created, under their own names, without escalation;
//! everything they made is reaped when the job ends.
//!
//! Owns: starting the job's endpoint (scope name, workspace mapping, socket file), putting the
//! job container on the scope's network (so `docker run -d --name web` answers at `web`), and
//! shutting the endpoint down with its reap. The workspace is a Docker volume (`<job>-ws`)
//! mounted in the job at a path of its own: the endpoint translates `-v "$PWD:/src"` into a
//! `Subpath` mount of that volume on engines with API ≥ 1.45 (the daemon resolves the path
//! safely), or into the volume's directory on the host with its own symlink checks on older
//! ones. When berth cannot read the volume's directory (not root) the workspace falls back to a
//! host directory at the same absolute path inside the job, as in socket mode.
//! Must not: implement any policy itself — that is berth-proxy's job.

use std::path::PathBuf;

use berth_engine::Mount;
use berth_proxy::{ProxyConfig, ScopedProxy, Workspace};

use super::{JobDocker, socket};
use crate::job::{Context, JobError};

/// What scoped mode set up for a job, for its end.
pub(crate) struct Session {
    /// The host-directory workspace (the fallback), removed at the end.
    pub host_dir: Option<PathBuf>,
    /// The volume workspace, removed at the end (after the job's containers).
    pub volume: Option<String>,
    pub image: String,
    socket_dir: PathBuf,
    proxy: Option<ScopedProxy>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host_dir", &self.host_dir)
            .field("socket_dir", &self.socket_dir)
            .finish_non_exhaustive()
    }
}

/// A scope name the proxy accepts (`[a-z0-9-]{1,40}`), unique per berth process, build and job.
pub(crate) fn scope_name(owner: &str, build: &str, job: &str) -> String {
    let job: String = job
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let full = format!("{owner}-{build}-{job}");
    if full.len() <= 40 {
        return full;
    }
    // Too long: keep a readable prefix and make it unique with a hash of the whole.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}-{:08x}", &full[..31], hash as u32)
}

/// Starts the job's endpoint; returns what the job container needs, the session to end later,
/// and the network the job container joins.
pub(crate) async fn prepare(
    ctx: &Context,
    job: &str,
    image: &str,
) -> Result<(JobDocker, Session, String), JobError> {
    let daemon_socket = socket::socket_path(ctx)?;
    let name = ctx.object_name(job);
    let socket_dir = std::env::temp_dir().join("berth-scoped").join(&name);
    std::fs::create_dir_all(&socket_dir).map_err(|e| {
        JobError::Message(format!("failed to create {}: {e}", socket_dir.display()))
    })?;
    let mut session = Session {
        host_dir: None,
        volume: None,
        image: image.to_string(),
        socket_dir: socket_dir.clone(),
        proxy: None,
    };
    let (dir, workspace) = match volume_workspace(ctx, job, &name, &mut session).await {
        Ok(w) => w,
        Err(e) => {
            abandon(ctx, session).await;
            return Err(e);
        }
    };
    let listen = socket_dir.join("docker.sock");
    let started = ScopedProxy::start(ProxyConfig {
        listen: listen.clone(),
        daemon_socket,
        scope: scope_name(&ctx.owner_id, &ctx.build_id, job),
        owner_labels: ctx.owner_labels.clone(),
        workspace: Some(workspace),
        policy: ctx.opts.scoped_policy.clone(),
    })
    .await;
    let proxy = match started {
        Ok(p) => p,
        Err(e) => {
            abandon(ctx, session).await;
            return Err(JobError::Message(format!(
                "failed to start the scoped Docker endpoint: {e}"
            )));
        }
    };
    // The job may run as a non-root user: the endpoint itself is the access control.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&listen, std::fs::Permissions::from_mode(0o666));
    }
    let network = proxy.scope_network().await;
    session.proxy = Some(proxy);
    let network = network.map_err(|e| {
        JobError::Message(format!(
            "failed to create the scoped endpoint's network: {e}"
        ))
    });
    // Hand the session back even on error so cleanup reaps what was started.
    let mut docker = socket::socket_at_workspace(
        &listen,
        &dir,
        // No builder choice: the endpoint serves the classic builder and BuildKit (the daemon's
        // route and buildx's `/grpc`), so each CLI builds with its own default.
        Vec::new(),
    );
    if let Some(volume) = &session.volume {
        for m in &mut docker.mounts {
            if matches!(m, Mount::Bind { target, .. } if *target == dir) {
                *m = Mount::Volume {
                    source: volume.clone(),
                    target: dir.clone(),
                    read_only: false,
                };
            }
        }
    }
    match network {
        Ok(net) => Ok((docker, session, net)),
        Err(e) => {
            abandon(ctx, session).await;
            Err(e)
        }
    }
}

/// Undoes a `prepare` that failed half-way (no job container uses the workspace yet).
async fn abandon(ctx: &Context, mut session: Session) {
    let volume = session.volume.take();
    let host_dir = session.host_dir.take();
    finish(session).await;
    if let Some(v) = volume {
        let _ = ctx.engine.remove_volume(&v).await;
    }
    if let Some(d) = host_dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The job's workspace: a volume whose directory berth can read (for the endpoint's checks on
/// engines without `Subpath`), else a host directory. Returns the path the job sees it at.
async fn volume_workspace(
    ctx: &Context,
    job: &str,
    name: &str,
    session: &mut Session,
) -> Result<(String, Workspace), JobError> {
    let dir = socket::workspaces_root().join(name).display().to_string();
    let volume = format!("{name}-ws");
    ctx.engine
        .create_volume(&volume, &ctx.labels(job, "workspace"))
        .await?;
    session.volume = Some(volume.clone());
    let from_volume = match ctx.engine.volume_mountpoint(&volume).await {
        Ok(mountpoint) => Workspace::new(&dir, &mountpoint)
            .and_then(|w| w.with_volume(&volume))
            .ok(),
        Err(_) => None,
    };
    if let Some(w) = from_volume {
        return Ok((dir, w));
    }
    // The volume's directory is out of reach (berth is not root, or a remote daemon): a host
    // directory at the same path inside the job instead.
    session.volume = None;
    ctx.engine.remove_volume(&volume).await?;
    let host_dir = socket::create_host_workspace(name)?;
    session.host_dir = Some(host_dir.clone());
    let dir = host_dir.display().to_string();
    let w = Workspace::new(&dir, &dir)
        .map_err(|e| JobError::Message(format!("scoped workspace {dir}: {e}")))?;
    Ok((dir, w))
}

/// Closes the endpoint, ends its streams and removes everything the job created through it.
/// Call after the job's own containers are gone (they sit on the scope's network). The
/// workspace itself is removed by the job's cleanup, after this.
pub(crate) async fn finish(mut session: Session) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(proxy) = session.proxy.take() {
        let report = proxy.shutdown_and_reap().await;
        for (what, e) in report.failed {
            problems.push(format!(
                "failed to remove {what} the job created through its scoped endpoint: {e} (berth gc will retry)"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&session.socket_dir);
    problems
}

#[cfg(test)]
mod tests {
    use super::scope_name;

    #[test]
    fn scope_names_are_valid_and_unique() {
        assert_eq!(scope_name("ab12", "3", "Build_App"), "ab12-3-build-app");
        let long = scope_name("0123456789ab", "12", &"x".repeat(60));
        let other = scope_name("0123456789ab", "12", &format!("{}y", "x".repeat(59)));
        assert_eq!(long.len(), 40);
        assert_ne!(long, other);
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
}
