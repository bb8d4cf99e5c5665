//! Creating the job's workspace and container, and filling the workspace.
//!
//! The workspace is at Screwdriver's `/sd/workspace`: in the job container's own filesystem for
//! a plain job (no volume to create and remove), on a volume when another container shares it
//! (the dind daemon), or a host directory at the same path inside the job (socket and scoped
//! modes); the mode's environment, mounts and files (client certificates) are added to the job
//! container here.

use berth_engine::{ContainerSpec, EngineError, Mount};
use berth_pipeline::Job;
use bytes::Bytes;

use super::docker_mode::JobDocker;
use super::{Context, JobError, Resources};
use crate::source::{self, Layout};

/// PID 1 of a job container: idles until told to stop, and stops at once on SIGTERM.
const KEEPALIVE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// The job's environment, lowest precedence first: parameters, the job's `environment`, the
/// Docker mode's variables, then Screwdriver's variables (which a pipeline cannot override).
pub(crate) fn environment(
    ctx: &Context,
    job: &Job,
    layout: &Layout,
    docker_env: &[String],
) -> Vec<String> {
    let mut env: indexmap::IndexMap<String, String> = indexmap::IndexMap::new();
    for (k, p) in ctx.parameters.iter().chain(job.parameters.iter()) {
        env.insert(k.clone(), p.value.clone());
    }
    for (k, v) in &ctx.opts.params {
        env.insert(k.clone(), v.clone());
    }
    for (k, v) in &job.environment {
        env.insert(k.clone(), v.clone());
    }
    for kv in docker_env {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    for (k, v) in [
        ("CI", "true".to_string()),
        ("SCREWDRIVER", "true".to_string()),
        ("SD_JOB_NAME", job.name.clone()),
        ("SD_BUILD_ID", ctx.build_id.clone()),
        ("SD_PIPELINE_ID", ctx.opts.pipeline_id.clone()),
        ("SD_ROOT_DIR", layout.workspace.clone()),
        ("SD_SOURCE_DIR", layout.source()),
        ("SD_ARTIFACTS_DIR", layout.artifacts()),
    ] {
        env.insert(k.to_string(), v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Creates the job's workspace volume (recorded for cleanup); returns its name.
pub(crate) async fn workspace_volume(
    ctx: &Context,
    job: &Job,
    res: &mut Resources,
) -> Result<String, JobError> {
    let volume = format!("{}-ws", ctx.object_name(&job.name));
    ctx.engine
        .create_volume(&volume, &ctx.labels(&job.name, "workspace"))
        .await?;
    res.volume = Some(volume.clone());
    Ok(volume)
}

/// Creates and starts the job container; returns its id and the setup archive (source tree,
/// step scripts, the mode's files), which the first step's exec unpacks (see `job::steps`).
/// `volume` is the workspace volume, unless `docker.layout` puts the workspace elsewhere; with
/// neither, the workspace lives in the container's own filesystem.
pub(crate) async fn create(
    ctx: &Context,
    job: &Job,
    res: &mut Resources,
    volume: Option<&str>,
    network: Option<&str>,
    docker: &JobDocker,
) -> Result<(String, Bytes), JobError> {
    let engine = &ctx.engine;
    let layout = docker.layout.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    if let Some(volume) = volume {
        mounts.push(Mount::Volume {
            source: volume.to_string(),
            target: layout.workspace.clone(),
            read_only: false,
        });
    }
    mounts.extend(docker.mounts.iter().cloned());
    let spec = ContainerSpec {
        name: Some(ctx.object_name(&job.name)),
        image: job.image.clone(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), KEEPALIVE.into()]),
        cmd: Some(vec![]),
        env: environment(ctx, job, &layout, &docker.env),
        labels: ctx.labels(&job.name, "job"),
        working_dir: Some(layout.source()),
        mounts,
        network: network.map(str::to_string),
        memory_bytes: job.resources.memory_bytes.map(|b| b as i64),
        nano_cpus: job.resources.cpus.map(|c| (c * 1e9) as i64),
        ..Default::default()
    };
    // Pack the setup archive while the daemon creates and starts the container.
    let source_dir = ctx.opts.source_dir.clone();
    let files = ctx.files.clone();
    let steps = job.steps.clone();
    let extra = docker.files.clone();
    let pack = tokio::task::spawn_blocking(move || {
        source::setup_archive(&source_dir, &files, &steps, &layout, &extra)
    });
    let id = engine.create_container(&spec).await?;
    res.container = Some(id.clone());
    engine.start_container(&id).await.map_err(|e| match e {
        EngineError::Api { message, .. } if message.contains("/bin/sh") => JobError::Message(format!(
            "image {} has no /bin/sh; berth runs steps with a shell, so the job image needs one",
            job.image
        )),
        e => e.into(),
    })?;
    let tar = pack
        .await
        .map_err(|e| JobError::Message(format!("failed to pack the source tree: {e}")))?
        .map_err(|e| JobError::Message(format!("failed to pack the source tree: {e}")))?;
    Ok((id, tar.into()))
}
