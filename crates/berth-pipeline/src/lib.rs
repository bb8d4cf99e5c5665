//! Pipeline files (`screwdriver.yaml` / `berth.yaml`): parse, validate, and schedule.
//!
//! Owns: the pipeline model, YAML parsing (serde-saphyr stays behind this crate), validation with
//! `file:line:col` diagnostics, and the pure job-graph scheduler the runner drives.
//! Must not: do I/O beyond reading the pipeline file, or know anything about Docker.

mod diagnostic;
mod model;
mod schedule;
mod suggest;
mod validate;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use model::*;
pub use schedule::{Scheduler, SelectError, Skipped, Start};

use std::path::{Path, PathBuf};

/// Errors loading a pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read pipeline file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no pipeline file found in {dir} (looked for berth.yaml and screwdriver.yaml); pass one with --file"
    )]
    NotFound { dir: PathBuf },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// The pipeline file to use: `given` if set, else `dir/berth.yaml`, else `dir/screwdriver.yaml`.
pub fn find_pipeline_file(given: Option<&Path>, dir: &Path) -> Result<PathBuf, LoadError> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    for name in ["berth.yaml", "screwdriver.yaml"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(LoadError::NotFound {
        dir: dir.to_path_buf(),
    })
}

/// Reads and parses a pipeline file; diagnostics name the file as `path` is displayed.
pub fn load(path: &Path) -> Result<Pipeline, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string()).map_err(LoadError::Invalid)
}

/// Parses and validates pipeline text. Never panics, whatever the input.
pub fn parse(source: &str, file: &str) -> Result<Pipeline, Diagnostics> {
    validate::parse(source, file)
}
