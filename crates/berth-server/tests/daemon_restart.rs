//! The Docker daemon restarted under a running server build: the build ends in state `error`
//! with a message that names the daemon, what the job left is reaped once the daemon is back,
//! and the server keeps serving builds without a restart of its own.
//!
//! The daemon here is a private dockerd (`berth_testkit::PrivateDaemon`: own network
//! namespace, data-root, socket), never the host's daemon the other suites use; the server child
//! finds it through `DOCKER_HOST`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn server_child() {
    common::child_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_restart_mid_build_is_an_error_the_build_is_reaped_and_the_server_goes_on() {
    if !docker() {
        return;
    }
    let Some(mut daemon) = berth_testkit::private_daemon_or_skip(&[BUSYBOX]) else {
        return;
    };
    let dir = tempdir();
    let url = daemon.url();
    let server = Server::start_with(
        &dir.path().join("data"),
        2,
        None,
        &[("DOCKER_HOST", url.as_str())],
    );
    let id = server
        .submit(json!({"pipeline": pipeline(
            "      - wait: echo step-is-running; sleep 60\n      - teardown-t: echo teardown\n"
        )}))
        .await;
    let owner = owner_of(&server, id).await;
    server
        .events(
            &format!("/api/builds/{id}/events"),
            None,
            Duration::from_secs(60),
            |e| {
                e.iter().any(|(_, v)| {
                    v["type"] == "output"
                        && v["data"]
                            .as_str()
                            .is_some_and(|d| d.contains("step-is-running"))
                })
            },
        )
        .await;
    assert!(!daemon.labelled(&owner).is_empty());

    let t0 = Instant::now();
    daemon.stop();
    let down = t0.elapsed();
    assert!(daemon.spawn(), "the private dockerd did not come back");
    let b = server.wait_final(id).await;
    let took = t0.elapsed();
    // Reaping runs after the daemon is back; give it a bounded moment.
    let mut left = daemon.labelled(&owner);
    let reap_deadline = Instant::now() + Duration::from_secs(60);
    while !left.is_empty() && Instant::now() < reap_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = daemon.labelled(&owner);
    }
    eprintln!(
        "FAULTS: server, daemon restart: down after {:.1}s, build final after {:.1}s, status {}, job {}, left {left:?}",
        down.as_secs_f64(),
        took.as_secs_f64(),
        b["status"],
        b["jobs"][0],
    );
    assert_eq!(b["status"], "error", "{b:#}");
    assert_eq!(b["jobs"][0]["status"], "error", "{b:#}");
    assert!(
        b.to_string().contains("Docker daemon"),
        "the build says the daemon went away: {b:#}"
    );
    assert!(
        server.log(id, "main").await.contains("step-is-running"),
        "the log up to the restart is kept"
    );
    assert!(left.is_empty(), "left on the restarted daemon: {left:?}");

    // The same server process runs the next build on the restarted daemon.
    let next = server
        .submit(json!({"pipeline": pipeline("      - again: echo after-the-restart\n")}))
        .await;
    let n = server.wait_final(next).await;
    assert_eq!(n["status"], "success", "{n:#}");
    assert!(server.log(next, "main").await.contains("after-the-restart"));
    let next_owner = owner_of(&server, next).await;
    assert!(daemon.labelled(&next_owner).is_empty());
}
