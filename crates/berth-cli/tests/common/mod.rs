//! Shared helpers for berth's integration tests against a real Docker daemon.
//!
//! A test that needs Docker calls [`docker`]: without a daemon it prints a loud SKIP line, or
//! panics when `BERTH_REQUIRE_DOCKER=1` (CI sets it). Each test gets its own project directory
//! and output directory, runs the real `berth` binary, and [`Run::assert_nothing_left`] checks
//! that nothing labelled with the run's owner remains on the daemon.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

// Each test binary uses a different part of the kit.
#[allow(unused_imports)]
pub use berth_testkit::{BUSYBOX, DEBIAN, assert_owner_clean, docker, labelled};

pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// A throwaway project: a directory with a pipeline file and an output directory.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(pipeline: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("screwdriver.yaml"), pipeline).expect("write pipeline");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) -> &Project {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn output_dir(&self) -> PathBuf {
        self.path().join(".berth/builds")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.current_dir(self.path())
            .args(args)
            .env_remove("BERTH_LOG")
            .env("NO_COLOR", "1");
        c
    }

    /// `berth run --json ARGS`, waiting for it to end.
    pub fn run_json(&self, args: &[&str]) -> Run {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        let output = self.command(&full).output().expect("spawn berth");
        Run::new(output)
    }

    /// `berth run ARGS` with terminal-style output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        self.command(&full).output().expect("spawn berth")
    }

    pub fn log(&self, build: &str, job: &str) -> Vec<u8> {
        std::fs::read(self.output_dir().join(build).join(format!("{job}.log"))).expect("job log")
    }
}

/// The outcome of `berth run --json`.
pub struct Run {
    pub code: i32,
    pub events: Vec<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn new(output: Output) -> Run {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let events = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        Run {
            code: output.status.code().unwrap_or(-1),
            events,
            stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn owner(&self) -> String {
        self.events
            .iter()
            .find(|e| e["event"] == "build_started")
            .and_then(|e| e["owner"].as_str())
            .unwrap_or_else(|| panic!("no build_started event:\n{}", self.dump()))
            .to_string()
    }

    pub fn build_id(&self) -> String {
        self.events
            .iter()
            .find(|e| e["event"] == "build_started")
            .and_then(|e| e["build_id"].as_str())
            .unwrap_or_else(|| panic!("no build_started event:\n{}", self.dump()))
            .to_string()
    }

    pub fn dump(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The result object of a finished job (`{"status": ...}`).
    pub fn result(&self, job: &str) -> serde_json::Value {
        self.events
            .iter()
            .find(|e| e["event"] == "job" && e["job"] == job && e["type"] == "finished")
            .map(|e| e["result"].clone())
            .unwrap_or_else(|| panic!("job {job} did not finish:\n{}", self.dump()))
    }

    pub fn status(&self, job: &str) -> String {
        self.result(job)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn skipped(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "job_skipped")
            .map(|e| e["job"].as_str().unwrap().to_string())
            .collect()
    }

    /// Output text of a job (all steps), concatenated.
    pub fn output(&self, job: &str) -> String {
        self.events
            .iter()
            .filter(|e| e["event"] == "job" && e["job"] == job && e["type"] == "output")
            .map(|e| e["data"].as_str().unwrap_or_default())
            .collect()
    }

    /// Steps of a job that ran, in order, with exit codes.
    pub fn steps(&self, job: &str) -> Vec<(String, i64)> {
        self.events
            .iter()
            .filter(|e| e["event"] == "job" && e["job"] == job && e["type"] == "step_finished")
            .map(|e| {
                (
                    e["step"].as_str().unwrap().to_string(),
                    e["exit_code"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code:\n{}", self.dump());
        self
    }

    pub fn assert_nothing_left(&self) {
        assert_owner_clean(&self.owner());
    }
}

/// Saves the busybox test image into the project as `busybox.tar`, for `docker load` in a
/// nested daemon.
pub fn add_busybox_tar(p: &Project) {
    let ok = Command::new("docker")
        .args(["save", "-o"])
        .arg(p.path().join("busybox.tar"))
        .arg(BUSYBOX)
        .status()
        .expect("docker save");
    assert!(ok.success());
}

/// Polls `f` until it returns Some, up to `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
