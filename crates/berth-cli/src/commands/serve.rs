//! `berth serve`: the build service (see `berth_server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use berth_engine::Engine;
use clap::Args;

use crate::args::DockerModeArg;

use crate::{ExitCode, Failure};

// Kept small (u32 counts): `Command`'s variants are checked by clippy::large_enum_variant.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8400")]
    pub listen: SocketAddr,
    /// Directory for the database, sources, logs and artifacts.
    #[arg(long, value_name = "DIR", default_value = ".berth/server")]
    pub data: PathBuf,
    /// Builds running at once; more wait in a queue in submission order.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub max_builds: u32,
    /// Jobs of one build running at once (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub parallel: Option<u32>,
    /// Image that clones git sources (needs git and sh).
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "berth-test/debian:bookworm"
    )]
    pub git_image: String,
    /// What `screwdriver.cd/dockerEnabled: true` selects when a submission does not say.
    #[arg(long, value_enum, default_value_t = DockerModeArg::Scoped)]
    pub docker_mode: DockerModeArg,
    /// JSON policy file for `docker: scoped` jobs' endpoints (as `berth proxy --policy`).
    #[arg(long, value_name = "FILE")]
    pub scoped_policy: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The largest request body (a source upload, base64 in JSON), in MiB; larger ones get 413.
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub max_body_mib: u32,
    /// Seconds a request body may take to arrive; a slower (or stalled) client gets 408.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub body_timeout: u32,
    /// Seconds a client may accept no byte of an answer (SSE, log follow) before it is
    /// disconnected; it reconnects with Last-Event-ID.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stall_timeout: u32,
}

pub(crate) async fn serve(docker_host: Option<&str>, args: ServeArgs) -> Result<ExitCode, Failure> {
    if args.max_builds == 0 {
        return Err(Failure::usage("--max-builds must be at least 1"));
    }
    if args.max_body_mib == 0 || args.body_timeout == 0 || args.stall_timeout == 0 {
        return Err(Failure::usage(
            "--max-body-mib, --body-timeout and --stall-timeout must be at least 1",
        ));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(berth_server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    if !args.listen.ip().is_loopback() && tls.is_none() {
        eprintln!(
            "berth: warning: listening on {} without TLS; tokens and logs cross the network in clear \
             (pass --tls-cert and --tls-key, or listen on 127.0.0.1)",
            args.listen
        );
    }
    let engine: Arc<dyn Engine> = Arc::new(super::connect(docker_host).await?);
    let mut config = berth_server::Config::new(args.listen, args.data.clone());
    config.max_builds = args.max_builds as usize;
    config.parallel = args.parallel.map(|n| n as usize);
    config.git_image = args.git_image;
    let scheme = if tls.is_some() { "https" } else { "http" };
    config.tls = tls;
    config.default_docker_mode = args.docker_mode.into();
    if let Some(p) = &args.scoped_policy {
        config.scoped_policy =
            berth_proxy::Policy::load(p).map_err(|e| Failure::usage(e.to_string()))?;
    }
    config.max_body = u64::from(args.max_body_mib) << 20;
    config.body_timeout = std::time::Duration::from_secs(args.body_timeout.into());
    config.stall_timeout = std::time::Duration::from_secs(args.stall_timeout.into());
    let started = berth_server::start(config, engine)
        .await
        .map_err(|e| Failure::infra(e.to_string()))?;
    if let Some(token) = &started.admin_token {
        eprintln!(
            "berth: created the admin API token (shown only this once; only its hash is stored):\n\n    {token}\n"
        );
    }
    let r = &started.recovered;
    if !r.interrupted.is_empty() {
        eprintln!(
            "berth: marked {} build(s) interrupted by the last stop ({} object(s) reaped)",
            r.interrupted.len(),
            r.reaped
        );
    }
    eprintln!(
        "berth: serving on {scheme}://{} (data in {}; {} queued build(s))",
        started.addr,
        args.data.display(),
        r.queued
    );
    started
        .run_until(stop_signal())
        .await
        .map_err(|e| Failure::infra(e.to_string()))?;
    eprintln!("berth: stopped; running builds were interrupted and cleaned up");
    Ok(ExitCode::Success)
}

/// Ctrl-C or SIGTERM: stop running builds (they are cleaned up), then exit.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} },
        _ => std::future::pending().await,
    }
    eprintln!("berth: stopping; interrupting running builds and cleaning up");
}
