//! `berth validate`: check the pipeline file.

use crate::args::ValidateArgs;
use crate::{ExitCode, Failure};

pub(crate) fn validate(args: ValidateArgs) -> Result<ExitCode, Failure> {
    let (path, pipeline) = super::load_pipeline(args.file.as_deref())?;
    for w in &pipeline.warnings {
        eprintln!("{w}");
    }
    let jobs = pipeline.jobs.len();
    println!(
        "{}: ok ({jobs} job{})",
        path.display(),
        if jobs == 1 { "" } else { "s" }
    );
    Ok(ExitCode::Success)
}
