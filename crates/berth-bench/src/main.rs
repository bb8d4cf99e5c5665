//! `berth-bench`: runs each scenario as interleaved pairs (berth, baseline, berth, baseline, …)
//! after a warm-up, measuring whole processes from outside, and writes a Markdown report of
//! medians, ranges and the median ratio. No thresholds: performance is judged from the report.

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
    let reps = args.reps.unwrap_or(if args.quick { 2 } else { 7 });
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
    let mut results = Vec::new();
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
            Err(e) => eprintln!("bench: {} failed: {e:#}", s.name),
        }
    }
    let text = report::render(&results, &args.command, args.quick)?;
    std::fs::write(&args.out, text)?;
    eprintln!("bench: wrote {}", args.out.display());
    let _ = std::fs::remove_dir_all(&work);
    if results.is_empty() {
        anyhow::bail!("no scenario produced a result");
    }
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
