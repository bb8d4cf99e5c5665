//! The job's log file `<build>/<job>.log`: masked output and step headers, appended as they come.
//! Unbuffered on purpose: each chunk reaches the file when it arrives, so a live reader (the
//! server's log endpoint) and whoever reads after a crash see everything up to that moment.
//! A write failure (disk full) is reported once and the job goes on; nothing written is lost.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::Context;

pub(crate) struct JobLog {
    path: PathBuf,
    file: Option<File>,
    error: Option<String>,
}

impl JobLog {
    pub(crate) async fn create(ctx: &Context, job: &str) -> JobLog {
        let path = ctx.build_dir.join(format!("{job}.log"));
        match File::create(&path) {
            Ok(f) => JobLog {
                path,
                file: Some(f),
                error: None,
            },
            Err(e) => {
                ctx.warn(
                    job,
                    format!("failed to create log file {}: {e}", path.display()),
                )
                .await;
                JobLog {
                    path,
                    file: None,
                    error: None,
                }
            }
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_all(data)
        {
            self.error = Some(format!(
                "failed to write log file {}: {e}; the rest of this job's log is only on the console",
                self.path.display()
            ));
            self.file = None;
        }
    }

    pub(crate) fn line(&mut self, text: &str) {
        self.write(text.as_bytes());
        self.write(b"\n");
    }

    /// Flushes; returns a message if any write failed.
    pub(crate) fn flush(&mut self) -> Option<String> {
        if let Some(f) = &mut self.file
            && let Err(e) = f.flush()
        {
            self.error = Some(format!(
                "failed to write log file {}: {e}",
                self.path.display()
            ));
            self.file = None;
        }
        self.error.take()
    }

    pub(crate) fn finish(mut self) -> Option<String> {
        self.flush()
    }
}
