//! Issue 7 against `berth serve`: SIGKILL at random points of builds in a loop, 200 builds
//! watched by 100 SSE clients, SSE clients that stop reading, and hostile uploads (slow and
//! oversized bodies). Real server process, real daemon. Each test prints its figures on a
//! `SERVER-RELIABILITY:` line (`--nocapture`); RELIABILITY.md records them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Not a test: the server child process (see `common`).
#[test]
fn server_child() {
    common::child_main();
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: reproducible from the printed seed without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `VmHWM` (peak) and `VmRSS` (now) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Every event the database holds, as (id, build, data), read directly from `berth.db`.
async fn db_events(data: &Path) -> Vec<(i64, i64, Value)> {
    let pool = db(data).await;
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT id, build_id, data FROM events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, b, d)| (id, b, serde_json::from_str(&d).unwrap()))
        .collect()
}

/// (id, status, owner) of every build, from the database.
async fn db_builds(data: &Path) -> Vec<(i64, String, Option<String>)> {
    let pool = db(data).await;
    let rows = sqlx::query_as("SELECT id, status, owner FROM builds ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

async fn db(data: &Path) -> sqlx::SqlitePool {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("berth.db"))
        .read_only(true)
        .busy_timeout(Duration::from_secs(10));
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap()
}

/// Reads an SSE response into `out` as (id, data) until the stream ends or `stop` says so.
async fn collect_sse(
    resp: reqwest::Response,
    out: &Mutex<Vec<(i64, Value)>>,
    mut stop: impl FnMut(&(i64, Value)) -> bool,
) {
    let mut body = resp.bytes_stream();
    let mut sse = Sse::default();
    while let Some(Ok(chunk)) = body.next().await {
        for e in sse.push(&chunk) {
            let done = stop(&e);
            out.lock().unwrap().push(e);
            if done {
                return;
            }
        }
    }
}

/// The kinds of job the SIGKILL loop submits, so that kills land in every phase of a build.
fn kill_loop_pipeline(kind: u64, tag: u64) -> (&'static str, String) {
    let job = |name: &str, extra: &str, steps: &str| {
        format!("  {name}:\n    image: {BUSYBOX}\n{extra}    steps:\n{steps}")
    };
    match kind {
        // Prints and sleeps: kills land in a running step.
        0 => (
            "ticks",
            format!(
                "jobs:\n{}",
                job(
                    "main",
                    "    requires: [~commit]\n",
                    &format!(
                        "      - tick: for i in $(seq 1 15); do echo tick-{tag}-$i; sleep 0.1; done\n"
                    )
                )
            ),
        ),
        // Writes artifacts (copied out at teardown): kills land while copying.
        1 => (
            "artifacts",
            format!(
                "jobs:\n{}",
                job(
                    "main",
                    "    requires: [~commit]\n",
                    &format!(
                        "      - write: echo art-{tag}; head -c 6000000 /dev/urandom > $SD_ARTIFACTS_DIR/blob; \
                         for i in $(seq 1 40); do echo $i > $SD_ARTIFACTS_DIR/f$i; done\n\
                         \x20     - after: echo written-{tag}\n"
                    )
                )
            ),
        ),
        // Quick jobs in a chain: kills land in creating and tearing down.
        2 => (
            "chain",
            format!(
                "jobs:\n{}{}",
                job(
                    "first",
                    "    requires: [~commit]\n",
                    &format!("      - a: echo first-{tag}\n")
                ),
                job(
                    "second",
                    "    requires: [first]\n",
                    &format!("      - b: echo second-{tag}\n")
                )
            ),
        ),
        // An image that is not there, on a closed loopback registry: kills land in pulling.
        _ => (
            "pull",
            format!(
                "jobs:\n  main:\n    image: 127.0.0.1:9/berth-absent/x:{tag}\n    requires: [~commit]\n    steps:\n      - a: echo never\n"
            ),
        ),
    }
}

/// Kills `berth serve` with SIGKILL at random points of its builds' lives, 20 times (or
/// `BERTH_SERVER_KILL_ITERATIONS`), restarting it on the same data directory each time.
/// After each restart every build the killed server was running is final, its log and events
/// begin with everything shown before the kill, and nothing of it is left on the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_every_build_final_log_kept_nothing_left() {
    if !docker() {
        return;
    }
    let iterations = env_or("BERTH_SERVER_KILL_ITERATIONS", 20);
    let seed = env_or(
        "BERTH_FAULT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    println!(
        "SERVER-RELIABILITY: kill loop seed {seed} (BERTH_FAULT_SEED), {iterations} iterations"
    );
    let mut rng = Rng::new(seed);
    let dir = tempdir();
    let data = dir.path().join("data");
    let start = Instant::now();
    let mut token: Option<String> = None;
    // Per build: the log text and events shown before a kill.
    let mut shown_logs: HashMap<(i64, String), String> = HashMap::new();
    let mut shown_events: HashMap<i64, Vec<(i64, Value)>> = HashMap::new();
    let mut kinds: HashMap<i64, &'static str> = HashMap::new();
    let mut killed_while_running = 0;
    let mut interrupted_seen = 0;
    for iteration in 0..iterations {
        let mut server = Server::start(&data, 2, token.as_deref());
        token = Some(server.token.clone());
        // Recovery ran before the server listened: check what the previous kill left.
        check_after_restart(&server, &data, &shown_logs, &shown_events).await;

        // Watch everything from here on, as a client would.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let after = db_events(&data).await.last().map_or(0, |e| e.0);
        let resp = server
            .get("/api/events")
            .header("Last-Event-ID", after.to_string())
            .send()
            .await
            .unwrap();
        let watcher = {
            let seen = seen.clone();
            tokio::spawn(async move { collect_sse(resp, &seen, |_| false).await })
        };
        let mut ids = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let (kind, yaml) = kill_loop_pipeline(rng.below(4), rng.next() % 100_000);
            let id = server.submit(json!({"pipeline": yaml})).await;
            kinds.insert(id, kind);
            ids.push(id);
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(3300))).await;
        // What a client has seen so far: every log, then the events.
        let builds = db_builds(&data).await;
        for (id, status, _) in &builds {
            if status == "running" {
                let b = server.build(*id).await;
                for job in b["jobs"].as_array().into_iter().flatten() {
                    let name = job["name"].as_str().unwrap().to_string();
                    let text = server.log(*id, &name).await;
                    shown_logs.insert((*id, name), text);
                }
            }
        }
        let snapshot = seen.lock().unwrap().clone();
        // As if an upload were being received at the kill: its spool file is removed at start.
        std::fs::create_dir_all(data.join("tmp")).unwrap();
        std::fs::write(data.join("tmp").join("upload-killed"), b"{\"pipeline\": \"").unwrap();
        server.kill9();
        watcher.abort();
        let running_at_kill = db_builds(&data)
            .await
            .into_iter()
            .filter(|b| b.1 == "running")
            .count();
        killed_while_running += running_at_kill;
        for (id, e) in snapshot {
            shown_events
                .entry(e["build"].as_i64().unwrap())
                .or_default()
                .push((id, e));
        }
        println!(
            "SERVER-RELIABILITY: iteration {iteration}: submitted {ids:?} ({}), killed with {running_at_kill} running",
            ids.iter().map(|i| kinds[i]).collect::<Vec<_>>().join(",")
        );
        drop(server);
    }
    // A last start runs what is still queued to its end.
    let server = Server::start(&data, 2, token.as_deref());
    check_after_restart(&server, &data, &shown_logs, &shown_events).await;
    let builds = db_builds(&data).await;
    for (id, _, _) in &builds {
        let b = server.wait_final(*id).await;
        if b["status"] == "interrupted" {
            interrupted_seen += 1;
        }
    }
    let mut server = server;
    server.stop();
    // Every build: final, ran at most once (never `running` twice), nothing of it left.
    let events = db_events(&data).await;
    let mut statuses: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (_, b, e) in &events {
        if e["event"] == "build_status" {
            statuses
                .entry(*b)
                .or_default()
                .push(e["status"].as_str().unwrap().to_string());
        }
    }
    let mut leftovers = 0;
    let builds = db_builds(&data).await;
    for (id, status, owner) in &builds {
        assert!(
            matches!(
                status.as_str(),
                "success" | "failure" | "error" | "interrupted" | "cancelled"
            ),
            "build {id} ({}) is {status}",
            kinds[id]
        );
        let s = &statuses[id];
        assert_eq!(
            s.iter().filter(|s| *s == "running").count().min(1),
            s.iter().filter(|s| *s == "running").count(),
            "build {id} ran twice: {s:?}"
        );
        assert_eq!(s.last().unwrap(), status, "build {id}: {s:?}");
        if let Some(owner) = owner {
            let left = labelled(&format!("io.berth.owner={owner}"));
            leftovers += left.len();
            assert!(left.is_empty(), "build {id} ({}) left {left:?}", kinds[id]);
        }
    }
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s, _) in &builds {
        *by_status.entry(s.as_str()).or_default() += 1;
    }
    println!(
        "SERVER-RELIABILITY: kill loop: {iterations}/{iterations} kills survived, {} builds ({by_status:?}), \
         {killed_while_running} running at a kill, {interrupted_seen} interrupted, {} logs and {} event streams \
         checked as prefixes, leftovers {leftovers}, {:.1} s",
        builds.len(),
        shown_logs.len(),
        shown_events.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        killed_while_running > 0,
        "no kill landed in a running build"
    );
}

/// After a restart on a killed server's data: nothing is `running` that is not running now,
/// logs and events begin with what was shown before, and final builds left nothing behind.
async fn check_after_restart(
    server: &Server,
    data: &Path,
    shown_logs: &HashMap<(i64, String), String>,
    shown_events: &HashMap<i64, Vec<(i64, Value)>>,
) {
    for ((id, job), before) in shown_logs {
        let now = server.log(*id, job).await;
        assert!(
            now.starts_with(before.as_str()),
            "build {id} job {job}: the log lost what it showed before the kill\nbefore: {before:?}\nnow: {now:?}"
        );
    }
    let events = db_events(data).await;
    let by_id: HashMap<i64, &Value> = events.iter().map(|(id, _, v)| (*id, v)).collect();
    for (build, shown) in shown_events {
        for (id, e) in shown {
            assert_eq!(
                by_id.get(id).copied(),
                Some(e),
                "build {build}: event {id} shown before the kill is not in the database"
            );
        }
    }
    assert!(
        !data.join("tmp").join("upload-killed").exists(),
        "a half-received upload survived the restart"
    );
    for (id, status, owner) in db_builds(data).await {
        assert_ne!(status, "submitting", "build {id}");
        if db_is_final(&status)
            && let Some(owner) = owner
        {
            assert_owner_clean(&owner);
        }
    }
}

fn db_is_final(s: &str) -> bool {
    !matches!(s, "queued" | "running" | "submitting")
}

/// 200 builds (or `BERTH_SERVER_LOAD_BUILDS`) submitted in 4 bursts while 100 SSE clients
/// (or `BERTH_SERVER_LOAD_CLIENTS`) watch: 80 on `/api/events` (a quarter of them drop the
/// connection halfway and resume with `Last-Event-ID`), 20 on single builds. Every client gets
/// exactly the database's events, in order, with no gap; every build succeeds; the server's
/// peak RSS stays under a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_builds_and_sse_clients_lose_no_events() {
    if !docker() {
        return;
    }
    let total = env_or("BERTH_SERVER_LOAD_BUILDS", 200) as usize;
    let clients = env_or("BERTH_SERVER_LOAD_CLIENTS", 100) as usize;
    let bursts = 4;
    let dir = tempdir();
    let data = dir.path().join("data");
    let server = Arc::new(Server::start(&data, 8, None));
    let pid = server.child.id();
    let start = Instant::now();
    let (baseline, _) = memory_kib(pid);
    let yaml = pipeline("      - hi: echo hi $SD_BUILD_ID; seq 1 20; echo bye\n");
    let finals_wanted = total;
    let global = clients * 4 / 5;
    let mut tasks = Vec::new();
    for c in 0..global {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let got = Mutex::new(Vec::new());
            let mut finals = 0;
            let resume = c % 4 == 0;
            let mut last = 0;
            loop {
                let resp = server
                    .get("/api/events")
                    .header("Last-Event-ID", last.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let mut dropped = false;
                let mut n = 0usize;
                collect_sse(resp, &got, |(_, e)| {
                    n += 1;
                    if is_final_event(e) {
                        finals += 1;
                    }
                    // Drop the connection once, a little into the run, then resume.
                    if resume && !dropped && last == 0 && n == 150 + c {
                        dropped = true;
                        return true;
                    }
                    finals == finals_wanted
                })
                .await;
                last = got.lock().unwrap().last().map_or(0, |e| e.0);
                if finals == finals_wanted {
                    break;
                }
                assert!(dropped, "client {c}: the event stream ended early");
            }
            (None::<i64>, got.into_inner().unwrap())
        }));
    }
    let mut ids = Vec::new();
    for burst in 0..bursts {
        let n = total / bursts + usize::from(burst < total % bursts);
        let subs: Vec<_> = (0..n)
            .map(|_| {
                let server = server.clone();
                let yaml = yaml.clone();
                tokio::spawn(async move { server.submit(json!({"pipeline": yaml})).await })
            })
            .collect();
        for s in subs {
            ids.push(s.await.unwrap());
        }
        if burst == 0 {
            // Per-build watchers on builds of the first burst, attached while they run.
            for c in 0..clients - global {
                let server = server.clone();
                let id = ids[c * ids.len() / (clients - global)];
                tasks.push(tokio::spawn(async move {
                    let got = Mutex::new(Vec::new());
                    let resp = server
                        .get(&format!("/api/builds/{id}/events"))
                        .send()
                        .await
                        .unwrap();
                    collect_sse(resp, &got, is_final_event_pair).await;
                    (Some(id), got.into_inner().unwrap())
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(
            tokio::time::timeout(Duration::from_secs(600), t)
                .await
                .expect("a client did not get every build's end")
                .unwrap(),
        );
    }
    let elapsed = start.elapsed();
    let (peak, rss) = memory_kib(pid);
    let events = db_events(&data).await;
    let mut lost = 0usize;
    for (build, got) in &results {
        let want: Vec<(i64, &Value)> = events
            .iter()
            .filter(|(_, b, _)| build.is_none_or(|w| w == *b))
            .map(|(id, _, v)| (*id, v))
            .collect();
        let got: Vec<(i64, &Value)> = got.iter().map(|(id, v)| (*id, v)).collect();
        if got != want {
            let have: std::collections::HashSet<i64> = got.iter().map(|e| e.0).collect();
            lost += want.iter().filter(|e| !have.contains(&e.0)).count();
        }
        assert_eq!(
            got.len(),
            want.len(),
            "a client on {build:?} got {} events, the database has {}",
            got.len(),
            want.len()
        );
        assert!(
            got == want,
            "a client on {build:?} got other events than stored"
        );
    }
    let mut ok = 0;
    for id in &ids {
        let b = server.build(*id).await;
        assert_eq!(b["status"], "success", "{b:#}");
        ok += 1;
    }
    let per_build: Vec<usize> = ids
        .iter()
        .map(|id| events.iter().filter(|e| e.1 == *id).count())
        .collect();
    println!(
        "SERVER-RELIABILITY: {total} builds in {bursts} bursts, {clients} SSE clients ({global} global, \
         {} resumed with Last-Event-ID, {} per build): {ok} success, {} events stored ({}-{} per build), \
         events lost {lost}, server RSS baseline {} MiB, peak (VmHWM) {} MiB, now {} MiB; {:.1} s",
        global.div_ceil(4),
        clients - global,
        events.len(),
        per_build.iter().min().unwrap(),
        per_build.iter().max().unwrap(),
        baseline / 1024,
        peak / 1024,
        rss / 1024,
        elapsed.as_secs_f64()
    );
    assert_eq!(lost, 0);
    assert!(
        peak < 256 * 1024,
        "the server's peak RSS was {} MiB",
        peak / 1024
    );
}

fn is_final_event_pair(e: &(i64, Value)) -> bool {
    is_final_event(&e.1)
}

/// A raw HTTP/1.1 GET that never reads its answer: a client that stalled.
fn stalled_client(server: &Server, path: &str) -> std::net::TcpStream {
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token
    )
    .unwrap();
    s
}

/// SSE clients that connect and never read while builds print megabytes: the server's memory
/// stays bounded, a reading client gets every event, the builds finish, and each stalled
/// connection is closed by the server once it has made no progress for the stall timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sse_clients_keep_memory_bounded_and_are_dropped() {
    if !docker() {
        return;
    }
    let stalled_n = env_or("BERTH_SERVER_STALLED_CLIENTS", 40) as usize;
    let dir = tempdir();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, 4, None, &[("BERTH_TEST_STALL_TIMEOUT_MS", "5000")]);
    let pid = server.child.id();
    let (baseline, _) = memory_kib(pid);
    // One client that reads everything.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let resp = server.get("/api/events").send().await.unwrap();
    let builds = 4;
    let reader = {
        let seen = seen.clone();
        let mut finals = 0;
        tokio::spawn(async move {
            collect_sse(resp, &seen, |(_, e)| {
                finals += usize::from(is_final_event(e));
                finals == builds
            })
            .await
        })
    };
    // ~16 MB of output per build, in ~4 KiB lines.
    let yaml = pipeline("      - loud: head -c 12000000 /dev/urandom | base64 -w 4096\n");
    let mut ids = Vec::new();
    for _ in 0..builds {
        ids.push(server.submit(json!({"pipeline": yaml})).await);
    }
    // A quarter on single builds, the others on every build's events.
    let mut stalled: Vec<std::net::TcpStream> = (0..stalled_n)
        .map(|i| {
            if i % 4 == 0 {
                stalled_client(&server, &format!("/api/builds/{}/events", ids[i % builds]))
            } else {
                stalled_client(&server, "/api/events")
            }
        })
        .collect();
    let mut peak_during = 0;
    for id in &ids {
        let b = server.wait_final(*id).await;
        assert_eq!(b["status"], "success", "{b:#}");
        peak_during = peak_during.max(memory_kib(pid).0);
    }
    tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the reading client got every build's end")
        .unwrap();
    let events = db_events(&data).await;
    let got = seen.lock().unwrap().clone();
    let want: Vec<(i64, Value)> = events.into_iter().map(|(id, _, v)| (id, v)).collect();
    assert_eq!(got.len(), want.len(), "the reading client missed events");
    assert!(got == want);
    let log_bytes: usize = {
        let mut n = 0;
        for id in &ids {
            n += server.log(*id, "main").await.len();
        }
        n
    };
    // The stalled connections are closed by the server: reading them now ends in EOF (or a
    // reset) after what was buffered, within the stall timeout's bound.
    // A stalled connection either was closed by the server (it had answers pending that the
    // client did not take for the stall timeout), or the client's kernel buffer took all there
    // was (nothing pending on the server's side). Read each to tell which.
    // Let the stall timeout (5 s) pass for every stalled connection.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let last_global = want.last().unwrap().0;
    let last_of_first = db_events(&data)
        .await
        .iter()
        .filter(|e| e.1 == ids[0])
        .map(|e| e.0)
        .max()
        .unwrap();
    let (mut closed, mut complete) = (0, 0);
    let mut buffered_max = 0usize;
    for (i, s) in stalled.iter_mut().enumerate() {
        let last = if i % 4 == 0 {
            last_of_first
        } else {
            last_global
        };
        let marker = format!("id: {last}\n").into_bytes();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!(
                    "stalled connection {i} was neither closed nor complete: {e} after {} bytes",
                    got.len()
                ),
            }
            let tail = got.len().saturating_sub(buf.len() + marker.len());
            if got[tail..].windows(marker.len()).any(|w| w == marker) {
                complete += 1;
                break;
            }
            // Only what the kernel buffers (here up to 32 MiB receiving, 4 MiB sending) and the
            // server held before the cut may arrive, not the whole stream.
            assert!(
                got.len() < 48 << 20,
                "stalled connection {i} is still streaming ({} bytes)",
                got.len()
            );
        }
        buffered_max = buffered_max.max(got.len());
    }
    let (peak, rss) = memory_kib(pid);
    println!(
        "SERVER-RELIABILITY: {stalled_n} stalled SSE clients, {builds} builds printing {} MB in all, \
         {} events; the reading client got all of them; server RSS baseline {} MiB, peak (VmHWM) {} MiB, \
         now {} MiB; of the {stalled_n} stalled connections {closed} were closed by the server and \
         {complete} had taken everything into the client's kernel buffer; at most {} KiB delivered \
         to one of them",
        log_bytes / 1_000_000,
        got.len(),
        baseline / 1024,
        peak.max(peak_during) / 1024,
        rss / 1024,
        buffered_max / 1024
    );
    assert_eq!(closed + complete, stalled_n);
    assert!(
        stalled_n == 0 || closed > 0,
        "no stalled connection was closed"
    );
    assert!(
        peak < baseline + 128 * 1024,
        "the server's peak RSS grew by {} MiB",
        (peak - baseline) / 1024
    );
}

/// A client that sends headers and then trickles (or stops sending) its body gets a 408 (or
/// its connection closed) after the body timeout, while other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_time_out_and_others_are_served() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, 2, None, &[("BERTH_TEST_BODY_TIMEOUT_MS", "3000")]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let slow: Vec<_> = (0..20)
        .map(|i| {
            let addr = addr.clone();
            let token = server.token.clone();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(&addr).unwrap();
                write!(
                    s,
                    "POST /api/builds HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"pipeline\": \""
                )
                .unwrap();
                let started = Instant::now();
                // Even clients trickle a byte every 200 ms; odd ones stop sending.
                if i % 2 == 0 {
                    s.set_nonblocking(true).unwrap();
                    for _ in 0..400 {
                        if s.write_all(b"a").is_err() {
                            break;
                        }
                        let mut b = [0u8; 1];
                        // An answer (or the close) has arrived: stop sending.
                        if s.peek(&mut b).is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    s.set_nonblocking(false).unwrap();
                }
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                (
                    String::from_utf8_lossy(&answer).to_string(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    // Meanwhile: health, a build and its log.
    let id = server
        .submit(json!({"pipeline": pipeline("      - a: echo served\n")}))
        .await;
    server.assert_healthy().await;
    let b = server.wait_final(id).await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert!(server.log(id, "main").await.contains("served"));
    let mut longest = Duration::ZERO;
    for t in slow {
        let (answer, took) = t.join().unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a slow body got {answer:?}"
        );
        if !answer.is_empty() {
            assert!(answer.contains("did not arrive within"), "{answer}");
        }
        longest = longest.max(took);
    }
    server.assert_healthy().await;
    let builds: Value = server.get_json("/api/builds").await;
    assert_eq!(builds["total"], 1, "a slow body became a build: {builds:#}");
    println!(
        "SERVER-RELIABILITY: 20 slow bodies (10 trickling, 10 stalled) answered 408 within {:.1} s \
         (timeout 3 s); a build submitted meanwhile succeeded",
        longest.as_secs_f64()
    );
}

/// An upload over the limit gets a clear 413 (declared or not), nothing of it stays under the
/// data directory, the server's memory does not grow with it, and others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_get_413_and_are_not_kept() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("data");
    let limit_mib = 24;
    let server = Server::start_with(
        &data,
        2,
        None,
        &[("BERTH_TEST_MAX_UPLOAD", &(limit_mib << 20).to_string())],
    );
    let pid = server.child.id();
    let (baseline, _) = memory_kib(pid);
    let yaml = pipeline("      - a: wc -c big.bin\n");
    // Within the limit: a 12 MiB file (16 MiB of base64) is accepted and arrives intact.
    let big = vec![7u8; 12 << 20];
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(big.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "big.bin", &big[..]).unwrap();
        b.into_inner().unwrap()
    };
    let ok = server
        .submit(json!({"pipeline": yaml, "source_tar": b64(&tar)}))
        .await;
    let b = server.wait_final(ok).await;
    assert_eq!(b["status"], "success", "{b:#}");
    assert!(server.log(ok, "main").await.contains("12582912 big.bin"));
    let (after_ok, _) = memory_kib(pid);

    // Over the limit, streamed without a Content-Length (chunked): 413 once the limit is passed.
    let head = format!(
        "{{\"pipeline\": {}, \"source_tar\": \"",
        serde_json::to_string(&yaml).unwrap()
    );
    // Others are served while it streams: health checks in a loop until it is answered.
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let meanwhile = {
        let (url, answered) = (server.url.clone(), answered.clone());
        tokio::spawn(async move {
            let mut ok = 0;
            while !answered.load(std::sync::atomic::Ordering::SeqCst) {
                let r = reqwest::get(format!("{url}/healthz")).await.unwrap();
                assert_eq!(r.status().as_u16(), 200);
                ok += 1;
            }
            ok
        })
    };
    // A raw client: it keeps sending until the answer arrives (or the server cuts it off),
    // then reads the answer, as curl does.
    let addr = server.url.trim_start_matches("http://").to_string();
    let token = server.token.clone();
    let (status, text) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /api/builds HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{head}\r\n",
            head.len()
        )
        .unwrap();
        let piece = vec![b'A'; 1 << 20];
        let mut b = [0u8; 1];
        s.set_nonblocking(true).unwrap();
        for _ in 0..64 {
            if s.peek(&mut b).is_ok() {
                break;
            }
            s.set_nonblocking(false).unwrap();
            let sent = write!(s, "{:x}\r\n", piece.len())
                .and_then(|()| s.write_all(&piece))
                .and_then(|()| s.write_all(b"\r\n"));
            s.set_nonblocking(true).unwrap();
            if sent.is_err() {
                break;
            }
        }
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).to_string();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        (status, answer)
    })
    .await
    .unwrap();
    answered.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = meanwhile.await.unwrap();
    assert!(served > 0);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("over the limit"), "{text}");
    // Declared over the limit: 413 from the header, without reading the body.
    let r = server
        .post("/api/builds")
        .header("content-type", "application/json")
        .header("content-length", ((limit_mib + 1) << 20).to_string())
        .body(vec![b'{'; 10])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }
    server.assert_healthy().await;
    let builds: Value = server.get_json("/api/builds").await;
    assert_eq!(builds["total"], 1, "{builds:#}");
    // Spooled bodies are removed once answered.
    let tmp = data.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "spooled uploads left: {left:?}");
    let (peak, _) = memory_kib(pid);
    println!(
        "SERVER-RELIABILITY: upload limit {limit_mib} MiB: a 16 MiB body (12 MiB tar) accepted, \
         a 64 MiB chunked body 413 ({served} health checks answered meanwhile), a declared \
         oversize 413; server RSS baseline {} MiB, after the \
         accepted upload {} MiB, peak (VmHWM) {} MiB; spooled files left 0",
        baseline / 1024,
        after_ok / 1024,
        peak / 1024
    );
    assert!(
        peak < baseline + 3 * 16 * 1024,
        "the server's memory grew by {} MiB for a 16 MiB upload",
        (peak - baseline) / 1024
    );
}
