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
