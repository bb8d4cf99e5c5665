//! The build service against a real daemon: submit (tar, git), follow logs, SSE with
//! Last-Event-ID, cancel, artifacts, 422, auth, queueing and restart durability.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Not a test: the server child process (see `common`).
#[test]
fn server_child() {
    common::child_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_source_log_follow_artifacts_and_masked_secrets() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 2, None);
    let tar = tar_of(&[
        ("hello.txt", "hello from the tarball\n"),
        ("sub/b.txt", "b\n"),
    ]);
    let yaml = format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    secrets: [TOKEN]\n    steps:\n\
         \x20     - show: cat hello.txt sub/b.txt\n\
         \x20     - tick: for i in 1 2 3; do echo tick $i; sleep 0.3; done\n\
         \x20     - secret: echo the secret is $TOKEN\n\
         \x20     - art: mkdir -p $SD_ARTIFACTS_DIR/r && echo report > $SD_ARTIFACTS_DIR/r/report.txt\n"
    );
    let id = server
        .submit(json!({"pipeline": yaml, "source_tar": b64(&tar), "secrets": {"TOKEN": "s3cr3t-value"}}))
        .await;
    // Follow the log while the job runs: the stream ends when the job ends.
    let resp = server
        .get(&format!("/api/builds/{id}/jobs/main/log?follow=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let followed = tokio::time::timeout(Duration::from_secs(120), resp.text())
        .await
        .expect("follow ends when the job ends")
        .unwrap();
    assert!(followed.contains("hello from the tarball"), "{followed}");
    assert!(followed.contains("tick 3"), "{followed}");
    assert!(followed.contains("the secret is ***"), "{followed}");
    assert!(!followed.contains("s3cr3t-value"));

    let build = server.wait_final(id).await;
    assert_eq!(build["status"], "success", "{build:#}");
    let job = &build["jobs"][0];
    assert_eq!(job["status"], "success");
    let steps: Vec<_> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [("show", 0), ("tick", 0), ("secret", 0), ("art", 0)]);
    assert!(job["steps"][1]["duration_ms"].as_i64().unwrap() >= 600);
    assert!(!build.to_string().contains("s3cr3t-value"));
    assert_eq!(build["request"]["secret_names"], json!(["TOKEN"]));
    assert_eq!(server.log(id, "main").await, followed);

    // Artifacts as a tar stream.
    let bytes = server
        .get(&format!("/api/builds/{id}/artifacts/main"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        found.push((path, text));
    }
    assert!(
        found
            .iter()
            .any(|(p, t)| p.ends_with("r/report.txt") && t == "report\n"),
        "{found:?}"
    );

    // The secret value is nowhere on disk.
    for entry in walk(&server.data) {
        let content = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !content.windows(12).any(|w| w == b"s3cr3t-value"),
            "secret stored in {}",
            entry.display()
        );
    }
    assert_owner_clean(&owner_of(&server, id).await);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn docker_gateway() -> String {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or("172.17.0.1")
        .to_string()
}

/// A local repository served by `git daemon` on the Docker bridge's gateway address (no
/// internet), stopped on drop. `git daemon` runs as a child of the `git` wrapper, so it gets a
/// process group of its own and the whole group is signalled.
struct GitDaemon(std::process::Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_is_cloned_in_a_container() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let git = |args: &[&str], cwd: &std::path::Path| {
        let s = Command::new("git")
            .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(s.status.success(), "git {args:?}: {s:?}");
    };
    git(&["init", "-q", "-b", "feature"], &work);
    std::fs::write(work.join("from-git.txt"), "cloned content\n").unwrap();
    git(&["add", "."], &work);
    git(&["commit", "-q", "-m", "first"], &work);
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    git(
        &["clone", "-q", "--bare", work.to_str().unwrap(), "repo.git"],
        &served,
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gateway = docker_gateway();
    let _daemon = GitDaemon(
        Command::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                &format!("--base-path={}", served.display()),
                &format!("--listen={gateway}"),
                &format!("--port={port}"),
            ])
            .arg(&served)
            .process_group(0)
            .spawn()
            .expect("git daemon"),
    );
    std::thread::sleep(Duration::from_millis(500));

    let server = Server::start(&dir.path().join("data"), 2, None);
    let id = server
        .submit(json!({
            "pipeline": pipeline("      - show: cat from-git.txt\n"),
            "git": {"url": format!("git://{gateway}:{port}/repo.git"), "ref": "feature"},
        }))
        .await;
    let build = server.wait_final(id).await;
    assert_eq!(build["status"], "success", "{build:#}");
    assert!(server.log(id, "main").await.contains("cloned content"));
    assert_eq!(build["request"]["source"]["kind"], "git");

    // A ref that does not exist fails the build with git's message.
    let bad = server
        .submit(json!({
            "pipeline": pipeline("      - show: cat from-git.txt\n"),
            "git": {"url": format!("git://{gateway}:{port}/repo.git"), "ref": "no-such-branch"},
        }))
        .await;
    let build = server.wait_final(bad).await;
    assert_eq!(build["status"], "error", "{build:#}");
    assert!(
        build["message"]
            .as_str()
            .unwrap()
            .contains("no-such-branch"),
        "{build:#}"
    );
    assert_owner_clean(&owner_of(&server, id).await);
    assert!(
        labelled("io.berth.role=clone").is_empty(),
        "a clone container was left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_reconnect_with_last_event_id_misses_nothing() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 2, None);
    let id = server
        .submit(json!({"pipeline": pipeline(
            "      - count: for i in $(seq 1 20); do echo line $i; sleep 0.05; done\n"
        )}))
        .await;
    let path = format!("/api/builds/{id}/events");
    // Read a few events, drop the connection, resume from the last id seen.
    let first = server
        .events(&path, None, Duration::from_secs(60), |e| e.len() >= 4)
        .await;
    let last = first.last().unwrap().0;
    let rest = server
        .events(&path, Some(last), Duration::from_secs(120), |e| {
            e.iter().any(|(_, v)| is_final_event(v))
        })
        .await;
    let mut seen: Vec<i64> = first.iter().chain(&rest).map(|(i, _)| *i).collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {seen:?}"
    );
    // The full replay after the end has exactly the same events.
    let all = server
        .events(&path, None, Duration::from_secs(30), |e| {
            e.iter().any(|(_, v)| is_final_event(v))
        })
        .await;
    let all_ids: Vec<i64> = all.iter().map(|(i, _)| *i).collect();
    assert_eq!(seen, all_ids);
    seen.dedup();
    let output: String = all
        .iter()
        .filter(|(_, v)| v["type"] == "output")
        .map(|(_, v)| v["data"].as_str().unwrap())
        .collect();
    assert!(
        output.contains("line 1\n") && output.contains("line 20\n"),
        "{output}"
    );
    // The daemon's events of the build's own containers are in the stream too.
    let docker: Vec<_> = all
        .iter()
        .filter(|(_, v)| v["event"] == "docker" && v["kind"] == "container")
        .map(|(_, v)| v["action"].as_str().unwrap().to_string())
        .collect();
    for action in ["create", "start", "die"] {
        assert!(
            docker.iter().any(|a| a == action),
            "no container {action} event: {docker:?}"
        );
    }
    for kind in ["build_started", "build_finished"] {
        assert!(all.iter().any(|(_, v)| v["event"] == kind), "no {kind}");
    }
    // The global stream carries the same build's events.
    let global = server
        .events("/api/events", None, Duration::from_secs(30), |e| {
            e.iter().any(|(_, v)| is_final_event(v))
        })
        .await;
    assert_eq!(global.len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_build_and_cleans_up() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 2, None);
    let id = server
        .submit(json!({"pipeline": pipeline("      - wait: echo started; sleep 300\n")}))
        .await;
    let owner = owner_of(&server, id).await;
    server
        .events(
            &format!("/api/builds/{id}/events"),
            None,
            Duration::from_secs(60),
            |e| e.iter().any(|(_, v)| v["type"] == "output"),
        )
        .await;
    let r = server
        .post(&format!("/api/builds/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let build = server
        .wait_build(id, Duration::from_secs(60), |s| s != "running")
        .await;
    assert_eq!(build["status"], "cancelled", "{build:#}");
    assert_eq!(build["jobs"][0]["status"], "cancelled");
    assert_owner_clean(&owner);
    // Cancelling again: already finished.
    let r = server
        .post(&format!("/api/builds/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pipelines_answer_422_with_line_and_column() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 2, None);
    let r = server
        .post("/api/builds")
        .json(&json!({"pipeline": "jobs:\n  main:\n    imag: x\n    steps: [echo]\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0],
        "screwdriver.yaml:3:5: error: unknown key `imag`, did you mean `image`?"
    );
    let r = server
        .post("/api/builds")
        .json(&json!({"pipeline": pipeline("      - a: true\n"), "jobs": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let r = server
        .post("/api/builds")
        .json(&json!({"pipeline": pipeline("      - a: true\n"), "event": "push"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let r = server.get("/api/builds/999").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_refused_without_a_token_or_with_a_revoked_one() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("data");
    let server = Server::start(&data, 2, None);
    let anon = reqwest::Client::new();
    let r = anon
        .get(format!("{}/api/builds", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = anon
        .get(format!("{}/api/builds", server.url))
        .bearer_auth("berth_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Open routes need no token.
    for open in ["/healthz", "/metrics", "/api/openapi.json", "/"] {
        let r = anon
            .get(format!("{}{open}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{open}");
    }

    // `berth token` works on the same database while the server runs.
    let pool = berth_server::open_db(&data).await.unwrap();
    let (_, ci) = berth_server::auth::create(&pool, "ci").await.unwrap();
    let r = anon
        .get(format!("{}/api/builds", server.url))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    berth_server::auth::revoke(&pool, "ci").await.unwrap();
    let r = anon
        .get(format!("{}/api/builds", server.url))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let tokens = berth_server::auth::list(&pool).await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens[1].revoked_at.is_some());
    // Only hashes are stored.
    let db = std::fs::read(data.join("berth.db")).unwrap();
    assert!(!db.windows(ci.len()).any(|w| w == ci.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_beyond_max_builds_queue_in_order() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 1, None);
    let yaml = pipeline("      - wait: sleep 1\n");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(server.submit(json!({"pipeline": yaml})).await);
    }
    let b3 = server.build(ids[2]).await;
    assert_eq!(b3["status"], "queued", "{b3:#}");
    assert!(b3["position"].as_i64().unwrap() >= 1);
    let queued: Value = server.get_json("/api/builds?status=queued").await;
    assert!(queued["total"].as_i64().unwrap() >= 1);
    let mut windows = Vec::new();
    for id in &ids {
        let b = server.wait_final(*id).await;
        assert_eq!(b["status"], "success", "{b:#}");
        windows.push((
            b["started_at"].as_i64().unwrap(),
            b["finished_at"].as_i64().unwrap(),
        ));
    }
    // One at a time, in submission order.
    for w in windows.windows(2) {
        assert!(w[1].0 >= w[0].1, "builds overlapped: {windows:?}");
    }
    let page: Value = server.get_json("/api/builds?limit=2&offset=0").await;
    assert_eq!(page["builds"].as_array().unwrap().len(), 2);
    assert_eq!(page["total"], 3);
    assert_eq!(page["builds"][0]["id"], ids[2]);
    let metrics = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("berth_builds{status=\"success\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("berth_job_duration_seconds_count 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_marks_builds_interrupted_reaps_and_runs_the_queue() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, 1, None);
    let running = server
        .submit(json!({"pipeline": pipeline("      - long: echo before-crash; sleep 300\n")}))
        .await;
    let queued = server
        .submit(json!({"pipeline": pipeline("      - quick: echo after-restart\n")}))
        .await;
    let owner = owner_of(&server, running).await;
    server
        .events(
            &format!("/api/builds/{running}/events"),
            None,
            Duration::from_secs(60),
            |e| e.iter().any(|(_, v)| v["type"] == "output"),
        )
        .await;
    assert!(!labelled(&format!("io.berth.owner={owner}")).is_empty());
    server.kill9();
    let token = server.token.clone();
    drop(server);

    let server = Server::start(&data, 1, Some(&token));
    let b = server.build(running).await;
    assert_eq!(b["status"], "interrupted", "{b:#}");
    assert_eq!(b["jobs"][0]["status"], "interrupted", "{b:#}");
    assert!(server.log(running, "main").await.contains("before-crash"));
    assert_owner_clean(&owner);
    let q = server.wait_final(queued).await;
    assert_eq!(q["status"], "success", "{q:#}");
    assert!(server.log(queued, "main").await.contains("after-restart"));
    // The event log goes on with larger ids across the restart.
    let events = server
        .events(
            &format!("/api/builds/{running}/events"),
            None,
            Duration::from_secs(10),
            |e| e.iter().any(|(_, v)| is_final_event(v)),
        )
        .await;
    assert_eq!(events.last().unwrap().1["status"], "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_runs_the_same_source_again() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 2, None);
    let tar = tar_of(&[("f.txt", "same source\n")]);
    let id = server
        .submit(json!({"pipeline": pipeline("      - show: cat f.txt\n"), "source_tar": b64(&tar)}))
        .await;
    server.wait_final(id).await;
    let r = server
        .post(&format!("/api/builds/{id}/rerun"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let again: Value = r.json().await.unwrap();
    let again = again["id"].as_i64().unwrap();
    let b = server.wait_final(again).await;
    assert_eq!(b["status"], "success");
    assert_eq!(b["rerun_of"], id);
    assert!(server.log(again, "main").await.contains("same source"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_submissions_and_watchers() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let server = std::sync::Arc::new(Server::start(&dir.path().join("data"), 4, None));
    let yaml = pipeline("      - hi: echo hi $SD_BUILD_ID\n");
    // A global watcher that never reads: it must not hold the server back.
    let stalled = server.get("/api/events").send().await.unwrap();
    let submissions = (0..24).map(|_| {
        let server = server.clone();
        let yaml = yaml.clone();
        tokio::spawn(async move { server.submit(json!({"pipeline": yaml})).await })
    });
    let mut ids = Vec::new();
    for s in submissions {
        ids.push(s.await.unwrap());
    }
    let watchers: Vec<_> = ids
        .iter()
        .map(|id| {
            let server = server.clone();
            let id = *id;
            tokio::spawn(async move {
                server
                    .events(
                        &format!("/api/builds/{id}/events"),
                        None,
                        Duration::from_secs(180),
                        |e| e.iter().any(|(_, v)| is_final_event(v)),
                    )
                    .await
            })
        })
        .collect();
    for (id, w) in ids.iter().zip(watchers) {
        let events = w.await.unwrap();
        assert_eq!(events.last().unwrap().1["status"], "success", "build {id}");
    }
    drop(stalled);
    let all: Value = server
        .get_json("/api/builds?status=success&limit=100")
        .await;
    assert_eq!(all["total"], 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_interrupts_running_builds_cleanly_and_keeps_the_queue() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, 1, None);
    let running = server
        .submit(json!({"pipeline": pipeline("      - long: echo working; sleep 300\n")}))
        .await;
    let queued = server
        .submit(json!({"pipeline": pipeline("      - quick: echo later\n")}))
        .await;
    let owner = owner_of(&server, running).await;
    server
        .events(
            &format!("/api/builds/{running}/events"),
            None,
            Duration::from_secs(60),
            |e| e.iter().any(|(_, v)| v["type"] == "output"),
        )
        .await;
    let start = std::time::Instant::now();
    server.stop();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "stop took too long"
    );
    // Cleaned up by the server itself, before it exited.
    assert_owner_clean(&owner);
    let token = server.token.clone();
    drop(server);
    let server = Server::start(&data, 1, Some(&token));
    let b = server.build(running).await;
    assert_eq!(b["status"], "interrupted", "{b:#}");
    assert!(b["message"].as_str().unwrap().contains("stopped"), "{b:#}");
    let q = server.wait_final(queued).await;
    assert_eq!(q["status"], "success", "{q:#}");
}
