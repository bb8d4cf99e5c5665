//! The scenarios of the benchmark issue, one file per group. Each returns one report row per size
//! or variant.

mod docker;
mod jobs;
mod proxy;
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::load::BENCH_LABEL;
use crate::report::Result;

pub const BUSYBOX: &str = "berth-test/busybox:latest";

pub struct Ctx {
    pub berth: PathBuf,
    pub work: PathBuf,
    pub quick: bool,
    pub reps: usize,
}

pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Ctx) -> anyhow::Result<Vec<Result>>,
}

pub fn all() -> Vec<Scenario> {
    let s = |name, run| Scenario { name, run };
    vec![
        s("trivial-job", jobs::trivial_job),
        s("ten-steps", jobs::ten_steps),
        s("log-throughput", jobs::log_throughput),
        s("proxy-api", proxy::proxy_api),
        s("docker-in-job", docker::docker_in_job),
        s("dind-readiness", docker::dind_readiness),
        s("parallel-jobs", jobs::parallel_jobs),
        s("server", server::server),
    ]
}

/// A project directory holding `pipeline`.
fn project(ctx: &Ctx, name: &str, pipeline: &str) -> anyhow::Result<PathBuf> {
    let dir = ctx.work.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("screwdriver.yaml"), pipeline)?;
    Ok(dir)
}

fn berth_run(ctx: &Ctx, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(&ctx.berth);
    c.current_dir(dir)
        .arg("run")
        .args(["--output", "/dev/shm/berth-bench-out"])
        .args(extra);
    c
}

fn clean_outputs() {
    let _ = std::fs::remove_dir_all("/dev/shm/berth-bench-out");
}

/// Removes every container the benchmark created itself (they carry [`BENCH_LABEL`]): run
/// before and after the scenarios, so a failed scenario leaves nothing on the daemon.
pub fn remove_labelled() {
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={BENCH_LABEL}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(std::process::Stdio::null())
            .status();
    }
}

/// A child process stopped when dropped: SIGTERM, then up to 60 s to exit, then SIGKILL.
pub struct Daemon {
    pub child: std::process::Child,
    pub name: &'static str,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("bench: {} did not stop in 60 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
