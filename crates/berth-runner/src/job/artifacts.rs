//! Copying `SD_ARTIFACTS_DIR` out to `<build>/<job>/artifacts/` when the job ends.

use std::io::Write;

use futures_util::StreamExt;

use super::{Context, JobError};

pub(crate) async fn collect(
    ctx: &Context,
    job: &str,
    container: &str,
    artifacts_dir: &str,
) -> Result<(), JobError> {
    let dest = ctx.build_dir.join(job).join("artifacts");
    std::fs::create_dir_all(&dest)
        .map_err(|e| JobError::Message(format!("failed to create {}: {e}", dest.display())))?;
    // Spool to a file first: artifacts can be large and memory stays bounded.
    let spool_path = ctx.build_dir.join(format!(".{job}.artifacts.tar"));
    let io = |e: std::io::Error| {
        JobError::Message(format!("failed to write {}: {e}", spool_path.display()))
    };
    // The setup archive creates the artifacts directory empty with mtime 0 (the epoch), and adding
    // or removing an entry sets a directory's mtime to now: an epoch mtime means the job wrote
    // nothing, so the download is skipped. The stat costs a third of what the download of even
    // an empty directory costs (the daemon mounts the container's filesystem for it). Any doubt
    // (no answer, an error, another time) falls back to the download.
    if let Ok(Some(mtime)) = ctx.engine.path_mtime(container, artifacts_dir).await
        && untouched(&mtime)
    {
        return Ok(());
    }
    let mut spool = std::io::BufWriter::new(std::fs::File::create(&spool_path).map_err(io)?);
    let mut stream = ctx.engine.get_archive(container, artifacts_dir);
    // A failed write (disk full) must not leave a partial spool taking the space.
    let io = |e: std::io::Error| {
        let _ = std::fs::remove_file(&spool_path);
        io(e)
    };
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => spool.write_all(&c).map_err(io)?,
            Err(berth_engine::EngineError::NotFound { .. }) => {
                let _ = std::fs::remove_file(&spool_path);
                return Ok(());
            }
            Err(e) => {
                let _ = std::fs::remove_file(&spool_path);
                // A container removed from outside berth has nothing left to copy (the job's
                // result says what happened to it).
                if matches!(
                    ctx.engine.inspect_container(container).await,
                    Err(berth_engine::EngineError::NotFound { .. })
                        | Ok(berth_engine::ContainerInfo { removing: true, .. })
                ) {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }
    spool.flush().map_err(io)?;
    drop(spool);
    let path = spool_path.clone();
    let unpacked = tokio::task::spawn_blocking(move || unpack(&path, &dest)).await;
    let _ = std::fs::remove_file(&spool_path);
    unpacked
        .map_err(|e| JobError::Message(e.to_string()))?
        .map_err(|e| JobError::Message(format!("failed to unpack artifacts: {e}")))
}

/// Whether a daemon-reported mtime is the epoch the setup archive gives the artifacts directory.
fn untouched(mtime: &str) -> bool {
    matches!(mtime, "1970-01-01T00:00:00Z" | "1970-01-01T00:00:00+00:00")
}

/// Unpacks the archive of `artifacts/` into `dest`, dropping the top directory; refuses entries
/// whose path is not plain (`..`, absolute).
fn unpack(tar_path: &std::path::Path, dest: &std::path::Path) -> std::io::Result<()> {
    use std::path::{Component, PathBuf};
    let mut archive = tar::Archive::new(std::fs::File::open(tar_path)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rel: PathBuf = path.components().skip(1).collect();
        if rel.as_os_str().is_empty() {
            continue;
        }
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(std::io::Error::other(format!(
                "refused artifact path {}",
                path.display()
            )));
        }
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry.unpack(&target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::untouched;

    #[test]
    fn only_the_epoch_is_untouched() {
        assert!(untouched("1970-01-01T00:00:00Z"));
        assert!(!untouched("1970-01-01T00:00:01Z"));
        assert!(!untouched("1970-01-01T00:00:00.5Z"));
        assert!(!untouched("2026-11-23T12:57:49.123456789Z"));
        assert!(!untouched(""));
    }
}
