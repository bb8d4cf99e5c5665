//! Containers: create, start, inspect, signal, remove, logs, archives.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, Mount as BMount, MountType,
    MountVolumeOptions, NetworkingConfig,
};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use crate::{ByteStream, ContainerInfo, ContainerSpec, DockerEngine, EngineError, Mount};

fn body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mounts = spec
        .mounts
        .iter()
        .map(|m| {
            let (typ, source, target, read_only) = match m {
                Mount::Volume {
                    source,
                    target,
                    read_only,
                } => (MountType::VOLUME, source, target, read_only),
                Mount::Bind {
                    source,
                    target,
                    read_only,
                } => (MountType::BIND, source, target, read_only),
            };
            // berth's volumes start empty by design: skip the copy-up of image content, which
            // costs the daemon a rootfs mount (~100 ms per container create).
            let volume_options = (typ == MountType::VOLUME).then(|| MountVolumeOptions {
                no_copy: Some(true),
                ..Default::default()
            });
            BMount {
                typ: Some(typ),
                source: Some(source.clone()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                volume_options,
                ..Default::default()
            }
        })
        .collect::<Vec<_>>();
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_config = HostConfig {
        mounts: (!mounts.is_empty()).then_some(mounts),
        memory: spec.memory_bytes,
        // Without a swap limit equal to memory, an OOM job would swap instead of being killed.
        memory_swap: spec.memory_bytes,
        nano_cpus: spec.nano_cpus,
        privileged: spec.privileged.then_some(true),
        cap_add: non_empty(&spec.cap_add),
        cap_drop: non_empty(&spec.cap_drop),
        security_opt: non_empty(&spec.security_opt),
        device_cgroup_rules: non_empty(&spec.device_cgroup_rules),
        runtime: spec.runtime.clone(),
        network_mode: spec.network.clone(),
        init: spec.init.then_some(true),
        ..Default::default()
    };
    let networking_config = spec.network.as_ref().map(|net| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            net.clone(),
            EndpointSettings {
                aliases: non_empty(&spec.network_aliases),
                ..Default::default()
            },
        )])),
    });
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        env: non_empty(&spec.env),
        labels: Some(spec.labels.clone().into_iter().collect()),
        working_dir: spec.working_dir.clone(),
        hostname: spec.hostname.clone(),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

impl DockerEngine {
    pub(crate) async fn do_create_container(
        &self,
        spec: &ContainerSpec,
    ) -> Result<String, EngineError> {
        let mut opts = CreateContainerOptionsBuilder::default();
        if let Some(name) = &spec.name {
            opts = opts.name(name);
        }
        let resp = self
            .docker
            .create_container(Some(opts.build()), body(spec))
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => EngineError::NotFound {
                    what: format!("image {} ({})", spec.image, message.trim()),
                },
                e => EngineError::from_bollard(e, || format!("container {}", spec.image)),
            })?;
        Ok(resp.id)
    }

    pub(crate) async fn do_start_container(&self, id: &str) -> Result<(), EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("container {id}")))
    }

    pub(crate) async fn do_inspect_container(
        &self,
        id: &str,
    ) -> Result<ContainerInfo, EngineError> {
        let c = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("container {id}")))?;
        let state = c.state.unwrap_or_default();
        let networks = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
            .collect();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            removing: state.status == Some(bollard::models::ContainerStateStatusEnum::REMOVING),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            labels: c
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            networks,
        })
    }

    pub(crate) async fn do_kill_container(
        &self,
        id: &str,
        signal: &str,
    ) -> Result<(), EngineError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        match self.docker.kill_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            // Not running (409) or gone (404): nothing to signal.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(EngineError::from_bollard(e, || format!("container {id}"))),
        }
    }

    pub(crate) async fn do_remove_container(&self, id: &str) -> Result<(), EngineError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // Removal already in progress (a concurrent reaper): treat as done.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(EngineError::from_bollard(e, || format!("container {id}"))),
        }
    }

    pub(crate) fn do_container_logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
    ) -> ByteStream {
        let tail = tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".to_string());
        let opts = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let id = id.to_string();
        self.docker
            .logs(&id.clone(), Some(opts))
            .map_ok(|o| o.into_bytes())
            .map_err(move |e| EngineError::from_bollard(e, || format!("container {id}")))
            .boxed()
    }

    pub(crate) async fn do_put_archive(
        &self,
        id: &str,
        path: &str,
        tar: Bytes,
    ) -> Result<(), EngineError> {
        let opts = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_full(tar))
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("path {path} in container {id}")))
    }

    pub(crate) async fn do_path_mtime(
        &self,
        id: &str,
        path: &str,
    ) -> Result<Option<String>, EngineError> {
        let opts = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        let stat = self
            .docker
            .get_container_archive_info(id, Some(opts))
            .await
            .map_err(|e| {
                EngineError::from_bollard(e, || format!("path {path} in container {id}"))
            })?;
        Ok(stat.modification_time)
    }

    pub(crate) fn do_get_archive(&self, id: &str, path: &str) -> ByteStream {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let what = format!("path {path} in container {id}");
        self.docker
            .download_from_container(id, Some(opts))
            .map_err(move |e| EngineError::from_bollard(e, || what.clone()))
            .boxed()
    }
}
