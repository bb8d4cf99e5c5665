//! Rewriting requests and answers so paths and names mean what the job thinks.
//!
//! Owns: translating bind sources from the job's view of its workspace to the host path
//! (resolving symlinks inside the workspace root and refusing anything that leaves it), and
//! stripping the scope prefix from names in the daemon's answers.
//! Must not: authorize; `policy` and `handler` decide, this module only maps.
//!
//! Residual race (documented in docs/scoped-socket.md): the daemon resolves the translated path
//! again when it mounts it. The proxy forwards the fully resolved path (no symlinks left at check
//! time), but a job that can write its workspace could swap a directory on that path for a
//! symlink between the check and the mount. Engines with API ≥ 1.45 could close this with volume
//! `Subpath` mounts; that is not done yet.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::policy::rules;
use crate::refusal::Refusal;
use crate::scope::Scope;

/// The job's workspace: where the job sees it, and where it really is on the daemon's host.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub job_path: PathBuf,
    pub host_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace `{0}` must be JOB_PATH=HOST_PATH with two absolute paths")]
    Syntax(String),
    #[error("failed to resolve the workspace host path {path}: {source}")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Workspace {
    /// Parses `JOB_PATH=HOST_PATH`; the host path must exist.
    pub fn parse(s: &str) -> Result<Workspace, WorkspaceError> {
        let (job, host) = s
            .split_once('=')
            .ok_or_else(|| WorkspaceError::Syntax(s.to_string()))?;
        Workspace::new(job, host).map_err(|e| match e {
            WorkspaceError::Syntax(_) => WorkspaceError::Syntax(s.to_string()),
            e => e,
        })
    }

    pub fn new(job: impl AsRef<Path>, host: impl AsRef<Path>) -> Result<Workspace, WorkspaceError> {
        let (job, host) = (job.as_ref(), host.as_ref());
        if !job.is_absolute() || !host.is_absolute() || !plain(job) {
            return Err(WorkspaceError::Syntax(format!(
                "{}={}",
                job.display(),
                host.display()
            )));
        }
        let host_path = std::fs::canonicalize(host).map_err(|source| WorkspaceError::Resolve {
            path: host.to_path_buf(),
            source,
        })?;
        Ok(Workspace {
            job_path: job.components().collect(),
            host_path,
        })
    }

    /// Translates a bind source as the job sees it to the host path the daemon should mount.
    pub fn translate(&self, source: &str) -> Result<String, Refusal> {
        let refuse = |why: &str| {
            Refusal::rule(
                rules::BIND_OUTSIDE,
                format!(
                    "bind source `{source}` {why}; only paths inside the job's workspace {} can be mounted",
                    self.job_path.display()
                ),
            )
        };
        let src = Path::new(source);
        if !src.is_absolute() || !plain(src) || source.split('/').any(|s| s == "." || s == "..") {
            return Err(refuse("is not a plain absolute path"));
        }
        let rel = src
            .strip_prefix(&self.job_path)
            .map_err(|_| refuse("is outside the workspace"))?;
        // Resolve symlinks for the part that exists; the rest is created by the daemon.
        let mut existing = self.host_path.clone();
        let mut missing = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(c) = c else {
                return Err(refuse("is not a plain path"));
            };
            if missing.as_os_str().is_empty() {
                let next = existing.join(c);
                match std::fs::symlink_metadata(&next) {
                    Ok(_) => {
                        let resolved = std::fs::canonicalize(&next)
                            .map_err(|_| refuse("cannot be resolved (dangling symlink?)"))?;
                        if !resolved.starts_with(&self.host_path) {
                            return Err(refuse("leads out of the workspace through a symlink"));
                        }
                        existing = resolved;
                    }
                    Err(_) => missing.push(c),
                }
            } else {
                missing.push(c);
            }
        }
        let out = if missing.as_os_str().is_empty() {
            existing
        } else {
            existing.join(missing)
        };
        out.to_str()
            .map(str::to_string)
            .ok_or_else(|| refuse("is not UTF-8"))
    }
}

impl Workspace {
    /// A host path inside the workspace → the path the job knows it by.
    pub fn to_job_view(&self, host: &str) -> Option<String> {
        let rel = Path::new(host).strip_prefix(&self.host_path).ok()?;
        let p = if rel.as_os_str().is_empty() {
            self.job_path.clone()
        } else {
            self.job_path.join(rel)
        };
        p.to_str().map(str::to_string)
    }
}

/// In a container inspect answer or a container list entry, shows bind sources as the job sees
/// them.
pub fn binds_to_job_view(ws: &Workspace, v: &mut Value) {
    if let Some(Value::Array(binds)) = v.pointer_mut("/HostConfig/Binds") {
        for b in binds.iter_mut() {
            if let Value::String(s) = b
                && let Some((src, rest)) = s.split_once(':')
                && let Some(job) = ws.to_job_view(src)
            {
                *s = format!("{job}:{rest}");
            }
        }
    }
    for pointer in ["/Mounts", "/HostConfig/Mounts"] {
        if let Some(Value::Array(mounts)) = v.pointer_mut(pointer) {
            for m in mounts.iter_mut() {
                if m.get("Type").and_then(Value::as_str) != Some("bind") {
                    continue;
                }
                if let Some(Value::String(src)) = m.get_mut("Source")
                    && let Some(job) = ws.to_job_view(src)
                {
                    *src = job;
                }
            }
        }
    }
}

/// Absolute, no `.`/`..` components.
fn plain(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Strips the scope prefix from every string (and map key) that is a scoped name:
/// `<scope>_x` → `x`, `/<scope>_x` → `/x`.
pub fn strip_names(scope: &Scope, v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Some(n) = scope.job_name(s) {
                *s = if s.starts_with('/') {
                    format!("/{n}")
                } else {
                    n.to_string()
                };
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|i| strip_names(scope, i)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut val) in old {
                strip_names(scope, &mut val);
                let k = match scope.job_name(&k) {
                    Some(n) if !k.starts_with('/') => n.to_string(),
                    _ => k,
                };
                m.insert(k, val);
            }
        }
        _ => {}
    }
}

/// Replaces scoped names inside a daemon error message.
pub fn strip_message(scope: &Scope, msg: &str) -> String {
    msg.replace(&format!("{}_", scope.name()), "")
}

/// A string label of an inspected object (`Labels`, or `Config.Labels` for containers).
pub fn label<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("Labels")
        .or_else(|| v.get("Config").and_then(|c| c.get("Labels")))
        .and_then(Value::as_object)
        .and_then(|m: &Map<String, Value>| m.get(key))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_stays_inside_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("ws");
        std::fs::create_dir_all(host.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", host.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("sub", host.join("ok-link")).unwrap();
        std::os::unix::fs::symlink("../..", host.join("sub/up")).unwrap();
        let ws = Workspace::new("/job/ws", &host).unwrap();
        let canon = std::fs::canonicalize(&host).unwrap();
        assert_eq!(ws.translate("/job/ws").unwrap(), canon.to_str().unwrap());
        assert_eq!(
            ws.translate("/job/ws/ok-link/new/dir").unwrap(),
            canon.join("sub/new/dir").to_str().unwrap()
        );
        for bad in [
            "/etc",
            "/job/ws/../../etc",
            "/job/ws/etc-link",
            "/job/ws/etc-link/shadow",
            "/job/ws/sub/up",
            "/job/ws/sub/up/etc",
            "/job/wsx",
            "relative",
            "/job/ws/./sub",
        ] {
            let e = ws.translate(bad).unwrap_err();
            assert_eq!(e.rule_name(), rules::BIND_OUTSIDE, "{bad}");
        }
    }
}
