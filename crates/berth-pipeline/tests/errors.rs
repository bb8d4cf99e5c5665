//! Every kind of diagnostic, checked on its exact rendered text (insta snapshots).

use berth_pipeline::{Diagnostics, Severity, parse};

fn err(src: &str) -> String {
    match parse(src, "screwdriver.yaml") {
        Ok(p) => panic!(
            "expected errors, got a pipeline with jobs {:?}",
            p.jobs.keys()
        ),
        Err(d) => d.to_string(),
    }
}

macro_rules! case {
    ($name:ident, $src:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(err($src));
        }
    };
}

case!(
    unknown_job_key_with_suggestion,
    "jobs:\n  main:\n    imag: node:20\n    steps:\n      - build: make\n"
);
case!(
    unknown_top_level_key,
    "jobz:\n  main: {image: x, steps: [a]}\n"
);
case!(
    unknown_key_without_suggestion,
    "jobs:\n  main:\n    image: x\n    steps: [a]\n    frobnicate: true\n"
);
case!(
    template_not_supported,
    "jobs:\n  main:\n    template: sd/node@1\n    image: x\n    steps: [a]\nstages:\n  s: {}\n"
);
case!(
    missing_image_and_steps,
    "jobs:\n  main:\n    requires: [~commit]\n"
);
case!(empty_steps, "jobs:\n  main:\n    image: x\n    steps: []\n");
case!(yaml_syntax_error, "jobs:\n  main:\n    image: [1\n");
case!(
    yaml_duplicate_key,
    "jobs:\n  main: {image: x, steps: [a]}\n  main: {image: y}\n"
);
case!(yaml_unknown_anchor, "jobs:\n  main: *nope\n");
case!(yaml_tab_indentation, "jobs:\n\tmain: {}\n");
case!(empty_file, "");
case!(not_a_map, "- a\n- b\n");
case!(no_jobs_key, "shared:\n  image: x\n");
case!(empty_jobs, "jobs: {}\n");
case!(
    invalid_job_name,
    "jobs:\n  'my job': {image: x, steps: [a]}\n"
);
case!(
    requires_in_shared,
    "shared:\n  requires: [a]\njobs:\n  a: {image: x, steps: [a]}\n"
);
case!(
    unknown_required_job,
    "jobs:\n  main:\n    image: x\n    steps: [a]\n    requires: [~commit, bild]\n  build: {image: x, steps: [a]}\n"
);
case!(
    job_requires_itself,
    "jobs:\n  a: {image: x, steps: [a], requires: [a]}\n"
);
case!(
    requirement_cycle,
    "jobs:\n  a:\n    image: x\n    steps: [a]\n    requires: [~commit, c]\n  b:\n    image: x\n    steps: [a]\n    requires: [a]\n  c:\n    image: x\n    steps: [a]\n    requires: [~b]\n"
);
case!(
    invalid_requirements,
    "jobs:\n  a:\n    image: x\n    steps: [a]\n    requires: ['~commit:/[/', 'sd@x:y', '~foo:bar', 'a b', '~pr:', 7]\n"
);
case!(
    step_errors,
    "jobs:\n  a:\n    image: x\n    steps:\n      - build: make\n        test: make test\n      - lint: one\n      - lint: two\n      - 'x y': z\n      - {}\n      - [1]\n      - empty: ''\n      - nested: {a: b}\n"
);
case!(
    environment_errors,
    "jobs:\n  a:\n    image: x\n    steps: [make]\n    environment:\n      FOO-BAR: 1\n      OK: {a: 1}\n      NUL:\n    secrets: [A, 1B, {x: 1}]\n"
);
case!(
    environment_not_a_map,
    "jobs:\n  a:\n    image: x\n    steps: [make]\n    environment: [A=1]\n"
);
case!(
    docker_errors,
    "jobs:\n  a:\n    image: x\n    steps: [make]\n    docker: sokcet\n  b:\n    image: x\n    steps: [make]\n    docker: socket\n    dind: {tls: false, cach: x}\n  c:\n    image: x\n    steps: [make]\n    docker: dind\n    dind: {cache: '-bad', tls: 1, runtime: ''}\n  d:\n    image: x\n    steps: [make]\n    docker: podman\n"
);
case!(
    shared_dind_without_dind_jobs,
    "shared:\n  dind: {tls: false}\njobs:\n  a: {image: x, steps: [a]}\n"
);
case!(
    annotation_errors,
    "jobs:\n  a:\n    image: x\n    steps: [make]\n    annotations:\n      screwdriver.cd/timeout: -1\n      screwdriver.cd/cpu: MEGA\n      screwdriver.cd/ram: 0\n      screwdriver.cd/dockerEnabled: maybe\n"
);
case!(
    service_errors,
    "jobs:\n  a:\n    image: x\n    steps: [make]\n    services:\n      - {alias: db}\n      - image: pg\n        aliass: [x]\n      - image: redis\n        timeout: 0\n      - 42\n      - image: mysql\n        alias: 'bad alias'\n      - image: nginx\n        command: \"nginx -g 'daemon off;\"\n"
);
case!(
    parameter_errors,
    "parameters:\n  1X: a\n  Y:\n  Z: {valu: 1}\n  W: []\njobs:\n  a: {image: x, steps: [a]}\n"
);

#[test]
fn errors_come_before_warnings() {
    let d: Diagnostics = parse(
        "cache: {}\njobs:\n  a: {image: x, steps: [a], imag: y}\n",
        "f.yaml",
    )
    .unwrap_err();
    let sev: Vec<Severity> = d.0.iter().map(|d| d.severity).collect();
    assert_eq!(sev, [Severity::Error, Severity::Warning]);
    assert_eq!(
        d.0[0].source_line.as_deref(),
        Some("  a: {image: x, steps: [a], imag: y}")
    );
}

#[test]
fn shared_errors_are_reported_once() {
    let d = parse("shared:\n  annotations: {screwdriver.cd/timeout: x}\njobs:\n  a: {image: x, steps: [a]}\n  b: {image: x, steps: [a]}\n", "f").unwrap_err();
    assert_eq!(d.0.len(), 1, "{d}");
}
