//! Fault injection against a real daemon (issue 7): berth SIGKILLed at random points of a job's
//! life, the job container killed or removed from outside under a step, processes that ignore
//! SIGTERM, a service that exits mid-job, and a full output disk. Figures are printed as `FAULTS:` lines (RELIABILITY.md
//! quotes them).
//!
//! The SIGKILL loop is seeded (`BERTH_FAULT_SEED`, default below) and its iteration count is
//! `BERTH_FAULT_ITERATIONS` (default 20), so a failing sequence can be replayed exactly.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Seeded xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A running `berth run --json`, its events arriving on a channel.
struct Live {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Live {
    fn spawn(p: &Project, args: &[&str]) -> Live {
        let mut full = vec!["run", "--json"];
        full.extend_from_slice(args);
        let mut child = p
            .command(&full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Live {
            child,
            events: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for an event matching `pred`; false when berth ended or time ran out.
    fn wait_event(&mut self, limit: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
        if self.seen.iter().any(&pred) {
            return true;
        }
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    let hit = pred(&v);
                    self.seen.push(v);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// The owner id: from `build_started`, else from the owner lock file berth holds open
    /// (so a kill before the first event still knows whose objects to look for).
    fn owner(&mut self) -> Option<String> {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
        if let Some(o) = self
            .seen
            .iter()
            .find(|e| e["event"] == "build_started")
            .and_then(|e| e["owner"].as_str())
        {
            return Some(o.to_string());
        }
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).ok()?;
        fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .find_map(|t| {
                let name = t.file_name()?.to_str()?.to_string();
                (t.parent()?.ends_with("berth-owners") && name.ends_with(".lock"))
                    .then(|| name.trim_end_matches(".lock").to_string())
            })
    }

    /// Waits (bounded) for berth to exit; the run's outcome with every event seen.
    fn finish(mut self, limit: Duration) -> Run {
        let status = wait_for(limit, || self.child.try_wait().unwrap());
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("berth did not exit within {limit:?}");
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        // The reader thread ends at EOF; collect what it still has.
        while let Ok(v) = self.events.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(v);
        }
        let stdout = self
            .seen
            .iter()
            .map(|v| format!("{v}\n"))
            .collect::<String>();
        Run {
            code: status.unwrap().code().unwrap_or(-1),
            events: self.seen,
            stdout,
            stderr,
        }
    }
}

fn is_type(e: &serde_json::Value, ty: &str) -> bool {
    e["event"] == "job" && e["type"] == ty
}

fn is_step(e: &serde_json::Value, ty: &str, step: &str) -> bool {
    is_type(e, ty) && e["step"] == step
}

fn output_contains(e: &serde_json::Value, text: &str) -> bool {
    is_type(e, "output") && e["data"].as_str().is_some_and(|d| d.contains(text))
}

/// The job's life, with a service (so a network and a second container exist), a workspace
/// volume, a regular step, a teardown step and an 8 MB artifact to copy out.
fn kill_pipeline() -> String {
    format!(
        r#"jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    services:
      - image: {BUSYBOX}
        alias: side
        command: ["sleep", "300"]
    steps:
      - prep: echo prep; head -c 8000000 /dev/urandom > $SD_ARTIFACTS_DIR/blob
      - work: echo working; sleep 0.4
      - teardown-bye: echo bye
"#
    )
}

/// A pipeline whose image must be pulled from a registry on a closed loopback port: the job
/// spends its first moments in the pull (which then fails).
fn pull_pipeline() -> String {
    "jobs:\n  main:\n    image: 127.0.0.1:9/berth-fault/none:latest\n    requires: [~commit]\n    steps:\n      - a: echo never\n".to_string()
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Startup,
    Pulling,
    Creating,
    Step,
    Artifacts,
    Teardown,
}

const PHASES: [Phase; 6] = [
    Phase::Startup,
    Phase::Pulling,
    Phase::Creating,
    Phase::Step,
    Phase::Artifacts,
    Phase::Teardown,
];

#[test]
fn sigkill_at_random_points_then_gc_leaves_nothing() {
    if !docker() {
        return;
    }
    let seed: u64 = std::env::var("BERTH_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b347);
    let iterations: usize = std::env::var("BERTH_FAULT_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("FAULTS: sigkill loop seed={seed} iterations={iterations}");
    let mut rng = Rng::new(seed);
    let job = Project::new(&kill_pipeline());
    let pull = Project::new(&pull_pipeline());
    let started = Instant::now();
    let mut owners = Vec::new();
    let (mut killed, mut left_total, mut finished_first) = (0, 0, 0);
    for i in 0..iterations {
        // Cycle through the phases so each is hit, with a random delay inside each.
        let phase = PHASES[i % PHASES.len()];
        let p = if matches!(phase, Phase::Pulling) {
            &pull
        } else {
            &job
        };
        let mut live = Live::spawn(p, &[]);
        let limit = Duration::from_secs(20);
        let (reached, delay_ms) = match phase {
            Phase::Startup => (true, rng.below(300)),
            Phase::Pulling => (
                live.wait_event(limit, |e| is_type(e, "pulling")),
                rng.below(40),
            ),
            Phase::Creating => (
                live.wait_event(limit, |e| e["event"] == "build_started"),
                rng.below(400),
            ),
            Phase::Step => (
                live.wait_event(limit, |e| is_step(e, "step_started", "work")),
                rng.below(350),
            ),
            Phase::Artifacts => (
                live.wait_event(limit, |e| is_step(e, "step_finished", "teardown-bye")),
                rng.below(60),
            ),
            Phase::Teardown => (
                live.wait_event(limit, |e| is_step(e, "step_finished", "teardown-bye")),
                60 + rng.below(400),
            ),
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        let owner = live.owner();
        let already = live.child.try_wait().unwrap().is_some();
        let _ = live.child.kill(); // SIGKILL
        let _ = live.child.wait();
        if already {
            finished_first += 1;
        } else {
            killed += 1;
        }
        let left = owner
            .as_deref()
            .map(|o| labelled(&format!("io.berth.owner={o}")).len())
            .unwrap_or(0);
        left_total += left;
        eprintln!(
            "FAULTS: iteration {i}: phase {phase:?} (+{delay_ms} ms, trigger seen: {reached}) owner {} {} leftovers {left}",
            owner.as_deref().unwrap_or("-"),
            if already {
                "exited before the kill"
            } else {
                "killed"
            },
        );
        owners.extend(owner);
    }
    let gc = job.command(&["gc"]).output().expect("berth gc");
    assert_eq!(
        gc.status.code(),
        Some(0),
        "berth gc failed:\n{}{}",
        String::from_utf8_lossy(&gc.stdout),
        String::from_utf8_lossy(&gc.stderr)
    );
    let mut remaining = Vec::new();
    for o in &owners {
        remaining.extend(labelled(&format!("io.berth.owner={o}")));
    }
    eprintln!(
        "FAULTS: sigkill loop: {iterations} iterations in {:.1}s, {killed} killed, {finished_first} ended before the kill, {left_total} objects left by kills, {} after gc",
        started.elapsed().as_secs_f64(),
        remaining.len()
    );
    assert!(
        remaining.is_empty(),
        "berth gc left objects of killed runs: {remaining:?}"
    );
    assert!(
        killed >= iterations / 2,
        "too few runs were actually killed"
    );
    assert!(
        left_total > 0,
        "no kill left anything behind: the loop is not hitting the job's life"
    );
}

/// The role=job container of a run.
fn job_container(owner: &str) -> String {
    let o = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=io.berth.owner={owner}"),
            "--filter",
            "label=io.berth.role=job",
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!id.is_empty(), "no job container for owner {owner}");
    id
}

/// Runs a job whose step waits, does `docker ARGS <job container>` from outside while it runs,
/// and checks the run is an infrastructure error (exit 3) naming what happened, ended promptly,
/// ran nothing after the step, and left nothing behind.
fn job_container_removed_from_outside(args: &[&str], expect: &str) {
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - wait: echo step-is-running; sleep 120\n      - after: echo must-not-run\n      - teardown-t: echo teardown-ran\n"
    ));
    let mut live = Live::spawn(&p, &[]);
    assert!(
        live.wait_event(Duration::from_secs(30), |e| output_contains(
            e,
            "step-is-running"
        ))
    );
    let owner = live.owner().unwrap();
    let t0 = Instant::now();
    let done = Command::new("docker")
        .args(args)
        .arg(job_container(&owner))
        .output()
        .unwrap();
    assert!(done.status.success());
    let run = live.finish(Duration::from_secs(60));
    let took = t0.elapsed();
    let result = run.result("main");
    eprintln!(
        "FAULTS: job container `docker {}`: berth ended {:.1}s later, exit {}, result {result}",
        args.join(" "),
        took.as_secs_f64(),
        run.code,
    );
    assert_eq!(run.code, 3, "{}", run.dump());
    assert_eq!(run.status("main"), "error", "{}", run.dump());
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(expect) && message.contains("outside berth") && message.contains("wait"),
        "unclear message: {message}"
    );
    assert!(!run.output("main").contains("must-not-run"));
    assert!(took < Duration::from_secs(30), "took {took:?}");
    run.assert_nothing_left();
}

#[test]
fn job_container_killed_mid_step_is_an_infrastructure_error() {
    if !docker() {
        return;
    }
    job_container_removed_from_outside(&["kill"], "was stopped");
}

#[test]
fn job_container_removed_mid_step_is_an_infrastructure_error() {
    if !docker() {
        return;
    }
    job_container_removed_from_outside(&["rm", "-f"], "was removed");
}

#[test]
fn a_background_child_ignoring_sigterm_does_not_hang_the_job() {
    if !docker() {
        return;
    }
    // `bg` leaves a SIGTERM-ignoring process behind that still holds the step's stdout; `held`
    // does the same with stdout closed; the job then times out in `stuck`, a foreground process
    // ignoring SIGTERM, and must be SIGKILLed after the grace period; teardown still runs.
    let p = Project::new(&format!(
        r#"jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    annotations:
      screwdriver.cd/timeout: 5
    steps:
      - bg: (trap '' TERM; while true; do sleep 1; done) & echo bg-started
      - held: (trap '' TERM; while true; do sleep 1; done) >/dev/null 2>&1 & echo held-started
      - ok: echo still-fine
  stuck:
    image: {BUSYBOX}
    requires: [~commit]
    steps:
      - spin: trap '' TERM; echo spinning; while true; do sleep 1; done
      - teardown-t: echo teardown-ran
"#
    ));
    let t0 = Instant::now();
    let run = p.run_json(&["--stop-grace", "2", "--timeout", "5s"]);
    let took = t0.elapsed();
    eprintln!(
        "FAULTS: SIGTERM-ignoring children: run took {:.1}s, main {}, stuck {}",
        took.as_secs_f64(),
        run.result("main"),
        run.result("stuck")
    );
    assert_eq!(run.status("main"), "success", "{}", run.dump());
    assert!(run.output("main").contains("still-fine"));
    assert_eq!(run.status("stuck"), "timed_out", "{}", run.dump());
    assert!(
        run.output("stuck").contains("teardown-ran"),
        "{}",
        run.dump()
    );
    assert_eq!(run.code, 1);
    assert!(took < Duration::from_secs(40), "took {took:?}");
    run.assert_nothing_left();
}

#[test]
fn a_service_exiting_mid_job_is_reported_not_hung() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    services:
      - image: {BUSYBOX}
        alias: flaky
        command: ["sh", "-c", "echo flaky-up; sleep 1; echo flaky-going-away; exit 3"]
    steps:
      - work: sleep 3; echo work-done
"#
    ));
    let t0 = Instant::now();
    let run = p.run_json(&[]);
    let took = t0.elapsed();
    let warnings: Vec<String> = run
        .events
        .iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "FAULTS: service exited mid-job: run took {:.1}s, exit {}, result {}, warnings {warnings:?}",
        took.as_secs_f64(),
        run.code,
        run.result("main")
    );
    assert!(took < Duration::from_secs(30));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("flaky") && w.contains("exited") && w.contains('3')),
        "the service's exit is not reported:\n{}",
        run.dump()
    );
    let log_path = p.output_dir().join(run.build_id()).join("main.flaky.log");
    let log = String::from_utf8_lossy(&std::fs::read(&log_path).expect("service log")).into_owned();
    assert!(log.contains("flaky-going-away"), "service log: {log}");
    run.assert_nothing_left();
}

/// A 2 MiB tmpfs mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::Builder::new()
            .prefix("berth-fulldisk-")
            .tempdir()
            .unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_output_disk_is_reported_and_the_result_and_log_prefix_survive() {
    if !docker() {
        return;
    }
    let Some(disk) = SmallDisk::mount() else {
        let why = "cannot mount a tmpfs (not root?)";
        if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") && berth_testkit::is_root()
        {
            panic!("{why}");
        }
        eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
        return;
    };
    // ~4 MB of numbered lines (more than the disk), then an artifact that cannot fit either.
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - fill: seq -w 1 500000 | sed 's/$/ some padding text/'\n      - art: head -c 3000000 /dev/zero > $SD_ARTIFACTS_DIR/big; echo art-done\n"
    ));
    let out = disk.path().join("out");
    let out_s = out.to_str().unwrap();
    let mut live = Live::spawn(&p, &["--output", out_s]);
    let _ = live.wait_event(Duration::from_secs(5), |_| false);
    let run = live.finish(Duration::from_secs(120));
    let warnings: Vec<String> = run
        .events
        .iter()
        .filter(|e| e["event"] == "warning")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "FAULTS: full disk: exit {}, result {}, warnings {warnings:?}, stderr {}",
        run.code,
        run.result("main"),
        run.stderr.trim()
    );
    assert_eq!(run.status("main"), "success", "{}", run.dump());
    assert!(
        warnings
            .iter()
            .chain(std::iter::once(&run.stderr))
            .any(|w| w.contains("No space left") || w.contains("disk full")),
        "berth did not say the disk is full:\n{}",
        run.dump()
    );
    // The log kept so far is an intact prefix of the output: whole numbered lines in order.
    let log = std::fs::read(out.join(run.build_id()).join("main.log")).expect("log file");
    let text = String::from_utf8_lossy(&log);
    assert!(log.len() > 1_000_000, "log too short: {}", log.len());
    let mut expect = 1u64;
    for line in text.lines() {
        if line.starts_with("$ step") || line.starts_with("berth:") {
            continue;
        }
        let Some((n, rest)) = line.split_once(' ') else {
            // The last line may be cut where the disk filled.
            break;
        };
        if rest != "some padding text" {
            break;
        }
        assert_eq!(
            n.parse::<u64>().ok(),
            Some(expect),
            "log corrupted at {line:?}"
        );
        expect += 1;
    }
    assert!(expect > 10_000, "only {expect} intact lines");
    // Nothing half-written is left taking the space (the artifact spool is removed).
    let build_dir = out.join(run.build_id());
    let stray: Vec<_> = std::fs::read_dir(&build_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert!(stray.is_empty(), "partial files left: {stray:?}");
    eprintln!(
        "FAULTS: full disk: {} log bytes kept, {} intact lines",
        log.len(),
        expect - 1
    );
    run.assert_nothing_left();
}

#[test]
fn daemon_restart_mid_job_is_an_infrastructure_error_and_its_objects_are_reaped() {
    if !docker() {
        return;
    }
    let docker0 = Path::new("/sys/class/net/docker0").exists();
    let Some(mut daemon) = berth_testkit::private_daemon_or_skip(&[BUSYBOX]) else {
        return;
    };
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - wait: echo step-is-running; sleep 60\n      - teardown-t: echo teardown\n"
    ));
    let mut live = Live::spawn(&p, &["--docker-host", &daemon.url()]);
    assert!(
        live.wait_event(Duration::from_secs(30), |e| output_contains(
            e,
            "step-is-running"
        ))
    );
    let owner = live.owner().unwrap();
    assert!(!daemon.labelled(&owner).is_empty());
    let t0 = Instant::now();
    daemon.stop();
    let down = t0.elapsed();
    assert!(daemon.spawn(), "the private dockerd did not come back");
    let back = t0.elapsed();
    let run = live.finish(Duration::from_secs(120));
    let took = t0.elapsed();
    let result = run.result("main");
    let left = daemon.labelled(&owner);
    eprintln!(
        "FAULTS: daemon restart: down after {:.1}s, back after {:.1}s, berth ended after {:.1}s, exit {}, result {result}, left {left:?}, stderr {}",
        down.as_secs_f64(),
        back.as_secs_f64(),
        took.as_secs_f64(),
        run.code,
        run.stderr.trim()
    );
    assert_eq!(run.code, 3, "{}", run.dump());
    assert_eq!(run.status("main"), "error", "{}", run.dump());
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("Docker daemon")),
        "unclear message: {result}"
    );
    assert!(left.is_empty(), "left on the restarted daemon: {left:?}");
    drop(daemon);
    assert_eq!(
        Path::new("/sys/class/net/docker0").exists(),
        docker0,
        "the private daemon changed the host's docker0"
    );
}

/// The role=dind container of a run (its nested daemon).
fn dind_container(owner: &str) -> Option<String> {
    let o = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=io.berth.owner={owner}"),
            "--filter",
            "label=io.berth.role=dind",
        ])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// The nested daemon of a `docker: dind` job killed (SIGKILL to its `dockerd`, from the host)
/// while a step uses it: an infrastructure error naming the daemon and the step, even though
/// the step itself carries on, with the daemon's log kept and nothing left behind.
#[test]
fn the_nested_daemon_of_a_dind_job_dying_mid_step_is_an_infrastructure_error() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"jobs:
  main:
    image: {DEBIAN}
    requires: [~commit]
    docker: dind
    steps:
      - load: docker load -q -i busybox.tar
      - use: echo using-docker; docker run --rm {BUSYBOX} sleep 300; echo docker-run-ended; sleep 300
      - after: echo must-not-run
"#
    ));
    add_busybox_tar(&p);
    let mut live = Live::spawn(&p, &["--dind-image", DEBIAN]);
    assert!(
        live.wait_event(Duration::from_secs(120), |e| output_contains(
            e,
            "using-docker"
        )),
        "the step never ran"
    );
    let owner = live.owner().unwrap();
    let dind = dind_container(&owner).expect("no dind container");
    // Wait (bounded) until the step's container runs on the nested daemon, then kill that
    // daemon (PID 1 of its container) from the host, as a crash would.
    let nested_running = wait_for(Duration::from_secs(60), || {
        let ps = Command::new("docker")
            .args(["exec", &dind, "docker", "ps", "-q"])
            .output()
            .ok()?;
        (!String::from_utf8_lossy(&ps.stdout).trim().is_empty()).then_some(())
    });
    assert!(nested_running.is_some(), "the nested container never ran");
    let pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &dind])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let t0 = Instant::now();
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .is_ok_and(|s| s.success())
        // Not root: the daemon delivers the same SIGKILL to the container's PID 1 (dockerd).
        || Command::new("docker")
            .args(["kill", "--signal", "KILL", &dind])
            .status()
            .is_ok_and(|s| s.success());
    assert!(killed, "could not kill the nested dockerd");
    let run = live.finish(Duration::from_secs(120));
    let took = t0.elapsed();
    let result = run.result("main");
    eprintln!(
        "FAULTS: nested dind daemon killed: berth ended {:.1}s later, exit {}, result {result}",
        took.as_secs_f64(),
        run.code
    );
    assert_eq!(run.code, 3, "{}", run.dump());
    assert_eq!(run.status("main"), "error", "{}", run.dump());
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("dind daemon") && message.contains("`use`"),
        "unclear message: {message}"
    );
    assert!(!run.output("main").contains("must-not-run"));
    // The step shrugs off the lost daemon and sleeps on: only berth's watch ends it.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let log = p.output_dir().join(run.build_id()).join("main.docker.log");
    assert!(log.exists(), "the daemon's log is kept");
    run.assert_nothing_left();
}
