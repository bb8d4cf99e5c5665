//! The job's own bridge network: created only when the job has services or Docker access (a
//! plain job stays on the default bridge, which keeps its cost low). Services answer on it by
//! alias; the dind daemon answers as `docker`.

use super::{Context, JobError, Resources};

/// Creates the job's network and records it for cleanup; returns its name.
pub(crate) async fn create(
    ctx: &Context,
    job: &str,
    res: &mut Resources,
) -> Result<String, JobError> {
    let name = format!("{}-net", ctx.object_name(job));
    let id = ctx
        .engine
        .create_network(&name, &ctx.labels(job, "network"), false)
        .await?;
    res.network = Some(id);
    Ok(name)
}
