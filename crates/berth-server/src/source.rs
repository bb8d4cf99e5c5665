//! A build's source tree on the server's disk: unpacked from an uploaded tar, or cloned by git
//! *inside a container* (the server host needs no git, and a clone never runs on the host).
//! The clone container carries the build's owner labels like everything else the build creates.

use std::path::Path;

use berth_engine::{ContainerSpec, Engine, ExecSpec, Owner, labels};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to unpack the uploaded source tar: {0}")]
    Unpack(std::io::Error),
    #[error("failed to prepare the source directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to run the git clone container: {0}")]
    Engine(#[from] berth_engine::EngineError),
    #[error("git clone of {url} at `{git_ref}` failed (exit {code}):\n{output}")]
    Clone {
        url: String,
        git_ref: String,
        code: i64,
        output: String,
    },
    #[error("cancelled while cloning the source")]
    Cancelled,
}

/// Unpacks `tar` into `dest` (entries escaping it are refused by the tar reader).
pub fn unpack(tar: &Path, dest: &Path) -> Result<(), SourceError> {
    std::fs::create_dir_all(dest)?;
    let file = std::fs::File::open(tar).map_err(SourceError::Unpack)?;
    tar::Archive::new(file)
        .unpack(dest)
        .map_err(SourceError::Unpack)?;
    Ok(())
}

/// Makes sure the runner copies `dir` by walking it, not by asking a git repository that
/// happens to enclose the server's data directory (which would list nothing, or the wrong
/// files): a tree without its own `.git` gets an invalid `.git` file, which git refuses and the
/// walk skips.
pub fn isolate_from_enclosing_repo(dir: &Path) -> std::io::Result<()> {
    let git = dir.join(".git");
    if !git.exists() {
        std::fs::write(git, "not a repository: berth source tree\n")?;
    }
    Ok(())
}

/// What a clone needs to know.
pub struct Clone<'a> {
    pub engine: &'a dyn Engine,
    pub owner: &'a Owner,
    pub build: i64,
    pub image: &'a str,
    pub url: &'a str,
    pub git_ref: &'a str,
}

/// Clones `url` at `git_ref` (branch, tag or commit) in a container and copies the checkout to
/// `dest` (its parent must exist; the tree lands in `dest`).
pub async fn clone(
    c: Clone<'_>,
    dest: &Path,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    if !c.engine.image_exists(c.image).await? {
        c.engine.pull_image(c.image, &|_| {}).await?;
    }
    let mut container_labels = c.owner.labels();
    container_labels.insert(labels::BUILD.to_string(), c.build.to_string());
    container_labels.insert("io.berth.role".to_string(), "clone".to_string());
    let spec = ContainerSpec {
        name: Some(format!("berth-{}-clone", c.owner.id())),
        image: c.image.to_string(),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["infinity".into()]),
        labels: container_labels,
        init: true,
        ..ContainerSpec::default()
    };
    let id = c.engine.create_container(&spec).await?;
    let result = tokio::select! {
        r = clone_in(&c, &id, dest) => r,
        _ = cancel.cancelled() => Err(SourceError::Cancelled),
    };
    // Removal errors are reported only when the clone itself went well.
    let removed = c.engine.remove_container(&id).await;
    result?;
    removed?;
    Ok(())
}

async fn clone_in(c: &Clone<'_>, id: &str, dest: &Path) -> Result<(), SourceError> {
    c.engine.start_container(id).await?;
    let script = "set -e; git init -q /src; cd /src; \
                  git fetch -q --depth 1 \"$BERTH_GIT_URL\" \"$BERTH_GIT_REF\"; \
                  git checkout -q FETCH_HEAD; git log -1 --format='checked out %H %s'";
    let exec = ExecSpec {
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            format!("BERTH_GIT_URL={}", c.url),
            format!("BERTH_GIT_REF={}", c.git_ref),
        ],
        working_dir: None,
        user: None,
    };
    let mut handle = c.engine.exec(id, &exec).await?;
    let mut output = Vec::new();
    while let Some(chunk) = handle.output.next().await {
        output.extend_from_slice(&chunk?);
        if output.len() > 64 * 1024 {
            output.drain(..output.len() - 64 * 1024);
        }
    }
    let code = loop {
        if let Some(code) = c.engine.exec_exit_code(&handle.id).await? {
            break code;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    if code != 0 {
        return Err(SourceError::Clone {
            url: c.url.to_string(),
            git_ref: c.git_ref.to_string(),
            code,
            output: String::from_utf8_lossy(&output).trim().to_string(),
        });
    }
    let mut archive = c.engine.get_archive(id, "/src");
    let mut tar = Vec::new();
    while let Some(chunk) = archive.next().await {
        tar.extend_from_slice(&chunk?);
    }
    // The archive's entries are `src/...`; unpack next to `dest` and move into place.
    let parent = dest.parent().unwrap_or(dest);
    let staging = parent.join("clone-staging");
    std::fs::create_dir_all(&staging)?;
    tar::Archive::new(&tar[..])
        .unpack(&staging)
        .map_err(SourceError::Unpack)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    std::fs::rename(staging.join("src"), dest)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}
