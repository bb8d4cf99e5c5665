//! `berth run`: run the pipeline's jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::{Engine, Owner};
use berth_pipeline::{Event, Start};
use berth_runner::{PullPolicy, RunOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::args::{EventArg, PullArg, RunArgs};
use crate::render::Renderer;
use crate::{ExitCode, Failure};

fn parse_pairs(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::usage(format!("--{flag} `{item}` is not NAME=VALUE")))
        })
        .collect()
}

pub(crate) async fn run(docker_host: Option<&str>, args: RunArgs) -> Result<ExitCode, Failure> {
    let (path, pipeline) = super::load_pipeline(args.file.as_deref())?;
    let mut secrets = BTreeMap::new();
    if let Some(file) = &args.secrets_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Failure::usage(format!(
                "failed to read secrets file {}: {e}",
                file.display()
            ))
        })?;
        secrets = berth_runner::parse_dotenv(&file.display().to_string(), &text)
            .map_err(|e| Failure::usage(e.to_string()))?;
    }
    secrets.extend(parse_pairs("secret", &args.secrets)?);
    let params = parse_pairs("param", &args.params)?;

    let start = if args.jobs.is_empty() {
        Start::Event {
            event: match args.event {
                EventArg::Commit => Event::Commit,
                EventArg::Pr => Event::Pr,
                EventArg::Tag => Event::Tag,
                EventArg::Release => Event::Release,
            },
            branch: args.branch.clone(),
            tag: args.tag.clone(),
        }
    } else {
        Start::Jobs(args.jobs.clone())
    };
    let source_dir = match &args.source {
        Some(s) => s.clone(),
        None => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| std::path::PathBuf::from(".")),
    };
    if !source_dir.is_dir() {
        return Err(Failure::usage(format!(
            "source directory {} does not exist",
            source_dir.display()
        )));
    }
    // Check the job selection before touching the daemon: a typo is a usage error.
    berth_pipeline::Scheduler::new(&pipeline, &start).map_err(|e| Failure::usage(e.to_string()))?;
    let mut opts = RunOptions::new(source_dir, args.output.clone(), start);
    if let Some(n) = args.parallel {
        if n == 0 {
            return Err(Failure::usage("--parallel must be at least 1"));
        }
        opts.parallel = n;
    }
    opts.pull = match args.pull {
        PullArg::Missing => PullPolicy::Missing,
        PullArg::Always => PullPolicy::Always,
        PullArg::Never => PullPolicy::Never,
    };
    opts.secrets = secrets;
    opts.params = params;
    opts.default_timeout = args.timeout;
    opts.stop_grace = Duration::from_secs(args.stop_grace);
    opts.default_docker_mode = args.docker_mode.into();
    opts.dind_image = args.dind_image.clone();
    if let Some(p) = &args.scoped_policy {
        opts.scoped_policy =
            berth_proxy::Policy::load(p).map_err(|e| Failure::usage(e.to_string()))?;
    }
    opts.service_timeout = args.service_timeout;

    for w in &pipeline.warnings {
        eprintln!("{w}");
    }
    let engine: Arc<dyn Engine> = Arc::new(super::connect(docker_host).await?);
    let owner = Owner::register().map_err(|e| {
        Failure::infra(format!(
            "failed to register this run in {}: {e}",
            berth_engine_owners_dir()
        ))
    })?;

    // Remove what dead runs left behind, alongside this run (never touches live runs).
    let gc_engine = engine.clone();
    let gc = tokio::spawn(async move { berth_engine::reap_dead_owners(gc_engine.as_ref()).await });

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let many_jobs = pipeline.jobs.len() > 1 && opts.parallel > 1 && args.jobs.len() != 1;
    let (tx, rx) = mpsc::channel(256);
    let renderer = Renderer::new(args.json, many_jobs);
    let render = tokio::task::spawn_blocking(move || renderer.consume(rx));
    let result = berth_runner::run(engine.clone(), &owner, &pipeline, opts, tx, cancel).await;
    let _ = render.await;
    // Jobs remove what they create; only an infrastructure failure (a daemon that went away
    // mid-run) can leave anything of this run behind.
    if matches!(&result, Ok(summary) if summary.exit_code() == ExitCode::Infrastructure as i32) {
        reap_own_leftovers(engine.as_ref(), owner.id()).await;
    }
    if let Ok(Ok((_, report))) = gc.await
        && !report.removed.is_empty()
    {
        eprintln!(
            "berth: removed {} object(s) left behind by runs that died",
            report.removed.len()
        );
    }
    match result {
        Ok(summary) => Ok(ExitCode::from_code(summary.exit_code())),
        Err(e) if e.is_usage() => Err(Failure::usage(e.to_string())),
        Err(e) => Err(Failure::infra(e.to_string())),
    }
}

/// How long a run waits at its end for an unreachable daemon to come back.
const DAEMON_WAIT: Duration = Duration::from_secs(60);

/// Removes whatever this run still has on the daemon. Normally nothing (each job cleans up
/// after itself); but a daemon that stopped or restarted mid-run makes those removals fail,
/// so wait (bounded) until it answers again and remove them now, rather than leaving them to
/// the next `berth gc`.
async fn reap_own_leftovers(engine: &dyn Engine, owner: &str) {
    let waiting = |e: &berth_engine::EngineError| {
        eprintln!(
            "berth: {e}; waiting up to {} s for the daemon to remove what this run left",
            DAEMON_WAIT.as_secs()
        )
    };
    match berth_engine::reap_when_reachable(
        engine,
        berth_engine::labels::OWNER,
        owner,
        DAEMON_WAIT,
        waiting,
    )
    .await
    {
        Ok(report) => {
            if !report.removed.is_empty() {
                eprintln!(
                    "berth: removed {} object(s) this run left on the daemon",
                    report.removed.len()
                );
            }
            for (o, e) in &report.failed {
                eprintln!(
                    "berth: failed to remove {} {}: {e} (berth gc will retry)",
                    o.kind, o.name
                );
            }
        }
        Err(e) => eprintln!(
            "berth: could not remove what this run left on the daemon: {e} (`berth gc` will)"
        ),
    }
}

fn berth_engine_owners_dir() -> String {
    std::env::var("BERTH_OWNERS_DIR").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("berth-owners")
            .display()
            .to_string()
    })
}

/// First Ctrl-C / SIGTERM cancels the run (jobs are cleaned up); a second one exits at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        for n in 0.. {
            match (term.as_mut(), interrupt.as_mut()) {
                (Some(t), Some(i)) => tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} },
                _ => std::future::pending::<()>().await,
            }
            if n > 0 {
                std::process::exit(ExitCode::Interrupted as i32);
            }
            eprintln!(
                "berth: interrupted; cancelling jobs and cleaning up (again to exit at once)"
            );
            cancel.cancel();
        }
    });
}
