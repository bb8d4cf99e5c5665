//! `berth proxy`: serve a scoped Docker socket until SIGINT/SIGTERM, then reap the scope.

use std::path::PathBuf;

use berth_proxy::{Policy, ProxyConfig, ScopedProxy, Workspace};
use clap::Args;

use crate::{ExitCode, Failure};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Unix socket to create for clients (DOCKER_HOST=unix://PATH).
    #[arg(long, value_name = "PATH")]
    pub listen: PathBuf,
    /// Scope name: a-z, 0-9 and `-`; prefixes the names of everything created.
    #[arg(long, value_name = "NAME")]
    pub scope: String,
    /// Directory clients may bind-mount, as they see it and where it really is.
    #[arg(long, value_name = "JOB_PATH=HOST_PATH")]
    pub workspace: Option<String>,
    /// The Docker volume whose root is the workspace (HOST_PATH is its mountpoint): on engines
    /// with API ≥ 1.45, binds inside the workspace become volume `Subpath` mounts of it, which
    /// the daemon resolves safely.
    #[arg(long, value_name = "NAME", requires = "workspace")]
    pub workspace_volume: Option<String>,
    /// JSON policy file (capability allowlist, log drivers, resource limits).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

pub(crate) async fn proxy(docker_host: Option<&str>, args: ProxyArgs) -> Result<ExitCode, Failure> {
    let address = berth_engine::DaemonAddress::resolve(docker_host);
    let daemon_socket = address.unix_socket().ok_or_else(|| {
        Failure::usage("the scoped socket forwards to a daemon on a unix socket")
            .with_hint("point --docker-host / DOCKER_HOST at unix:///var/run/docker.sock")
    })?;
    let workspace = match &args.workspace {
        Some(w) => {
            let ws = Workspace::parse(w).map_err(|e| Failure::usage(e.to_string()))?;
            Some(match &args.workspace_volume {
                Some(v) => ws
                    .with_volume(v)
                    .map_err(|e| Failure::usage(e.to_string()))?,
                None => ws,
            })
        }
        None => None,
    };
    let policy = match &args.policy {
        Some(p) => Policy::load(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => Policy::default(),
    };
    berth_proxy::validate_scope(&args.scope).map_err(|e| Failure::usage(e.to_string()))?;
    let owner = berth_engine::Owner::register()
        .map_err(|e| Failure::infra(format!("failed to register this berth process: {e}")))?;
    let proxy = ScopedProxy::start(ProxyConfig {
        listen: args.listen.clone(),
        daemon_socket,
        scope: args.scope.clone(),
        owner_labels: owner.labels(),
        workspace,
        policy,
    })
    .await
    .map_err(|e| Failure::infra(e.to_string()))?;
    eprintln!(
        "berth: scoped socket for scope `{}` at unix://{} (Ctrl-C to stop and remove what it created)",
        args.scope,
        args.listen.display()
    );
    wait_for_signal().await;
    let report = proxy.shutdown_and_reap().await;
    for r in &report.removed {
        eprintln!("berth: removed {r}");
    }
    for (what, e) in &report.failed {
        eprintln!("berth: failed to remove {what}: {e}");
    }
    drop(owner);
    if report.is_clean() {
        Ok(ExitCode::Success)
    } else {
        Ok(ExitCode::Infrastructure)
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
