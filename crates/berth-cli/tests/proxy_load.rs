//! `berth proxy` under load (issue 7): several scopes, each its own `berth proxy` process, get
//! thousands of API calls and ~200 concurrent streams (hijacked `attach`, `logs -f`); once the
//! load stops, each proxy process's descriptor count and RSS must be back near where they were
//! after a warm-up (asserted on counts, with a tolerance). Prints `PROXY-LOAD:` figures.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

const SCOPES: usize = 3;
/// Streams per scope (attach, logs -f and exec -it in turn): 3 × 69 = 207 at once.
const STREAMS: usize = 69;
/// API calls per scope: 3 × 1200 = 3600.
const CALLS: usize = 1200;
const CALL_THREADS: usize = 4;

struct Proxy {
    child: Child,
    sock: PathBuf,
    scope: String,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(i: usize) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("berth-proxy-load-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("docker.sock");
        let scope = format!("load-{}-{i}", std::process::id());
        let child = Command::new(berth_bin())
            .args(["proxy", "--listen"])
            .arg(&sock)
            .args(["--scope", &scope])
            .env("DOCKER_HOST", "unix:///var/run/docker.sock")
            .env_remove("BERTH_LOG")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || sock.exists().then_some(())).is_some(),
            "berth proxy did not listen"
        );
        Proxy {
            child,
            sock,
            scope,
            _dir: dir,
        }
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// (VmRSS, VmHWM) in KiB.
    fn rss(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Proxy {
    /// On a failed assertion too: SIGTERM (the proxy reaps its scope), SIGKILL if it hangs.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if wait_for(Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten()
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn request(sock: &Path, req: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn get(path: &str) -> String {
    format!("GET /v1.41{path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST /v1.41{path} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[derive(Clone, Copy, Debug)]
enum Stream {
    /// `docker attach`: hijacked.
    Attach,
    /// `docker logs -f`: a long response.
    Logs,
    /// `docker exec -it`: exec create, then a hijacked exec start with a TTY.
    Exec,
}

/// Opens a stream on the scope's `ticker` container and reads its first bytes; returns it open.
fn open_stream(sock: &Path, kind: Stream) -> UnixStream {
    let req = match kind {
        Stream::Attach => "POST /v1.41/containers/ticker/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n".to_string(),
        Stream::Logs => "GET /v1.41/containers/ticker/logs?follow=1&stdout=1&tail=1 HTTP/1.1\r\nHost: d\r\n\r\n".to_string(),
        Stream::Exec => {
            let (status, out) = request(
                sock,
                &post(
                    "/containers/ticker/exec",
                    r#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Tty":true,"Cmd":["sh","-c","echo tick; exec cat"]}"#,
                ),
            );
            assert_eq!(status, 201, "{out}");
            let id = out
                .split("\"Id\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_else(|| panic!("no exec id: {out}"))
                .to_string();
            let body = r#"{"Detach":false,"Tty":true}"#;
            format!(
                "POST /v1.41/exec/{id}/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let mut s = UnixStream::connect(sock).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    // Headers, then at least one chunk of the ticker's output.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("tick") {
        let n = s.read(&mut chunk).expect("stream read");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let want = if matches!(kind, Stream::Logs) {
        " 200 "
    } else {
        " 101 "
    };
    assert!(head.contains(want), "{kind:?} answer: {head}");
    s
}

/// One round of load on every proxy: `calls` API calls per scope and `streams` concurrent
/// streams per scope, all open at once; returns the peak fd count seen per proxy while open.
fn load(proxies: &[Proxy], calls: usize, streams: usize) -> Vec<usize> {
    let barrier = Arc::new(Barrier::new(proxies.len() * streams + 1));
    let release = Arc::new(Barrier::new(proxies.len() * streams + 1));
    let mut handles = Vec::new();
    for p in proxies {
        for i in 0..streams {
            let (sock, b, r) = (p.sock.clone(), barrier.clone(), release.clone());
            handles.push(std::thread::spawn(move || {
                let kind = [Stream::Attach, Stream::Logs, Stream::Exec][i % 3];
                let s = open_stream(&sock, kind);
                b.wait();
                r.wait();
                drop(s);
            }));
        }
        for t in 0..CALL_THREADS {
            let sock = p.sock.clone();
            let n = calls / CALL_THREADS;
            handles.push(std::thread::spawn(move || {
                for i in 0..n {
                    let path = match (i + t) % 5 {
                        0 => "/_ping".to_string(),
                        1 => "/version".to_string(),
                        2 => "/containers/json?all=1".to_string(),
                        3 => "/containers/ticker/json".to_string(),
                        _ => "/containers/not-mine/json".to_string(),
                    };
                    let (status, out) = request(&sock, &get(&path));
                    let ok = if path.contains("not-mine") {
                        status == 404
                    } else {
                        status == 200
                    };
                    assert!(ok, "{path}: {status} {out}");
                }
            }));
        }
    }
    barrier.wait();
    let peak: Vec<usize> = proxies.iter().map(Proxy::fds).collect();
    release.wait();
    for h in handles {
        h.join().expect("load thread");
    }
    peak
}

/// Waits (bounded) until each proxy's fd count is at most `limit`; returns the counts.
fn settled_fds(proxies: &[Proxy], limit: &[usize]) -> Vec<usize> {
    let _ = wait_for(Duration::from_secs(15), || {
        proxies
            .iter()
            .zip(limit)
            .all(|(p, l)| p.fds() <= *l)
            .then_some(())
    });
    proxies.iter().map(Proxy::fds).collect()
}

#[test]
fn proxy_fds_and_memory_do_not_grow_under_sustained_load() {
    if !docker() {
        return;
    }
    let started = Instant::now();
    let mut proxies: Vec<Proxy> = (0..SCOPES).map(Proxy::start).collect();
    for p in &proxies {
        let (s, out) = request(
            &p.sock,
            &post(
                "/containers/create?name=ticker",
                &format!(
                    r#"{{"Image":"{BUSYBOX}","Cmd":["sh","-c","while true; do echo tick; sleep 0.2; done"]}}"#
                ),
            ),
        );
        assert_eq!(s, 201, "{out}");
        let (s, out) = request(&p.sock, &post("/containers/ticker/start", ""));
        assert_eq!(s, 204, "{out}");
    }
    // Warm-up (pools, allocator arenas, thread pool), then the baseline.
    load(&proxies, 200, 10);
    std::thread::sleep(Duration::from_millis(500));
    let base_fds = settled_fds(&proxies, &[usize::MAX; SCOPES]);
    let base_rss: Vec<u64> = proxies.iter().map(|p| p.rss().0).collect();
    eprintln!("PROXY-LOAD: baseline fds {base_fds:?} rss KiB {base_rss:?}");

    let t0 = Instant::now();
    // Two rounds: the second must not leave more behind than the first did.
    load(&proxies, CALLS, STREAMS);
    // Idle keep-alive daemon connections stay pooled after a load (bounded per endpoint), so
    // the bound is the baseline plus the pool's limit; round 2 must then add nothing.
    let bound: Vec<usize> = base_fds
        .iter()
        .map(|b| b + 4 + berth_proxy::MAX_IDLE_DAEMON_CONNECTIONS)
        .collect();
    let round1_fds = settled_fds(&proxies, &bound);
    let round1_rss: Vec<u64> = proxies.iter().map(|p| p.rss().0).collect();
    eprintln!("PROXY-LOAD: after round 1: fds {round1_fds:?} rss KiB {round1_rss:?}");
    let peak = load(&proxies, CALLS, STREAMS);
    let load_time = t0.elapsed();
    let after_fds = settled_fds(
        &proxies,
        &round1_fds.iter().map(|b| b + 4).collect::<Vec<_>>(),
    );
    let after: Vec<(u64, u64)> = proxies.iter().map(Proxy::rss).collect();
    let threads: Vec<usize> = proxies.iter().map(Proxy::threads).collect();
    eprintln!(
        "PROXY-LOAD: {} scopes, 2 rounds of {} API calls and {} concurrent streams in {:.1}s; peak fds while streaming {peak:?}; after: fds {after_fds:?}, rss KiB {:?}, peak rss (VmHWM) KiB {:?}, threads {threads:?}",
        SCOPES,
        SCOPES * CALLS,
        SCOPES * STREAMS,
        load_time.as_secs_f64(),
        after.iter().map(|a| a.0).collect::<Vec<_>>(),
        after.iter().map(|a| a.1).collect::<Vec<_>>(),
    );
    for i in 0..SCOPES {
        assert!(
            peak[i] >= base_fds[i] + STREAMS,
            "the streams were not all open at once: {peak:?}"
        );
        assert!(
            after_fds[i] <= bound[i] && after_fds[i] <= round1_fds[i] + 4,
            "proxy {i} leaked descriptors: {} before, {} after round 1, {} after round 2 (pool bound {})",
            base_fds[i],
            round1_fds[i],
            after_fds[i],
            berth_proxy::MAX_IDLE_DAEMON_CONNECTIONS
        );
        assert!(
            after[i].0 <= round1_rss[i] + 4 * 1024,
            "proxy {i} RSS keeps growing: {} KiB after round 1, {} KiB after round 2",
            round1_rss[i],
            after[i].0
        );
        // Memory: allow allocator slack, not growth proportional to the load.
        assert!(
            after[i].0 <= base_rss[i] + 16 * 1024,
            "proxy {i} RSS grew from {} KiB to {} KiB",
            base_rss[i],
            after[i].0
        );
    }

    for p in &mut proxies {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    for p in &mut proxies {
        let status = wait_for(Duration::from_secs(30), || p.child.try_wait().unwrap())
            .expect("berth proxy did not exit on SIGTERM");
        assert_eq!(status.code(), Some(0));
        let left = labelled(&format!("io.berth.scope={}", p.scope));
        assert!(left.is_empty(), "scope {} left {left:?}", p.scope);
    }
    eprintln!("PROXY-LOAD: total {:.1}s", started.elapsed().as_secs_f64());
}
