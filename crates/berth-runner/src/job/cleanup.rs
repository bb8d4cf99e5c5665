//! Removing what the job created: container (with anonymous volumes), then its workspace volume.

use super::{Context, Resources};

/// Removes everything in `res`; returns a message per failure (never stops at the first).
pub(crate) async fn remove(ctx: &Context, res: &Resources) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(c) = &res.container {
        if let Err(e) = ctx.engine.remove_container(c).await {
            problems.push(format!(
                "failed to remove container {c}: {e} (berth gc will retry)"
            ));
        }
    }
    if let Some(v) = &res.volume {
        if let Err(e) = ctx.engine.remove_volume(v).await {
            problems.push(format!(
                "failed to remove volume {v}: {e} (berth gc will retry)"
            ));
        }
    }
    problems
}
