//! Terminal and JSON rendering of runner events. Step output goes to stdout (raw bytes, prefixed
//! per line with the job name when several jobs run at once); berth's own messages go to stderr.
//! A closed stdout (`berth run | head`) is not an error: the run goes on, logs still reach files.

use std::collections::HashMap;
use std::io::Write;

use berth_runner::{BuildSummary, JobEvent, RunEvent};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

pub(crate) struct Renderer {
    json: bool,
    prefix: bool,
    partial: HashMap<String, Vec<u8>>,
    pulls: HashMap<String, ProgressBar>,
    stdout_closed: bool,
    color: bool,
}

impl Renderer {
    pub(crate) fn new(json: bool, prefix: bool) -> Renderer {
        use std::io::IsTerminal;
        Renderer {
            json,
            prefix,
            partial: HashMap::new(),
            pulls: HashMap::new(),
            stdout_closed: false,
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Consumes events until the run ends (runs on a blocking thread: terminal writes block).
    pub(crate) fn consume(mut self, mut rx: mpsc::Receiver<RunEvent>) {
        while let Some(ev) = rx.blocking_recv() {
            if self.json {
                self.json_event(&ev);
            } else {
                self.event(ev);
            }
        }
    }

    fn out(&mut self, data: &[u8]) {
        if self.stdout_closed {
            return;
        }
        let mut out = std::io::stdout().lock();
        if out.write_all(data).and_then(|()| out.flush()).is_err() {
            self.stdout_closed = true;
        }
    }

    fn json_event(&mut self, ev: &RunEvent) {
        if matches!(
            ev,
            RunEvent::Job {
                detail: JobEvent::PullProgress { .. },
                ..
            }
        ) {
            return;
        }
        if let Ok(mut line) = serde_json::to_vec(ev) {
            line.push(b'\n');
            self.out(&line);
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn tag(&self, job: &str) -> String {
        if self.prefix {
            format!("[{job}] ")
        } else {
            String::new()
        }
    }

    fn note(&mut self, job: &str, text: &str) {
        let line = format!("{}{}\n", self.tag(job), text);
        self.out(line.as_bytes());
    }

    fn event(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::BuildStarted {
                build_id,
                output_dir,
                ..
            } => {
                eprintln!("berth: build {build_id} (logs in {})", output_dir.display());
            }
            RunEvent::Job { job, detail } => self.job_event(&job, detail),
            RunEvent::JobSkipped { job, reason } => {
                let msg = self.paint("33", &format!("job {job} skipped: {reason}"));
                self.note(&job, &msg);
            }
            RunEvent::Warning { job, message } => match job {
                Some(j) => eprintln!("berth: warning: [{j}] {message}"),
                None => eprintln!("berth: warning: {message}"),
            },
            RunEvent::BuildFinished { summary } => self.summary(&summary),
        }
    }

    fn job_event(&mut self, job: &str, ev: JobEvent) {
        match ev {
            JobEvent::Pulling { image } => {
                use std::io::IsTerminal;
                if std::io::stderr().is_terminal() {
                    let bar = ProgressBar::new(0);
                    bar.set_style(
                        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_message(format!("pulling {image}"));
                    self.pulls.insert(job.to_string(), bar);
                } else {
                    eprintln!("berth: [{job}] pulling {image}");
                }
            }
            JobEvent::PullProgress { current, total, .. } => {
                if let (Some(bar), Some(c), Some(t)) = (self.pulls.get(job), current, total) {
                    bar.set_length(t);
                    bar.set_position(c);
                }
            }
            JobEvent::Started { image, .. } => {
                if let Some(bar) = self.pulls.remove(job) {
                    bar.finish_and_clear();
                }
                let msg = self.paint("2", &format!("job {job} started ({image})"));
                self.note(job, &msg);
            }
            JobEvent::StepStarted { step, .. } => {
                let msg = self.paint("1;36", &format!("==> step {step}"));
                self.note(job, &msg);
            }
            JobEvent::Output { data, .. } => self.output(job, &data),
            JobEvent::StepFinished {
                step,
                exit_code,
                duration_ms,
            } => {
                self.flush_partial(job);
                let text = format!(
                    "<== step {step} exited {exit_code} ({:.1}s)",
                    duration_ms as f64 / 1000.0
                );
                let msg = self.paint(if exit_code == 0 { "2" } else { "1;31" }, &text);
                self.note(job, &msg);
            }
            JobEvent::StepSkipped { step } => {
                let msg = self.paint(
                    "2",
                    &format!("--- step {step} not run (an earlier step failed)"),
                );
                self.note(job, &msg);
            }
            JobEvent::Finished {
                result,
                duration_ms,
            } => {
                self.flush_partial(job);
                let text = format!("job {job} {result} ({:.1}s)", duration_ms as f64 / 1000.0);
                let msg = self.paint(if result.is_success() { "1;32" } else { "1;31" }, &text);
                self.note(job, &msg);
            }
        }
    }

    fn output(&mut self, job: &str, data: &[u8]) {
        if !self.prefix {
            self.out(data);
            return;
        }
        let mut buf = self.partial.remove(job).unwrap_or_default();
        buf.extend_from_slice(data);
        let mut out = Vec::with_capacity(buf.len() + 64);
        let tag = self.tag(job);
        let mut rest: &[u8] = &buf;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(&rest[..=pos]);
            rest = &rest[pos + 1..];
        }
        // Bound what a line without newline can hold back.
        if rest.len() > 64 * 1024 {
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(rest);
            out.push(b'\n');
            rest = &[];
        }
        let keep = rest.to_vec();
        self.out(&out);
        if !keep.is_empty() {
            self.partial.insert(job.to_string(), keep);
        }
    }

    fn flush_partial(&mut self, job: &str) {
        if let Some(rest) = self.partial.remove(job) {
            let mut out = self.tag(job).into_bytes();
            out.extend_from_slice(&rest);
            out.push(b'\n');
            self.out(&out);
        }
    }

    fn summary(&mut self, s: &BuildSummary) {
        let mut text = String::from("\nJOB                  RESULT      DURATION\n");
        for j in &s.jobs {
            text.push_str(&format!(
                "{:<20} {:<11} {:>7.1}s\n",
                j.job,
                j.result.label(),
                j.duration_ms as f64 / 1000.0
            ));
        }
        for (job, _) in &s.skipped {
            text.push_str(&format!("{job:<20} {:<11} {:>8}\n", "skipped", "-"));
        }
        self.out(text.as_bytes());
        eprintln!(
            "berth: build {} logs: {}",
            s.build_id,
            s.output_dir.display()
        );
    }
}
