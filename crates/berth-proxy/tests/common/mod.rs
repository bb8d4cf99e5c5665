//! Shared helpers: start scoped endpoints in-process against the real daemon, send raw HTTP
//! over unix sockets (every byte under the test's control), and look at the daemon directly.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_proxy::{Policy, ProxyConfig, ScopedProxy, Workspace};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DAEMON: &str = "/var/run/docker.sock";
pub const BUSYBOX: &str = "berth-test/busybox:latest";
pub const DEBIAN: &str = "berth-test/debian:bookworm";

/// Whether the daemon (and the test images) are there; a loud SKIP otherwise, or a panic when
/// `BERTH_REQUIRE_DOCKER=1`.
pub async fn docker_or_skip(test: &str) -> bool {
    let ok = match raw(Path::new(DAEMON), &get(&format!("/images/{BUSYBOX}/json"))).await {
        Ok(r) => r.status == 200,
        Err(_) => false,
    };
    if !ok {
        let msg = format!(
            "SKIP {test}: no Docker daemon at {DAEMON} with image {BUSYBOX} (build the test images first)"
        );
        if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("{msg} and BERTH_REQUIRE_DOCKER=1");
        }
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    }
    ok
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique scope name for this test process.
pub fn unique_scope(tag: &str) -> String {
    format!(
        "t{}-{}-{}",
        std::process::id(),
        tag,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// One scoped endpoint under test.
pub struct Scoped {
    pub proxy: Option<ScopedProxy>,
    pub sock: PathBuf,
    pub scope: String,
    pub owner: String,
    pub dir: tempfile::TempDir,
    /// The workspace on the host; the job sees it as [`JOB_WS`].
    pub ws: PathBuf,
    /// The Docker volume holding the workspace ([`start_volume`]); removed by `finish`/drop.
    pub ws_volume: Option<String>,
}

pub const JOB_WS: &str = "/job/ws";

pub async fn start(tag: &str) -> Scoped {
    start_with(tag, Policy::default()).await
}

pub async fn start_with(tag: &str, policy: Policy) -> Scoped {
    start_full(tag, policy, false, JOB_WS).await
}

/// The job sees its workspace at the host path itself (a job running on the host, like
/// docker-compose in these tests).
pub async fn start_identity(tag: &str) -> Scoped {
    start_full(tag, Policy::default(), true, JOB_WS).await
}

pub async fn start_full(tag: &str, policy: Policy, identity: bool, job_ws: &str) -> Scoped {
    let scope = unique_scope(tag);
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).expect("workspace");
    let sock = dir.path().join("docker.sock");
    let owner = format!("test{}", std::process::id());
    let labels = BTreeMap::from([
        (berth_engine::labels::OWNER.to_string(), owner.clone()),
        (
            berth_engine::labels::OWNER_HOST.to_string(),
            "berth-proxy-tests".to_string(),
        ),
    ]);
    let proxy = ScopedProxy::start(ProxyConfig {
        listen: sock.clone(),
        daemon_socket: DAEMON.into(),
        scope: scope.clone(),
        owner_labels: labels,
        workspace: Some(
            Workspace::new(
                if identity {
                    std::fs::canonicalize(&ws).expect("ws")
                } else {
                    job_ws.into()
                },
                &ws,
            )
            .expect("workspace"),
        ),
        policy,
    })
    .await
    .expect("proxy starts");
    Scoped {
        proxy: Some(proxy),
        sock,
        scope,
        owner,
        dir,
        ws,
        ws_volume: None,
    }
}

/// An endpoint whose workspace (seen as [`JOB_WS`]) is the root of a Docker volume created for
/// the test (owner-labelled, not scope-labelled: like a runner's workspace volume, the reap must
/// leave it alone). `ws` is the volume's mountpoint, which the test process (root, on the
/// daemon's host or inside the nested engine's container) can write.
pub async fn start_volume(tag: &str) -> Scoped {
    let scope = unique_scope(tag);
    let owner = format!("test{}", std::process::id());
    let labels = BTreeMap::from([
        (berth_engine::labels::OWNER.to_string(), owner.clone()),
        (
            berth_engine::labels::OWNER_HOST.to_string(),
            "berth-proxy-tests".to_string(),
        ),
    ]);
    let vol = format!("{scope}-ws");
    let r = daemon(&post_json(
        "/volumes/create",
        &serde_json::json!({"Name": vol, "Labels": labels}).to_string(),
    ))
    .await;
    assert_eq!(r.status, 201, "workspace volume: {}", r.body);
    let ws = PathBuf::from(r.json()["Mountpoint"].as_str().expect("volume mountpoint"));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("docker.sock");
    let workspace = Workspace::new(JOB_WS, &ws)
        .expect("workspace")
        .with_volume(&vol)
        .expect("volume name");
    let started = ScopedProxy::start(ProxyConfig {
        listen: sock.clone(),
        daemon_socket: DAEMON.into(),
        scope: scope.clone(),
        owner_labels: labels,
        workspace: Some(workspace),
        policy: Policy::default(),
    })
    .await;
    let proxy = match started {
        Ok(p) => p,
        Err(e) => {
            let _ = daemon(&delete(&format!("/volumes/{vol}?force=1"))).await;
            panic!("proxy starts: {e}");
        }
    };
    Scoped {
        proxy: Some(proxy),
        sock,
        scope,
        owner,
        dir,
        ws,
        ws_volume: Some(vol),
    }
}

/// The daemon's API version (`(1, 45)`), from `/version`.
pub async fn daemon_api() -> (u32, u32) {
    let v = daemon(&get("/version")).await.json();
    let s = v["ApiVersion"].as_str().expect("ApiVersion").to_string();
    let (a, b) = s.split_once('.').expect("1.N");
    (a.parse().expect("major"), b.parse().expect("minor"))
}

impl Scoped {
    /// Closes the endpoint, reaps, and asserts nothing of the scope is left on the daemon.
    pub async fn finish(mut self) {
        if let Some(p) = self.proxy.take() {
            let report = p.shutdown_and_reap().await;
            assert!(report.is_clean(), "reap failed: {:?}", report.failed);
        }
        assert_scope_empty(&self.scope).await;
        if let Some(v) = self.ws_volume.take() {
            let r = daemon(&delete(&format!("/volumes/{v}"))).await;
            assert_eq!(r.status, 204, "workspace volume {v} removed: {}", r.body);
        }
    }

    pub async fn send(&self, req: &[u8]) -> Resp {
        raw(&self.sock, req).await.expect("proxy answers")
    }

    pub async fn send_all(&self, req: &[u8]) -> Vec<Resp> {
        raw_all(&self.sock, req).await.expect("proxy answers")
    }

    /// Creates a container through the endpoint (it works: asserted) and returns its full id.
    pub async fn create(&self, name: &str, cmd: &[&str]) -> String {
        let body = serde_json::json!({"Image": BUSYBOX, "Cmd": cmd});
        let r = self
            .send(&post_json(
                &format!("/containers/create?name={name}"),
                &body.to_string(),
            ))
            .await;
        assert_eq!(r.status, 201, "create {name}: {}", r.body);
        r.json()["Id"].as_str().expect("id").to_string()
    }

    pub async fn run(&self, name: &str, cmd: &[&str]) -> String {
        let id = self.create(name, cmd).await;
        let r = self.send(&post(&format!("/containers/{id}/start"))).await;
        assert_eq!(r.status, 204, "start {name}: {}", r.body);
        id
    }

    /// The daemon-side name of a job name.
    pub fn daemon_name(&self, name: &str) -> String {
        format!("{}_{name}", self.scope)
    }

    /// Runs the real docker CLI (20.10) against this endpoint.
    pub async fn docker(&self, args: &[&str]) -> std::process::Output {
        docker_cli("/usr/bin/docker", &self.sock, args, None).await
    }
}

impl Drop for Scoped {
    /// A test that failed before `finish` still leaves nothing behind: remove the scope's
    /// objects by label (and its job-local image tags) with blocking calls.
    fn drop(&mut self) {
        if self.proxy.is_some() {
            cleanup_blocking(&self.scope);
        }
        if let Some(v) = self.ws_volume.take() {
            let _ = blocking(&delete(&format!("/volumes/{v}?force=1")));
        }
    }
}

/// Removes everything labelled with `scope`, and image tags prefixed `<scope>_`.
pub fn cleanup_blocking(scope: &str) {
    let f = enc(&format!("{{\"label\":[\"io.berth.scope={scope}\"]}}"));
    let list = |path: &str| -> Value {
        blocking(&get(path))
            .map(|r| r.json())
            .unwrap_or(Value::Null)
    };
    for c in list(&format!("/containers/json?all=1&filters={f}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let _ = blocking(&delete(&format!(
            "/containers/{}?force=1&v=1",
            c["Id"].as_str().unwrap_or("-")
        )));
    }
    for n in list(&format!("/networks?filters={f}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let _ = blocking(&delete(&format!(
            "/networks/{}",
            n["Id"].as_str().unwrap_or("-")
        )));
    }
    for v in list(&format!("/volumes?filters={f}"))["Volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let _ = blocking(&delete(&format!(
            "/volumes/{}?force=1",
            v["Name"].as_str().unwrap_or("-")
        )));
    }
    let _ = blocking(&delete(&format!("/volumes/{scope}.berth-tags")));
    for i in list("/images/json").as_array().cloned().unwrap_or_default() {
        for t in i["RepoTags"].as_array().cloned().unwrap_or_default() {
            if let Some(t) = t.as_str().filter(|t| t.starts_with(&format!("{scope}_"))) {
                let _ = blocking(&delete(&format!("/images/{t}")));
            }
        }
    }
}

fn blocking(req: &[u8]) -> std::io::Result<Resp> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(DAEMON)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(req)?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_responses(&buf)
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no response"))
}

pub async fn docker_cli(
    bin: &str,
    sock: &Path,
    args: &[&str],
    cwd: Option<&Path>,
) -> std::process::Output {
    docker_cli_env(bin, sock, args, cwd, &[]).await
}

/// [`docker_cli`] with extra environment (after the defaults, so it overrides them).
pub async fn docker_cli_env(
    bin: &str,
    sock: &Path,
    args: &[&str],
    cwd: Option<&Path>,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_BUILDKIT", "0")
        .env("COMPOSE_DOCKER_CLI_BUILD", "0")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    if let Some(c) = cwd {
        cmd.current_dir(c);
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("docker CLI finished in time")
        .expect("docker CLI runs")
}

/// Nothing labelled with the scope remains on the daemon.
pub async fn assert_scope_empty(scope: &str) {
    let f = format!("{{\"label\":[\"io.berth.scope={scope}\"]}}");
    let left = daemon_list(&f).await;
    assert!(
        left.is_empty(),
        "left on the daemon for scope {scope}: {left:?}"
    );
}

/// Containers, networks and volumes matching a filters JSON, on the real daemon.
pub async fn daemon_list(filters: &str) -> Vec<String> {
    let f = enc(filters);
    let mut out = Vec::new();
    for (path, key, kind) in [
        (
            format!("/containers/json?all=1&filters={f}"),
            "Id",
            "container",
        ),
        (format!("/networks?filters={f}"), "Id", "network"),
    ] {
        let r = daemon(&get(&path)).await;
        for o in r.json().as_array().cloned().unwrap_or_default() {
            out.push(format!("{kind} {}", o[key].as_str().unwrap_or("?")));
        }
    }
    let r = daemon(&get(&format!("/volumes?filters={f}"))).await;
    for o in r.json()["Volumes"].as_array().cloned().unwrap_or_default() {
        out.push(format!("volume {}", o["Name"].as_str().unwrap_or("?")));
    }
    out
}

/// Whether a container of that exact name exists on the daemon.
pub async fn daemon_has_container(name: &str) -> bool {
    daemon(&get(&format!("/containers/{name}/json")))
        .await
        .status
        == 200
}

/// A request straight to the daemon.
pub async fn daemon(req: &[u8]) -> Resp {
    raw(Path::new(DAEMON), req).await.expect("daemon answers")
}

/// A container's state on the daemon (inspect JSON), by id or daemon name.
pub async fn daemon_inspect(r: &str) -> Value {
    daemon(&get(&format!("/containers/{r}/json"))).await.json()
}

/// Labels every test object carries (the proxy adds them; direct creates in tests add them too).
pub fn all_owner_filter() -> String {
    "{\"label\":[\"io.berth.owner-host=berth-proxy-tests\"]}".to_string()
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n").into_bytes()
}

pub fn post(path: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

pub fn delete(path: &str) -> Vec<u8> {
    format!("DELETE {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n").into_bytes()
}

pub fn post_json(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Same, but keeping the connection open (for keep-alive sequences).
pub fn post_json_keepalive(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn raw(sock: &Path, req: &[u8]) -> std::io::Result<Resp> {
    let all = raw_all(sock, req).await?;
    all.into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no response"))
}

/// Sends bytes, reads until the peer closes (or 20 s), parses every response in order.
pub async fn raw_all(sock: &Path, req: &[u8]) -> std::io::Result<Vec<Resp>> {
    raw_all_within(sock, req, Duration::from_secs(20)).await
}

/// `POST /containers/{id}/wait` on the daemon, allowing up to 180 s for a slow job on a loaded
/// machine (the 20 s read bound of [`raw`] is for answers that come at once).
pub async fn daemon_wait(id: &str) -> Value {
    raw_all_within(
        Path::new(DAEMON),
        &post(&format!("/containers/{id}/wait")),
        Duration::from_secs(180),
    )
    .await
    .ok()
    .and_then(|r| r.into_iter().next())
    .map(|r| r.json())
    .unwrap_or_default()
}

async fn raw_all_within(sock: &Path, req: &[u8], within: Duration) -> std::io::Result<Vec<Resp>> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    // A proxy may answer and close before reading everything (oversized bodies): keep reading.
    let _ = s.write_all(req).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut buf)).await;
    Ok(parse_responses(&buf))
}

/// Sends bytes, then closes the sending side (a request cut short), and reads what comes back.
pub async fn raw_cut_short(sock: &Path, req: &[u8]) -> std::io::Result<Vec<Resp>> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    let _ = s.write_all(req).await;
    let _ = s.shutdown().await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    Ok(parse_responses(&buf))
}

/// Sends a request, reads only the start of the answer, and drops the connection mid-answer.
pub async fn raw_abandon(sock: &Path, req: &[u8]) -> std::io::Result<()> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    s.write_all(req).await?;
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
    Ok(())
}

fn parse_responses(mut buf: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while let Some(end) = find(buf, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rest = &buf[end + 4..];
        let lower = head.to_ascii_lowercase();
        let (body, used) = if lower.contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else if let Some(cl) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            let n = cl.min(rest.len());
            (rest[..n].to_vec(), n)
        } else if status == 204 || status == 304 || status == 101 {
            (Vec::new(), 0)
        } else {
            (rest.to_vec(), rest.len())
        };
        out.push(Resp {
            status,
            headers: head,
            body: String::from_utf8_lossy(&body).to_string(),
        });
        buf = &rest[used..];
        if status == 101 {
            break;
        }
    }
    out
}

fn dechunk(mut b: &[u8]) -> (Vec<u8>, usize) {
    let total = b.len();
    let mut out = Vec::new();
    while let Some(nl) = find(b, b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..nl])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        b = &b[nl + 2..];
        if size == 0 {
            b = b.get(2..).unwrap_or(&[]);
            break;
        }
        let n = size.min(b.len());
        out.extend_from_slice(&b[..n]);
        b = b.get(n + 2..).unwrap_or(&[]);
    }
    (out, total - b.len())
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The Docker CLI 20.10, whose `DOCKER_BUILDKIT=1` builds use the daemon's own BuildKit route
/// (`/session` + `/build?version=2`): `/usr/bin/docker` on the host, `BERTH_DOCKER20_CLI` on the
/// nested engine (the engine-26 script mounts the host's there). None, loudly, when missing —
/// a failure when `BERTH_REQUIRE_DOCKER=1`.
pub async fn docker20_cli(test: &str) -> Option<&'static str> {
    let bin = std::env::var("BERTH_DOCKER20_CLI").unwrap_or_else(|_| "/usr/bin/docker".into());
    let version = tokio::process::Command::new(&bin)
        .args(["version", "--format", "{{.Client.Version}}"])
        .env("DOCKER_HOST", "unix:///nonexistent")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if version.starts_with("20.10") {
        return Some(Box::leak(bin.into_boxed_str()));
    }
    let msg = format!("SKIP {test}: {bin} is not the Docker CLI 20.10 (version `{version}`)");
    assert!(
        std::env::var("BERTH_REQUIRE_DOCKER").as_deref() != Ok("1"),
        "{msg} and BERTH_REQUIRE_DOCKER=1"
    );
    eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    None
}

/// A BuildKit build with the Docker CLI 20.10 through a scoped endpoint, progress as plain text
/// on stderr.
pub async fn buildkit_build(
    bin: &str,
    s: &Scoped,
    dir: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    all.push(".");
    docker_cli_env(bin, &s.sock, &all, Some(dir), &[("DOCKER_BUILDKIT", "1")]).await
}
