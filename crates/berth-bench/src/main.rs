//! `berth-bench`: runs each scenario as interleaved pairs (berth, baseline, berth, baseline, …)
//! after a warm-up, measuring whole processes from outside, and writes a Markdown report of
//! medians, ranges and the median ratio. No thresholds: performance is judged from the report.

mod http;
mod load;
mod measure;
mod report;
mod scenarios;

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "berth-bench")]
struct Args {
    /// The berth binary to measure.
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// Tiny sizes and few repetitions (CI runs this so the harness never rots).
    #[arg(long)]
    quick: bool,
    /// Repetitions of each side (after one warm-up pair).
    #[arg(long)]
    reps: Option<usize>,
    /// Where the report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// The command line to record in the report.
    #[arg(long, default_value = "scripts/bench")]
    command: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 7 });
    let berth = std::fs::canonicalize(&args.berth).map_err(|e| {
        anyhow::anyhow!(
            "berth binary {}: {e} (build it first)",
            args.berth.display()
        )
    })?;
    let work = tempdir()?;
    let ctx = scenarios::Ctx {
        berth,
        work: work.clone(),
        quick: args.quick,
        reps,
    };
    let load_start = report::loadavg();
    let mut results = Vec::new();
    let mut failed = Vec::new();
    scenarios::remove_labelled();
    for s in scenarios::all() {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !s.name.contains(o.as_str()))
        {
            continue;
        }
        eprintln!("bench: {}", s.name);
        match (s.run)(&ctx) {
            Ok(r) => results.extend(r),
            Err(e) => {
                eprintln!("bench: {} failed: {e:#}", s.name);
                failed.push(s.name);
            }
        }
    }
    scenarios::remove_labelled();
    let previous = std::fs::read_to_string(&args.out).ok();
    let text = report::render(
        &results,
        &args.command,
        args.quick,
        &load_start,
        previous.as_deref(),
    )?;
    std::fs::write(&args.out, text)?;
    eprintln!("bench: wrote {}", args.out.display());
    let _ = std::fs::remove_dir_all(&work);
    // No thresholds: numbers never fail the run, only a scenario that could not be measured.
    if !failed.is_empty() {
        anyhow::bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
