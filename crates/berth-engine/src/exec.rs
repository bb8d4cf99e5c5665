//! Execs: run a command in a running container and stream its output, optionally feeding it
//! standard input.

use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use crate::{DockerEngine, EngineError, ExecHandle, ExecSpec};

/// Read buffer for exec output: large enough that big outputs move in few syscalls.
const OUTPUT_CAPACITY: usize = 64 * 1024;

impl DockerEngine {
    pub(crate) async fn do_exec(
        &self,
        container: &str,
        spec: &ExecSpec,
        stdin: Option<Bytes>,
    ) -> Result<ExecHandle, EngineError> {
        let what = || format!("container {container}");
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: stdin.is_some().then_some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(spec.cmd.clone()),
                    env: (!spec.env.is_empty()).then(|| spec.env.clone()),
                    working_dir: spec.working_dir.clone(),
                    user: spec.user.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| EngineError::from_bollard(e, what))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(OUTPUT_CAPACITY),
                }),
            )
            .await
            .map_err(|e| EngineError::from_bollard(e, what))?;
        let output = match started {
            StartExecResults::Attached { output, mut input } => {
                if let Some(data) = stdin {
                    // Written alongside the reading of the output (a command that stops reading
                    // its input must not stall the caller), then closed so the command sees EOF.
                    // A write error means the command exited early; its exit code tells why.
                    tokio::spawn(async move {
                        if input.write_all(&data).await.is_ok() {
                            let _ = input.shutdown().await;
                        }
                    });
                }
                output
                    .map_ok(|o| o.into_bytes())
                    .map_err(|e| EngineError::Transport(e.to_string()))
                    .boxed()
            }
            StartExecResults::Detached => futures_util::stream::empty().boxed(),
        };
        Ok(ExecHandle {
            id: created.id,
            output,
        })
    }

    pub(crate) async fn do_exec_exit_code(
        &self,
        exec_id: &str,
    ) -> Result<Option<i64>, EngineError> {
        let info = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| EngineError::from_bollard(e, || format!("exec {exec_id}")))?;
        if info.running.unwrap_or(false) {
            return Ok(None);
        }
        Ok(info.exit_code)
    }
}
