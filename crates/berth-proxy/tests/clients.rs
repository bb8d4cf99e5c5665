//! Compatibility with real clients through a scoped endpoint: the Debian 20.10 `docker` CLI and
//! docker-compose 1.29, against the real daemon, two scopes side by side.

mod common;

use common::*;

fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn ok(s: &Scoped, args: &[&str]) -> String {
    let o = s.docker(args).await;
    assert!(o.status.success(), "docker {args:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_works_and_two_scopes_do_not_collide() {
    if !docker_or_skip("docker_cli").await {
        return;
    }
    let a = start("cli-a").await;
    let b = start("cli-b").await;
    // Same names in both scopes.
    for s in [&a, &b] {
        ok(s, &["run", "-d", "--name", "db", BUSYBOX, "sleep", "300"]).await;
        ok(s, &["network", "create", "net"]).await;
        ok(s, &["volume", "create", "data"]).await;
    }
    // Each sees exactly its own, under plain names.
    for (s, other) in [(&a, &b), (&b, &a)] {
        assert_eq!(
            ok(s, &["ps", "-a", "--format", "{{.Names}}"]).await.trim(),
            "db"
        );
        let nets = ok(s, &["network", "ls", "--format", "{{.Name}}"]).await;
        // Its `net`, and the scope's own default network (named after the scope).
        let mut names: Vec<&str> = nets.lines().collect();
        names.sort();
        let mut want = vec!["net", s.scope.as_str()];
        want.sort();
        assert_eq!(names, want, "{nets}");
        assert!(!nets.contains(&other.scope), "{nets}");
        assert_eq!(
            ok(s, &["volume", "ls", "--format", "{{.Name}}"])
                .await
                .trim(),
            "data"
        );
        assert_eq!(
            ok(s, &["inspect", "-f", "{{.Name}}", "db"]).await.trim(),
            "/db"
        );
    }
    // exec, logs, run with a named volume and stdin, attach-style run, cp both ways.
    assert_eq!(
        ok(&a, &["exec", "db", "echo", "exec-ok"]).await.trim(),
        "exec-ok"
    );
    ok(
        &a,
        &[
            "run",
            "--name",
            "writer",
            "-v",
            "data:/d",
            BUSYBOX,
            "sh",
            "-c",
            "echo in-volume > /d/f; echo logged",
        ],
    )
    .await;
    assert_eq!(ok(&a, &["logs", "writer"]).await.trim(), "logged");
    let o = a
        .docker(&["run", "--rm", "-v", "data:/d", BUSYBOX, "cat", "/d/f"])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "in-volume",
        "{}",
        text(&o)
    );
    let o = b
        .docker(&[
            "run",
            "--rm",
            "-v",
            "data:/d",
            BUSYBOX,
            "sh",
            "-c",
            "cat /d/f || echo empty",
        ])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "empty",
        "b's data is its own: {}",
        text(&o)
    );
    let mut child = tokio::process::Command::new("/usr/bin/docker")
        .args(["run", "-i", "--rm", BUSYBOX, "cat"])
        .env("DOCKER_HOST", format!("unix://{}", a.sock.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").await.unwrap();
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "through stdin");
    let local = a.dir.path().join("local.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    ok(&a, &["cp", local.to_str().unwrap(), "db:/tmp/x.txt"]).await;
    let back = a.dir.path().join("back.txt");
    ok(&a, &["cp", "db:/tmp/x.txt", back.to_str().unwrap()]).await;
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");
    // Siblings reach each other by job-visible name on the scope's network.
    ok(
        &a,
        &[
            "run", "-d", "--name", "web", BUSYBOX, "httpd", "-f", "-p", "80", "-h", "/etc",
        ],
    )
    .await;
    let o = a
        .docker(&[
            "run",
            "--rm",
            BUSYBOX,
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do wget -qO- http://web/hostname && exit 0; sleep 1; done; exit 1",
        ])
        .await;
    assert!(o.status.success(), "web unreachable by name: {}", text(&o));
    // A job-visible bind of its workspace works; refusals print the rule.
    std::fs::write(a.ws.join("w.txt"), "ws-file\n").unwrap();
    let o = a
        .docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{JOB_WS}:/src"),
            BUSYBOX,
            "cat",
            "/src/w.txt",
        ])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ws-file",
        "{}",
        text(&o)
    );
    let o = a
        .docker(&["run", "--rm", "--privileged", BUSYBOX, "true"])
        .await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("berth scoped socket: privileged"),
        "{}",
        text(&o)
    );
    let o = a
        .docker(&["run", "--rm", "-v", "/etc:/host", BUSYBOX, "true"])
        .await;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bind-outside-workspace"),
        "{}",
        text(&o)
    );
    // logs -f follows until the container exits; attach streams a running container.
    ok(
        &a,
        &[
            "run",
            "-d",
            "--name",
            "lf",
            BUSYBOX,
            "sh",
            "-c",
            "echo first; sleep 1; echo second",
        ],
    )
    .await;
    let followed = ok(&a, &["logs", "-f", "lf"]).await;
    assert_eq!(
        followed.split_whitespace().collect::<Vec<_>>(),
        ["first", "second"]
    );
    ok(
        &a,
        &[
            "run",
            "-d",
            "--name",
            "att",
            BUSYBOX,
            "sh",
            "-c",
            "sleep 2; echo attached",
        ],
    )
    .await;
    assert_eq!(ok(&a, &["attach", "att"]).await.trim(), "attached");
    // A classic build with the CLI; the tag is the job's own.
    let ctx = a.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {BUSYBOX}\nRUN echo built > /built.txt\n"),
    )
    .unwrap();
    ok(&a, &["build", "-q", "-t", "app:1", ctx.to_str().unwrap()]).await;
    assert_eq!(
        ok(&a, &["run", "--rm", "app:1", "cat", "/built.txt"])
            .await
            .trim(),
        "built"
    );
    let o = b.docker(&["run", "--rm", "app:1", "true"]).await;
    assert!(
        !o.status.success(),
        "the other job sees this job's tag: {}",
        text(&o)
    );
    // Removal through the CLI, then the scope's reap.
    ok(&a, &["rm", "-f", "writer"]).await;
    ok(&b, &["rm", "-f", "db"]).await;
    ok(&b, &["network", "rm", "net"]).await;
    ok(&b, &["volume", "rm", "data"]).await;
    a.finish().await;
    b.finish().await;
}

/// A modern client (Docker CLI 28 or 26, `BERTH_MODERN_DOCKER_CLI`) sends newer fields
/// (`DNSNames`, ...) that the proxy must accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_docker_cli_works() {
    if !docker_or_skip("modern_docker_cli").await {
        return;
    }
    // The host's static CLI 28 here; the engine-26 script points this at trixie's CLI 26.
    let bin: &'static str = Box::leak(
        std::env::var("BERTH_MODERN_DOCKER_CLI")
            .unwrap_or_else(|_| "/usr/local/bin/docker".into())
            .into_boxed_str(),
    );
    if !std::path::Path::new(bin).exists() {
        let msg = format!("SKIP modern_docker_cli: {bin} missing");
        assert!(
            std::env::var("BERTH_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
        return;
    }
    let a = start("cli28").await;
    let run = |args: &'static [&'static str]| {
        let sock = a.sock.clone();
        async move {
            let o = docker_cli(bin, &sock, args, None).await;
            assert!(o.status.success(), "docker {args:?}: {}", text(&o));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }
    };
    assert_eq!(
        run(&["run", "--rm", "--name", "x", BUSYBOX, "echo", "ok"]).await,
        "ok"
    );
    run(&[
        "run", "-d", "--name", "w", "-p", "8080:80", BUSYBOX, "sleep", "60",
    ])
    .await;
    assert_eq!(run(&["exec", "w", "echo", "exec-ok"]).await, "exec-ok");
    assert!(run(&["port", "w", "80"]).await.starts_with("127.0.0.1:"));
    run(&["network", "create", "n"]).await;
    run(&["volume", "create", "v"]).await;
    run(&[
        "run",
        "--rm",
        "--network",
        "n",
        "-v",
        "v:/v",
        BUSYBOX,
        "true",
    ])
    .await;
    assert_eq!(run(&["ps", "--format", "{{.Names}}"]).await, "w");
    a.finish().await;
}

/// Two jobs both publish `-p 8080:80`: both succeed, each on a free loopback port that
/// `docker port` reports truthfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_never_collide() {
    if !docker_or_skip("published_ports").await {
        return;
    }
    let a = start("ports-a").await;
    let b = start("ports-b").await;
    let mut ports = Vec::new();
    for (s, who) in [(&a, "a"), (&b, "b")] {
        std::fs::write(s.ws.join("index.html"), format!("site-{who}\n")).unwrap();
        ok(
            s,
            &[
                "run",
                "-d",
                "--name",
                "web",
                "-p",
                "8080:80",
                "-v",
                &format!("{JOB_WS}:/www"),
                BUSYBOX,
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
                "/www",
            ],
        )
        .await;
        let port = ok(s, &["port", "web", "80"]).await;
        let addr = port.lines().next().unwrap_or_default().trim().to_string();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":8080"),
            "{addr}"
        );
        ports.push((addr, who));
    }
    for (addr, who) in &ports {
        let mut body = String::new();
        for _ in 0..20 {
            if let Ok(mut c) = tokio::net::TcpStream::connect(addr.as_str()).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await;
                let _ = c.read_to_string(&mut body).await;
                if body.contains("site-") {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(body.contains(&format!("site-{who}")), "{addr}: {body}");
    }
    a.finish().await;
    b.finish().await;
}

const COMPOSE: &str = r#"version: "3"
services:
  web:
    build: ./web
    volumes:
      - data:/data
      - ./shared:/shared
  client:
    image: berth-test/busybox:latest
    depends_on: [web]
    volumes:
      - ./shared:/shared
    command: sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/index.html && cat /shared/note.txt && exit 0; sleep 1; done; exit 1"
volumes:
  data: {}
"#;

async fn compose(s: &Scoped, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    docker_cli("/usr/bin/docker-compose", &s.sock, args, Some(dir)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compose_projects_run_concurrently_with_identical_names() {
    if !docker_or_skip("docker_compose").await {
        return;
    }
    if !std::path::Path::new("/usr/bin/docker-compose").exists() {
        eprintln!("\n!!!!!!!! SKIP docker_compose: /usr/bin/docker-compose missing !!!!!!!!\n");
        assert!(
            std::env::var("BERTH_REQUIRE_DOCKER").is_err_and(|_| true)
                || std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v != "1"),
            "docker-compose required"
        );
        return;
    }
    let a = start_identity("compose-a").await;
    let b = start_identity("compose-b").await;
    let mut dirs = Vec::new();
    for (s, who) in [(&a, "a"), (&b, "b")] {
        let dir = s.ws.join("proj");
        std::fs::create_dir_all(dir.join("web")).unwrap();
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        std::fs::write(dir.join("docker-compose.yml"), COMPOSE).unwrap();
        std::fs::write(dir.join("web/Dockerfile"), format!("FROM {BUSYBOX}\nRUN mkdir -p /www && echo hello-from-{who} > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n")).unwrap();
        std::fs::write(dir.join("shared/note.txt"), format!("note-{who}\n")).unwrap();
        dirs.push(dir);
    }
    let (ra, rb) = tokio::join!(
        compose(
            &a,
            &dirs[0],
            &["-p", "proj", "up", "--build", "--exit-code-from", "client"]
        ),
        compose(
            &b,
            &dirs[1],
            &["-p", "proj", "up", "--build", "--exit-code-from", "client"]
        ),
    );
    for (r, who) in [(&ra, "a"), (&rb, "b")] {
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(r.status.success(), "compose up ({who}): {}", text(r));
        assert!(
            out.contains(&format!("hello-from-{who}")) && out.contains(&format!("note-{who}")),
            "compose up ({who}): {}",
            text(r)
        );
    }
    for (s, d) in [(&a, &dirs[0]), (&b, &dirs[1])] {
        let o = compose(s, d, &["-p", "proj", "down", "-v", "--rmi", "local"]).await;
        assert!(o.status.success(), "compose down: {}", text(&o));
    }
    a.finish().await;
    b.finish().await;
}

/// The real shape of a scoped job: a job container (Debian, docker CLI 20.10, compose 1.29)
/// whose workspace is at `/sd/workspace` while the data is elsewhere on the host, talking to
/// the endpoint bind-mounted at `/var/run/berth/docker.sock`. `$PWD` binds and compose's
/// relative binds are translated to the host path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_inside_a_job_container_with_a_translated_workspace() {
    if !docker_or_skip("compose_in_job_container").await {
        return;
    }
    let job_ws = "/sd/workspace";
    let s = start_full("jobctr", berth_proxy::Policy::default(), false, job_ws).await;
    let proj = s.ws.join("proj");
    std::fs::create_dir_all(proj.join("web")).unwrap();
    std::fs::create_dir_all(proj.join("shared")).unwrap();
    std::fs::write(proj.join("docker-compose.yml"), COMPOSE).unwrap();
    std::fs::write(
        proj.join("web/Dockerfile"),
        format!("FROM {BUSYBOX}\nRUN mkdir -p /www && echo hello-from-job > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n"),
    )
    .unwrap();
    std::fs::write(proj.join("shared/note.txt"), "note-job\n").unwrap();
    let script = "set -e
docker-compose -p proj up --build --exit-code-from client
docker run --rm -v \"$PWD/shared:/s\" berth-test/busybox:latest cat /s/note.txt
docker-compose -p proj down -v --rmi local
docker run --rm -v /etc:/host berth-test/busybox:latest true 2>&1 || echo refused-as-expected";
    let sock_dir = s.sock.parent().unwrap().to_str().unwrap().to_string();
    let body = serde_json::json!({
        "Image": DEBIAN,
        "Cmd": ["bash", "-c", script],
        "WorkingDir": format!("{job_ws}/proj"),
        "Env": ["DOCKER_HOST=unix:///var/run/berth/docker.sock", "DOCKER_BUILDKIT=0", "COMPOSE_DOCKER_CLI_BUILD=0"],
        "Labels": {
            "io.berth.owner": s.owner,
            "io.berth.owner-host": "berth-proxy-tests",
            "io.berth.role": "proxy-test-job",
        },
        "HostConfig": {
            "Binds": [format!("{}:{job_ws}", s.ws.display()), format!("{sock_dir}:/var/run/berth")],
            "NetworkMode": "none",
        },
    });
    let r = daemon(&post_json("/containers/create", &body.to_string())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let job = r.json()["Id"].as_str().unwrap().to_string();
    let started = daemon(&post(&format!("/containers/{job}/start"))).await;
    let wait = if started.status == 204 {
        daemon_wait(&job).await
    } else {
        serde_json::Value::Null
    };
    let logs = daemon(&get(&format!("/containers/{job}/logs?stdout=1&stderr=1"))).await;
    let _ = daemon(&delete(&format!("/containers/{job}?force=1&v=1"))).await;
    assert_eq!(started.status, 204, "{}", started.body);
    assert_eq!(wait["StatusCode"], 0, "job failed: {}", logs.body);
    for want in [
        "hello-from-job",
        "note-job",
        "bind-outside-workspace",
        "refused-as-expected",
    ] {
        assert!(
            logs.body.contains(want),
            "missing `{want}` in: {}",
            logs.body
        );
    }
    s.finish().await;
}

/// Closing the endpoint ends open streams (events, logs -f, attach) and still reaps, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_reaps() {
    if !docker_or_skip("shutdown_streams").await {
        return;
    }
    let mut s = start("shutdown").await;
    ok(
        &s,
        &["run", "-d", "--name", "long", BUSYBOX, "sleep", "300"],
    )
    .await;
    let sock = s.sock.clone();
    let mut streams = Vec::new();
    for args in [
        vec!["events"],
        vec!["logs", "-f", "long"],
        vec!["attach", "long"],
    ] {
        let mut cmd = tokio::process::Command::new("/usr/bin/docker");
        cmd.args(&args)
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        streams.push(cmd.spawn().unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    shut_down(&mut s, "streams are open").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    for mut c in streams {
        let exited = tokio::time::timeout(std::time::Duration::from_secs(10), c.wait()).await;
        assert!(exited.is_ok(), "a client stream stayed open after shutdown");
    }
    assert_scope_empty(&s.scope).await;
}

/// `docker run -v "$PWD/sub:/src"` and `--mount type=bind` on a volume workspace, with the
/// Debian CLI (API 1.41) and a modern one: the bind works, writes land in the volume, and
/// `docker inspect` shows the job's path. On API ≥ 1.45 these are `Subpath` mounts (the daemon's
/// side is checked in attacks.rs); on older engines, translated host paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cli_binds_on_a_volume_workspace() {
    if !docker_or_skip("volume_workspace_cli").await {
        return;
    }
    let a = start_volume("cli-vol").await;
    std::fs::create_dir_all(a.ws.join("sub")).unwrap();
    std::fs::write(a.ws.join("sub/hello.txt"), "hello from the volume\n").unwrap();
    let modern =
        std::env::var("BERTH_MODERN_DOCKER_CLI").unwrap_or_else(|_| "/usr/local/bin/docker".into());
    let mut clis = vec!["/usr/bin/docker".to_string()];
    if std::path::Path::new(&modern).exists() && modern != clis[0] {
        clis.push(modern);
    } else {
        eprintln!(
            "NOTE volume_workspace_cli: only {} (no second CLI at {modern})",
            clis[0]
        );
    }
    let src = format!("{JOB_WS}/sub:/src");
    let mnt = format!("type=bind,source={JOB_WS},target=/m,readonly");
    for (i, bin) in clis.iter().enumerate() {
        let script = format!("cat /src/hello.txt && echo {i} > /src/from-cli-{i} && ls /m");
        let o = docker_cli(
            bin,
            &a.sock,
            &[
                "run", "--rm", "-v", &src, "--mount", &mnt, BUSYBOX, "sh", "-c", &script,
            ],
            None,
        )
        .await;
        assert!(o.status.success(), "{bin}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("hello from the volume") && out.contains("sub"),
            "{bin}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(a.ws.join(format!("sub/from-cli-{i}"))).unwrap(),
            format!("{i}\n")
        );
        let name = format!("keep{i}");
        let o = docker_cli(
            bin,
            &a.sock,
            &[
                "run", "-d", "--name", &name, "-v", &src, BUSYBOX, "sleep", "60",
            ],
            None,
        )
        .await;
        assert!(o.status.success(), "{bin}: {}", text(&o));
        let o = docker_cli(
            bin,
            &a.sock,
            &[
                "inspect",
                "-f",
                "{{range .Mounts}}{{.Source}}{{end}}",
                &name,
            ],
            None,
        )
        .await;
        assert!(o.status.success(), "{bin}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("{JOB_WS}/sub"),
            "{bin}"
        );
        let o = docker_cli(bin, &a.sock, &["rm", "-f", &name], None).await;
        assert!(o.status.success(), "{bin}: {}", text(&o));
    }
    a.finish().await;
}

/// BuildKit through the daemon's own route (Docker CLI 20.10, `DOCKER_BUILDKIT=1`): the
/// context comes over the job's session, tags are job-local, and `RUN --mount=type=cache`
/// directories are the job's own — a second job's identical build starts with an empty cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_builds_with_per_job_cache_mounts() {
    if !docker_or_skip("buildkit").await {
        return;
    }
    let Some(bin) = docker20_cli("buildkit").await else {
        return;
    };
    let a = start("bk-a").await;
    let b = start("bk-b").await;
    let dir = cache_mount_context("");
    let out = bk_build(bin, &a, dir.path(), "a1").await;
    assert!(out.contains("seen:none n:a1"), "{out}");
    assert_eq!(
        ok(&a, &["run", "--rm", "app:1", "cat", "/hello.txt"])
            .await
            .trim(),
        "from-the-context"
    );
    // The job's own cache mount persists between its builds...
    let out = bk_build(bin, &a, dir.path(), "a2").await;
    assert!(out.contains("seen:a1 n:a2"), "{out}");
    // ...and the other job's identical build does not see it.
    let out = bk_build(bin, &b, dir.path(), "b1").await;
    assert!(
        out.contains("seen:none n:b1"),
        "cache mount shared across jobs: {out}"
    );
    // The tag is job-local on the daemon: no shared `app:1` appeared.
    assert_eq!(daemon(&get("/images/app:1/json")).await.status, 404);
    let local = format!("/images/{}/json", a.daemon_name("app:1"));
    assert_eq!(daemon(&get(&local)).await.status, 200);
    a.finish().await;
    b.finish().await;
    assert_eq!(
        daemon(&get(&local)).await.status,
        404,
        "job-local tag reaped"
    );
}

/// One BuildKit build of `app:1` with `N=n`; its plain progress output.
async fn bk_build(bin: &str, s: &Scoped, dir: &std::path::Path, n: &str) -> String {
    let arg = format!("N={n}");
    let o = buildkit_build(bin, s, dir, &["--build-arg", &arg, "-t", "app:1"]).await;
    assert!(o.status.success(), "BuildKit build failed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(out.contains("naming to"), "not a BuildKit build: {out}");
    out
}

/// buildx (Docker CLI 26's default builder, through `/grpc`) and Compose v2 builds: the same
/// rules as the daemon's own BuildKit route — per-job cache mounts, job-local tags carrying the
/// scope's labels, host network / `--add-host` / proxy arguments / cache disk usage and prune
/// refused with the rule's reason. Needs buildx: runs on the nested engine (test-engine26.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildx_and_compose_v2_build_through_the_scoped_socket() {
    if !docker_or_skip("buildx").await {
        return;
    }
    if std::env::var("BERTH_BUILDX").as_deref() != Ok("1") {
        eprintln!(
            "\nNOTE buildx: no buildx on this machine's CLI; this test runs on the nested engine (crates/berth-proxy/scripts/test-engine26.sh)\n"
        );
        return;
    }
    let bin = "/usr/bin/docker";
    let bk = [("DOCKER_BUILDKIT", "1"), ("COMPOSE_DOCKER_CLI_BUILD", "1")];
    let a = start("bx-a").await;
    let b = start("bx-b").await;
    let dir = cache_mount_context("buildx ");
    let build = |s: &Scoped, extra: Vec<String>| {
        let sock = s.sock.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let mut args = vec!["build".to_string(), "--progress=plain".to_string()];
            args.extend(extra);
            args.push(".".to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            docker_cli_env(bin, &sock, &args, Some(&dir), &bk).await
        }
    };
    let arg = |n: &str| {
        vec![
            "--build-arg".to_string(),
            format!("N={n}"),
            "-t".into(),
            "app:1".into(),
        ]
    };
    for (s, n, want) in [
        (&a, "a1", "seen:none n:a1"),
        (&a, "a2", "seen:a1 n:a2"),
        (&b, "b1", "seen:none n:b1"),
    ] {
        let o = build(s, arg(n)).await;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "buildx build failed: {}", text(&o));
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(
        ok(&a, &["run", "--rm", "app:1", "cat", "/hello.txt"])
            .await
            .trim(),
        "from-the-context"
    );
    let img = daemon(&get(&format!("/images/{}/json", a.daemon_name("app:1"))))
        .await
        .json();
    assert_eq!(
        img["Config"]["Labels"]["io.berth.scope"],
        a.scope.as_str(),
        "{img}"
    );
    assert_eq!(daemon(&get("/images/app:1/json")).await.status, 404);
    // Refusals, each with the rule's reason, and no image.
    for (extra, rule) in [
        (vec!["--network", "host"], "build-host-access"),
        (
            vec!["--add-host", "pypi.org:127.0.0.1"],
            "shared-build-cache",
        ),
        (
            vec!["--build-arg", "HTTP_PROXY=http://127.0.0.1:3128"],
            "shared-build-cache",
        ),
    ] {
        let mut e: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        e.extend(["-t".to_string(), "refused:1".to_string()]);
        let o = build(&a, e).await;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && err.contains(rule),
            "{extra:?}: {err}"
        );
    }
    assert_eq!(
        daemon(&get(&format!(
            "/images/{}/json",
            a.daemon_name("refused:1")
        )))
        .await
        .status,
        404
    );
    for cmd in [&["buildx", "du"][..], &["buildx", "prune", "-f"][..]] {
        let o = docker_cli_env(bin, &a.sock, cmd, None, &bk).await;
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && err.contains("PermissionDenied"),
            "{cmd:?}: {err}"
        );
    }
    // Compose v2 builds with BuildKit and runs what it built.
    let cdir = tempfile::tempdir().unwrap();
    std::fs::create_dir(cdir.path().join("web")).unwrap();
    std::fs::write(
        cdir.path().join("web/Dockerfile"),
        format!("FROM {BUSYBOX}\nRUN echo built-by-compose > /index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/\"]\n"),
    )
    .unwrap();
    std::fs::write(
        cdir.path().join("compose.yml"),
        "services:\n  web:\n    build: ./web\n    image: cweb:1\n",
    )
    .unwrap();
    for args in [&["compose", "build"][..], &["compose", "up", "-d"][..]] {
        let o = docker_cli_env(bin, &a.sock, args, Some(cdir.path()), &bk).await;
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let mut served = String::new();
    for _ in 0..20 {
        let o = docker_cli_env(
            bin,
            &a.sock,
            &[
                "compose",
                "exec",
                "-T",
                "web",
                "wget",
                "-qO-",
                "http://localhost/",
            ],
            Some(cdir.path()),
            &bk,
        )
        .await;
        served = String::from_utf8_lossy(&o.stdout).to_string();
        if served.contains("built-by-compose") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(served.contains("built-by-compose"), "{served}");
    let o = docker_cli_env(
        bin,
        &a.sock,
        &["compose", "down", "-v"],
        Some(cdir.path()),
        &bk,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let local = format!("/images/{}/json", a.daemon_name("app:1"));
    a.finish().await;
    b.finish().await;
    assert_eq!(
        daemon(&get(&local)).await.status,
        404,
        "job-local tag reaped"
    );
}

/// Processes whose command line is exactly `sleep <secs>` (BuildKit's build steps run as
/// processes this test can see: on the host, or inside the nested engine's container).
fn sleeping(secs: &str) -> usize {
    let want = format!("sleep\0{secs}\0");
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes())
                })
                .count()
        })
        .unwrap_or(0)
}

/// A BuildKit build still running when the job ends does not outlive it: closing the endpoint
/// ends the build's streams and the daemon stops the build step — through the daemon's route
/// (CLI 20.10) and, where buildx is there, through `/grpc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_builds_end_with_the_endpoint() {
    if !docker_or_skip("buildkit_end").await {
        return;
    }
    let mut routes: Vec<(&str, String, &str)> = Vec::new();
    if let Some(bin) = docker20_cli("buildkit_end").await {
        routes.push(("daemon route", bin.to_string(), "371"));
    }
    if std::env::var("BERTH_BUILDX").as_deref() == Ok("1") {
        routes.push(("buildx", "/usr/bin/docker".to_string(), "372"));
    }
    for (route, bin, secs) in routes {
        let mut s = start("bkend").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {BUSYBOX}\nRUN sleep {secs}\n"),
        )
        .unwrap();
        let mut cli = tokio::process::Command::new(&bin)
            .args(["build", "--progress=plain", "-t", "never:1", "."])
            .current_dir(dir.path())
            .env("DOCKER_HOST", format!("unix://{}", s.sock.display()))
            .env("DOCKER_BUILDKIT", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let running = eventually(240, || sleeping(secs) > 0).await;
        assert!(running, "{route}: the build step never started");
        shut_down(&mut s, "a build runs").await;
        let gone = eventually(80, || sleeping(secs) == 0).await;
        assert!(gone, "{route}: the build step outlived the endpoint");
        let exited = tokio::time::timeout(std::time::Duration::from_secs(10), cli.wait()).await;
        assert!(exited.is_ok(), "{route}: the client's build stayed open");
        assert_scope_empty(&s.scope).await;
        eprintln!("{route}: the build ended with the endpoint");
    }
}

/// A build context whose Dockerfile copies a file from it and prints what the previous build left
/// in its cache mount (`<label>seen:<mark> n:<N>`), then leaves `N` there.
fn cache_mount_context(label: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "from-the-context\n").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {BUSYBOX}\nARG N\nCOPY hello.txt /hello.txt\n\
             RUN --mount=type=cache,target=/c sh -c 'echo \"{label}seen:$(cat /c/mark 2>/dev/null || echo none) n:$N\"; echo $N > /c/mark'\n"
        ),
    )
    .unwrap();
    dir
}

/// Closes the endpoint and reaps, within 30 s, with nothing left that failed to go.
async fn shut_down(s: &mut Scoped, during: &str) {
    let proxy = s.proxy.take().expect("the endpoint is running");
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        proxy.shutdown_and_reap(),
    )
    .await
    .unwrap_or_else(|_| panic!("shutdown finishes while {during}"));
    assert!(report.is_clean(), "{during}: {:?}", report.failed);
}

/// Whether `cond` holds within `tries` checks 250 ms apart.
async fn eventually(tries: usize, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    cond()
}
