//! Command-line arguments (clap derive). Help text is snapshot-tested.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "Exit codes:
  0    every job passed
  1    a job failed, timed out or was OOM-killed, or downstream jobs were skipped
  2    usage or pipeline-file error
  3    infrastructure error (Docker daemon unreachable, image missing, I/O)
  130  interrupted (Ctrl-C / SIGTERM)";

/// Run CI pipelines (screwdriver.yaml) in Docker containers.
#[derive(Debug, Parser)]
#[command(name = "berth", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Docker daemon address (default: DOCKER_HOST, else unix:///var/run/docker.sock).
    #[arg(long, global = true, value_name = "URL")]
    pub docker_host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

// The larger argument structs are boxed so the enum stays small whatever each command grows.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline's jobs in containers on the Docker daemon.
    #[command(after_help = EXIT_CODES)]
    Run(Box<RunArgs>),
    /// Check the pipeline file and print file:line:col errors.
    Validate(ValidateArgs),
    /// Remove containers, networks and volumes left behind by berth runs that died.
    Gc(GcArgs),
    /// Run the build service: HTTP API, build history, live logs and events, web UI.
    Serve(Box<crate::commands::serve::ServeArgs>),
    /// Manage the build service's API tokens.
    Token(crate::commands::token::TokenArgs),
    /// Serve a scoped Docker socket: a Docker API endpoint limited to its own objects.
    Proxy(Box<crate::commands::proxy::ProxyArgs>),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (default: ./berth.yaml, else ./screwdriver.yaml).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Run exactly this job (repeatable); nothing downstream runs.
    #[arg(short, long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// The event that starts the run: jobs requiring ~EVENT start, then their downstream jobs.
    #[arg(long, value_enum, default_value_t = EventArg::Commit)]
    pub event: EventArg,
    /// Branch for `~commit:BRANCH` / `~pr:BRANCH` filters.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Tag for `~tag:...` / `~release:...` filters.
    #[arg(long)]
    pub tag: Option<String>,
    /// Source tree copied into each job's workspace (default: the pipeline file's directory).
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Where build logs and artifacts go.
    #[arg(long, value_name = "DIR", default_value = ".berth/builds")]
    pub output: PathBuf,
    /// Jobs run at once (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// When to pull job images.
    #[arg(long, value_enum, default_value_t = PullArg::Missing)]
    pub pull: PullArg,
    /// A secret's value (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// A dotenv file of secret values.
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Override a pipeline parameter (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Job timeout when the pipeline sets none: minutes, or a number with s/m/h.
    #[arg(long, value_name = "DURATION", default_value = "90m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Seconds a timed-out step gets between SIGTERM and SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub stop_grace: u64,
    /// Docker mode of jobs with `screwdriver.cd/dockerEnabled: true` and no `docker:` key:
    /// scoped (fast and isolated), socket (fast, not isolated), dind (isolated, slower), none.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = DockerModeArg::Scoped)]
    pub docker_mode: DockerModeArg,
    /// Image of the per-job Docker daemon in dind mode (any image with dockerd).
    #[arg(long, value_name = "IMAGE", default_value = "docker:dind")]
    pub dind_image: String,
    /// How long services get to become ready (a service's own `timeout:` wins): 30s, 2m, ...
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub service_timeout: std::time::Duration,
    /// JSON policy file for `docker: scoped` jobs' endpoints (as `berth proxy --policy`).
    #[arg(long, value_name = "FILE")]
    pub scoped_policy: Option<std::path::PathBuf>,
    /// Print JSON lines of job and step events instead of logs.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DockerModeArg {
    None,
    Socket,
    Dind,
    Scoped,
}

impl From<DockerModeArg> for berth_runner::DefaultDockerMode {
    fn from(m: DockerModeArg) -> Self {
        match m {
            DockerModeArg::None => berth_runner::DefaultDockerMode::None,
            DockerModeArg::Socket => berth_runner::DefaultDockerMode::Socket,
            DockerModeArg::Dind => berth_runner::DefaultDockerMode::Dind,
            DockerModeArg::Scoped => berth_runner::DefaultDockerMode::Scoped,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EventArg {
    Commit,
    Pr,
    Tag,
    Release,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PullArg {
    Missing,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline file (default: ./berth.yaml, else ./screwdriver.yaml).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
}

/// `90` (minutes), `30s`, `5m`, `2h`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "m"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90, 30s, 5m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
