//! Networks: per-job bridge networks.

use bollard::models::NetworkCreateRequest;

use crate::{DockerEngine, EngineError, Labels};

impl DockerEngine {
    pub(crate) async fn do_create_network(
        &self,
        name: &str,
        labels: &Labels,
        internal: bool,
    ) -> Result<String, EngineError> {
        let resp = self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                internal: internal.then_some(true),
                labels: Some(labels.clone().into_iter().collect()),
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("network {name}")))?;
        Ok(resp.id)
    }

    pub(crate) async fn do_remove_network(&self, id: &str) -> Result<(), EngineError> {
        match self.docker.remove_network(id).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(EngineError::from_bollard(e, || format!("network {id}"))),
        }
    }
}
