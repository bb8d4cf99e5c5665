//! Scenarios 1, 2, 3 and 7: plain jobs, measured against the docker CLI.

use std::process::Command;

use super::{BENCH_LABEL, BUSYBOX, Ctx, berth_run, clean_outputs, project};
use crate::measure::{Sample, pair, run, sh};
use crate::report::{Result, median};

pub fn trivial_job(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let dir = project(
        ctx,
        "trivial",
        &format!(
            "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - t: \"true\"\n"
        ),
    )?;
    let (a, b) = pair(
        ctx.reps,
        || run(berth_run(ctx, &dir, &[])),
        || run(sh(&format!("docker run --rm {BUSYBOX} true"))),
    )?;
    clean_outputs();
    Ok(vec![Result {
        scenario: "1. trivial job".into(),
        berth_label: "`berth run` of one job, one step `true`".into(),
        baseline_label: format!("`docker run --rm {BUSYBOX} true`"),
        berth: a,
        baseline: b,
        note: String::new(),
        target: "≤ 1.2×".into(),
    }])
}

pub fn ten_steps(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let steps: String = (1..=10)
        .map(|i| format!("      - s{i}: \"true\"\n"))
        .collect();
    let dir = project(
        ctx,
        "ten",
        &format!(
            "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n{steps}"
        ),
    )?;
    let cli = format!(
        "c=$(docker run -d --label {BENCH_LABEL}=1 {BUSYBOX} sleep 3600) && for i in 1 2 3 4 5 6 7 8 9 10; do docker exec $c true || exit 1; done; docker rm -f $c >/dev/null"
    );
    let (a, b) = pair(
        ctx.reps,
        || run(berth_run(ctx, &dir, &[])),
        || run(sh(&cli)),
    )?;
    clean_outputs();
    Ok(vec![Result {
        scenario: "2. ten steps".into(),
        berth_label: "`berth run` of one job with ten `true` steps".into(),
        baseline_label: "`docker run -d`, ten `docker exec … true`, `docker rm -f` (docker CLI)"
            .into(),
        berth: a,
        baseline: b,
        note: String::new(),
        target: "≤ 1.0×".into(),
    }])
}

pub fn log_throughput(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let sizes: &[u64] = if ctx.quick {
        &[2_000_000]
    } else {
        &[20_000_000, 200_000_000]
    };
    let line = "0123456789012345678901234567890123456789012345678901234567890123456789z";
    let mut out = Vec::new();
    let started = Command::new("docker")
        .args(["run", "-d", "--label", &format!("{BENCH_LABEL}=1"), BUSYBOX])
        .args(["sleep", "3600"])
        .output()?;
    if !started.status.success() {
        super::remove_labelled();
        anyhow::bail!(
            "docker run -d: {}",
            String::from_utf8_lossy(&started.stderr).trim()
        );
    }
    let container = String::from_utf8(started.stdout)?.trim().to_string();
    for &size in sizes {
        let generator = format!("yes {line} | head -c {size}");
        let dir = project(
            ctx,
            &format!("log{size}"),
            &format!(
                "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - flood: {generator}\n"
            ),
        )?;
        let cli = format!("docker exec {container} sh -c '{generator}' > /dev/null");
        let r = pair(
            ctx.reps,
            || run(berth_run(ctx, &dir, &[])),
            || run(sh(&cli)),
        );
        clean_outputs();
        let (a, b): (Vec<Sample>, Vec<Sample>) = r?;
        let mb = size as f64 / 1e6;
        let tput =
            |v: &[Sample]| mb / median(&v.iter().map(|s| s.wall).collect::<Vec<_>>()).as_secs_f64();
        let peak = a.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0);
        out.push(Result {
            scenario: format!("3. log throughput {mb:.0} MB"),
            berth_label: "`berth run`, one step printing 72-byte lines (stdout to /dev/null, log file written)".into(),
            baseline_label: "`docker exec C sh -c '…' > /dev/null` on a running container".into(),
            note: format!(
                "throughput berth {:.0} MB/s vs CLI {:.0} MB/s ({:.2}×); berth peak RSS {:.1} MiB.",
                tput(&a),
                tput(&b),
                tput(&a) / tput(&b),
                peak as f64 / 1024.0
            ),
            berth: a,
            baseline: b,
            target: "throughput ≥ 0.9× (time ratio ≤ 1.11×), RSS ≤ 64 MB".into(),
        });
    }
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .output();
    Ok(out)
}

pub fn parallel_jobs(ctx: &Ctx) -> anyhow::Result<Vec<Result>> {
    let n = if ctx.quick { 4 } else { 20 };
    let jobs: String = (1..=n)
        .map(|i| format!("  j{i}:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n      - t: \"true\"\n"))
        .collect();
    let dir = project(ctx, "parallel", &format!("jobs:\n{jobs}"))?;
    let cli = format!("seq {n} | xargs -P {n} -I{{}} docker run --rm {BUSYBOX} true");
    let np = n.to_string();
    let (a, b) = pair(
        ctx.reps,
        || run(berth_run(ctx, &dir, &["--parallel", &np])),
        || run(sh(&cli)),
    )?;
    clean_outputs();
    Ok(vec![Result {
        scenario: format!("7. {n} parallel jobs"),
        berth_label: format!("`berth run --parallel {n}` of {n} independent trivial jobs"),
        baseline_label: format!("{n} concurrent `docker run --rm` (`xargs -P {n}`)"),
        berth: a,
        baseline: b,
        note: String::new(),
        target: "≤ 1.3×".into(),
    }])
}
