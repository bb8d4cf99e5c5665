//! Process-level behaviour of `berth run` against a real daemon: concurrency, signals, crashes
//! and `berth gc`, large output with bounded memory, and what source gets copied.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn slow_pipeline(image: &str) -> String {
    format!(
        "jobs:\n  main:\n    image: {image}\n    requires: [~commit]\n    steps:\n      - wait: echo step-is-running; sleep 300\n"
    )
}

/// Spawns `berth run --json` and returns once the step has started, with the owner id.
fn spawn_until_step_runs(p: &Project) -> (Child, String) {
    let mut child = p
        .command(&["run", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn berth");
    let stdout = child.stdout.take().unwrap();
    let mut owner = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "build_started" {
            owner = v["owner"].as_str().unwrap().to_string();
        }
        if v["type"] == "output" && v["data"].as_str().unwrap_or("").contains("step-is-running") {
            return (child, owner);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("berth ended before the step ran");
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn ctrl_c_cancels_cleans_up_and_exits_130() {
    if !docker() {
        return;
    }
    let p = Project::new(&slow_pipeline(BUSYBOX));
    let (mut child, owner) = spawn_until_step_runs(&p);
    assert!(
        !labelled(&format!("io.berth.owner={owner}")).is_empty(),
        "the job's container should exist"
    );
    signal(&child, "INT");
    let status = wait_for(Duration::from_secs(60), || child.try_wait().unwrap())
        .expect("berth did not exit");
    assert_eq!(status.code(), Some(130));
    assert_owner_clean(&owner);
}

#[test]
fn sigkill_leaves_objects_that_gc_removes_without_touching_live_runs() {
    if !docker() {
        return;
    }
    let live = Project::new(&slow_pipeline(BUSYBOX));
    let (mut live_child, live_owner) = spawn_until_step_runs(&live);

    let dead = Project::new(&slow_pipeline(BUSYBOX));
    let (mut dead_child, dead_owner) = spawn_until_step_runs(&dead);
    signal(&dead_child, "KILL");
    dead_child.wait().unwrap();
    // SIGKILL leaves the job behind (unless a concurrent run's startup gc already took it:
    // other tests run berth at the same time, and every `berth run` reaps dead owners).

    let gc = dead.command(&["gc"]).output().unwrap();
    assert_eq!(
        gc.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert_owner_clean(&dead_owner);
    assert!(
        !labelled(&format!("io.berth.owner={live_owner}")).is_empty(),
        "gc must not touch a live run"
    );

    signal(&live_child, "TERM");
    let status =
        wait_for(Duration::from_secs(60), || live_child.try_wait().unwrap()).expect("no exit");
    assert_eq!(status.code(), Some(130));
    assert_owner_clean(&live_owner);
}

#[test]
fn two_concurrent_runs_of_the_same_pipeline_do_not_collide() {
    if !docker() {
        return;
    }
    let pipeline = format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - work: sleep 1; echo done-$SD_BUILD_ID\n"
    );
    let p = Project::new(&pipeline);
    let spawn = || {
        p.command(&["run", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        Run::new(a.wait_with_output().unwrap()),
        Run::new(b.wait_with_output().unwrap()),
    );
    a.assert_code(0);
    b.assert_code(0);
    let mut ids = [a.build_id(), b.build_id()];
    ids.sort();
    assert_eq!(ids, ["1", "2"], "each run gets its own build directory");
    a.assert_nothing_left();
    b.assert_nothing_left();
}

/// Peak resident memory of a process, sampled until it exits.
fn peak_rss_kib(child: &mut Child) -> u64 {
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak = peak.max(kib);
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn huge_output_streams_with_bounded_memory() {
    if !docker() {
        return;
    }
    // 120 MB of 72-byte lines, plus a secret to mask so the masking path is exercised too.
    let p = Project::new(&format!(
        r#"
jobs:
  loud:
    image: {BUSYBOX}
    requires: [~commit]
    secrets: [NEEDLE]
    steps:
      - flood: yes 0123456789012345678901234567890123456789012345678901234567890123456789z | head -c 120000000
      - tail: echo "end $NEEDLE"
"#
    ));
    let out_path = p.path().join("stdout.txt");
    let mut child = p
        .command(&["run", "--secret", "NEEDLE=n33dle"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(&mut child);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log_len = std::fs::metadata(p.output_dir().join("1/loud.log"))
        .unwrap()
        .len();
    assert!(log_len >= 120_000_000, "log has {log_len} bytes");
    let out_len = std::fs::metadata(&out_path).unwrap().len();
    assert!(out_len >= 120_000_000, "stdout has {out_len} bytes");
    assert!(
        peak > 0 && peak < 96 * 1024,
        "berth's peak RSS was {peak} KiB for 120 MB of output"
    );
    let log = std::fs::read(p.output_dir().join("1/loud.log")).unwrap();
    assert!(
        log.ends_with(b"berth: job `loud` success\n") || log.windows(7).any(|w| w == b"end ***")
    );
}

#[test]
fn git_checkout_contributes_tracked_and_untracked_but_not_ignored_files() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - list: find . -type f | sort\n"
    ));
    p.write("tracked.txt", "t")
        .write(".gitignore", "ignored.txt\n")
        .write("ignored.txt", "i");
    let git = |args: &[&str]| {
        let s = Command::new("git")
            .current_dir(p.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            s.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&s.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "tracked.txt", ".gitignore", "screwdriver.yaml"]);
    p.write("untracked.txt", "u");
    let run = p.run_json(&[]);
    run.assert_code(0);
    let out = run.output("main");
    assert!(
        out.contains("./tracked.txt") && out.contains("./untracked.txt"),
        "{out}"
    );
    assert!(
        !out.contains("ignored.txt\n./") && !out.contains("./ignored.txt"),
        "{out}"
    );
    assert!(!out.contains(".git/"), "{out}");
    run.assert_nothing_left();
}

#[test]
fn a_stalled_reader_pauses_the_job_with_bounded_memory_and_loses_nothing() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - flood: yes 0123456789012345678901234567890123456789012345678901234567890123456789z | head -c 50000000\n"
    ));
    let mut child = p
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Nobody reads stdout for a while: berth must apply back-pressure, not buffer 50 MB.
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap();
    assert!(
        rss < 64 * 1024,
        "berth holds {rss} KiB while its reader is stalled"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the job should be paused, not finished"
    );
    // Now read everything: nothing was lost.
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let lines = out.split(|b| *b == b'\n').filter(|l| l.len() == 71).count();
    assert_eq!(lines, 50_000_000 / 72, "every full line reached stdout");
}

/// Ten jobs of one run, tagged `tag` everywhere: eight plain (`p7` fails with exit 7 on purpose),
/// one with a service under the alias `web` that every run uses, one in scoped mode that creates
/// the container and network names (`db`, `net`) every run uses, through its endpoint. (Three
/// networks per run: the daemon's default address pools hold about 30 at once.)
fn mixed_pipeline(tag: &str) -> String {
    let mut jobs = String::from("jobs:\n");
    for i in 0..8 {
        let code = if i == 7 { 7 } else { 0 };
        jobs.push_str(&format!(
            "  p{i}:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - work: echo \"plain={tag}-$SD_JOB_NAME\"; exit {code}\n"
        ));
    }
    jobs.push_str(&format!(
        r#"  s0:
    image: {BUSYBOX}
    requires: [~commit]
    services:
      - image: {BUSYBOX}
        alias: web
        command: ["sh", "-c", "mkdir -p /www && echo svc-{tag}-s0 > /www/id && exec httpd -f -p 8080 -h /www"]
    steps:
      - fetch: |
          for i in $(seq 1 100); do wget -q -O /tmp/id http://web:8080/id && break; sleep 0.1; done
          echo "service=$(cat /tmp/id)"
"#
    ));
    jobs.push_str(&format!(
        r#"  d0:
    image: {DEBIAN}
    requires: [~commit]
    docker: scoped
    steps:
      - siblings: |
          set -e
          docker network create net >/dev/null
          docker run -d --name db --network net {BUSYBOX} sh -c 'echo db-{tag}-d0 > /id; sleep 120' >/dev/null
          echo "db=$(docker exec db cat /id)"
          echo "names=$(docker ps --format '{{{{.Names}}}}' | xargs)"
"#
    ));
    jobs
}

/// A `berth serve` child on a loopback port with its own data and owners directories.
struct ServeChild {
    child: Child,
    addr: String,
    token: String,
    dir: tempfile::TempDir,
}

impl ServeChild {
    fn start(parallel: &str) -> ServeChild {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(berth_bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--parallel",
                parallel,
                "--data",
            ])
            .arg(dir.path().join("data"))
            .env("BERTH_OWNERS_DIR", dir.path().join("owners"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut token, mut addr) = (None, None);
        while addr.is_none() {
            let line = lines.next().expect("berth serve ended early").unwrap();
            let t = line.trim();
            if t.len() > 20 && !t.contains(' ') && token.is_none() {
                token = Some(t.to_string());
            }
            if let Some(a) = line.split("serving on http://").nth(1) {
                addr = a.split_whitespace().next().map(str::to_string);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        ServeChild {
            child,
            addr: addr.unwrap(),
            token: token.expect("admin token printed on first start"),
            dir,
        }
    }

    /// One HTTP/1.0 exchange (close-delimited answer, no chunking); returns the body.
    fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&self.addr).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            c,
            "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    fn build(&self, id: i64) -> serde_json::Value {
        serde_json::from_str(&self.call("GET", &format!("/api/builds/{id}"), None)).unwrap()
    }

    /// Objects on the daemon whose owner lock lives in this server's owners directory.
    fn left(&self) -> Vec<String> {
        let owners = self.dir.path().join("owners");
        let mut left = Vec::new();
        for (args, name) in [
            (vec!["ps", "-a"], "{{.Names}}"),
            (vec!["network", "ls"], "{{.Name}}"),
            (vec!["volume", "ls"], "{{.Name}}"),
        ] {
            let format = format!("{name} {{{{.Label \"io.berth.owner-lock\"}}}}");
            let o = Command::new("docker")
                .args(&args)
                .args(["--filter", "label=io.berth.owner", "--format", &format])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            left.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.contains(&*owners.to_string_lossy()))
                    .map(str::to_string),
            );
        }
        left
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// 50 jobs on one daemon at once: four concurrent `berth run --parallel 10` processes and a
/// `berth serve` build, ten jobs each, whose services and scoped siblings use the same names.
/// Every result is the one its job asked for, each job saw only its own objects, and nothing
/// of any run or build remains.
#[test]
fn fifty_concurrent_jobs_across_four_runs_and_a_server_build_have_no_collisions_or_leftovers() {
    if !docker() {
        return;
    }
    let server = ServeChild::start("10");
    let started = std::time::Instant::now();
    let build = server.call(
        "POST",
        "/api/builds",
        Some(&serde_json::json!({"pipeline": mixed_pipeline("r4")})),
    );
    let build_id = serde_json::from_str::<serde_json::Value>(&build).unwrap()["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("submit answered {build}"));
    let tags: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let projects: Vec<Project> = tags
        .iter()
        .map(|t| Project::new(&mixed_pipeline(t)))
        .collect();
    let children: Vec<Child> = projects
        .iter()
        .map(|p| {
            p.command(&["run", "--json", "--parallel", "10"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn berth")
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| Run::new(c.wait_with_output().unwrap()))
        .collect();
    let b = wait_for(Duration::from_secs(180), || {
        let b = server.build(build_id);
        (!matches!(
            b["status"].as_str(),
            Some("queued" | "running" | "submitting")
        ))
        .then_some(b)
    })
    .expect("the server build did not finish");
    let took = started.elapsed();
    let mut jobs_checked = 0;
    for (tag, run) in tags.iter().zip(&runs) {
        run.assert_code(1);
        for i in 0..8 {
            let job = format!("p{i}");
            if i == 7 {
                assert_eq!(run.result(&job)["exit_code"], 7, "{}", run.dump());
            } else {
                assert_eq!(run.status(&job), "success", "{}", run.dump());
            }
            assert!(
                run.output(&job).contains(&format!("plain={tag}-{job}\n")),
                "{job}: {}",
                run.output(&job)
            );
            jobs_checked += 1;
        }
        {
            let job = "s0";
            assert_eq!(run.status(job), "success", "{}", run.dump());
            assert!(
                run.output(job)
                    .contains(&format!("service=svc-{tag}-{job}\n")),
                "{job} reached another job's service: {}",
                run.output(job)
            );
            jobs_checked += 1;
        }
        {
            let job = "d0";
            assert_eq!(run.status(job), "success", "{}", run.dump());
            let out = run.output(job);
            assert!(
                out.contains(&format!("db=db-{tag}-{job}\n")),
                "{job}: {out}"
            );
            assert!(out.contains("names=db\n"), "{job} saw others: {out}");
            jobs_checked += 1;
        }
    }
    // The server's build: the same ten jobs, checked through its API.
    assert_eq!(b["status"], "failure", "{b:#}");
    for job in b["jobs"].as_array().unwrap() {
        let name = job["name"].as_str().unwrap();
        let log = server.call(
            "GET",
            &format!("/api/builds/{build_id}/jobs/{name}/log"),
            None,
        );
        let expect = match name {
            "p7" => {
                assert_eq!(job["status"], "failure", "{job}");
                "plain=r4-p7\n".to_string()
            }
            "s0" => "service=svc-r4-s0\n".to_string(),
            "d0" => {
                assert!(log.contains("names=db\n"), "d0 saw others: {log}");
                "db=db-r4-d0\n".to_string()
            }
            p => format!("plain=r4-{p}\n"),
        };
        if name != "p7" {
            assert_eq!(job["status"], "success", "{job}");
        }
        assert!(log.contains(&expect), "{name}: {log}");
        jobs_checked += 1;
    }
    let server_left = server.left();
    assert!(
        server_left.is_empty(),
        "the server build left {server_left:?}"
    );
    let mut left = 0;
    for run in &runs {
        left += labelled(&format!("io.berth.owner={}", run.owner())).len();
        run.assert_nothing_left();
    }
    eprintln!(
        "LOAD: 4 concurrent runs + 1 server build x 10 jobs: {jobs_checked} results correct, {left} objects left, {:.1}s",
        took.as_secs_f64()
    );
    assert_eq!(jobs_checked, 50);
}
