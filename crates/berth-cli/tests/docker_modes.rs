//! Jobs that use Docker, against a real daemon: `services:`, `docker: socket` and
//! `docker: dind` (TLS, privileged fallback, cache volumes), with the real docker CLI and
//! docker-compose inside the job. Every test ends with nothing labelled by its run left.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/docker");

/// A service image that opens port 8080 only after `DELAY` seconds (busybox httpd).
const SLOW_WEB: &str = "berth-test/h3-slow-web:latest";

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Builds the small images these tests need once (from local images only).
fn test_images() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                "FROM {BUSYBOX}\nRUN mkdir -p /www && echo served-by-slow-web > /www/index.html\nEXPOSE 8080\n\
                 CMD [\"sh\", \"-c\", \"echo booting; sleep ${{DELAY:-1}}; echo listening; exec httpd -f -p 8080 -h /www\"]\n"
            ),
        )
        .unwrap();
        let ok = Command::new("docker")
            .args(["build", "-q", "-t", SLOW_WEB])
            .arg(dir.path())
            .output()
            .expect("docker build");
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    });
}

/// Copies the Docker workload fixture into the project's source tree.
fn add_workload(p: &Project) {
    for rel in ["compose.yml", "web/Dockerfile", "Dockerfile", "steps.sh"] {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(rel)).unwrap();
        p.write(rel, &text);
    }
}

/// Asserts the output of `steps.sh` shows every part of the workload worked.
fn assert_workload(out: &str) {
    assert!(out.contains("server 20.10"), "{out}");
    let after_run = out.split("--- run -v").nth(1).unwrap_or_default();
    assert!(
        after_run.contains("compose.yml") && after_run.contains("steps.sh"),
        "{out}"
    );
    assert!(out.contains("built-from-source"), "{out}");
    assert!(out.contains("kept"), "{out}");
    // Socket and dind publish on all interfaces; the scoped socket remaps to loopback.
    assert!(
        out.contains("0.0.0.0:") || out.contains("127.0.0.1:"),
        "published port missing: {out}"
    );
    assert!(out.contains("client got: hello-from-web"), "{out}");
    assert!(out.contains("--- done"), "{out}");
}

/// Runs the Docker workload fixture (build, run, compose) in a job with `docker: MODE` and
/// checks its output and that nothing of the run is left.
fn run_workload_in(mode: &str) {
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {DEBIAN}\n    requires: [~commit]\n    docker: {mode}\n    environment:\n      TAG: {mode}\n    steps:\n      - workload: bash steps.sh\n"
    ));
    add_workload(&p);
    let run = p.run_json(&[]);
    run.assert_code(0);
    assert_workload(&run.output("main"));
    run.assert_nothing_left();
}

fn warnings(run: &Run) -> Vec<String> {
    run.events
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn services_are_ready_before_steps_and_their_logs_are_kept() {
    if !docker() {
        return;
    }
    test_images();
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    services:
      - image: {SLOW_WEB}
        alias: web
        environment:
          DELAY: "2"
      - image: {BUSYBOX}
        command: ["sleep", "300"]
    steps:
      - fetch: wget -qO- http://web:8080/ && ping -c1 -W2 berth-test-busybox >/dev/null && echo alias-ok
"#
    ));
    let run = p.run_json(&[]);
    run.assert_code(0);
    assert!(
        run.output("main").contains("served-by-slow-web"),
        "{}",
        run.dump()
    );
    assert!(run.output("main").contains("alias-ok"), "{}", run.dump());
    let log =
        std::fs::read_to_string(p.output_dir().join(run.build_id()).join("main.web.log")).unwrap();
    assert!(
        log.contains("booting") && log.contains("listening"),
        "{log}"
    );
    run.assert_nothing_left();
}

#[test]
fn a_service_that_never_becomes_ready_fails_the_job_with_its_logs() {
    if !docker() {
        return;
    }
    test_images();
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    services:
      - image: {SLOW_WEB}
        alias: web
        timeout: 2
        environment:
          DELAY: "600"
    steps:
      - never: echo should-not-run
"#
    ));
    let run = p.run_json(&[]);
    assert_eq!(run.status("main"), "error", "{}", run.dump());
    let message = run.result("main")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("service `web`") && message.contains("not ready after 2 s"),
        "{message}"
    );
    assert!(
        message.contains("booting"),
        "service logs missing: {message}"
    );
    assert!(!run.output("main").contains("should-not-run"));
    run.assert_nothing_left();
}

#[test]
fn scoped_mode_runs_docker_build_run_and_compose() {
    if !docker() {
        return;
    }
    run_workload_in("scoped");
}

#[test]
fn scoped_jobs_share_names_and_ports_without_seeing_each_other_or_the_host() {
    if !docker() {
        return;
    }
    // A container on the host that no job may see or touch.
    let foreign = format!("berth-h-foreign-{}", std::process::id());
    let started = std::process::Command::new("docker")
        .args(["run", "-d", "--name", &foreign, BUSYBOX, "sleep", "120"])
        .output()
        .unwrap();
    assert!(started.status.success());
    let job = |name: &str| {
        format!(
            r#"
  {name}:
    image: {DEBIAN}
    requires: [~commit]
    docker: scoped
    steps:
      - siblings: |
          set -e
          docker network create net >/dev/null
          docker volume create data >/dev/null
          docker run -d --name db -p 8080:80 {BUSYBOX} httpd -f -p 80 -h /bin >/dev/null
          for i in $(seq 1 50); do curl -s -o /dev/null http://db:80/ && break; sleep 0.1; done
          echo "reach=$(curl -s -o /dev/null -w '%{{http_code}}' http://db:80/busybox)"
          echo "names=$(docker ps --format '{{{{.Names}}}}' | xargs)"
          echo "nets=$(docker network ls --format '{{{{.Name}}}}' | grep -c '^net$')"
          echo "vols=$(docker volume ls --format '{{{{.Name}}}}' | xargs)"
          echo "port=$(docker port db 80)"
          docker inspect {foreign} >/dev/null 2>&1 && echo "SAW-FOREIGN" || echo "foreign-invisible"
          docker kill {foreign} >/dev/null 2>&1 && echo "KILLED-FOREIGN" || echo "foreign-untouchable"
          sleep 2
"#
        )
    };
    let p = Project::new(&format!("jobs:{}{}", job("one"), job("two")));
    let run = p.run_json(&["--parallel", "2"]);
    let still_there = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &foreign])
        .output()
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &foreign])
        .output();
    run.assert_code(0);
    for j in ["one", "two"] {
        let out = run.output(j);
        assert!(out.contains("reach=200"), "{j}: {out}");
        assert!(
            out.contains("names=db\n"),
            "{j} sees only its own plain-named container: {out}"
        );
        assert!(out.contains("nets=1"), "{j}: {out}");
        assert!(out.contains("vols=data\n"), "{j}: {out}");
        assert!(
            out.contains("port=127.0.0.1:"),
            "{j}: published port on loopback: {out}"
        );
        assert!(
            out.contains("foreign-invisible") && out.contains("foreign-untouchable"),
            "{j}: {out}"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&still_there.stdout).trim(),
        "true",
        "the host container survived"
    );
    run.assert_nothing_left();
}

#[test]
fn scoped_mode_refuses_escalation_with_a_readable_reason() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {DEBIAN}
    requires: [~commit]
    docker: scoped
    steps:
      - privileged: docker run --rm --privileged {BUSYBOX} true
"#
    ));
    let run = p.run_json(&[]);
    run.assert_code(1);
    let out = run.output("main");
    assert!(
        out.contains("berth scoped socket") && out.to_lowercase().contains("privileged"),
        "{out}"
    );
    run.assert_nothing_left();
}

#[test]
fn docker_enabled_annotation_uses_the_configured_mode() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    annotations:
      screwdriver.cd/dockerEnabled: true
    steps:
      - check: echo "host=$DOCKER_HOST src=$SD_SOURCE_DIR pwd=$PWD" && test -S /var/run/docker.sock
"#
    ));
    let run = p.run_json(&["--docker-mode", "socket"]);
    run.assert_code(0);
    let out = run.output("main");
    assert!(out.contains("host=unix:///var/run/docker.sock"), "{out}");
    assert!(
        out.contains("berth-workspaces/"),
        "socket mode workspace is a host path: {out}"
    );
    let w = warnings(&run);
    assert!(w.iter().any(|m| m.contains("root-level control")), "{w:?}");
    run.assert_nothing_left();

    // Without --docker-mode, dockerEnabled means the scoped socket.
    let run = p.run_json(&[]);
    run.assert_code(0);
    assert!(
        run.output("main")
            .contains("host=unix:///var/run/docker.sock")
    );
    let w = warnings(&run);
    assert!(!w.iter().any(|m| m.contains("root-level control")), "{w:?}");
    run.assert_nothing_left();
}

#[test]
fn socket_mode_runs_docker_build_run_and_compose() {
    if !docker() {
        return;
    }
    run_workload_in("socket");
}

#[test]
fn socket_mode_removes_the_jobs_compose_project_and_reports_leftovers() {
    if !docker() {
        return;
    }
    let name = format!("berth-h3-leftover-{}", std::process::id());
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {DEBIAN}
    requires: [~commit]
    docker: socket
    steps:
      - start: |
          echo "project=$COMPOSE_PROJECT_NAME"
          docker-compose -f compose.yml up -d client
          docker run -d --name {name} {BUSYBOX} sleep 300
"#
    ));
    add_workload(&p);
    let run = p.run_json(&[]);
    let cleanup = || sh(&format!("docker rm -f {name} >/dev/null 2>&1; true"));
    let out = run.output("main");
    let project = out
        .lines()
        .find_map(|l| l.strip_prefix("project="))
        .unwrap_or_default()
        .to_string();
    cleanup();
    run.assert_code(0);
    assert!(project.starts_with("berth-"), "{out}");
    let label = format!("label=com.docker.compose.project={project}");
    assert_eq!(
        sh(&format!("docker ps -aq --filter {label}")),
        "",
        "compose containers left"
    );
    assert_eq!(
        sh(&format!("docker network ls -q --filter {label}")),
        "",
        "compose networks left"
    );
    assert_eq!(
        sh(&format!("docker volume ls -q --filter {label}")),
        "",
        "compose volumes left"
    );
    let w = warnings(&run);
    assert!(
        w.iter().any(|m| m.contains(&name) && m.contains("scoped")),
        "{w:?}"
    );
    run.assert_nothing_left();
}

#[test]
fn dind_mode_runs_docker_build_run_and_compose_on_its_own_tls_daemon() {
    if !docker() {
        return;
    }
    let host_id = sh("docker info --format '{{.ID}}'");
    let marker = format!("berth-h3-dind-marker-{}", std::process::id());
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {DEBIAN}
    requires: [~commit]
    docker: dind
    environment:
      TAG: dind
    steps:
      - load: docker load -q -i busybox.tar
      - workload: bash steps.sh
      - isolation: |
          echo "nested-id=$(docker info --format '{{{{.ID}}}}')"
          docker run -d --name {marker} {BUSYBOX} sleep 60 >/dev/null
          echo "env=$DOCKER_HOST verify=$DOCKER_TLS_VERIFY certs=$DOCKER_CERT_PATH"
      - tls: |
          if curl -s --max-time 3 http://docker:2375/_ping; then echo plain-2375-answered; fi
          if curl -sk --max-time 3 https://docker:2376/_ping; then echo no-cert-accepted; fi
          curl -s --cacert $DOCKER_CERT_PATH/ca.pem --cert $DOCKER_CERT_PATH/cert.pem --key $DOCKER_CERT_PATH/key.pem https://docker:2376/_ping && echo " with-cert-ok"
"#
    ));
    add_workload(&p);
    add_busybox_tar(&p);
    let run = p.run_json(&["--dind-image", DEBIAN]);
    run.assert_code(0);
    let out = run.output("main");
    assert_workload(&out);
    let nested = out
        .lines()
        .find_map(|l| l.strip_prefix("nested-id="))
        .unwrap_or_default();
    assert!(
        !nested.is_empty() && nested != host_id,
        "nested {nested} host {host_id}"
    );
    assert_eq!(
        sh(&format!("docker ps -aq --filter name={marker}")),
        "",
        "job's container is on the host"
    );
    assert!(
        out.contains("env=tcp://docker:2376 verify=1 certs=/certs/client"),
        "{out}"
    );
    assert!(
        !out.contains("plain-2375-answered") && !out.contains("no-cert-accepted"),
        "{out}"
    );
    assert!(out.contains("OK with-cert-ok"), "{out}");
    let w = warnings(&run);
    let refuses = sh(
        "docker run --rm --privileged berth-test/busybox:latest true >/dev/null 2>&1 || echo refused",
    );
    if refuses == "refused" {
        assert!(
            w.iter()
                .any(|m| m.contains("refuses privileged containers")),
            "{w:?}"
        );
    }
    let log = p.output_dir().join(run.build_id()).join("main.docker.log");
    assert!(log.exists(), "the daemon's log is kept");
    run.assert_nothing_left();
}

#[test]
fn two_dind_jobs_run_in_parallel_with_their_own_daemons() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
shared:
  image: {DEBIAN}
  docker: dind
  steps:
    - work: |
        docker load -q -i busybox.tar >/dev/null
        docker run --rm -v "$PWD:/src" {BUSYBOX} sh -c "echo ran-in-$SD_JOB_NAME; ls /src"
        echo "id=$(docker info --format '{{{{.ID}}}}')"
jobs:
  one:
    requires: [~commit]
  two:
    requires: [~commit]
    dind:
      tls: false
"#
    ));
    add_busybox_tar(&p);
    let run = p.run_json(&["--dind-image", DEBIAN, "--parallel", "2"]);
    run.assert_code(0);
    let (one, two) = (run.output("one"), run.output("two"));
    assert!(
        one.contains("ran-in-one") && one.contains("busybox.tar"),
        "{one}"
    );
    assert!(two.contains("ran-in-two"), "{two}");
    let id = |o: &str| {
        o.lines()
            .find_map(|l| l.strip_prefix("id="))
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(id(&one), id(&two));
    let w = warnings(&run);
    assert!(w.iter().any(|m| m.contains("tls: false")), "{w:?}");
    run.assert_nothing_left();
}

#[test]
fn dind_cache_volume_keeps_layers_between_builds() {
    if !docker() {
        return;
    }
    let cache = format!("h3test{}", std::process::id());
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {DEBIAN}
    requires: [~commit]
    docker: dind
    dind:
      cache: {cache}
    steps:
      - build: |
          if docker image inspect berth-h3-cached >/dev/null 2>&1; then echo cache-hit; else echo cache-miss; docker load -q -i busybox.tar; fi
          docker build -t berth-h3-cached . 2>&1 | tail -n 4
"#
    ));
    p.write(
        "Dockerfile",
        &format!("FROM {BUSYBOX}\nRUN echo layer > /layer\n"),
    );
    add_busybox_tar(&p);
    let first = p.run_json(&["--dind-image", DEBIAN]);
    let second = p.run_json(&["--dind-image", DEBIAN]);
    let volume = format!("berth-cache-{cache}");
    let kept = sh(&format!("docker volume ls -q --filter name={volume}"));
    sh(&format!("docker volume rm -f {volume}"));
    first.assert_code(0);
    second.assert_code(0);
    assert!(
        first.output("main").contains("cache-miss"),
        "{}",
        first.dump()
    );
    let out = second.output("main");
    assert!(out.contains("cache-hit"), "{out}");
    assert!(out.to_lowercase().contains("using cache"), "{out}");
    assert_eq!(kept, volume, "the cache volume is kept between builds");
    first.assert_nothing_left();
    second.assert_nothing_left();
}

#[test]
fn two_jobs_on_one_dind_cache_take_turns() {
    if !docker() {
        return;
    }
    let cache = format!("h3turns{}", std::process::id());
    let p = Project::new(&format!(
        r#"
shared:
  image: {DEBIAN}
  docker: dind
  dind:
    cache: {cache}
  steps:
    - use: docker info --format 'images={{{{.Images}}}}'
jobs:
  one:
    requires: [~commit]
  two:
    requires: [~commit]
"#
    ));
    let run = p.run_json(&["--dind-image", DEBIAN, "--parallel", "2"]);
    sh(&format!("docker volume rm -f berth-cache-{cache}"));
    run.assert_code(0);
    let w = warnings(&run);
    assert!(
        w.iter()
            .any(|m| m.contains("in use by another job; waiting")),
        "{w:?}"
    );
    run.assert_nothing_left();
}

/// A scoped job that asks for BuildKit in its `environment` gets it: the Docker CLI 20.10 in
/// the job builds through the daemon's BuildKit route (cache mounts, plain progress).
#[test]
fn scoped_jobs_build_with_buildkit_when_the_job_asks() {
    if !docker() {
        return;
    }
    test_images();
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {DEBIAN}\n    requires: [~commit]\n    docker: scoped\n    environment:\n      DOCKER_BUILDKIT: \"1\"\n    steps:\n      - build: docker build --progress=plain -t bk . 2>&1 | tail -n 4\n      - run: docker run --rm bk cat /f\n"
    ));
    p.write(
        "Dockerfile",
        &format!("FROM {BUSYBOX}\nCOPY screwdriver.yaml /\nRUN --mount=type=cache,target=/c echo buildkit-ran > /f\n"),
    );
    let run = p.run_json(&[]);
    run.assert_code(0);
    let out = run.output("main");
    assert!(out.contains("naming to docker.io/library/"), "{out}");
    assert!(out.contains("buildkit-ran"), "{out}");
    run.assert_nothing_left();
}

/// `--scoped-policy` reaches scoped jobs' endpoints: with `"builds": false` a job's
/// `docker build` is refused with the rule's reason, while `docker run` still works.
#[test]
fn scoped_policy_file_applies_to_scoped_jobs() {
    if !docker() {
        return;
    }
    test_images();
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {DEBIAN}\n    requires: [~commit]\n    docker: scoped\n    steps:\n      - run: docker run --rm {BUSYBOX} echo run-ok\n      - build: if docker build -t x . 2>err; then echo BUILT; exit 1; fi; cat err\n"
    ));
    p.write("Dockerfile", &format!("FROM {BUSYBOX}\n"));
    p.write("policy.json", r#"{"builds": false}"#);
    let policy = p.path().join("policy.json");
    let run = p.run_json(&["--scoped-policy", policy.to_str().unwrap()]);
    run.assert_code(0);
    let out = run.output("main");
    assert!(out.contains("run-ok"), "{out}");
    assert!(out.contains("builds = false"), "{out}");
    run.assert_nothing_left();
    // A policy file with a typo is a usage error before anything runs.
    p.write("bad.json", r#"{"bulids": false}"#);
    let bad = p.path().join("bad.json");
    p.run_json(&["--scoped-policy", bad.to_str().unwrap()])
        .assert_code(2);
}
