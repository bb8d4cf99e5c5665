//! Making sure the job's image is on the daemon, per the pull policy; one pull per image per run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::{Context, JobError};
use crate::{JobEvent, PullPolicy};

/// The outcome of making one image available, shared by every job that uses it.
type ImageCell = Arc<OnceCell<Result<(), String>>>;

#[derive(Default)]
pub(crate) struct ImageCache {
    cells: Mutex<HashMap<String, ImageCell>>,
}

pub(crate) async fn ensure(ctx: &Context, job: &str, image: &str) -> Result<(), JobError> {
    let cell = {
        let mut cells = ctx.images.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry(image.to_string()).or_default().clone()
    };
    cell.get_or_init(|| async { fetch(ctx, job, image).await.map_err(|e| e.to_string()) })
        .await
        .clone()
        .map_err(JobError::Message)
}

async fn fetch(ctx: &Context, job: &str, image: &str) -> Result<(), JobError> {
    let engine = &ctx.engine;
    let present = match ctx.opts.pull {
        PullPolicy::Always => false,
        _ => engine.image_exists(image).await?,
    };
    if present {
        return Ok(());
    }
    if ctx.opts.pull == PullPolicy::Never {
        return Err(JobError::Message(format!(
            "image {image} is not on the daemon and --pull never forbids pulling it: build or load it first (docker images lists what is there)"
        )));
    }
    ctx.emit(
        job,
        JobEvent::Pulling {
            image: image.to_string(),
        },
    )
    .await;
    let events = ctx.events.clone();
    let job_name = job.to_string();
    let progress = move |p: berth_engine::PullProgress| {
        if let Some(layer) = p.layer {
            let _ = events.try_send(crate::RunEvent::Job {
                job: job_name.clone(),
                detail: JobEvent::PullProgress {
                    layer,
                    current: p.current,
                    total: p.total,
                },
            });
        }
    };
    match engine.pull_image(image, &progress).await {
        Ok(()) => Ok(()),
        Err(e) => {
            // With policy `always`, a local copy still serves when the registry cannot be reached.
            if ctx.opts.pull == PullPolicy::Always
                && engine.image_exists(image).await.unwrap_or(false)
            {
                ctx.warn(
                    job,
                    format!("could not pull {image} ({e}); using the local copy"),
                )
                .await;
                return Ok(());
            }
            Err(JobError::Message(format!(
                "image {image} is not on the daemon and could not be pulled: {}",
                match e {
                    berth_engine::EngineError::Pull { message, .. } => message,
                    other => other.to_string(),
                }
            )))
        }
    }
}
