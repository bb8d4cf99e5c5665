//! Helpers every Docker test suite of berth shares (dev-dependency only).
//!
//! Owns: the gate a Docker test calls first ([`docker`]: a loud SKIP without a daemon and the
//! test images, a panic instead under `BERTH_REQUIRE_DOCKER=1`), the local test image names,
//! the leftover checks on `io.berth.*` labels, and a private daemon for tests that restart one
//! ([`PrivateDaemon`]). Must not: know about any berth crate.

use std::process::{Command, Stdio};

pub const BUSYBOX: &str = "berth-test/busybox:latest";
pub const DEBIAN: &str = "berth-test/debian:bookworm";

/// Whether the Docker suite can run: a daemon with the test images is there. Without one it
/// prints a loud SKIP, or panics when `BERTH_REQUIRE_DOCKER=1` (CI sets it).
pub fn docker() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", BUSYBOX, DEBIAN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let why = "no Docker daemon with the test images (run scripts/ensure-docker and scripts/build-test-images)";
    if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("BERTH_REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
    false
}

/// Names of containers, networks and volumes carrying `label` (`key` or `key=value`), each as
/// `"<kind> <name>"`.
pub fn labelled(label: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, args, fmt) in [
        ("container", ["ps", "-a"], "{{.Names}}"),
        ("network", ["network", "ls"], "{{.Name}}"),
        ("volume", ["volume", "ls"], "{{.Name}}"),
    ] {
        let o = Command::new("docker")
            .args(args)
            .args(["--filter", &format!("label={label}"), "--format", fmt])
            .output()
            .expect("docker");
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| format!("{kind} {l}")),
        );
    }
    out
}

/// Asserts nothing labelled with `owner` remains (containers, networks, volumes).
pub fn assert_owner_clean(owner: &str) {
    let left = labelled(&format!("io.berth.owner={owner}"));
    assert!(
        left.is_empty(),
        "objects of owner {owner} left on the daemon: {left:?}"
    );
}

mod private_daemon;
pub use private_daemon::{PrivateDaemon, is_root, private_daemon_or_skip};
