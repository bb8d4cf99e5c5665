//! Volumes: per-job workspaces and caches.

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::RemoveVolumeOptionsBuilder;

use crate::{DockerEngine, EngineError, Labels};

impl DockerEngine {
    pub(crate) async fn do_create_volume(
        &self,
        name: &str,
        labels: &Labels,
    ) -> Result<(), EngineError> {
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("volume {name}")))?;
        Ok(())
    }

    pub(crate) async fn do_volume_mountpoint(
        &self,
        name: &str,
    ) -> Result<std::path::PathBuf, EngineError> {
        let v = self
            .docker
            .inspect_volume(name)
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("volume {name}")))?;
        Ok(v.mountpoint.into())
    }

    pub(crate) async fn do_remove_volume(&self, name: &str) -> Result<(), EngineError> {
        let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
        match self.docker.remove_volume(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(EngineError::from_bollard(e, || format!("volume {name}"))),
        }
    }
}
