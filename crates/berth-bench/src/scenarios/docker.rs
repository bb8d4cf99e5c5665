//! Scenarios 5 and 6: jobs that use Docker — ten `docker run`s from a step in socket, scoped and
//! dind modes, and how long a dind job takes from start to its first step.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use super::{BUSYBOX, Ctx, berth_run, clean_outputs, project};
use crate::measure::{Sample, interleave, last_stderr, run, run_lines, sh};
use crate::report::{Result, median};

/// The job image with the docker CLI (and the dind daemon image).
const DEBIAN: &str = "berth-test/debian:bookworm";

/// What one `berth run --json` showed: total wall, spawn → first step, and each step's own time.
struct JobRun {
    wall: Duration,
    to_first_step: Duration,
    steps: Vec<(String, Duration)>,
    /// berth announced the dind capability fallback (privileged refused by this host).
    fallback: bool,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split(&format!("\"{key}\":")).nth(1)?;
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    rest.split(['"', ',', '}']).next()
}

fn job_run(cmd: Command) -> anyhow::Result<JobRun> {
    let (s, lines) = run_lines(cmd)?;
    let to_first_step = lines
        .iter()
        .find(|(_, l)| field(l, "type") == Some("step_started"))
        .map(|(t, _)| *t)
        .context("no step_started event")?;
    let steps = lines
        .iter()
        .filter(|(_, l)| field(l, "type") == Some("step_finished"))
        .filter_map(|(_, l)| {
            Some((
                field(l, "step")?.to_string(),
                Duration::from_millis(field(l, "duration_ms")?.parse().ok()?),
            ))
        })
        .collect();
    let fallback = last_stderr().contains("refuses privileged")
        || lines.iter().any(|(_, l)| l.contains("refuses privileged"));
    Ok(JobRun {
        fallback,
        wall: s.wall,
        to_first_step,
        steps,
    })
}

fn sample(wall: Duration) -> Sample {
    Sample {
        wall,
        peak_rss_kib: 0,
    }
}

fn step_median(runs: &[JobRun], step: &str) -> Duration {
    median(
        &runs
            .iter()
            .filter_map(|r| r.steps.iter().find(|(s, _)| s == step).map(|(_, d)| *d))
            .collect::<Vec<_>>(),
    )
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn dind_args() -> [&'static str; 3] {
    ["--json", "--dind-image", DEBIAN]
}

pub fn docker_in_job(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let n = if ctx.quick { 2 } else { 10 };
    let lp = format!("for i in $(seq {n}); do docker run --rm {BUSYBOX} true || exit 1; done");
    let pipeline = |mode: &str, pre: &str| {
        format!(
            "jobs:\n  main:\n    image: {DEBIAN}\n    requires: [~commit]\n    docker: {mode}\n    steps:\n{pre}      - loop: {lp}\n"
        )
    };
    let socket = project(ctx, "docker-socket", &pipeline("socket", ""))?;
    let scoped = project(ctx, "docker-scoped", &pipeline("scoped", ""))?;
    // The nested daemon has an empty image store and there is no registry: load the image first.
    let dind = project(
        ctx,
        "docker-dind",
        &pipeline("dind", "      - load: docker load -q -i busybox.tar\n"),
    )?;
    let saved = Command::new("docker")
        .args(["save", "-o"])
        .arg(dind.join("busybox.tar"))
        .arg(BUSYBOX)
        .status()?;
    if !saved.success() {
        bail!("docker save {BUSYBOX} failed");
    }
    let host_loop =
        format!("for i in $(seq {n}); do docker run --rm {BUSYBOX} true || exit 1; done");
    let json = ["--json"];
    let scoped_works = match job_run(berth_run(ctx, &scoped, &json)) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("bench: docker: scoped does not run yet: {e:#}");
            false
        }
    };
    clean_outputs();

    // Socket and scoped (when it runs) against the host's own loop, interleaved.
    let mut host = Vec::new();
    let mut sock_runs = Vec::new();
    let mut scoped_runs = Vec::new();
    {
        let mut a = || -> anyhow::Result<()> {
            host.push(run(sh(&host_loop))?);
            Ok(())
        };
        let mut b = || -> anyhow::Result<()> {
            sock_runs.push(job_run(berth_run(ctx, &socket, &json))?);
            Ok(())
        };
        let mut c = || -> anyhow::Result<()> {
            if scoped_works {
                scoped_runs.push(job_run(berth_run(ctx, &scoped, &json))?);
            }
            Ok(())
        };
        interleave(ctx.reps, true, &mut [&mut a, &mut b, &mut c])?;
    }
    // Warm-up results are in the vectors too: drop them.
    host.remove(0);
    sock_runs.remove(0);
    if scoped_works {
        scoped_runs.remove(0);
    }
    clean_outputs();
    // dind is slow (a daemon per job): fewer repetitions, no warm-up in quick mode.
    let dind_reps = if ctx.quick { 1 } else { ctx.reps.min(5) };
    let mut dind_runs = Vec::new();
    let mut notice = false;
    for _ in 0..dind_reps {
        dind_runs.push(job_run(berth_run(ctx, &dind, &dind_args()))?);
        notice |= dind_runs.last().is_some_and(|r: &JobRun| r.fallback);
    }
    clean_outputs();

    let walls = |v: &[JobRun]| v.iter().map(|r| sample(r.wall)).collect::<Vec<_>>();
    let loop_note = |v: &[JobRun]| {
        format!(
            "the `loop` step itself took {} (median)",
            secs(step_median(v, "loop"))
        )
    };
    let mut out = vec![Result {
        scenario: format!("5. docker in a job: socket ({n} `docker run`)"),
        berth_label: format!(
            "`berth run` of a `docker: socket` job on {DEBIAN} whose step runs `docker run --rm {BUSYBOX} true` {n} times"
        ),
        baseline_label: "the same loop in a shell on the host".into(),
        note: format!("Whole job vs the bare loop: {}.", loop_note(&sock_runs)),
        berth: walls(&sock_runs),
        baseline: host,
        target: "— (reference for scoped)".into(),
    }];
    out.push(if scoped_works {
        Result {
            scenario: format!("5. docker in a job: scoped vs socket ({n} `docker run`)"),
            berth_label: "the same job with `docker: scoped`".into(),
            baseline_label: "the same job with `docker: socket`".into(),
            note: format!(
                "scoped: {}; socket: {}.",
                loop_note(&scoped_runs),
                loop_note(&sock_runs)
            ),
            berth: walls(&scoped_runs),
            baseline: walls(&sock_runs),
            target: "≤ 1.15×".into(),
        }
    } else {
        Result {
            scenario: format!("5. docker in a job: scoped vs socket ({n} `docker run`)"),
            berth_label: "the same job with `docker: scoped`".into(),
            baseline_label: "the same job with `docker: socket`".into(),
            note: "**pending**: this berth does not run `docker: scoped` jobs yet.".into(),
            berth: Vec::new(),
            baseline: walls(&sock_runs),
            target: "≤ 1.15×".into(),
        }
    });
    let startup = median(
        &dind_runs
            .iter()
            .map(|r| r.to_first_step)
            .collect::<Vec<_>>(),
    )
    .saturating_sub(median(
        &sock_runs
            .iter()
            .map(|r| r.to_first_step)
            .collect::<Vec<_>>(),
    ));
    out.push(Result {
        scenario: format!("5. docker in a job: dind vs socket ({n} `docker run`)"),
        berth_label: format!("the same job with `docker: dind` (TLS, `--dind-image {DEBIAN}`{}), plus a `docker load` step (no registry)", if notice { ", privileged refused here: capability fallback" } else { "" }),
        baseline_label: "the same job with `docker: socket`".into(),
        note: format!(
            "{} runs. Nested daemon start-up (dind's extra time to the first step over socket's): {}; `load` step {}; {}.",
            dind_runs.len(),
            secs(startup),
            secs(step_median(&dind_runs, "load")),
            loop_note(&dind_runs)
        ),
        berth: walls(&dind_runs),
        baseline: walls(&sock_runs),
        target: "reported separately".into(),
    });
    Ok(out)
}

pub fn dind_readiness(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let pipeline = |mode: &str| {
        format!(
            "jobs:\n  main:\n    image: {DEBIAN}\n    requires: [~commit]\n    docker: {mode}\n    steps:\n      - t: \"true\"\n"
        )
    };
    let dind = project(ctx, "ready-dind", &pipeline("dind"))?;
    let none = project(ctx, "ready-none", &pipeline("none"))?;
    let reps = if ctx.quick { 1 } else { ctx.reps };
    let mut notice = false;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        a.push(job_run(berth_run(ctx, &dind, &dind_args()))?);
        notice |= a.last().is_some_and(|r: &JobRun| r.fallback);
        b.push(job_run(berth_run(ctx, &none, &["--json"]))?);
    }
    clean_outputs();
    let first = |v: &[JobRun]| {
        v.iter()
            .map(|r| sample(r.to_first_step))
            .collect::<Vec<_>>()
    };
    Ok(vec![Result {
        scenario: "6. dind readiness (start → first step)".into(),
        berth_label: format!(
            "`berth run` of a `docker: dind` job (TLS on{}): time from the process start to its first `step_started` event",
            if notice {
                "; privileged is refused on this machine, so the capability fallback runs"
            } else {
                ""
            }
        ),
        baseline_label: "the same job without Docker (`docker: none`)".into(),
        note: format!(
            "{} runs, no warm-up (each job starts a fresh daemon). Absolute median is what the target is about; the ratio only shows the cost over a plain job.",
            a.len()
        ),
        berth: first(&a),
        baseline: first(&b),
        target: "≤ 4 s (absolute median)".into(),
    }])
}
