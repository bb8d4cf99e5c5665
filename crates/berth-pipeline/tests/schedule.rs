//! The scheduler: triggers and filters, joins, OR requirements, skipping, `--job`.

use berth_pipeline::{Event, Pipeline, Scheduler, SelectError, Skipped, Start, parse};

/// A pipeline from `name: requires` lines (requires as YAML flow list text).
fn pipeline(jobs: &[(&str, &str)]) -> Pipeline {
    let mut src = String::from("shared:\n  image: alpine\n  steps: [true]\njobs:\n");
    for (name, requires) in jobs {
        src.push_str(&format!("  {name}:\n    requires: {requires}\n"));
    }
    parse(&src, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn commit(branch: &str) -> Start {
    Start::Event {
        event: Event::Commit,
        branch: branch.into(),
        tag: None,
    }
}

fn skipped(s: &Scheduler) -> Vec<(String, String)> {
    s.skipped()
        .into_iter()
        .map(|Skipped { job, reason }| (job, reason))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Runs to completion; `fails` lists jobs that fail. Returns the order jobs were handed out.
fn run(s: &mut Scheduler, fails: &[&str]) -> Vec<String> {
    let mut order = Vec::new();
    loop {
        let ready = s.take_ready();
        if ready.is_empty() {
            return order;
        }
        for j in ready {
            s.finish(&j, !fails.contains(&j.as_str()));
            order.push(j);
        }
    }
}

#[test]
fn chain_runs_in_order() {
    let p = pipeline(&[("a", "[~commit]"), ("b", "[a]"), ("c", "[b]")]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    assert_eq!(s.take_ready(), ["a"]);
    assert!(s.take_ready().is_empty());
    s.finish("a", true);
    assert_eq!(s.take_ready(), ["b"]);
    s.finish("b", true);
    assert_eq!(s.take_ready(), ["c"]);
    s.finish("c", true);
    assert!(s.take_ready().is_empty());
    assert!(s.skipped().is_empty());
}

#[test]
fn join_waits_for_all() {
    let p = pipeline(&[("a", "[~commit]"), ("b", "[~commit]"), ("join", "[a, b]")]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    assert_eq!(s.take_ready(), ["a", "b"]);
    s.finish("a", true);
    assert!(s.take_ready().is_empty());
    s.finish("b", true);
    assert_eq!(s.take_ready(), ["join"]);
}

#[test]
fn or_runs_once() {
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("b", "[~commit]"),
        ("either", "[~a, ~b]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    assert_eq!(s.take_ready(), ["a", "b"]);
    s.finish("a", true);
    assert_eq!(s.take_ready(), ["either"]);
    s.finish("b", true);
    assert!(s.take_ready().is_empty(), "runs at most once");
}

#[test]
fn or_survives_one_failed_upstream() {
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("b", "[~commit]"),
        ("either", "[~a, ~b]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    s.take_ready();
    s.finish("a", false);
    assert!(
        skipped(&s).iter().all(|(j, _)| j != "either"),
        "b may still trigger it"
    );
    s.finish("b", true);
    assert_eq!(s.take_ready(), ["either"]);
    assert!(s.skipped().is_empty());
}

#[test]
fn or_skipped_when_all_upstreams_fail() {
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("b", "[~commit]"),
        ("either", "[~a, ~b]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    s.take_ready();
    s.finish("a", false);
    s.finish("b", false);
    assert_eq!(skipped(&s), pairs(&[("either", "upstream `b` failed")]));
}

#[test]
fn failure_skips_downstream_transitively() {
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("b", "[a]"),
        ("c", "[b]"),
        ("d", "[~c]"),
        ("other", "[~commit]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    let order = run(&mut s, &["a"]);
    assert_eq!(order, ["a", "other"]);
    assert_eq!(
        skipped(&s),
        pairs(&[
            ("b", "upstream `a` failed"),
            ("c", "upstream `a` failed"),
            ("d", "upstream `a` failed")
        ])
    );
}

#[test]
fn join_with_failed_side_is_skipped() {
    let p = pipeline(&[("a", "[~commit]"), ("b", "[~commit]"), ("join", "[a, b]")]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    run(&mut s, &["b"]);
    assert_eq!(skipped(&s), pairs(&[("join", "upstream `b` failed")]));
}

#[test]
fn join_whose_other_side_never_ran() {
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("b", "[~pr]"),
        ("join", "[a, b]"),
        ("unrelated", "[b]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    assert_eq!(run(&mut s, &[]), ["a"]);
    assert_eq!(
        skipped(&s),
        pairs(&[("join", "requirement `b` did not run")])
    );
}

#[test]
fn trigger_filters() {
    let p = pipeline(&[
        ("any-commit", "[~commit]"),
        ("main-only", "['~commit:main']"),
        ("feature", "['~commit:/^feature-/']"),
        ("pr-main", "['~pr:main']"),
        ("tags", "['~tag:/^v\\d+/']"),
        ("any-tag", "[~tag]"),
        ("release", "['~release:v1.0.0']"),
    ]);
    let ready = |start: Start| Scheduler::new(&p, &start).map(|mut s| s.take_ready());
    assert_eq!(ready(commit("main")).unwrap(), ["any-commit", "main-only"]);
    assert_eq!(
        ready(commit("feature-x")).unwrap(),
        ["any-commit", "feature"]
    );
    let pr = Start::Event {
        event: Event::Pr,
        branch: "main".into(),
        tag: None,
    };
    assert_eq!(ready(pr).unwrap(), ["pr-main"]);
    let pr_dev = Start::Event {
        event: Event::Pr,
        branch: "dev".into(),
        tag: None,
    };
    assert_eq!(
        ready(pr_dev).unwrap_err(),
        SelectError::NothingTriggered("~pr on branch dev".into())
    );
    let tag = |t: Option<&str>| Start::Event {
        event: Event::Tag,
        branch: "main".into(),
        tag: t.map(String::from),
    };
    assert_eq!(ready(tag(Some("v2.1"))).unwrap(), ["tags", "any-tag"]);
    assert_eq!(ready(tag(Some("nightly"))).unwrap(), ["any-tag"]);
    assert_eq!(
        ready(tag(None)).unwrap(),
        ["any-tag"],
        "a filtered trigger needs a tag"
    );
    let release = |t: &str| Start::Event {
        event: Event::Release,
        branch: "main".into(),
        tag: Some(t.into()),
    };
    assert_eq!(ready(release("v1.0.0")).unwrap(), ["release"]);
    assert_eq!(
        ready(release("v2")).unwrap_err().to_string(),
        "no job is triggered by ~release v2"
    );
}

#[test]
fn nothing_triggered_message() {
    let p = pipeline(&[("a", "[~pr]")]);
    let e = Scheduler::new(&p, &commit("main")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no job is triggered by ~commit on branch main"
    );
}

#[test]
fn selected_jobs_only() {
    let p = pipeline(&[
        ("build", "[~commit]"),
        ("test", "[build]"),
        ("deploy", "[test]"),
    ]);
    let mut s = Scheduler::new(
        &p,
        &Start::Jobs(vec!["test".into(), "build".into(), "test".into()]),
    )
    .unwrap();
    assert_eq!(s.take_ready(), ["test", "build"]);
    s.finish("build", true);
    s.finish("test", false);
    assert!(s.take_ready().is_empty());
    assert!(s.skipped().is_empty(), "nothing downstream is reported");
}

#[test]
fn unknown_selected_job() {
    let p = pipeline(&[("build", "[~commit]")]);
    let e = Scheduler::new(&p, &Start::Jobs(vec!["biuld".into()])).unwrap_err();
    assert_eq!(
        e,
        SelectError::UnknownJob {
            name: "biuld".into(),
            suggestion: Some("build".into())
        }
    );
    assert_eq!(e.to_string(), "unknown job `biuld`, did you mean `build`?");
    let e = Scheduler::new(&p, &Start::Jobs(vec!["zzzzzz".into()])).unwrap_err();
    assert_eq!(e.to_string(), "unknown job `zzzzzz`");
}

#[test]
fn remote_requirements_never_fire() {
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("remote", "[~sd@12:publish]"),
        ("both", "[a, sd@12:publish]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    assert_eq!(run(&mut s, &[]), ["a", "both"]);
    assert!(
        s.skipped().is_empty(),
        "jobs only reachable from remotes are not listed"
    );
}

#[test]
fn diamond_with_or_and_join() {
    // a -> (b, c) -> d joins b and c; e runs after either b or c.
    let p = pipeline(&[
        ("a", "[~commit]"),
        ("b", "[a]"),
        ("c", "[a]"),
        ("d", "[b, c]"),
        ("e", "[~b, ~c]"),
    ]);
    let mut s = Scheduler::new(&p, &commit("main")).unwrap();
    assert_eq!(run(&mut s, &["c"]), ["a", "b", "c", "e"]);
    assert_eq!(skipped(&s), pairs(&[("d", "upstream `c` failed")]));
}
