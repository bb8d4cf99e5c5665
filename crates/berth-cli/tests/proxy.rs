//! `berth proxy`: serves a scoped Docker socket and removes what was created through it when it
//! gets SIGTERM. Needs the Docker daemon; skips loudly without one (panics under
//! BERTH_REQUIRE_DOCKER=1).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DAEMON: &str = "/var/run/docker.sock";

fn http(sock: &Path, req: &str) -> String {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn berth_proxy_serves_a_scope_and_reaps_it_on_sigterm() {
    if status(&http(
        Path::new(DAEMON),
        &get("/images/berth-test/busybox:latest/json"),
    )) != 200
    {
        let msg = "SKIP berth proxy test: no Docker daemon with berth-test/busybox:latest";
        if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("{msg} and BERTH_REQUIRE_DOCKER=1");
        }
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let scope = format!("clitest-{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["proxy", "--listen"])
        .arg(&sock)
        .args(["--scope", &scope, "--workspace"])
        .arg(format!("/ws={}", ws.display()))
        .env("BERTH_OWNERS_DIR", dir.path().join("owners"))
        .env("DOCKER_HOST", format!("unix://{DAEMON}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = http(
        &sock,
        &post(
            "/containers/create?name=c",
            r#"{"Image":"berth-test/busybox:latest","Cmd":["sleep","60"]}"#,
        ),
    );
    assert_eq!(status(&r), 201, "{r}");
    let r = http(&sock, &post("/containers/c/start", ""));
    assert_eq!(status(&r), 204, "{r}");
    let r = http(
        &sock,
        &post(
            "/containers/create?name=bad",
            r#"{"Image":"berth-test/busybox:latest","HostConfig":{"Privileged":true}}"#,
        ),
    );
    assert_eq!(status(&r), 403, "{r}");
    let daemon_name = format!("/containers/{scope}_c/json");
    assert_eq!(status(&http(Path::new(DAEMON), &get(&daemon_name))), 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "berth proxy did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(exit.success(), "berth proxy failed: {err}");
    assert!(err.contains("removed container"), "{err}");
    assert_eq!(
        status(&http(Path::new(DAEMON), &get(&daemon_name))),
        404,
        "{err}"
    );
    let f = format!("%7B%22label%22%3A%5B%22io.berth.scope%3D{scope}%22%5D%7D");
    for path in [
        format!("/containers/json?all=1&filters={f}"),
        format!("/networks?filters={f}"),
    ] {
        let r = http(Path::new(DAEMON), &get(&path));
        assert!(!r.contains(&scope), "left behind: {r}");
    }
}

fn http_bytes(sock: &Path, req: &[u8]) -> String {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `POST /build` of a one-file context whose Dockerfile is `dockerfile`, with `query`.
fn build(sock: &Path, query: &str, dockerfile: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let tar = Command::new("tar")
        .arg("-c")
        .arg("-C")
        .arg(dir.path())
        .arg("Dockerfile")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut req = format!(
        "POST /build{query} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        tar.stdout.len()
    )
    .into_bytes();
    req.extend(&tar.stdout);
    http_bytes(sock, &req)
}

fn spawn_proxy(dir: &Path, scope: &str) -> (std::process::Child, std::path::PathBuf) {
    let sock = dir.join(format!("{scope}.sock"));
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["proxy", "--listen"])
        .arg(&sock)
        .args(["--scope", scope])
        .env("BERTH_OWNERS_DIR", dir.join("owners"))
        .env("DOCKER_HOST", format!("unix://{DAEMON}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, sock)
}

/// Images on the daemon labelled `io.berth.scope=<scope>`.
fn scope_images(scope: &str) -> usize {
    let f = format!("%7B%22label%22%3A%5B%22io.berth.scope%3D{scope}%22%5D%7D");
    let r = http(
        Path::new(DAEMON),
        &get(&format!("/images/json?filters={f}")),
    );
    let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The answer may be chunked: count image ids.
    body.matches("\"Id\":").count()
}

fn image_status(reference: &str) -> u16 {
    status(&http(
        Path::new(DAEMON),
        &get(&format!("/images/{reference}/json")),
    ))
}

/// After a crash (SIGKILL) of a scoped socket, `berth gc` removes the images the scope built and
/// the tags it created under job-local names; the shared image it tagged, and a live scope's
/// tags and builds, stay.
#[test]
fn gc_removes_a_killed_scopes_image_tags_and_builds_only() {
    if image_status("berth-test/busybox:latest") != 200 {
        let msg = "SKIP berth gc image test: no Docker daemon with berth-test/busybox:latest";
        if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
            panic!("{msg} and BERTH_REQUIRE_DOCKER=1");
        }
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("gcimg-dead-{}", std::process::id());
    let live = format!("gcimg-live-{}", std::process::id());
    let (mut dead_child, dead_sock) = spawn_proxy(dir.path(), &dead);
    let (mut live_child, live_sock) = spawn_proxy(dir.path(), &live);
    for (scope, sock) in [(&dead, &dead_sock), (&live, &live_sock)] {
        let r = http(
            sock,
            &post("/images/berth-test/busybox:latest/tag?repo=app&tag=1", ""),
        );
        assert_eq!(status(&r), 201, "{r}");
        let df = format!("FROM berth-test/busybox:latest\nLABEL built-by={scope}\n");
        let r = build(sock, "?t=app:2", &df);
        assert!(
            r.contains("Successfully built") && !r.contains("errorDetail"),
            "{r}"
        );
        let r = build(sock, "", &format!("{df}LABEL untagged=1\n"));
        assert!(
            r.contains("Successfully built") && !r.contains("errorDetail"),
            "{r}"
        );
        assert_eq!(image_status(&format!("{scope}_app:1")), 200);
        assert_eq!(image_status(&format!("{scope}_app:2")), 200);
        assert_eq!(scope_images(scope), 2, "two builds labelled {scope}");
    }

    let killed = Command::new("kill")
        .args(["-KILL", &dead_child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    dead_child.wait().unwrap();
    let gc = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("gc")
        .env("DOCKER_HOST", format!("unix://{DAEMON}"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&gc.stdout);
    assert!(
        gc.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    eprintln!("berth gc said:\n{out}");
    assert_eq!(image_status(&format!("{dead}_app:1")), 404, "{out}");
    assert_eq!(image_status(&format!("{dead}_app:2")), 404, "{out}");
    assert_eq!(scope_images(&dead), 0, "{out}");
    let marker = |scope: &str| {
        status(&http(
            Path::new(DAEMON),
            &get(&format!("/volumes/{scope}.berth-tags")),
        ))
    };
    assert_eq!(marker(&dead), 404, "{out}");
    assert_eq!(image_status("berth-test/busybox:latest"), 200);
    assert_eq!(image_status(&format!("{live}_app:1")), 200, "{out}");
    assert_eq!(image_status(&format!("{live}_app:2")), 200, "{out}");
    assert_eq!(scope_images(&live), 2, "{out}");
    assert_eq!(marker(&live), 200);

    // The live scope removes its own on a clean exit.
    let term = Command::new("kill")
        .args(["-TERM", &live_child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = live_child.wait().unwrap();
    let mut err = String::new();
    live_child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(exit.success(), "{err}");
    assert_eq!(image_status(&format!("{live}_app:1")), 404, "{err}");
    assert_eq!(image_status(&format!("{live}_app:2")), 404, "{err}");
    assert_eq!(scope_images(&live), 0, "{err}");
    assert_eq!(marker(&live), 404, "{err}");
    assert_eq!(image_status("berth-test/busybox:latest"), 200);
}

/// `--workspace-volume` names the volume holding `--workspace`: it needs `--workspace` and a
/// valid volume name, and both mistakes are usage errors before anything is started.
#[test]
fn berth_proxy_workspace_volume_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["proxy", "--listen"])
            .arg(&sock)
            .args(["--scope", "clitest-wsvol"])
            .args(extra)
            .env("BERTH_OWNERS_DIR", dir.path().join("owners"))
            .env("DOCKER_HOST", format!("unix://{DAEMON}"))
            .output()
            .unwrap()
    };
    let out = run(&["--workspace-volume", "ws"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--workspace"),
        "{out:?}"
    );
    let ws = format!("/ws={}", dir.path().display());
    let out = run(&["--workspace", &ws, "--workspace-volume", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid volume name"),
        "{out:?}"
    );
    assert!(!sock.exists());
}
