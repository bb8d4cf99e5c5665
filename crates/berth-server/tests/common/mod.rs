//! Helpers for berth-server's tests against a real server and a real Docker daemon.
//!
//! The server runs as a child process so a test can `kill -9` it: the test binary re-executes
//! itself with `BERTH_TEST_SERVER=<data dir>` and its `server_child` test then serves (see
//! [`child_main`]). Docker tests call [`docker`]: without a daemon it prints a loud SKIP, or
//! panics when `BERTH_REQUIRE_DOCKER=1` (CI).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

// Each test binary uses a different part of the kit.
#[allow(unused_imports)]
pub use berth_testkit::{BUSYBOX, DEBIAN, assert_owner_clean, docker, labelled};

/// The body of the `server_child` test: serve when asked to, else do nothing.
pub fn child_main() {
    let Ok(data) = std::env::var("BERTH_TEST_SERVER") else {
        return;
    };
    let max: usize = std::env::var("BERTH_TEST_MAX_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    berth_engine::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let engine =
            berth_engine::DockerEngine::connect(berth_engine::DaemonAddress::resolve(None))
                .await
                .expect("daemon");
        let mut config =
            berth_server::Config::new("127.0.0.1:0".parse().unwrap(), PathBuf::from(data));
        config.max_builds = max;
        config.git_image = DEBIAN.to_string();
        config.default_docker_mode = berth_runner::DefaultDockerMode::None;
        let env_u64 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = env_u64("BERTH_TEST_BODY_TIMEOUT_MS") {
            config.body_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(ms) = env_u64("BERTH_TEST_STALL_TIMEOUT_MS") {
            config.stall_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = env_u64("BERTH_TEST_MAX_UPLOAD") {
            config.max_body = n;
        }
        let started = berth_server::start(config, std::sync::Arc::new(engine))
            .await
            .expect("server starts");
        if let Some(t) = &started.admin_token {
            println!("TOKEN {t}");
        }
        println!("ADDR {}", started.addr);
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        started
            .run_until(async move {
                term.recv().await;
            })
            .await
            .expect("serve");
    });
}

/// A server child process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    pub token: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts a server on `data`; `token` is reused across restarts (made on the first start).
    pub fn start(data: &Path, max_builds: usize, token: Option<&str>) -> Server {
        Server::start_with(data, max_builds, token, &[])
    }

    /// [`Server::start`] with extra environment for the child (`BERTH_TEST_*` settings).
    pub fn start_with(
        data: &Path,
        max_builds: usize,
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["server_child", "--exact", "--nocapture", "--test-threads=1"])
            .envs(env.iter().copied())
            .env("BERTH_TEST_SERVER", data)
            .env("BERTH_TEST_MAX_BUILDS", max_builds.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server child");
        let stdout = child.stdout.take().unwrap();
        // Kills the child if it never says where it listens.
        struct Guard(Option<Child>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(c) = &mut self.0 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let mut guard = Guard(Some(child));
        let mut lines = BufReader::new(stdout).lines();
        let mut token = token.map(str::to_string);
        // libtest prints `test server_child ... ` before the child's own output.
        let url = loop {
            let line = lines
                .next()
                .expect("server child ended before listening")
                .unwrap();
            if let Some((_, t)) = line.split_once("TOKEN ") {
                token = Some(t.trim().to_string());
            }
            if let Some((_, a)) = line.split_once("ADDR ") {
                break format!("http://{}", a.trim());
            }
        };
        let child = guard.0.take().unwrap();
        // Keep draining the child's stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url,
            data: data.to_path_buf(),
            token: token.expect("admin token printed on first start"),
            http: reqwest::Client::new(),
        }
    }

    pub fn kill9(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-9", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// Submits a build; returns its id (asserting 202).
    pub async fn submit(&self, body: Value) -> i64 {
        let r = self.post("/api/builds").json(&body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status.as_u16(), 202, "submit answered {status}: {v}");
        v["id"].as_i64().unwrap()
    }

    /// `GET path` answered with JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    pub async fn build(&self, id: i64) -> Value {
        self.get_json(&format!("/api/builds/{id}")).await
    }

    /// Asserts the server answers `/healthz` with 200.
    pub async fn assert_healthy(&self) {
        let r = reqwest::get(format!("{}/healthz", self.url)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "the server is not healthy");
    }

    /// Waits until the build's status satisfies `f`; returns the build.
    pub async fn wait_build(&self, id: i64, limit: Duration, f: impl Fn(&str) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let b = self.build(id).await;
            if f(b["status"].as_str().unwrap_or_default()) {
                return b;
            }
            assert!(
                start.elapsed() < limit,
                "build {id} did not reach the expected state: {b:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_final(&self, id: i64) -> Value {
        self.wait_build(id, Duration::from_secs(120), |s| {
            !matches!(s, "queued" | "running" | "submitting")
        })
        .await
    }

    pub async fn log(&self, id: i64, job: &str) -> String {
        self.get(&format!("/api/builds/{id}/jobs/{job}/log"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Events of a build (or all) after `after`, until `stop` says so or `limit` passes.
    pub async fn events(
        &self,
        path: &str,
        after: Option<i64>,
        limit: Duration,
        mut stop: impl FnMut(&[(i64, Value)]) -> bool,
    ) -> Vec<(i64, Value)> {
        let mut req = self.get(path);
        if let Some(a) = after {
            req = req.header("Last-Event-ID", a.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut body = resp.bytes_stream();
        let mut sse = Sse::default();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !stop(&out) {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for events; got {out:#?}"));
            let Some(chunk) = chunk else { break };
            for e in sse.push(&chunk.unwrap()) {
                out.push(e);
                if stop(&out) {
                    break;
                }
            }
        }
        out
    }
}

/// An SSE stream's events as (id, JSON data), from chunks as they arrive (lines may be split
/// anywhere, even inside a UTF-8 sequence).
#[derive(Default)]
pub struct Sse {
    buf: Vec<u8>,
    id: Option<i64>,
    data: String,
}

impl Sse {
    /// The events the chunk completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(i64, Value)> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&self.buf[..nl])
                .trim_end_matches('\r')
                .to_string();
            self.buf.drain(..=nl);
            if let Some(v) = line.strip_prefix("id:") {
                self.id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if line.is_empty() && !self.data.is_empty() {
                let id = self.id.take().expect("every event has an id");
                out.push((id, serde_json::from_str(&self.data).unwrap()));
                self.data.clear();
            }
        }
        out
    }
}

impl Server {
    /// SIGTERM: running builds are stopped and cleaned up; SIGKILL if that takes too long.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A one-job pipeline (`main`, busybox) with these step lines.
pub fn pipeline(steps: &str) -> String {
    format!("jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n{steps}")
}

/// The io.berth.owner of a build, from its events.
pub async fn owner_of(server: &Server, id: i64) -> String {
    let events = server
        .events(
            &format!("/api/builds/{id}/events"),
            None,
            Duration::from_secs(60),
            |e| e.iter().any(|(_, v)| v["event"] == "build_started"),
        )
        .await;
    events
        .iter()
        .find(|(_, v)| v["event"] == "build_started")
        .and_then(|(_, v)| v["owner"].as_str())
        .unwrap()
        .to_string()
}

pub fn is_final_event(v: &Value) -> bool {
    v["event"] == "build_status"
        && !matches!(
            v["status"].as_str(),
            Some("queued" | "running" | "submitting")
        )
}

/// A tar of the given (path, content) files.
pub fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("berth-server-test-")
        .tempdir()
        .unwrap()
}
