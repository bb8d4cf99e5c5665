//! The validated pipeline: what the runner consumes. Plain data, no YAML types, no Docker types.

use std::time::Duration;

use indexmap::IndexMap;

/// A loaded, validated pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Display name of the file the pipeline came from (as given to the loader).
    pub file: String,
    /// Jobs in file order, `shared` already merged in.
    pub jobs: IndexMap<String, Job>,
    /// Top-level annotations, kept as written.
    pub annotations: IndexMap<String, Value>,
    /// Top-level `parameters`, resolved to their default values (exposed as environment).
    pub parameters: IndexMap<String, Parameter>,
    /// Things accepted but not applied locally (`cache`, `sourcePaths`, `settings`, ...).
    pub warnings: Vec<crate::Diagnostic>,
}

/// A pipeline parameter: `name: value` or `name: {value: ..., description: ...}`;
/// a list value means "choices", the first is the default.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub value: String,
    pub description: Option<String>,
    pub choices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub image: String,
    pub description: Option<String>,
    /// Regular steps first, then `teardown-*` steps, each group in file order.
    pub steps: Vec<Step>,
    pub requires: Vec<Requirement>,
    /// `shared.environment` overlaid with the job's own; values stringified.
    pub environment: IndexMap<String, String>,
    /// Job-level `parameters` (overlay the pipeline's).
    pub parameters: IndexMap<String, Parameter>,
    /// Secret names (shared + job, deduplicated, in order).
    pub secrets: Vec<String>,
    /// All annotations, merged shared + job, kept as written (also the ones berth acts on).
    pub annotations: IndexMap<String, Value>,
    /// From `screwdriver.cd/timeout` (minutes); `None` means the runner's default.
    pub timeout: Option<Duration>,
    pub resources: Resources,
    pub services: Vec<Service>,
    pub docker: DockerMode,
    /// Where the job is defined (for messages).
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// From `screwdriver.cd/cpu`: number of CPUs (fractional allowed).
    pub cpus: Option<f64>,
    /// From `screwdriver.cd/ram`: bytes.
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: String,
    /// The shell text, multi-line allowed, exactly as written.
    pub command: String,
    /// Name starts with `teardown-`: always runs at the end, even after a failure.
    pub teardown: bool,
    pub location: Location,
}

/// One entry of `requires`.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// `a` (join: all plain job requirements must succeed) or `~a` (any: this one is enough).
    Job { name: String, any: bool },
    /// `~commit`, `~pr`, `~tag`, `~release`, with optional `:branch` or `:/regex/` filter.
    Trigger {
        event: Event,
        filter: Option<Filter>,
    },
    /// `sd@123:job` or `~sd@123:job`: another pipeline's job; never fires locally.
    Remote {
        pipeline: u64,
        job: String,
        any: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Commit,
    Pr,
    Tag,
    Release,
}

#[derive(Debug, Clone)]
pub enum Filter {
    Exact(String),
    Regex(regex::Regex),
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Filter::Exact(a), Filter::Exact(b)) => a == b,
            (Filter::Regex(a), Filter::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// A service container of a job (`services:`).
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub image: String,
    /// Explicit `alias`/`aliases`, else derived from the image name GitLab-style
    /// (`registry/org/img:tag` -> `org-img`, `img`).
    pub aliases: Vec<String>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: IndexMap<String, String>,
    /// Readiness timeout override (`timeout:` seconds).
    pub ready_timeout: Option<Duration>,
}

/// `docker:` key (job or shared), or `screwdriver.cd/dockerEnabled: true`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum DockerMode {
    #[default]
    None,
    /// `screwdriver.cd/dockerEnabled: true` without `docker:`: the runner's configured default.
    Default,
    Socket,
    Dind(DindOptions),
    Scoped,
}

/// `dind: {tls, runtime, cache}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DindOptions {
    pub tls: bool,
    pub runtime: Option<String>,
    pub cache: Option<String>,
}

impl Default for DindOptions {
    fn default() -> Self {
        DindOptions {
            tls: true,
            runtime: None,
            cache: None,
        }
    }
}

/// A YAML value kept as written (annotations).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Value>),
    Map(IndexMap<String, Value>),
}

/// 1-based line and column in the pipeline file; 0 when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}
