//! Timing whole processes from outside: wall clock and peak RSS (sampled from /proc).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One measured process run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub wall: Duration,
    /// Peak resident set of the measured process itself, KiB.
    pub peak_rss_kib: u64,
}

/// Runs `cmd` to completion with output discarded; fails if it exits non-zero.
pub fn run(mut cmd: Command) -> anyhow::Result<Sample> {
    let desc = format!("{cmd:?}");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawn {desc}"))?;
    let mut peak = 0;
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            && let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak = peak.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = start.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!(
            "{desc} exited {status}: {}",
            err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(Sample {
        wall,
        peak_rss_kib: peak,
    })
}

pub fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

/// Runs the pair interleaved: one warm-up each, then `reps` alternating samples.
pub fn pair(
    reps: usize,
    mut a: impl FnMut() -> anyhow::Result<Sample>,
    mut b: impl FnMut() -> anyhow::Result<Sample>,
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    a()?;
    b()?;
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        sa.push(a()?);
        sb.push(b()?);
    }
    Ok((sa, sb))
}

/// Runs `cmd` to completion like [`run`], also returning each stdout line with the time it was
/// read (from the spawn). Used with `berth run --json` to time events from outside.
pub fn run_lines(mut cmd: Command) -> anyhow::Result<(Sample, Vec<(Duration, String)>)> {
    use std::io::BufRead;
    let desc = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawn {desc}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        lines.push((start.elapsed(), line?));
    }
    let status = child.wait()?;
    let wall = start.elapsed();
    let err = err.join().unwrap_or_default();
    LAST_STDERR.with(|e| *e.borrow_mut() = err.clone());
    if !status.success() {
        bail!(
            "{desc} exited {status}: {}",
            err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok((
        Sample {
            wall,
            peak_rss_kib: 0,
        },
        lines,
    ))
}

thread_local! {
    static LAST_STDERR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The stderr of the last [`run_lines`] on this thread.
pub fn last_stderr() -> String {
    LAST_STDERR.with(|e| e.borrow().clone())
}

/// Runs the sides interleaved (A B C A B C …) `reps` times after an optional warm-up round.
pub fn interleave<T>(
    reps: usize,
    warmup: bool,
    sides: &mut [&mut dyn FnMut() -> anyhow::Result<T>],
) -> anyhow::Result<Vec<Vec<T>>> {
    let mut out: Vec<Vec<T>> = sides.iter().map(|_| Vec::new()).collect();
    for rep in 0..reps + usize::from(warmup) {
        for (i, side) in sides.iter_mut().enumerate() {
            let v = side()?;
            if rep > 0 || !warmup {
                out[i].push(v);
            }
        }
    }
    Ok(out)
}
