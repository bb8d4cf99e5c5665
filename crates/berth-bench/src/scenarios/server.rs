//! Scenario 8: `berth serve` — N builds submitted at once through the API vs the same builds run
//! by `berth run` processes with the same parallelism, and Server-Sent Events delivery latency
//! (event committed → received) with 100 connected clients.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use super::{BUSYBOX, Ctx, Daemon, clean_outputs, project};
use crate::http::Conn;
use crate::measure::{Sample, interleave, run, sh};
use crate::report::Result;

const TERMINAL: &[&str] = &["success", "failure", "cancelled", "error", "interrupted"];

struct Server {
    /// Stops the server (SIGTERM, wait) when the scenario ends.
    _process: Daemon,
    port: u16,
    token: String,
    data: PathBuf,
}

impl Server {
    fn start(ctx: &Ctx, max_builds: usize) -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = ctx.work.join("server-data");
        let mut child = Command::new(&ctx.berth)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .args([
                "--max-builds",
                &max_builds.to_string(),
                "--docker-mode",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start berth serve")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        // Reads the token printed on first start, then keeps draining stderr.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let l = line.trim();
                if l.starts_with("berth_") {
                    let _ = tx.send(l.to_string());
                }
            }
        });
        let token = rx
            .recv_timeout(Duration::from_secs(30))
            .context("berth serve printed no admin token")?;
        let server = Server {
            _process: Daemon {
                child,
                name: "berth serve",
            },
            port,
            token,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server
                .conn()
                .and_then(|mut c| c.request("GET", "/healthz", &[], None))
                && r.status == 200
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("berth serve did not answer /healthz in 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn conn(&self) -> anyhow::Result<Conn<TcpStream>> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        Ok(Conn::new(s))
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn submit(&self, body: &str) -> anyhow::Result<i64> {
        let auth = self.auth();
        let r = self.conn()?.request(
            "POST",
            "/api/builds",
            &[("Authorization", &auth)],
            Some(body.as_bytes()),
        )?;
        let text = String::from_utf8_lossy(&r.body);
        if r.status != 202 {
            bail!("submit: HTTP {}: {text}", r.status);
        }
        text.split("\"id\":")
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("no id in {text}"))
    }

    /// An SSE stream of every build's events from now on; the stream can be shut down from
    /// another thread with the returned handle.
    fn events(&self) -> anyhow::Result<(Box<dyn BufRead + Send>, TcpStream)> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        let handle = s.try_clone()?;
        let auth = self.auth();
        let (status, body) =
            Conn::new(s).stream("/api/events?after=now", &[("Authorization", &auth)])?;
        if status != 200 {
            bail!("events: HTTP {status}");
        }
        Ok((body, handle))
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split(&format!("\"{key}\":")).nth(1)?;
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    rest.split(['"', ',', '}']).next()
}

/// A terminal `build_status` event's build id.
fn finished_build(data: &str) -> Option<(i64, String)> {
    if field(data, "event") != Some("build_status") {
        return None;
    }
    let status = field(data, "status")?;
    TERMINAL
        .contains(&status)
        .then(|| Some((field(data, "build")?.parse().ok()?, status.to_string())))?
}

/// Submits `n` builds at once and waits until all have finished (watching SSE).
fn api_batch(server: &Server, body: &str, n: usize) -> anyhow::Result<Sample> {
    let (events, handle) = server.events()?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in events.lines().map_while(|l| l.ok()) {
            if let Some(data) = line.strip_prefix("data:")
                && let Some(done) = finished_build(data.trim())
                && tx.send(done).is_err()
            {
                break;
            }
        }
    });
    let start = Instant::now();
    let ids: Vec<i64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n).map(|_| s.spawn(|| server.submit(body))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("submit thread panicked")))
            .collect::<anyhow::Result<_>>()
    })?;
    let mut left: HashSet<i64> = ids.into_iter().collect();
    let deadline = start + Duration::from_secs(600);
    while !left.is_empty() {
        let (id, status) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .context("builds did not finish in 10 minutes")?;
        if left.remove(&id) && status != "success" {
            bail!("build {id} ended {status}");
        }
    }
    let wall = start.elapsed();
    let _ = handle.shutdown(Shutdown::Both);
    let _ = reader.join();
    Ok(Sample {
        wall,
        peak_rss_kib: 0,
    })
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Connects `clients` SSE watchers, runs `builds` builds, and returns every (event, client)
/// delivery latency: receive time minus the event's commit time (`events.created_at`, ms).
fn sse_latency(
    server: &Server,
    body: &str,
    clients: usize,
    builds: usize,
) -> anyhow::Result<Vec<Duration>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    let mut shut = Vec::new();
    for _ in 0..clients {
        let (events, handle) = server.events()?;
        shut.push(handle);
        let ready_tx = ready_tx.clone();
        handles.push(std::thread::spawn(move || {
            let _ = ready_tx.send(());
            let mut got: Vec<(i64, u128)> = Vec::new();
            let mut id = None;
            let mut done = 0;
            for line in events.lines().map_while(|l| l.ok()) {
                let t = now_us();
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(data) = line.strip_prefix("data:") {
                    if let Some(i) = id.take() {
                        got.push((i, t));
                    }
                    if finished_build(data.trim()).is_some() {
                        done += 1;
                        if done == builds {
                            break;
                        }
                    }
                }
            }
            got
        }));
    }
    for _ in 0..clients {
        ready_rx.recv()?;
    }
    for _ in 0..builds {
        server.submit(body)?;
    }
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !h.is_finished() {
            for s in &shut {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        received.extend(h.join().map_err(|_| anyhow::anyhow!("client panicked"))?);
    }
    let min = received
        .iter()
        .map(|(i, _)| *i)
        .min()
        .context("no events received")?;
    let db = server.data.join("berth.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "SELECT id, created_at FROM events WHERE id >= {min}"
        ))
        .output()
        .context("sqlite3 (scripts/bench installs it)")?;
    if !out.status.success() {
        bail!("sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    }
    let committed: std::collections::HashMap<i64, u128> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once('|')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    Ok(received
        .iter()
        .filter_map(|(i, t)| {
            let c = committed.get(i)? * 1000;
            Some(Duration::from_micros(t.saturating_sub(c) as u64))
        })
        .collect())
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub fn server(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let (n, par) = if ctx.quick { (4, 2) } else { (50, 10) };
    let dir = project(
        ctx,
        "server",
        &format!(
            "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - t: \"true\"\n"
        ),
    )?;
    let pipeline = std::fs::read_to_string(dir.join("screwdriver.yaml"))?;
    let tar = Command::new("sh")
        .arg("-c")
        .arg("tar -c . | base64 -w0")
        .current_dir(&dir)
        .output()?;
    let body = format!(
        "{{\"pipeline\":{},\"source_tar\":{}}}",
        json_str(&pipeline),
        json_str(String::from_utf8(tar.stdout)?.trim())
    );
    let server = Server::start(ctx, par)?;
    let cli = format!(
        "seq {n} | xargs -P {par} -I{{}} {} run --output /dev/shm/berth-bench-out >/dev/null",
        shell_quote(&ctx.berth)
    );
    let reps = if ctx.quick {
        ctx.reps.min(2)
    } else {
        ctx.reps.min(5)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    {
        let mut api = || -> anyhow::Result<()> {
            a.push(api_batch(&server, &body, n)?);
            Ok(())
        };
        let mut cli_side = || -> anyhow::Result<()> {
            let mut c = sh(&cli);
            c.current_dir(&dir);
            b.push(run(c)?);
            Ok(())
        };
        interleave(reps, true, &mut [&mut api, &mut cli_side])?;
    }
    a.remove(0);
    b.remove(0);
    clean_outputs();
    let (clients, builds) = if ctx.quick { (10, 2) } else { (100, 10) };
    let lat = sse_latency(&server, &body, clients, builds)?;
    drop(server);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(vec![
        Result {
            scenario: format!("8. server: {n} builds at once"),
            berth_label: format!(
                "{n} builds `POST /api/builds` at once to `berth serve --max-builds {par}`, until the last one's final SSE `build_status`"
            ),
            baseline_label: format!(
                "the same {n} builds as `berth run` processes, {par} at a time (`xargs -P {par}`)"
            ),
            note: "Trivial one-job builds (busybox, `true`) with their source as `source_tar`."
                .into(),
            berth: a,
            baseline: b,
            target: "≤ 1.1×".into(),
        },
        Result {
            scenario: format!("8. server: SSE delivery, {clients} clients"),
            berth_label: format!(
                "{clients} clients on `/api/events` while {builds} builds run; latency = receive time − the event's commit time (`events.created_at`, ms resolution)"
            ),
            baseline_label: "—".into(),
            note: format!(
                "{} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (the table's median column is p50).",
                lat.len(),
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                ms(percentile(&lat, 1.0)),
            ),
            berth: lat
                .iter()
                .map(|&wall| Sample {
                    wall,
                    peak_rss_kib: 0,
                })
                .collect(),
            baseline: Vec::new(),
            target: "p99 ≤ 50 ms".into(),
        },
    ])
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}
