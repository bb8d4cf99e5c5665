//! The Markdown report: machine, engine, command, and per scenario the median and min–max of
//! both sides and the median ratio.

use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

use crate::measure::Sample;

pub struct Result {
    pub scenario: String,
    pub berth_label: String,
    pub baseline_label: String,
    pub berth: Vec<Sample>,
    pub baseline: Vec<Sample>,
    /// Extra line (e.g. throughput, peak RSS).
    pub note: String,
    /// The target from the issue, for the reader.
    pub target: String,
}

pub fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        Duration::ZERO
    } else {
        v[v.len() / 2]
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn range(v: &[Duration]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!("{}–{}", secs(min), secs(max))
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Everything from this line on in an existing report is hand-written analysis, kept when the
/// harness rewrites the measured part above it.
pub const ANALYSIS_MARKER: &str =
    "<!-- analysis: kept by berth-bench when it rewrites the tables above -->";

/// The report, keeping `previous`'s hand-written analysis (after [`ANALYSIS_MARKER`]).
pub fn render(
    results: &[Result],
    command: &str,
    quick: bool,
    load_start: &str,
    previous: Option<&str>,
) -> anyhow::Result<String> {
    let mut s = measured(results, command, quick, load_start)?;
    if let Some(i) = previous.and_then(|p| p.find(ANALYSIS_MARKER)) {
        s.push('\n');
        s.push_str(&previous.unwrap_or_default()[i..]);
    }
    Ok(s)
}

/// The 1, 5 and 15 minute load averages, as the kernel reports them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_default()
}

fn measured(
    results: &[Result],
    command: &str,
    quick: bool,
    load_start: &str,
) -> anyhow::Result<String> {
    let mut s = String::new();
    writeln!(s, "# Benchmarks\n")?;
    if quick {
        writeln!(
            s,
            "**Quick mode** (tiny sizes, few repetitions: checks the harness, not performance).\n"
        )?;
    }
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    writeln!(
        s,
        "- date: {}",
        cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )?;
    writeln!(
        s,
        "- machine: {} cores, {mem}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    )?;
    writeln!(
        s,
        "- engine: Docker {}",
        cmd_out(
            "docker",
            &[
                "version",
                "--format",
                "{{.Server.Version}} (API {{.Server.APIVersion}})"
            ]
        )
    )?;
    writeln!(s, "- command: `{command}`")?;
    writeln!(
        s,
        "- load average (1 / 5 / 15 min): {load_start} at the start, {} at the end (other work on the machine shows here)",
        loadavg()
    )?;
    writeln!(
        s,
        "- method: whole processes timed from outside; one warm-up pair, then interleaved repetitions (A B A B …); times in seconds\n"
    )?;
    writeln!(
        s,
        "| scenario | berth median (min–max) | baseline median (min–max) | ratio (medians) | target |"
    )?;
    writeln!(s, "|---|---|---|---|---|")?;
    for r in results {
        let a: Vec<_> = r.berth.iter().map(|x| x.wall).collect();
        let b: Vec<_> = r.baseline.iter().map(|x| x.wall).collect();
        let side = |v: &[Duration]| {
            if v.is_empty() {
                "—".to_string()
            } else {
                format!("{} ({})", secs(median(v)), range(v))
            }
        };
        let ratio = if a.is_empty() || b.is_empty() {
            "—".to_string()
        } else {
            format!(
                "{:.2}×",
                median(&a).as_secs_f64() / median(&b).as_secs_f64().max(1e-9)
            )
        };
        writeln!(
            s,
            "| {} | {} | {} | {ratio} | {} |",
            r.scenario,
            side(&a),
            side(&b),
            r.target
        )?;
    }
    writeln!(s, "\nSides and notes:\n")?;
    for r in results {
        writeln!(
            s,
            "- **{}** — berth: {}; baseline: {}. {}",
            r.scenario, r.berth_label, r.baseline_label, r.note
        )?;
    }
    Ok(s)
}
