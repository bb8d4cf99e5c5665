//! [`Engine`] for [`DockerEngine`]: delegates to the per-concern modules.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};
use bytes::Bytes;

use crate::{
    ByteStream, ContainerInfo, ContainerSpec, DaemonAddress, DaemonVersion, DockerEngine, Engine,
    EngineError, ExecHandle, ExecSpec, ImageInfo, ImageSummary, LabelledObject, Labels, ObjectKind,
    PullProgress,
};

#[async_trait]
impl Engine for DockerEngine {
    fn address(&self) -> &DaemonAddress {
        &self.address
    }

    async fn version(&self) -> Result<DaemonVersion, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(|e| EngineError::from_bollard(e, || "version".into()))?;
        Ok(DaemonVersion {
            version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
            os: v.os.unwrap_or_default(),
            arch: v.arch.unwrap_or_default(),
        })
    }

    async fn image_exists(&self, image: &str) -> Result<bool, EngineError> {
        match self.do_image_info(image).await {
            Ok(_) => Ok(true),
            Err(EngineError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn image_info(&self, image: &str) -> Result<ImageInfo, EngineError> {
        self.do_image_info(image).await
    }

    async fn pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), EngineError> {
        self.do_pull_image(image, progress).await
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        self.do_create_container(spec).await
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        self.do_start_container(id).await
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerInfo, EngineError> {
        self.do_inspect_container(id).await
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        self.do_kill_container(id, signal).await
    }

    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.do_remove_container(id).await
    }

    fn container_logs(&self, id: &str, follow: bool, tail: Option<usize>) -> ByteStream {
        self.do_container_logs(id, follow, tail)
    }

    async fn put_archive(&self, id: &str, path: &str, tar: Bytes) -> Result<(), EngineError> {
        self.do_put_archive(id, path, tar).await
    }

    fn get_archive(&self, id: &str, path: &str) -> ByteStream {
        self.do_get_archive(id, path)
    }

    async fn path_mtime(&self, id: &str, path: &str) -> Result<Option<String>, EngineError> {
        self.do_path_mtime(id, path).await
    }

    fn events(
        &self,
        label: &str,
    ) -> futures_util::stream::BoxStream<'static, Result<crate::DaemonEvent, EngineError>> {
        self.do_events(label)
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecHandle, EngineError> {
        self.do_exec(container, spec, None).await
    }

    async fn exec_with_stdin(
        &self,
        container: &str,
        spec: &ExecSpec,
        stdin: Bytes,
    ) -> Result<Option<ExecHandle>, EngineError> {
        self.do_exec(container, spec, Some(stdin)).await.map(Some)
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, EngineError> {
        self.do_exec_exit_code(exec_id).await
    }

    async fn create_network(
        &self,
        name: &str,
        labels: &Labels,
        internal: bool,
    ) -> Result<String, EngineError> {
        self.do_create_network(name, labels, internal).await
    }

    async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.do_remove_network(id).await
    }

    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<(), EngineError> {
        self.do_create_volume(name, labels).await
    }

    async fn volume_mountpoint(&self, name: &str) -> Result<std::path::PathBuf, EngineError> {
        self.do_volume_mountpoint(name).await
    }

    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.do_remove_volume(name).await
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        self.do_list_images(None).await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        self.do_remove_image(reference).await
    }

    async fn list_containers(&self) -> Result<Vec<LabelledObject>, EngineError> {
        let opts = ListContainersOptionsBuilder::default().all(true).build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| EngineError::from_bollard(e, || "container list".into()))?;
        Ok(list.into_iter().map(container_object).collect())
    }

    async fn list_labelled(
        &self,
        kind: ObjectKind,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<LabelledObject>, EngineError> {
        let filter = match value {
            Some(v) => format!("{key}={v}"),
            None => key.to_string(),
        };
        let filters = HashMap::from([("label".to_string(), vec![filter])]);
        let err = |e| EngineError::from_bollard(e, || format!("{kind} list"));
        let to_labels = |l: Option<HashMap<String, String>>| -> Labels {
            l.unwrap_or_default().into_iter().collect()
        };
        Ok(match kind {
            ObjectKind::Container => {
                let opts = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                self.docker
                    .list_containers(Some(opts))
                    .await
                    .map_err(err)?
                    .into_iter()
                    .map(container_object)
                    .collect()
            }
            ObjectKind::Network => {
                let opts = ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                self.docker
                    .list_networks(Some(opts))
                    .await
                    .map_err(err)?
                    .into_iter()
                    .map(|n| LabelledObject {
                        kind,
                        id: n.id.unwrap_or_default(),
                        name: n.name.unwrap_or_default(),
                        labels: to_labels(n.labels),
                    })
                    .collect()
            }
            ObjectKind::Volume => {
                let opts = ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                self.docker
                    .list_volumes(Some(opts))
                    .await
                    .map_err(err)?
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| LabelledObject {
                        kind,
                        id: v.name.clone(),
                        name: v.name,
                        labels: v.labels.into_iter().collect(),
                    })
                    .collect()
            }
            ObjectKind::Image => self
                .do_list_images(Some(&filters))
                .await?
                .into_iter()
                .map(|i| LabelledObject {
                    kind,
                    name: i.tags.first().cloned().unwrap_or_else(|| i.id.clone()),
                    id: i.id,
                    labels: i.labels,
                })
                .collect(),
        })
    }
}

/// A container as berth sees it in lists: full id, first name without the leading `/`, labels.
fn container_object(c: bollard::models::ContainerSummary) -> LabelledObject {
    LabelledObject {
        kind: ObjectKind::Container,
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: c.labels.unwrap_or_default().into_iter().collect(),
    }
}
