//! Docker access for a job's steps (`docker:`): which mode a job gets, and what each mode adds
//! to the job container. One file per mode: [`socket`] binds the host daemon's socket,
//! [`dind`] runs a daemon of the job's own ([`certs`] for its TLS, [`cache`] for its kept
//! storage), [`scoped`] gives the job its own scoped endpoint (berth-proxy) on the host daemon.

pub(crate) mod cache;
pub(crate) mod certs;
pub(crate) mod dind;
pub(crate) mod scoped;
pub(crate) mod socket;

use berth_engine::Mount;
use berth_pipeline::{DindOptions, DockerMode, Job};

use super::{Context, JobError};
use crate::DefaultDockerMode;
use crate::source::{ExtraFile, Layout};

/// The Docker access a job actually gets (the pipeline's mode with `Default` resolved).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Access {
    None,
    Socket,
    Dind(DindOptions),
    Scoped,
}

impl Access {
    /// Whether the job gets its own network for this access (services need one too).
    pub(crate) fn needs_network(&self) -> bool {
        !matches!(self, Access::None)
    }
}

/// What a Docker mode adds to the job container.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobDocker {
    /// `KEY=value` entries (`DOCKER_HOST` and friends).
    pub env: Vec<String>,
    pub mounts: Vec<Mount>,
    /// Files added to the setup archive (client certificates).
    pub files: Vec<ExtraFile>,
    /// A workspace location other than the default, when the mode needs one.
    pub layout: Option<Layout>,
}

/// The job's Docker access, or why it cannot have it (checked before anything is created).
pub(crate) fn resolve(ctx: &Context, job: &Job) -> Result<Access, JobError> {
    let access = match &job.docker {
        DockerMode::None => Access::None,
        DockerMode::Default => match ctx.opts.default_docker_mode {
            DefaultDockerMode::None => Access::None,
            DefaultDockerMode::Socket => Access::Socket,
            DefaultDockerMode::Dind => Access::Dind(DindOptions::default()),
            DefaultDockerMode::Scoped => Access::Scoped,
        },
        DockerMode::Socket => Access::Socket,
        DockerMode::Dind(o) => Access::Dind(o.clone()),
        DockerMode::Scoped => Access::Scoped,
    };
    if matches!(access, Access::Socket | Access::Scoped) {
        socket::socket_path(ctx)?;
    }
    Ok(access)
}
