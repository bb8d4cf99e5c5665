//! Running a short command in a container and getting its exit code (readiness probes).

use std::time::Duration;

use berth_engine::{EngineError, ExecSpec};
use futures_util::StreamExt;

use super::Context;

/// Runs `cmd` in `container`, discarding its output; returns its exit code.
pub(crate) async fn exec_code(
    ctx: &Context,
    container: &str,
    cmd: Vec<String>,
) -> Result<i64, EngineError> {
    let spec = ExecSpec {
        cmd,
        ..Default::default()
    };
    let mut h = ctx.engine.exec(container, &spec).await?;
    while let Some(chunk) = h.output.next().await {
        chunk?;
    }
    for attempt in 0..100u64 {
        if let Some(code) = ctx.engine.exec_exit_code(&h.id).await? {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(5 * attempt.min(20))).await;
    }
    Err(EngineError::Transport(format!(
        "the daemon never reported the exit code of exec {}",
        h.id
    )))
}
