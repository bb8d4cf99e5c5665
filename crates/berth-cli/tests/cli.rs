//! The command line without Docker: help text, validation errors, usage errors and exit codes.

mod common;

use common::Project;

fn berth(p: &Project, args: &[&str]) -> (i32, String, String) {
    let o = p.command(args).output().unwrap();
    let clean =
        |b: &[u8]| String::from_utf8_lossy(b).replace(&p.path().display().to_string(), "<dir>");
    (
        o.status.code().unwrap_or(-1),
        clean(&o.stdout),
        clean(&o.stderr),
    )
}

#[test]
fn help_documents_commands_and_exit_codes() {
    let p = Project::new("");
    let (code, out, _) = berth(&p, &["--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", out);
    let (code, out, _) = berth(&p, &["run", "--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("run_help", out);
}

#[test]
fn validate_accepts_a_good_file() {
    let p = Project::new(
        "shared:\n  image: alpine\njobs:\n  main:\n    requires: [~commit]\n    steps:\n      - test: echo ok\n",
    );
    let (code, out, err) = berth(&p, &["validate"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "<dir>/screwdriver.yaml: ok (1 job)\n");
}

#[test]
fn validate_prints_file_line_col_errors_with_suggestions_and_exits_2() {
    let p = Project::new(
        "jobs:\n  main:\n    imag: alpine\n    requires: [~commit, nope]\n    steps:\n      - test: echo ok\n",
    );
    let (code, _, err) = berth(&p, &["validate"]);
    assert_eq!(code, 2);
    insta::assert_snapshot!("validate_errors", err);
}

#[test]
fn yaml_syntax_errors_point_at_the_line() {
    let p = Project::new("jobs:\n  main:\n    image: [unclosed\n");
    let (code, _, err) = berth(&p, &["validate"]);
    assert_eq!(code, 2);
    assert!(err.contains("screwdriver.yaml:"), "{err}");
    let (code, _, err) = berth(&p, &["run"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn missing_pipeline_file_is_a_usage_error() {
    let p = Project::new("");
    std::fs::remove_file(p.path().join("screwdriver.yaml")).unwrap();
    let (code, _, err) = berth(&p, &["run"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no pipeline file found") && err.contains("--file"),
        "{err}"
    );
}

#[test]
fn unknown_job_is_a_usage_error_with_a_suggestion() {
    let p = Project::new(
        "jobs:\n  main:\n    image: alpine\n    requires: [~commit]\n    steps: [{t: 'true'}]\n",
    );
    let (code, _, err) = berth(
        &p,
        &[
            "run",
            "--job",
            "mian",
            "--docker-host",
            "unix:///nonexistent.sock",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean `main`"), "{err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let p = Project::new("jobs: {}\n");
    assert_eq!(berth(&p, &["run", "--timeout", "5x"]).0, 2);
    assert_eq!(berth(&p, &["run", "--pull", "sometimes"]).0, 2);
    assert_eq!(berth(&p, &["frobnicate"]).0, 2);
}
