//! `berth run` against a real Docker daemon: fixture pipelines and their expected outcomes.

mod common;

use common::*;

#[test]
fn passing_job_sees_screwdriver_variables_and_source() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
shared:
  image: {BUSYBOX}
  environment:
    GREETING: hello
jobs:
  main:
    requires: [~commit]
    environment:
      TARGET: world
    steps:
      - show: |
          echo "$GREETING $TARGET"
          echo "job=$SD_JOB_NAME ci=$CI sd=$SCREWDRIVER build=$SD_BUILD_ID"
          echo "pwd=$(pwd) src=$SD_SOURCE_DIR"
          cat data/input.txt
"#
    ));
    p.write("data/input.txt", "source-file-content\n");
    let run = p.run_json(&[]);
    run.assert_code(0);
    assert_eq!(run.status("main"), "success");
    let out = run.output("main");
    assert!(out.contains("hello world"), "{out}");
    assert!(out.contains("job=main ci=true sd=true build=1"), "{out}");
    assert!(
        out.contains("pwd=/sd/workspace/src src=/sd/workspace/src"),
        "{out}"
    );
    assert!(out.contains("source-file-content"), "{out}");
    let log = String::from_utf8(p.log("1", "main")).unwrap();
    assert!(log.contains("hello world"), "{log}");
    run.assert_nothing_left();
}

#[test]
fn failing_step_stops_the_job_and_teardown_still_runs() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    steps:
      - teardown-cleanup: echo "teardown ran with MARK=$MARK"
      - first: export MARK=set-by-first
      - breaks: exit 7
      - never: echo should-not-run
"#
    ));
    let run = p.run_json(&[]);
    run.assert_code(1);
    assert_eq!(run.result("main")["status"], "failure");
    assert_eq!(run.result("main")["step"], "breaks");
    assert_eq!(run.result("main")["exit_code"], 7);
    let steps: Vec<_> = run.steps("main").into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, ["first", "breaks", "teardown-cleanup"]);
    assert!(
        run.output("main")
            .contains("teardown ran with MARK=set-by-first")
    );
    run.assert_nothing_left();
}

#[test]
fn environment_and_working_directory_carry_across_steps_in_sh_and_bash() {
    if !docker() {
        return;
    }
    for image in [BUSYBOX, DEBIAN] {
        let p = Project::new(&format!(
            r#"
jobs:
  main:
    image: {image}
    requires: [~commit]
    steps:
      - set: |
          export FOO="a b 'c'"
          mkdir -p sub/dir && cd sub/dir
          NOT_EXPORTED=x
      - check: |
          echo "FOO=[$FOO] PWD=$(pwd) NE=[$NOT_EXPORTED]"
      - shell: if [ -n "$BASH_VERSION" ]; then echo shell=bash; else echo shell=sh; fi
"#
        ));
        let run = p.run_json(&[]);
        run.assert_code(0);
        let out = run.output("main");
        assert!(
            out.contains("FOO=[a b 'c'] PWD=/sd/workspace/src/sub/dir NE=[]"),
            "{image}: {out}"
        );
        let shell = if image == DEBIAN {
            "shell=bash"
        } else {
            "shell=sh"
        };
        assert!(out.contains(shell), "{image}: {out}");
        run.assert_nothing_left();
    }
}

#[test]
fn join_and_or_requires_and_skipped_downstream() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
shared:
  image: {BUSYBOX}
jobs:
  a:
    requires: [~commit]
    steps: [{{run: "true"}}]
  b:
    requires: [~commit]
    steps: [{{run: "exit 1"}}]
  join-ab:
    requires: [a, b]
    steps: [{{run: "true"}}]
  either-ab:
    requires: [~a, ~b]
    steps: [{{run: "true"}}]
  after-join:
    requires: [join-ab]
    steps: [{{run: "true"}}]
  pr-only:
    requires: [~pr]
    steps: [{{run: "true"}}]
"#
    ));
    let run = p.run_json(&["--parallel", "4"]);
    run.assert_code(1);
    assert_eq!(run.status("a"), "success");
    assert_eq!(run.status("b"), "failure");
    assert_eq!(run.status("either-ab"), "success");
    let mut skipped = run.skipped();
    skipped.sort();
    assert_eq!(skipped, ["after-join", "join-ab"]);
    assert!(
        !run.stdout.contains("\"job\":\"pr-only\""),
        "pr-only must not run on a commit"
    );
    run.assert_nothing_left();

    // `--job` runs exactly the named job, nothing downstream.
    let run = p.run_json(&["--job", "a"]);
    run.assert_code(0);
    let ran: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["type"] == "finished")
        .map(|e| e["job"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ran, ["a"]);
    // `--event pr` starts the ~pr jobs.
    let run = p.run_json(&["--event", "pr"]);
    run.assert_code(0);
    assert_eq!(run.status("pr-only"), "success");
}

#[test]
fn timeout_stops_the_job_and_reports_it() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  slow:
    image: {BUSYBOX}
    requires: [~commit]
    steps:
      - stubborn: |
          trap '' TERM
          echo started
          sleep 600
      - teardown-report: echo teardown-after-timeout
"#
    ));
    let started = std::time::Instant::now();
    let run = p.run_json(&["--timeout", "2s", "--stop-grace", "1"]);
    run.assert_code(1);
    assert_eq!(run.result("slow")["status"], "timed_out");
    assert_eq!(run.result("slow")["step"], "stubborn");
    assert!(run.output("slow").contains("teardown-after-timeout"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "a timed-out job must not hang"
    );
    run.assert_nothing_left();
}

#[test]
fn oom_killed_job_is_reported_as_such() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  hungry:
    image: {DEBIAN}
    requires: [~commit]
    annotations:
      screwdriver.cd/ram: 0.0625
    steps:
      - eat: tail /dev/zero
"#
    ));
    let run = p.run_json(&[]);
    run.assert_code(1);
    assert_eq!(
        run.result("hungry")["status"],
        "oom_killed",
        "{}",
        run.dump()
    );
    run.assert_nothing_left();
}

#[test]
fn missing_image_is_an_infrastructure_error_naming_the_image() {
    if !docker() {
        return;
    }
    let p = Project::new(
        r#"
jobs:
  main:
    image: berth-test/does-not-exist:nope
    requires: [~commit]
    steps: [{run: "true"}]
"#,
    );
    let run = p.run_json(&[]);
    run.assert_code(3);
    let message = run.result("main")["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("berth-test/does-not-exist:nope"),
        "{message}"
    );
    run.assert_nothing_left();
    let run = p.run_json(&["--pull", "never"]);
    run.assert_code(3);
    assert!(
        run.result("main")["message"]
            .as_str()
            .unwrap()
            .contains("--pull never")
    );
}

#[test]
fn secrets_are_masked_even_when_split_across_reads() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    secrets: [TOKEN]
    steps:
      - whole: echo "token is $TOKEN"
      - split: |
          printf 'half: s3cr'; sleep 0.5; printf 'et-value!\n'
"#
    ));
    let missing = p.run_json(&[]);
    missing.assert_code(2);
    assert!(missing.stderr.contains("`TOKEN`"), "{}", missing.dump());

    let run = p.run_json(&["--secret", "TOKEN=s3cret-value"]);
    run.assert_code(0);
    let out = run.output("main");
    assert!(out.contains("token is ***"), "{out}");
    assert!(out.contains("half: ***!"), "{out}");
    let log = String::from_utf8_lossy(&p.log(&run.build_id(), "main")).into_owned();
    assert!(
        !log.contains("s3cret-value") && !run.stdout.contains("s3cret-value"),
        "{log}"
    );
    assert!(log.contains("half: ***!"), "{log}");
    run.assert_nothing_left();
}

#[test]
fn artifacts_are_copied_out_on_success_and_failure() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
shared:
  image: {BUSYBOX}
jobs:
  ok:
    requires: [~commit]
    steps:
      - report: mkdir -p $SD_ARTIFACTS_DIR/reports && echo fine > $SD_ARTIFACTS_DIR/reports/result.txt
  broken:
    requires: [~commit]
    steps:
      - report: echo partial > $SD_ARTIFACTS_DIR/partial.txt; exit 3
"#
    ));
    let run = p.run_json(&[]);
    run.assert_code(1);
    let build = p.output_dir().join(run.build_id());
    let ok = std::fs::read_to_string(build.join("ok/artifacts/reports/result.txt")).unwrap();
    assert_eq!(ok, "fine\n");
    let partial = std::fs::read_to_string(build.join("broken/artifacts/partial.txt")).unwrap();
    assert_eq!(partial, "partial\n");
    run.assert_nothing_left();
}

#[test]
fn binary_output_reaches_the_log_byte_for_byte() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {BUSYBOX}
    requires: [~commit]
    steps:
      - bytes: printf 'A\000B\377C\001\n'
"#
    ));
    let run = p.run_json(&[]);
    run.assert_code(0);
    let log = p.log(&run.build_id(), "main");
    let needle = b"A\x00B\xffC\x01\n";
    assert!(log.windows(needle.len()).any(|w| w == needle), "{log:?}");
}

#[test]
fn unreachable_daemon_is_exit_3_with_the_address() {
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps: [{{run: 'true'}}]\n"
    ));
    let out = p.run(&["--docker-host", "unix:///nonexistent/docker.sock"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unix:///nonexistent/docker.sock"), "{err}");
    assert!(err.contains("docker info"), "{err}");
}

#[test]
fn terminal_output_has_step_headers_and_a_summary() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - hello: echo hi there\n"
    ));
    let out = p.run(&[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("==> step hello"), "{stdout}");
    assert!(stdout.contains("hi there"), "{stdout}");
    assert!(stdout.contains("<== step hello exited 0"), "{stdout}");
    assert!(stdout.contains("main                 success"), "{stdout}");
}

/// A job image without `tar` cannot unpack the setup archive in the first step's exec: berth
/// uploads it instead and runs that step once, with the source, scripts and shell state all in
/// place. A step's own exit 254 (the code the unpack uses) stays that step's failure.
#[test]
fn an_image_without_tar_still_gets_its_source_and_exit_254_stays_the_steps_own() {
    if !docker() {
        return;
    }
    const NO_TAR: &str = "berth-test/h3-no-tar:latest";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        // Not busybox: its shell runs its own `tar` applet whatever is on disk.
        format!("FROM {DEBIAN}\nRUN rm /usr/bin/tar\n"),
    )
    .unwrap();
    let built = std::process::Command::new("docker")
        .args(["build", "-q", "-t", NO_TAR])
        .arg(dir.path())
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let p = Project::new(&format!(
        r#"
jobs:
  notar:
    image: {NO_TAR}
    requires: [~commit]
    steps:
      - first: |
          echo first-ran
          command -v tar || echo no-tar-here
          cat data/input.txt
          export KEPT=yes
          cd data
      - second: echo "kept=$KEPT pwd=$(pwd)"
  own:
    image: {BUSYBOX}
    requires: [~commit]
    steps:
      - first: echo own-ran; exit 254
"#
    ));
    p.write("data/input.txt", "source-file-content\n");
    let run = p.run_json(&["--parallel", "2"]);
    run.assert_code(1);
    assert_eq!(run.status("notar"), "success", "{}", run.dump());
    let out = run.output("notar");
    assert_eq!(out.matches("first-ran").count(), 1, "{out}");
    assert!(out.contains("no-tar-here"), "{out}");
    assert!(out.contains("source-file-content"), "{out}");
    assert!(out.contains("kept=yes pwd=/sd/workspace/src/data"), "{out}");
    assert_eq!(run.result("own")["exit_code"], 254, "{}", run.dump());
    assert_eq!(run.output("own").matches("own-ran").count(), 1);
    run.assert_nothing_left();
}
