//! `dind: {cache: NAME}`: the nested daemon's `/var/lib/docker` on a named volume kept across
//! builds, so image layers survive. Two daemons must never share one data directory, so a job
//! holds an exclusive lock on the cache while its daemon runs; a second job waits for it.
//!
//! The lock is an advisory lock on a file on this host (released by the kernel however berth
//! dies). The cache volume deliberately carries no owner label: it outlives the run, and
//! `berth gc` must not reap it.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::time::Duration;

use berth_engine::Labels;

use crate::job::{Context, JobError};

/// Label naming the cache a volume holds.
pub(crate) const CACHE_LABEL: &str = "io.berth.cache";

/// Docker volume name of cache `name`.
pub(crate) fn volume_name(name: &str) -> String {
    format!("berth-cache-{name}")
}

fn lock_path(name: &str) -> PathBuf {
    std::env::temp_dir()
        .join("berth-caches")
        .join(format!("{name}.lock"))
}

/// Takes the cache's lock, waiting (with one notice) while another job holds it, up to `limit`.
pub(crate) async fn lock(
    ctx: &Context,
    job: &str,
    name: &str,
    limit: Duration,
) -> Result<File, JobError> {
    let path = lock_path(name);
    let io = |e: std::io::Error| {
        JobError::Message(format!(
            "failed to lock cache {name} ({}): {e}",
            path.display()
        ))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JobError::Message(format!(
                "dind cache `{name}` stayed in use by another job for {} s; give this job its own cache name, or run the jobs one after the other",
                limit.as_secs()
            )));
        }
        if !told {
            ctx.warn(
                job,
                format!("dind cache `{name}` is in use by another job; waiting for it"),
            )
            .await;
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the cache volume if it does not exist yet (creating an existing volume is a no-op).
pub(crate) async fn ensure_volume(ctx: &Context, name: &str) -> Result<String, JobError> {
    let volume = volume_name(name);
    // Owned by no berth process: `io.berth.owner=cache` lets it be found by label, and gc (which
    // removes only objects of dead owners on this host) never takes it.
    let labels = Labels::from([
        (berth_engine::labels::OWNER.to_string(), "cache".to_string()),
        (berth_engine::labels::ROLE.to_string(), "cache".to_string()),
        (CACHE_LABEL.to_string(), name.to_string()),
    ]);
    ctx.engine.create_volume(&volume, &labels).await?;
    Ok(volume)
}
