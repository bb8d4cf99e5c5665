//! berth's Docker engine layer.
//!
//! Owns: the [`Engine`] trait the rest of berth talks to, its bollard-backed implementation
//! ([`DockerEngine`]), the `io.berth.*` labels, owner liveness, and reaping by label.
//! Must not: know about pipelines, jobs' semantics, terminals or HTTP servers. Only this crate
//! (and the proxy) knows Docker wire types; everything it exposes is berth's own plain types.

mod connect;
mod containers;
mod docker_impl;
mod error;
mod events;
mod exec;
mod images;
pub mod labels;
mod networks;
mod owner;
mod reap;
mod types;
mod volumes;

pub use connect::{DaemonAddress, DockerEngine, install_crypto_provider};
pub use error::EngineError;
pub use events::DaemonEvent;
pub use owner::Owner;
pub use reap::{
    DeadScopeImages, ReapReport, dead_scope_images, reap, reap_dead_owners, reap_when_reachable,
    remove_all,
};
pub use types::*;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

/// A stream of raw bytes from the daemon (logs, archives).
pub type ByteStream = BoxStream<'static, Result<Bytes, EngineError>>;

/// Everything berth asks of a Docker daemon. Implemented by [`DockerEngine`]; tests may fake it.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Where the daemon is, as the user would write it (`unix:///var/run/docker.sock`).
    fn address(&self) -> &DaemonAddress;
    async fn version(&self) -> Result<DaemonVersion, EngineError>;

    async fn image_exists(&self, image: &str) -> Result<bool, EngineError>;
    async fn image_info(&self, image: &str) -> Result<ImageInfo, EngineError>;
    /// Pulls an image, reporting progress as it goes.
    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), EngineError>;

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError>;
    async fn start_container(&self, id: &str) -> Result<(), EngineError>;
    async fn inspect_container(&self, id: &str) -> Result<ContainerInfo, EngineError>;
    /// Sends a signal to the container's main process.
    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError>;
    /// Force-removes a container and its anonymous volumes; a missing container is not an error.
    async fn remove_container(&self, id: &str) -> Result<(), EngineError>;
    /// The container's log (stdout and stderr interleaved), from the start or the last `tail` lines.
    fn container_logs(&self, id: &str, follow: bool, tail: Option<usize>) -> ByteStream;
    /// Extracts a tar archive into `path` inside the container.
    async fn put_archive(&self, id: &str, path: &str, tar: Bytes) -> Result<(), EngineError>;
    /// A tar archive of `path` inside the container.
    fn get_archive(&self, id: &str, path: &str) -> ByteStream;
    /// The modification time of `path` inside the container as the daemon reports it (RFC 3339,
    /// e.g. `1970-01-01T00:00:00Z`), from a stat (`HEAD …/archive`), which is much cheaper than
    /// [`Engine::get_archive`]. `None` when this engine cannot tell.
    async fn path_mtime(&self, id: &str, path: &str) -> Result<Option<String>, EngineError> {
        let _ = (id, path);
        Ok(None)
    }

    /// Runs a command in a running container; output arrives on the returned stream.
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecHandle, EngineError>;
    /// Like [`Engine::exec`], with `stdin` written to the command's standard input, which is
    /// then closed. `None` when this engine cannot feed an exec (the caller takes another way).
    async fn exec_with_stdin(
        &self,
        container: &str,
        spec: &ExecSpec,
        stdin: Bytes,
    ) -> Result<Option<ExecHandle>, EngineError> {
        let _ = (container, spec, stdin);
        Ok(None)
    }
    /// Exit code of a finished exec; `None` while it still runs.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, EngineError>;

    async fn create_network(
        &self,
        name: &str,
        labels: &Labels,
        internal: bool,
    ) -> Result<String, EngineError>;
    /// Removes a network; a missing network is not an error.
    async fn remove_network(&self, id: &str) -> Result<(), EngineError>;
    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<(), EngineError>;
    /// Removes a volume; a missing volume is not an error.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError>;
    /// Where a local volume's data is on the daemon's host. Engines without volumes on a host
    /// (test fakes) answer `NotFound`.
    async fn volume_mountpoint(&self, name: &str) -> Result<std::path::PathBuf, EngineError> {
        Err(EngineError::NotFound {
            what: format!("volume {name}"),
        })
    }

    /// Every image in the daemon's store with its tags and labels. Engines without an image
    /// store (test fakes) have none.
    async fn list_images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        Ok(Vec::new())
    }
    /// Removes an image reference without force: a tag is untagged (and the image deleted
    /// with it when no other tag or container holds it); an id deletes an untagged image. A
    /// missing reference is not an error; an image in use is (`EngineError::Api`, HTTP 409).
    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        let _ = reference;
        Ok(())
    }

    /// Every container on the daemon, running or not (for telling what a job left behind).
    async fn list_containers(&self) -> Result<Vec<LabelledObject>, EngineError>;

    /// Objects carrying label `key` (any value, or exactly `value`).
    async fn list_labelled(
        &self,
        kind: ObjectKind,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<LabelledObject>, EngineError>;

    /// Daemon events of objects carrying `label` (`key=value`), from now on. Engines without
    /// an event stream (test fakes) yield nothing.
    fn events(&self, label: &str) -> BoxStream<'static, Result<DaemonEvent, EngineError>> {
        let _ = label;
        Box::pin(futures_util::stream::empty())
    }
}
