//! berth reaching a daemon over TCP with TLS, the way the docker CLI does (`DOCKER_HOST=tcp://…`,
//! `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`), against a real TLS daemon: the nested daemon of a
//! `docker: dind` job, which listens only on TLS 2376 with per-job certificates. The job runs
//! this very `berth` binary inside, with the environment dind gives it, so the inner berth runs a
//! pipeline on the nested daemon. The failures a user can cause (missing certificates, TLS off
//! against a TLS port) must end with exit 3 and a message that says what to fix.

mod common;

use common::*;

#[test]
fn berth_runs_a_pipeline_on_a_tls_daemon_from_docker_env_and_explains_tls_mistakes() {
    if !docker() {
        return;
    }
    let p = Project::new(&format!(
        r#"
jobs:
  main:
    image: {DEBIAN}
    requires: [~commit]
    docker: dind
    steps:
      - load: docker load -q -i busybox.tar
      - inner: |
          cd inner
          ../berth run --json --pull never > run.json 2> run.err; echo "inner-exit=$?"
          grep -o '"status":"[a-z]*"' run.json | sort -u
          grep -o 'said-inside-[a-z-]*' run.json | sort -u
      - no-certs: |
          DOCKER_CERT_PATH=/nonexistent ../berth run --pull never > /dev/null 2> err; echo "no-certs-exit=$?"
          sed 's/^/no-certs: /' err
      - tls-off: |
          DOCKER_TLS_VERIFY= ../berth run --pull never > /dev/null 2> err; echo "tls-off-exit=$?"
          sed 's/^/tls-off: /' err
"#
    ));
    p.write(
        "inner/screwdriver.yaml",
        &format!(
            "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - hello: echo said-inside-$((6 * 7))-nested | tr -d 0-9\n"
        ),
    );
    std::fs::copy(berth_bin(), p.path().join("berth")).expect("copy berth");
    add_busybox_tar(&p);

    let run = p.run_json(&["--dind-image", DEBIAN]);
    run.assert_code(0);
    let out = run.output("main");
    println!("TLS: job output:\n{out}");
    // The inner berth connected over TLS with the job's DOCKER_* variables and ran its job.
    assert!(out.contains("inner-exit=0"), "{out}");
    assert!(out.contains("\"status\":\"success\""), "{out}");
    assert!(out.contains("said-inside--nested"), "{out}");
    // Missing certificate files: infrastructure error naming the file to provide.
    assert!(out.contains("no-certs-exit=3"), "{out}");
    let no_certs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("no-certs: "))
        .collect();
    assert!(
        no_certs
            .iter()
            .any(|l| l.contains("/nonexistent/ca.pem") || l.contains("/nonexistent/")),
        "the error names the certificate path: {no_certs:?}\n{out}"
    );
    assert!(
        no_certs
            .iter()
            .any(|l| l.contains("hint: check the TLS files in /nonexistent")),
        "the hint says what to fix: {no_certs:?}"
    );
    // TLS off against a TLS-only port: infrastructure error, not a hang.
    assert!(out.contains("tls-off-exit=3"), "{out}");
    let tls_off: Vec<&str> = out.lines().filter(|l| l.starts_with("tls-off: ")).collect();
    assert!(
        tls_off.iter().any(|l| l.contains("tcp://docker:2376")),
        "the error names the daemon address: {tls_off:?}\n{out}"
    );
    assert!(
        tls_off
            .iter()
            .any(|l| l.contains("hint: the daemon requires TLS")),
        "the hint says what to fix: {tls_off:?}"
    );
    run.assert_nothing_left();
}
