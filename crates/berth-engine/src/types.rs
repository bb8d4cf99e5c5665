//! Plain data types of the engine interface (no bollard types leak out).

use std::collections::BTreeMap;

use futures_util::stream::BoxStream;

use crate::EngineError;

/// Labels of a Docker object, sorted for stable output.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonVersion {
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    /// `HEALTHCHECK` test, when the image has one (and it is not `NONE`).
    pub healthcheck: Option<Vec<String>>,
    /// Exposed ports as `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
}

/// One progress message of a pull.
#[derive(Debug, Clone, PartialEq)]
pub struct PullProgress {
    pub layer: Option<String>,
    pub status: String,
    pub current: Option<u64>,
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    Volume {
        source: String,
        target: String,
        read_only: bool,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
}

/// What a container is created from. Every field maps to one Docker setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    pub name: Option<String>,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub labels: Labels,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub mounts: Vec<Mount>,
    /// Network to attach to, with the aliases the container answers to on it.
    pub network: Option<String>,
    pub network_aliases: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub device_cgroup_rules: Vec<String>,
    pub runtime: Option<String>,
    /// Run an init process as PID 1 (reaps zombies, forwards signals).
    pub init: bool,
}

/// State of a container as inspected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub running: bool,
    /// Being removed (`docker rm -f` under way): it will be gone in a moment.
    pub removing: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// `healthy`, `unhealthy`, `starting`, when the container has a healthcheck.
    pub health: Option<String>,
    pub labels: Labels,
    /// IP address on each network the container is attached to.
    pub networks: BTreeMap<String, String>,
}

/// A command to run in a running container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A running exec: its id and its combined stdout/stderr.
pub struct ExecHandle {
    pub id: String,
    pub output: BoxStream<'static, Result<bytes::Bytes, EngineError>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Container,
    Network,
    Volume,
    /// An image tag, or an untagged image by id.
    Image,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Container => "container",
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
            ObjectKind::Image => "image",
        })
    }
}

/// An image in the daemon's store, with every tag pointing at it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageSummary {
    pub id: String,
    /// `repo:tag` references (none for an untagged image).
    pub tags: Vec<String>,
    pub labels: Labels,
}

/// A container, network, volume or image found by label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledObject {
    pub kind: ObjectKind,
    /// Id for containers and networks, name for volumes, tag (or id when untagged) for images.
    pub id: String,
    pub name: String,
    pub labels: Labels,
}
