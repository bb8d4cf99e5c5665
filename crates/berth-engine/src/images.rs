//! Images: existence, inspection, pulls with progress.

use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

use crate::{DockerEngine, EngineError, ImageInfo, ImageSummary, PullProgress};

/// Splits `name[:tag]` into repository and tag (default `latest`); digests stay in the name.
fn split_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

impl DockerEngine {
    pub(crate) async fn do_list_images(
        &self,
        filters: Option<&std::collections::HashMap<String, Vec<String>>>,
    ) -> Result<Vec<ImageSummary>, EngineError> {
        let mut opts = ListImagesOptionsBuilder::default();
        if let Some(f) = filters {
            opts = opts.filters(f);
        }
        let list = self
            .docker
            .list_images(Some(opts.build()))
            .await
            .map_err(|e| EngineError::from_bollard(e, || "image list".into()))?;
        Ok(list
            .into_iter()
            .map(|i| ImageSummary {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                labels: i.labels.into_iter().collect(),
            })
            .collect())
    }

    pub(crate) async fn do_remove_image(&self, reference: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(false)
            .build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(EngineError::from_bollard(e, || {
                format!("image {reference}")
            })),
        }
    }

    pub(crate) async fn do_image_info(&self, image: &str) -> Result<ImageInfo, EngineError> {
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("image {image}")))?;
        let config = i.config.unwrap_or_default();
        let healthcheck = config
            .healthcheck
            .and_then(|h| h.test)
            .filter(|t| !t.is_empty() && t[0] != "NONE");
        let mut exposed_ports: Vec<String> = config
            .exposed_ports
            .map(|p| p.into_iter().collect())
            .unwrap_or_default();
        exposed_ports.sort();
        Ok(ImageInfo {
            id: i.id.unwrap_or_default(),
            healthcheck,
            exposed_ports,
            entrypoint: config.entrypoint,
            cmd: config.cmd,
        })
    }

    pub(crate) async fn do_pull_image(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), EngineError> {
        let (repo, tag) = split_reference(image);
        let mut opts = CreateImageOptionsBuilder::default().from_image(repo);
        if !tag.is_empty() {
            opts = opts.tag(tag);
        }
        let mut stream = self.docker.create_image(Some(opts.build()), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        return Err(EngineError::Pull {
                            image: image.to_string(),
                            message: err,
                        });
                    }
                    let detail = info.progress_detail.unwrap_or_default();
                    progress(PullProgress {
                        layer: info.id,
                        status: info.status.unwrap_or_default(),
                        current: detail.current.and_then(|c| u64::try_from(c).ok()),
                        total: detail.total.and_then(|c| u64::try_from(c).ok()),
                    });
                }
                Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                | Err(bollard::errors::Error::DockerStreamError { error: message }) => {
                    return Err(EngineError::Pull {
                        image: image.to_string(),
                        message: message.trim().to_string(),
                    });
                }
                Err(e) => return Err(EngineError::from_bollard(e, || format!("image {image}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("node:20"), ("node", "20"));
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/app:1"),
            ("localhost:5000/app", "1")
        );
        assert_eq!(split_reference("a@sha256:00"), ("a@sha256:00", ""));
    }
}
