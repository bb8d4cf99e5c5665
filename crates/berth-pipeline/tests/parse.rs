//! `parse` on valid files: shared merging, anchors, steps, requires, services, docker.

use std::time::Duration;

use berth_pipeline::{
    DindOptions, DockerMode, Event, Filter, Job, Pipeline, Requirement, Value, parse,
};

fn ok(src: &str) -> Pipeline {
    match parse(src, "screwdriver.yaml") {
        Ok(p) => p,
        Err(e) => panic!("unexpected diagnostics:\n{e}"),
    }
}

fn job<'p>(p: &'p Pipeline, name: &str) -> &'p Job {
    &p.jobs[name]
}

fn step_names(j: &Job) -> Vec<&str> {
    j.steps.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn minimal_job() {
    let p = ok("jobs:\n  main:\n    image: node:20\n    steps:\n      - test: npm test\n");
    let j = job(&p, "main");
    assert_eq!(j.image, "node:20");
    assert_eq!(j.steps[0].command, "npm test");
    assert_eq!((j.location.line, j.location.column), (2, 3));
    assert_eq!(
        (j.steps[0].location.line, j.steps[0].location.column),
        (5, 9)
    );
    assert_eq!(j.docker, DockerMode::None);
    assert!(p.warnings.is_empty());
}

#[test]
fn shared_is_merged_into_jobs() {
    let p = ok(r#"
shared:
  image: node:18
  environment: {A: shared, B: shared}
  secrets: [S1, S2]
  annotations: {team: core, screwdriver.cd/timeout: 10}
  steps:
    - build: make
jobs:
  one:
    environment: {B: job, C: job}
    secrets: [S2, S3]
    annotations: {screwdriver.cd/timeout: 20}
  two:
    image: alpine
    steps: [echo two]
"#);
    let one = job(&p, "one");
    assert_eq!(one.image, "node:18");
    assert_eq!(step_names(one), ["build"]);
    let env: Vec<(&str, &str)> = one
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "shared"), ("B", "job"), ("C", "job")]);
    assert_eq!(one.secrets, ["S1", "S2", "S3"]);
    assert_eq!(one.annotations["team"], Value::String("core".into()));
    assert_eq!(one.annotations["screwdriver.cd/timeout"], Value::Int(20));
    assert_eq!(one.timeout, Some(Duration::from_secs(20 * 60)));
    let two = job(&p, "two");
    assert_eq!(two.image, "alpine");
    assert_eq!(step_names(two), ["step-1"]);
    assert_eq!(two.timeout, Some(Duration::from_secs(10 * 60)));
}

#[test]
fn environment_values_are_stringified_as_written() {
    let p = ok(
        "jobs:\n  a:\n    image: x\n    steps: [make]\n    environment:\n      F: 1.0\n      I: 0x10\n      B: true\n      Y: yes\n      S: 'quoted: yes'\n      E: \"\"\n",
    );
    let env = &job(&p, "a").environment;
    assert_eq!(env["F"], "1.0");
    assert_eq!(env["I"], "0x10");
    assert_eq!(env["B"], "true");
    assert_eq!(env["Y"], "yes");
    assert_eq!(env["S"], "quoted: yes");
    assert_eq!(env["E"], "");
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let p = ok(r#"
jobs:
  a: &job
    image: node
    environment: &env {X: "1", Y: "2"}
    steps:
      - &install {install: npm ci}
      - test: npm test
  b:
    <<: *job
    environment:
      <<: *env
      Y: "3"
    steps:
      - *install
      - deploy: ./deploy
"#);
    let b = job(&p, "b");
    assert_eq!(b.image, "node");
    assert_eq!(b.environment["X"], "1");
    assert_eq!(b.environment["Y"], "3");
    assert_eq!(step_names(b), ["install", "deploy"]);
    assert_eq!(b.steps[0].command, "npm ci");
    assert_eq!(b.steps[0].location.line, 15);
}

#[test]
fn multi_line_commands_are_kept() {
    let p = ok(
        "jobs:\n  a:\n    image: x\n    steps:\n      - build: |\n          make\n          make install\n      - folded: >-\n          echo a\n          b\n",
    );
    let j = job(&p, "a");
    assert_eq!(j.steps[0].command, "make\nmake install\n");
    assert_eq!(j.steps[1].command, "echo a b");
}

#[test]
fn teardown_steps_run_last_in_order() {
    let p = ok(
        "jobs:\n  a:\n    image: x\n    steps:\n      - teardown-b: one\n      - setup: two\n      - teardown-a: three\n      - echo four\n",
    );
    let j = job(&p, "a");
    assert_eq!(
        step_names(j),
        ["setup", "step-4", "teardown-b", "teardown-a"]
    );
    let teardown: Vec<bool> = j.steps.iter().map(|s| s.teardown).collect();
    assert_eq!(teardown, [false, false, true, true]);
}

#[test]
fn requires_forms() {
    let p = ok(r#"
jobs:
  commit: {image: x, steps: [a]}
  pr: {image: x, steps: [a]}
  a:
    image: x
    steps: [a]
    requires: [~commit, "~pr:main", "~commit:/^feature-/", ~tag, "~release:/^v/", commit, ~pr, sd@12:deploy, ~sd@3:x]
  b:
    image: x
    steps: [a]
    requires: ~a
"#);
    let r = &job(&p, "a").requires;
    assert_eq!(
        r[0],
        Requirement::Trigger {
            event: Event::Commit,
            filter: None
        }
    );
    assert_eq!(
        r[1],
        Requirement::Trigger {
            event: Event::Pr,
            filter: Some(Filter::Exact("main".into()))
        }
    );
    let Requirement::Trigger {
        event: Event::Commit,
        filter: Some(Filter::Regex(re)),
    } = &r[2]
    else {
        panic!("{r:?}")
    };
    assert_eq!(re.as_str(), "^feature-");
    assert_eq!(
        r[3],
        Requirement::Trigger {
            event: Event::Tag,
            filter: None
        }
    );
    assert!(matches!(
        &r[4],
        Requirement::Trigger {
            event: Event::Release,
            filter: Some(Filter::Regex(_))
        }
    ));
    assert_eq!(
        r[5],
        Requirement::Job {
            name: "commit".into(),
            any: false
        }
    );
    assert_eq!(
        r[6],
        Requirement::Trigger {
            event: Event::Pr,
            filter: None
        }
    );
    assert_eq!(
        r[7],
        Requirement::Remote {
            pipeline: 12,
            job: "deploy".into(),
            any: false
        }
    );
    assert_eq!(
        r[8],
        Requirement::Remote {
            pipeline: 3,
            job: "x".into(),
            any: true
        }
    );
    assert_eq!(
        job(&p, "b").requires,
        [Requirement::Job {
            name: "a".into(),
            any: true
        }]
    );
}

#[test]
fn services_and_aliases() {
    let p = ok(r#"
jobs:
  a:
    image: x
    steps: [a]
    services:
      - postgres:16
      - registry.example.com:5000/org/img:1.0
      - image: redis
        alias: cache
        aliases: [kv, cache]
        command: ["redis-server", "--port", "6380"]
        entrypoint: docker-entrypoint.sh --flag 'two words'
        environment: {A: 1}
        timeout: 30
"#);
    let s = &job(&p, "a").services;
    assert_eq!(s[0].aliases, ["postgres"]);
    assert_eq!(s[1].aliases, ["org-img", "img"]);
    assert_eq!(s[2].aliases, ["cache", "kv"]);
    assert_eq!(
        s[2].command.as_deref().unwrap(),
        ["redis-server", "--port", "6380"]
    );
    assert_eq!(
        s[2].entrypoint.as_deref().unwrap(),
        ["docker-entrypoint.sh", "--flag", "two words"]
    );
    assert_eq!(s[2].environment["A"], "1");
    assert_eq!(s[2].ready_timeout, Some(Duration::from_secs(30)));
}

#[test]
fn docker_modes() {
    let p = ok(r#"
shared:
  image: x
  steps: [a]
  dind: {tls: false}
jobs:
  plain:
    docker: dind
  custom:
    docker: dind
    dind: {runtime: sysbox-runc, cache: my-cache}
  socket-job:
    docker: socket
    dind: null
  scoped:
    docker: scoped
  enabled:
    annotations: {screwdriver.cd/dockerEnabled: true}
  explicit:
    annotations: {screwdriver.cd/dockerEnabled: true}
    docker: none
"#
    .replace("    dind: null\n", "")
    .as_str());
    assert_eq!(
        job(&p, "plain").docker,
        DockerMode::Dind(DindOptions {
            tls: false,
            runtime: None,
            cache: None
        })
    );
    assert_eq!(
        job(&p, "custom").docker,
        DockerMode::Dind(DindOptions {
            tls: false,
            runtime: Some("sysbox-runc".into()),
            cache: Some("my-cache".into())
        })
    );
    assert_eq!(job(&p, "scoped").docker, DockerMode::Scoped);
    assert_eq!(job(&p, "enabled").docker, DockerMode::Default);
    assert_eq!(job(&p, "explicit").docker, DockerMode::None);
}

#[test]
fn docker_default_dind_options() {
    let p = ok("jobs:\n  a: {image: x, steps: [a], docker: dind}\n");
    assert_eq!(
        job(&p, "a").docker,
        DockerMode::Dind(DindOptions::default())
    );
}

#[test]
fn resource_annotations() {
    let p = ok(r#"
jobs:
  a: {image: x, steps: [a], annotations: {screwdriver.cd/cpu: micro, screwdriver.cd/ram: MICRO}}
  b: {image: x, steps: [a], annotations: {screwdriver.cd/cpu: 1.5, screwdriver.cd/ram: "3"}}
  c: {image: x, steps: [a], annotations: {screwdriver.cd/cpu: Turbo, screwdriver.cd/ram: turbo}}
  d: {image: x, steps: [a], annotations: {screwdriver.cd/cpu: LOW, screwdriver.cd/ram: LOW, other: [1, {x: y}]}}
"#);
    const GIB: u64 = 1024 * 1024 * 1024;
    let r = |n: &str| job(&p, n).resources;
    assert_eq!((r("a").cpus, r("a").memory_bytes), (Some(0.5), Some(GIB)));
    assert_eq!(
        (r("b").cpus, r("b").memory_bytes),
        (Some(1.5), Some(3 * GIB))
    );
    assert_eq!(
        (r("c").cpus, r("c").memory_bytes),
        (Some(12.0), Some(16 * GIB))
    );
    assert_eq!(
        (r("d").cpus, r("d").memory_bytes),
        (Some(2.0), Some(2 * GIB))
    );
    assert_eq!(
        job(&p, "d").annotations["other"],
        Value::Seq(vec![
            Value::Int(1),
            Value::Map(
                [("x".to_string(), Value::String("y".into()))]
                    .into_iter()
                    .collect()
            )
        ])
    );
}

#[test]
fn parameters() {
    let p = ok(r#"
parameters:
  PLAIN: hello
  NUM: 3
  CHOICE: [a, b]
  FULL: {value: v, description: "a parameter"}
  FULL_CHOICE: {value: [x, y], description: d}
jobs:
  a:
    image: x
    steps: [a]
    parameters: {JOB_P: 1}
"#);
    let ps = &p.parameters;
    assert_eq!(ps["PLAIN"].value, "hello");
    assert_eq!(ps["NUM"].value, "3");
    assert_eq!(
        (ps["CHOICE"].value.as_str(), ps["CHOICE"].choices.len()),
        ("a", 2)
    );
    assert_eq!(ps["FULL"].description.as_deref(), Some("a parameter"));
    assert_eq!(ps["FULL_CHOICE"].value, "x");
    assert_eq!(ps["FULL_CHOICE"].choices, ["x", "y"]);
    assert_eq!(job(&p, "a").parameters["JOB_P"].value, "1");
}

#[test]
fn top_level_annotations_and_version() {
    let p = ok(
        "version: 4\nannotations:\n  screwdriver.cd/chainPR: true\njobs:\n  a: {image: x, steps: [a], description: Builds it}\n",
    );
    assert_eq!(p.annotations["screwdriver.cd/chainPR"], Value::Bool(true));
    assert_eq!(job(&p, "a").description.as_deref(), Some("Builds it"));
}

#[test]
fn accepted_but_not_applied_keys_warn() {
    let p = ok(
        "subscribe: {x: y}\nchildPipelines: {scmUrls: []}\njobs:\n  a:\n    image: x\n    steps: [a]\n    blockedBy: [b]\n    freezeWindows: ['* * * * *']\n    settings: {}\n  b: {image: x, steps: [a]}\n",
    );
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "screwdriver.yaml:1:1: warning: `subscribe` is not applied by local runs\n  |\n1 | subscribe: {x: y}\n  | ^",
            "screwdriver.yaml:2:1: warning: `childPipelines` is not applied by local runs\n  |\n2 | childPipelines: {scmUrls: []}\n  | ^",
            "screwdriver.yaml:7:5: warning: `blockedBy` is not applied by local runs\n  |\n7 |     blockedBy: [b]\n  |     ^",
            "screwdriver.yaml:8:5: warning: `freezeWindows` is not applied by local runs\n  |\n8 |     freezeWindows: ['* * * * *']\n  |     ^",
            "screwdriver.yaml:9:5: warning: `settings` is not applied by local runs\n  |\n9 |     settings: {}\n  |     ^",
        ]
    );
}
