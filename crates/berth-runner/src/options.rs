//! What a run is asked to do, beyond the pipeline itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_pipeline::Start;

/// When to pull a job's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull only images the daemon does not have.
    #[default]
    Missing,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The tree copied into each job's workspace.
    pub source_dir: PathBuf,
    /// Where `<build-id>/<job>.log` and artifacts go.
    pub output_dir: PathBuf,
    pub start: Start,
    /// Jobs running at once.
    pub parallel: usize,
    pub pull: PullPolicy,
    /// Secret values by name (already resolved; see [`crate::resolve_secrets`]).
    pub secrets: BTreeMap<String, String>,
    /// `--param NAME=value` overrides of pipeline and job parameters.
    pub params: BTreeMap<String, String>,
    /// Job timeout when the pipeline sets none (Screwdriver's default is 90 minutes).
    pub default_timeout: Duration,
    /// After a timeout, how long the step's processes get between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Bound on the `teardown-*` steps after a timeout.
    pub teardown_timeout: Duration,
    /// `SD_PIPELINE_ID` for local runs.
    pub pipeline_id: String,
    /// The build id (`SD_BUILD_ID`, `io.berth.build`, the output subdirectory); `None` numbers
    /// builds in the output directory 1, 2, 3, ...
    pub build_id: Option<String>,
    /// What `screwdriver.cd/dockerEnabled: true` (without `docker:`) selects.
    pub default_docker_mode: DefaultDockerMode,
    /// Image of the nested daemon in dind mode (needs `dockerd`).
    pub dind_image: String,
    /// How long services (and the dind daemon) get to become ready, unless a service sets its own.
    pub service_timeout: Duration,
    /// The rules of `docker: scoped` jobs' endpoints (capabilities, limits, builds).
    pub scoped_policy: berth_proxy::Policy,
}

/// The Docker mode a job gets from `screwdriver.cd/dockerEnabled: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultDockerMode {
    None,
    Socket,
    Dind,
    #[default]
    Scoped,
}

impl RunOptions {
    pub fn new(source_dir: PathBuf, output_dir: PathBuf, start: Start) -> RunOptions {
        RunOptions {
            source_dir,
            output_dir,
            start,
            parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            pull: PullPolicy::Missing,
            secrets: BTreeMap::new(),
            params: BTreeMap::new(),
            default_timeout: Duration::from_secs(90 * 60),
            stop_grace: Duration::from_secs(10),
            teardown_timeout: Duration::from_secs(5 * 60),
            pipeline_id: "0".to_string(),
            build_id: None,
            default_docker_mode: DefaultDockerMode::Scoped,
            dind_image: "docker:dind".to_string(),
            service_timeout: Duration::from_secs(30),
            scoped_policy: berth_proxy::Policy::default(),
        }
    }
}
