//! Creating the job's workspace volume and container, and filling the workspace.

use berth_engine::{ContainerSpec, EngineError, Mount};
use berth_pipeline::Job;

use super::{Context, JobError, Resources};
use crate::source::{self, ARTIFACTS_DIR, SOURCE_DIR, WORKSPACE};

/// PID 1 of a job container: idles until told to stop, and stops at once on SIGTERM.
const KEEPALIVE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// The job's environment, lowest precedence first: parameters, the job's `environment`, then
/// Screwdriver's variables (which a pipeline cannot override).
pub(crate) fn environment(ctx: &Context, job: &Job) -> Vec<String> {
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
    for (k, v) in [
        ("CI", "true"),
        ("SCREWDRIVER", "true"),
        ("SD_JOB_NAME", job.name.as_str()),
        ("SD_BUILD_ID", ctx.build_id.as_str()),
        ("SD_PIPELINE_ID", ctx.opts.pipeline_id.as_str()),
        ("SD_ROOT_DIR", WORKSPACE),
        ("SD_SOURCE_DIR", SOURCE_DIR),
        ("SD_ARTIFACTS_DIR", ARTIFACTS_DIR),
    ] {
        env.insert(k.to_string(), v.to_string());
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

pub(crate) async fn create(
    ctx: &Context,
    job: &Job,
    res: &mut Resources,
) -> Result<String, JobError> {
    let engine = &ctx.engine;
    let name = ctx.object_name(&job.name);
    let volume = format!("{name}-ws");
    engine
        .create_volume(&volume, &ctx.labels(&job.name, "workspace"))
        .await?;
    res.volume = Some(volume.clone());

    let spec = ContainerSpec {
        name: Some(name),
        image: job.image.clone(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), KEEPALIVE.into()]),
        cmd: Some(vec![]),
        env: environment(ctx, job),
        labels: ctx.labels(&job.name, "job"),
        working_dir: Some(SOURCE_DIR.into()),
        mounts: vec![Mount::Volume {
            source: volume,
            target: WORKSPACE.into(),
            read_only: false,
        }],
        memory_bytes: job.resources.memory_bytes.map(|b| b as i64),
        nano_cpus: job.resources.cpus.map(|c| (c * 1e9) as i64),
        ..Default::default()
    };
    let id = engine.create_container(&spec).await?;
    res.container = Some(id.clone());
    engine.start_container(&id).await.map_err(|e| match e {
        EngineError::Api { message, .. } if message.contains("/bin/sh") => JobError::Message(format!(
            "image {} has no /bin/sh; berth runs steps with a shell, so the job image needs one",
            job.image
        )),
        e => e.into(),
    })?;

    let source_dir = ctx.opts.source_dir.clone();
    let files = ctx.files.clone();
    let steps = job.steps.clone();
    let tar =
        tokio::task::spawn_blocking(move || source::setup_archive(&source_dir, &files, &steps))
            .await
            .map_err(|e| JobError::Message(format!("failed to pack the source tree: {e}")))?
            .map_err(|e| JobError::Message(format!("failed to pack the source tree: {e}")))?;
    engine.put_archive(&id, "/", tar.into()).await?;
    Ok(id)
}
