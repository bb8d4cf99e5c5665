//! A private Docker daemon for fault tests that stop and restart "the" daemon: its own network
//! namespace (`unshare --net`), data-root, exec-root (and so its own containerd), pidfile and
//! socket, no bridge and no iptables. The host's daemon, which other tests use, is never stopped
//! or touched.
//!
//! Why its own network namespace: a dockerd started with `--bridge=none` deletes the `docker0`
//! interface it finds at startup, which would break the host daemon's default network for every
//! other test.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `f` until it returns Some, up to `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Whether this process runs as root (a private dockerd needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A private dockerd; stopped (and its containers removed) when dropped.
pub struct PrivateDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateDaemon {
    pub fn start() -> Option<PrivateDaemon> {
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir()
            .unwrap();
        let mut d = PrivateDaemon { dir, child: None };
        d.spawn().then_some(d)
    }

    pub fn sock(&self) -> std::path::PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    pub fn spawn(&mut self) -> bool {
        use std::os::unix::process::CommandExt;
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(self.url())
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--userland-proxy=false",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        wait_for(Duration::from_secs(30), || {
            self.docker(&["version"]).status.success().then_some(())
        })
        .is_some()
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.url()])
            .args(args)
            .output()
            .unwrap()
    }

    /// Copies an image from the host's daemon.
    pub fn load(&self, image: &str) {
        let save = Command::new("docker")
            .args(["save", image])
            .output()
            .unwrap();
        assert!(save.status.success());
        let mut load = Command::new("docker")
            .args(["-H", &self.url(), "load"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        load.stdin.take().unwrap().write_all(&save.stdout).unwrap();
        assert!(load.wait().unwrap().success());
    }

    /// SIGTERM, as a restart or an orderly shutdown does; SIGKILL if it hangs.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if wait_for(Duration::from_secs(30), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn labelled(&self, owner: &str) -> Vec<String> {
        let filter = format!("label=io.berth.owner={owner}");
        let mut out = Vec::new();
        for args in [
            vec!["ps", "-aq", "--filter", &filter],
            vec!["network", "ls", "-q", "--filter", &filter],
            vec!["volume", "ls", "-q", "--filter", &filter],
        ] {
            let o = self.docker(&args);
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string),
            );
        }
        out
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
    }
}

/// Starts a private daemon with `images` copied in from the host's, or says why not: `None`
/// after a loud SKIP, a panic under `BERTH_REQUIRE_DOCKER=1` when running as root.
pub fn private_daemon_or_skip(images: &[&str]) -> Option<PrivateDaemon> {
    let Some(daemon) = PrivateDaemon::start() else {
        let why = "cannot start a private dockerd (not root, or no dockerd)";
        if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") && is_root() {
            panic!("{why}");
        }
        eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
        return None;
    };
    for image in images {
        daemon.load(image);
    }
    Some(daemon)
}
