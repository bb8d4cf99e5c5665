//! Removing what the job created, in dependency order, whatever state the job ended in:
//! service and daemon logs saved first; in socket mode the job's compose project removed and
//! leftovers reported; then containers (job, services, dind daemon), the scoped endpoint (with
//! everything the job made through it), the network, the volumes, the host workspace of socket
//! and scoped modes, and last the dind cache lock.

use super::docker_mode::{dind, scoped, socket};
use super::{Context, Resources, services};

/// Removes everything in `res`; returns a message per failure (never stops at the first).
pub(crate) async fn remove(ctx: &Context, job: &str, res: &mut Resources) -> Vec<String> {
    let mut problems = Vec::new();
    let engine = ctx.engine.as_ref();
    for svc in &res.services {
        problems.extend(services::exited_during_job(ctx, job, svc).await);
        problems.extend(services::save_log(ctx, job, &svc.alias, &svc.id).await);
    }
    if let Some(daemon) = &res.dind {
        if let Some(id) = &daemon.container {
            problems.extend(services::save_log(ctx, job, dind::ALIAS, id).await);
        }
        dind::stop_gracefully(ctx, daemon).await;
    }
    if let Some(session) = &res.socket {
        problems.extend(socket::finish(ctx, job, session).await);
    }

    let mut containers: Vec<&String> = res.container.iter().collect();
    containers.extend(res.services.iter().map(|s| &s.id));
    containers.extend(res.dind.iter().filter_map(|d| d.container.as_ref()));
    let removals = containers
        .iter()
        .map(|c| async move { (c, engine.remove_container(c).await) });
    for (c, r) in futures_util::future::join_all(removals).await {
        if let Err(e) = r {
            problems.push(format!(
                "failed to remove container {c}: {e} (berth gc will retry)"
            ));
        }
    }
    let scoped_dir = res
        .scoped
        .as_ref()
        .and_then(|s| s.host_dir.clone().map(|d| (d, s.image.clone())));
    let scoped_volume = res.scoped.as_ref().and_then(|s| s.volume.clone());
    if let Some(session) = res.scoped.take() {
        problems.extend(scoped::finish(session).await);
    }
    if let Some(n) = &res.network
        && let Err(e) = engine.remove_network(n).await
    {
        problems.push(format!(
            "failed to remove network {n}: {e} (berth gc will retry)"
        ));
    }
    let mut volumes: Vec<&String> = res.volume.iter().collect();
    volumes.extend(scoped_volume.iter());
    volumes.extend(res.dind.iter().filter_map(|d| d.storage_volume.as_ref()));
    for v in volumes {
        if let Err(e) = engine.remove_volume(v).await {
            problems.push(format!(
                "failed to remove volume {v}: {e} (berth gc will retry)"
            ));
        }
    }
    if let Some(session) = &res.socket {
        problems.extend(socket::remove_host_dir(ctx, job, &session.host_dir, &session.image).await);
    }
    if let Some((dir, image)) = scoped_dir {
        problems.extend(socket::remove_host_dir(ctx, job, &dir, &image).await);
    }
    // Only now may the next job start a daemon on the same cache volume.
    if let Some(daemon) = &mut res.dind {
        daemon.cache_lock = None;
    }
    problems
}
