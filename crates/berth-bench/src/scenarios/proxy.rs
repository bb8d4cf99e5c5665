//! Scenario 4: the scoped proxy under API load — the same load against the daemon's socket
//! (direct), a `berth proxy` endpoint, and HAProxy configured like Tecnativa's
//! docker-socket-proxy (the widely used peer), interleaved batch by batch.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Ctx, Daemon, remove_labelled};
use crate::http::Conn;
use crate::load::{BENCH_LABEL, Op, batch};
use crate::measure::Sample;
use crate::report::{Result, median};

const DOCKER_SOCK: &str = "/var/run/docker.sock";
const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy as Tecnativa's docker-socket-proxy configures it (its haproxy.cfg: HTTP mode,
/// `http-server-close`, GET-only unless `POST=1`, one `allow` rule per API section switched by
/// an environment variable, deny everything else), with a unix socket in and out. The variables
/// enable what the load uses: `PING`, `VERSION`, `CONTAINERS`, `POST`.
const HAPROXY_CFG: &str = r#"global
    maxconn 4000

defaults
    mode http
    option http-server-close
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 10s
    timeout check 10s
    maxconn 3000

backend dockerbackend
    server dockersocket "${DOCKER_SOCKET}"

frontend dockerfrontend
    bind "unix@${LISTEN_SOCKET}" mode 600
    http-request deny unless METH_GET || { env(POST) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/containers/[a-zA-Z0-9_.-]+/((stop)|(restart)|(kill)) } { env(ALLOW_RESTARTS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/auth } { env(AUTH) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/build } { env(BUILD) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/commit } { env(COMMIT) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/configs } { env(CONFIGS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/containers } { env(CONTAINERS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/distribution } { env(DISTRIBUTION) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/events } { env(EVENTS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/exec } { env(EXEC) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/grpc } { env(GRPC) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/images } { env(IMAGES) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/info } { env(INFO) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/networks } { env(NETWORKS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/nodes } { env(NODES) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/_ping } { env(PING) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/plugins } { env(PLUGINS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/secrets } { env(SECRETS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/services } { env(SERVICES) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/session } { env(SESSION) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/swarm } { env(SWARM) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/system } { env(SYSTEM) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/tasks } { env(TASKS) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/version } { env(VERSION) -m bool }
    http-request allow if { path,url_dec -m reg -i ^(/v[\d\.]+)?/volumes } { env(VOLUMES) -m bool }
    http-request deny
    default_backend dockerbackend
"#;

fn wait_socket(path: &Path, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait()? {
            bail!("{what} exited {s} before listening");
        }
        if let Ok(s) = UnixStream::connect(path)
            && let Ok(r) = Conn::new(s).request("GET", "/v1.41/_ping", &[], None)
            && r.status == 200
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not answer on {} in 20 s", path.display())
}

fn create_containers(socket: &Path, n: usize) -> anyhow::Result<()> {
    let mut conn = Conn::new(UnixStream::connect(socket)?);
    let body = format!(
        r#"{{"Image":"{}","Cmd":["true"],"Labels":{{"{BENCH_LABEL}":"1"}}}}"#,
        super::BUSYBOX
    );
    for _ in 0..n {
        let r = conn.request(
            "POST",
            "/v1.41/containers/create",
            &[],
            Some(body.as_bytes()),
        )?;
        if r.status != 201 {
            bail!(
                "create via {}: HTTP {} {}",
                socket.display(),
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    Ok(())
}

pub fn proxy_api(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    remove_labelled();
    let r = measure(ctx);
    remove_labelled();
    r
}

fn measure(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let direct = PathBuf::from(DOCKER_SOCK);
    let proxy_sock = ctx.work.join("proxy.sock");
    let mut child = Command::new(&ctx.berth)
        .args(["proxy", "--listen"])
        .arg(&proxy_sock)
        .args(["--scope", &format!("bench-{}", std::process::id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start berth proxy")?;
    wait_socket(&proxy_sock, &mut child, "berth proxy")?;
    let _proxy = Daemon {
        child,
        name: "berth proxy",
    };
    let ha_sock = ctx.work.join("haproxy.sock");
    let _haproxy = if Path::new(HAPROXY).exists() {
        let cfg = ctx.work.join("haproxy.cfg");
        std::fs::write(&cfg, HAPROXY_CFG)?;
        let mut child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .env("DOCKER_SOCKET", DOCKER_SOCK)
            .env("LISTEN_SOCKET", &ha_sock)
            .envs([
                ("PING", "1"),
                ("VERSION", "1"),
                ("CONTAINERS", "1"),
                ("POST", "1"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start haproxy")?;
        wait_socket(&ha_sock, &mut child, "haproxy")?;
        Some(Daemon {
            child,
            name: "haproxy",
        })
    } else {
        eprintln!("bench: {HAPROXY} not installed (scripts/bench installs it); no HAProxy column");
        None
    };
    let sides: Vec<(&str, &Path)> = if _haproxy.is_some() {
        vec![
            ("direct", &direct),
            ("berth", &proxy_sock),
            ("haproxy", &ha_sock),
        ]
    } else {
        vec![("direct", &direct), ("berth", &proxy_sock)]
    };
    // 20 containers of the scope (through the proxy) and 20 foreign ones (directly).
    let n = if ctx.quick { 4 } else { 20 };
    create_containers(&proxy_sock, n)?;
    create_containers(&direct, n)?;

    let mut out = Vec::new();
    for op in [Op::Ping, Op::List, Op::CreateDelete] {
        let total = match (op, ctx.quick) {
            (Op::Ping, false) => 2000,
            (Op::List, false) => 200,
            (Op::CreateDelete, false) => 48,
            (Op::Ping, true) => 100,
            (Op::List, true) => 10,
            (Op::CreateDelete, true) => 4,
        };
        for conc in [1, 4, 16] {
            let mut walls = vec![Vec::new(); sides.len()];
            let mut lats = vec![Vec::new(); sides.len()];
            for rep in 0..=ctx.reps {
                for (i, (_, sock)) in sides.iter().enumerate() {
                    let b = batch(sock, op, conc, total, false)
                        .with_context(|| format!("{} c={conc} via {}", op.label(), sides[i].0))?;
                    if rep > 0 {
                        walls[i].push(b.wall);
                        lats[i].extend(b.latencies);
                    }
                }
            }
            let mut r = row(op, conc, total, &sides, &walls, &lats);
            if conc == 1 && op != Op::CreateDelete {
                // Where the proxy's time goes: the same load directly, one connection per request.
                let mut fresh = Vec::new();
                for _ in 0..ctx.reps.max(1) {
                    fresh.extend(batch(&direct, op, 1, total, true)?.latencies);
                }
                r.note.push_str(&format!(
                    " Direct with a new connection per request (as the proxy reaches the daemon): median {:.0} µs.",
                    median(&fresh).as_secs_f64() * 1e6
                ));
            }
            out.push(r);
        }
    }
    Ok(out)
}

fn row(
    op: Op,
    conc: usize,
    total: usize,
    sides: &[(&str, &Path)],
    walls: &[Vec<Duration>],
    lats: &[Vec<Duration>],
) -> Result {
    let tput = |i: usize| total as f64 / median(&walls[i]).as_secs_f64().max(1e-9);
    let lat_us = |i: usize| median(&lats[i]).as_secs_f64() * 1e6;
    let samples = |i: usize| -> Vec<Sample> {
        walls[i]
            .iter()
            .map(|&wall| Sample {
                wall,
                peak_rss_kib: 0,
            })
            .collect()
    };
    let mut note = format!(
        "{total} operations per batch. Throughput direct {:.0}/s, berth {:.0}/s ({:.2}× direct)",
        tput(0),
        tput(1),
        tput(1) / tput(0)
    );
    if sides.len() > 2 {
        note.push_str(&format!(
            ", HAProxy {:.0}/s ({:.2}× direct; berth/HAProxy {:.2}×)",
            tput(2),
            tput(2) / tput(0),
            tput(1) / tput(2)
        ));
    }
    note.push_str(&format!(
        ". Median latency direct {:.0} µs, berth {:.0} µs (added {:+.0} µs)",
        lat_us(0),
        lat_us(1),
        lat_us(1) - lat_us(0)
    ));
    if sides.len() > 2 {
        note.push_str(&format!(
            ", HAProxy {:.0} µs (added {:+.0} µs)",
            lat_us(2),
            lat_us(2) - lat_us(0)
        ));
    }
    note.push('.');
    let target = match op {
        Op::Ping => "throughput ≥ 0.8× (time ≤ 1.25×), +≤ 150 µs, ahead of HAProxy",
        _ => "throughput ≥ 0.9× (time ≤ 1.11×), +≤ 150 µs, ahead of HAProxy",
    };
    Result {
        scenario: format!("4. proxy {} c={conc}", op.label()),
        berth_label: "the load through a `berth proxy` scoped endpoint".into(),
        baseline_label: "the same load on the daemon's socket".into(),
        berth: samples(1),
        baseline: samples(0),
        note,
        target: target.into(),
    }
}
