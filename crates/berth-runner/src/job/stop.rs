//! Stopping a job's processes after a timeout: SIGTERM to all, a grace period, then SIGKILL.
//! The container itself stays up so `teardown-*` steps can still run.

use std::time::Duration;

use berth_engine::ExecSpec;
use futures_util::StreamExt;

use super::Context;

/// Signals every process in the container but PID 1 (berth's idle loop) and waits for them.
pub(crate) async fn terminate_processes(ctx: &Context, container: &str, grace: Duration) {
    signal_all(ctx, container, "TERM").await;
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !others_running(ctx, container).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal_all(ctx, container, "KILL").await;
}

/// Runs a shell snippet in the container and returns its output (empty on any failure).
pub(crate) async fn run_quiet(ctx: &Context, container: &str, script: &str) -> Vec<u8> {
    let spec = ExecSpec {
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let mut out = Vec::new();
    if let Ok(mut h) = ctx.engine.exec(container, &spec).await {
        while let Some(Ok(chunk)) = h.output.next().await {
            out.extend_from_slice(&chunk);
        }
    }
    out
}

async fn signal_all(ctx: &Context, container: &str, signal: &str) {
    run_quiet(
        ctx,
        container,
        &format!("kill -{signal} -1 2>/dev/null; true"),
    )
    .await;
}

/// Whether any process other than PID 1, its idle `sleep`, and this probe is alive.
async fn others_running(ctx: &Context, container: &str) -> bool {
    let script = "for p in /proc/[0-9]*; do n=${p#/proc/}; [ \"$n\" = 1 ] && continue; [ \"$n\" = $$ ] && continue; \
                  ppid=$(sed -n 's/^PPid:[[:space:]]*//p' $p/status 2>/dev/null); [ \"$ppid\" = 1 ] && [ \"$(cat $p/comm 2>/dev/null)\" = sleep ] && continue; \
                  [ \"$ppid\" = $$ ] && continue; echo $n; done";
    !run_quiet(ctx, container, script)
        .await
        .iter()
        .all(u8::is_ascii_whitespace)
}
