//! Rewriting requests and answers so paths and names mean what the job thinks.
//!
//! Owns: translating bind sources from the job's view of its workspace to what the daemon
//! mounts — a volume `Subpath` mount when the workspace is a Docker volume and the daemon speaks
//! API ≥ 1.45 (the daemon resolves the subpath safely inside the volume), otherwise the host path
//! (resolving symlinks inside the workspace root and refusing anything that leaves it) — showing
//! both back as the job's paths in answers, and stripping the scope prefix from names in the
//! daemon's answers.
//! Must not: authorize; `policy` and `handler` decide, this module only maps.
//!
//! Residual race on older engines or host-directory workspaces (documented in
//! docs/scoped-socket.md): the daemon resolves the translated host path again when it mounts it.
//! The proxy forwards the fully resolved path (no symlinks left at check time), but a job that
//! can write its workspace could swap a directory on that path for a symlink between the check
//! and the mount. `Subpath` mounts do not have it: the proxy never resolves anything on the host.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::policy::rules;
use crate::refusal::Refusal;
use crate::scope::Scope;

/// The job's workspace: where the job sees it, where it really is on the daemon's host, and the
/// Docker volume that holds it, if it is one.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub job_path: PathBuf,
    pub host_path: PathBuf,
    /// The volume whose root is the workspace: on API ≥ 1.45 binds inside the workspace become
    /// `Subpath` mounts of it.
    pub volume: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace `{0}` must be JOB_PATH=HOST_PATH with two absolute paths")]
    Syntax(String),
    #[error(
        "workspace volume `{0}` is not a valid volume name (letters, digits, `_.-`, not starting with `.` or `-`)"
    )]
    Volume(String),
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
            volume: None,
        })
    }

    /// The workspace is the root of the Docker volume `name` (its `Mountpoint` is the host path).
    pub fn with_volume(mut self, name: &str) -> Result<Workspace, WorkspaceError> {
        if !crate::scope::valid_object_name(name) {
            return Err(WorkspaceError::Volume(name.to_string()));
        }
        self.volume = Some(name.to_string());
        Ok(self)
    }

    fn refuse(&self, source: &str, why: &str) -> Refusal {
        Refusal::rule(
            rules::BIND_OUTSIDE,
            format!(
                "bind source `{source}` {why}; only paths inside the job's workspace {} can be mounted",
                self.job_path.display()
            ),
        )
    }

    /// The lexical checks every bind source passes: a plain absolute path (no `.`/`..`) inside
    /// the job's view of the workspace. Returns the path relative to the workspace root.
    fn relative<'a>(&self, source: &'a str) -> Result<&'a Path, Refusal> {
        let src = Path::new(source);
        if !src.is_absolute() || !plain(src) || source.split('/').any(|s| s == "." || s == "..") {
            return Err(self.refuse(source, "is not a plain absolute path"));
        }
        src.strip_prefix(&self.job_path)
            .map_err(|_| self.refuse(source, "is outside the workspace"))
    }

    /// A bind source as the job sees it → the `Subpath` inside the workspace volume (empty: the
    /// whole volume). Only lexical checks: the daemon resolves the subpath inside the volume and
    /// refuses what leaves it, at mount time. `None` when the workspace is not a volume.
    pub fn subpath(&self, source: &str) -> Option<Result<(String, String), Refusal>> {
        let volume = self.volume.clone()?;
        Some(self.relative(source).and_then(|rel| {
            rel.to_str()
                .map(|r| (volume, r.to_string()))
                .ok_or_else(|| self.refuse(source, "is not UTF-8"))
        }))
    }

    /// Translates a bind source as the job sees it to the host path the daemon should mount.
    pub fn translate(&self, source: &str) -> Result<String, Refusal> {
        let refuse = |why: &str| self.refuse(source, why);
        let rel = self.relative(source)?;
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
/// them, and `Subpath` mounts of the workspace volume as the binds the job asked for.
pub fn binds_to_job_view(ws: &Workspace, v: &mut Value) {
    if let Some(vol) = &ws.volume {
        volume_mounts_to_job_view(ws, vol, v);
    }
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

/// `Subpath` mounts of the workspace volume → bind mounts of the job's paths. `HostConfig.Mounts`
/// carries the subpath; the container's `Mounts` (also in list entries) does not, so it is
/// matched by destination, or shows the workspace root.
fn volume_mounts_to_job_view(ws: &Workspace, vol: &str, v: &mut Value) {
    let job = |sub: &str| {
        let p = if sub.is_empty() {
            ws.job_path.clone()
        } else {
            ws.job_path.join(sub)
        };
        p.to_str().map(str::to_string)
    };
    let mut by_target = Map::new();
    if let Some(Value::Array(mounts)) = v.pointer_mut("/HostConfig/Mounts") {
        for m in mounts.iter_mut() {
            let Value::Object(m) = m else { continue };
            if m.get("Type").and_then(Value::as_str) != Some("volume")
                || m.get("Source").and_then(Value::as_str) != Some(vol)
            {
                continue;
            }
            let sub = m
                .get("VolumeOptions")
                .and_then(|o| o.get("Subpath"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(src) = job(sub) else { continue };
            if let Some(t) = m.get("Target") {
                by_target.insert(t.as_str().unwrap_or_default().to_string(), json!(src));
            }
            m.insert("Type".into(), json!("bind"));
            m.insert("Source".into(), json!(src));
            m.remove("VolumeOptions");
        }
    }
    if let Some(Value::Array(mounts)) = v.pointer_mut("/Mounts") {
        for m in mounts.iter_mut() {
            let Value::Object(m) = m else { continue };
            if m.get("Type").and_then(Value::as_str) != Some("volume")
                || m.get("Name").and_then(Value::as_str) != Some(vol)
            {
                continue;
            }
            let dest = m.get("Destination").and_then(Value::as_str).unwrap_or("");
            let src = match by_target.get(dest) {
                Some(s) => s.clone(),
                None => json!(job("")),
            };
            m.insert("Type".into(), json!("bind"));
            m.insert("Source".into(), src);
            m.remove("Name");
            m.remove("Driver");
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

    #[test]
    fn subpaths_are_lexically_inside_the_workspace_and_shown_as_job_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new("/job/ws", dir.path()).unwrap();
        assert!(
            ws.subpath("/job/ws/sub").is_none(),
            "not a volume workspace"
        );
        assert!(ws.clone().with_volume("-bad").is_err());
        let ws = ws.with_volume("ws-vol").unwrap();
        let sub = |s: &str| ws.subpath(s).unwrap();
        assert_eq!(sub("/job/ws").unwrap(), ("ws-vol".into(), String::new()));
        assert_eq!(sub("/job/ws/a/b").unwrap(), ("ws-vol".into(), "a/b".into()));
        for bad in [
            "/etc",
            "/job/ws/../x",
            "/job/ws/./a",
            "/job/wsx",
            "rel",
            "/job/ws/a/..",
        ] {
            assert_eq!(
                sub(bad).unwrap_err().rule_name(),
                rules::BIND_OUTSIDE,
                "{bad}"
            );
        }
        let mut v = json!({
            "HostConfig": {"Mounts": [
                {"Type": "volume", "Source": "ws-vol", "Target": "/src",
                 "VolumeOptions": {"NoCopy": true, "Subpath": "a/b"}},
                {"Type": "volume", "Source": "other", "Target": "/o"}
            ]},
            "Mounts": [
                {"Type": "volume", "Name": "ws-vol", "Source": "/var/lib/docker/volumes/ws-vol/_data",
                 "Destination": "/src", "Driver": "local"},
                {"Type": "volume", "Name": "ws-vol", "Source": "/x/_data", "Destination": "/m"},
                {"Type": "volume", "Name": "other", "Source": "/y/_data", "Destination": "/o"}
            ]
        });
        binds_to_job_view(&ws, &mut v);
        assert_eq!(
            v["HostConfig"]["Mounts"][0],
            json!({"Type": "bind", "Source": "/job/ws/a/b", "Target": "/src"})
        );
        assert_eq!(v["HostConfig"]["Mounts"][1]["Source"], "other");
        assert_eq!(
            v["Mounts"][0],
            json!({"Type": "bind", "Source": "/job/ws/a/b", "Destination": "/src"})
        );
        assert_eq!(v["Mounts"][1]["Source"], "/job/ws");
        assert_eq!(v["Mounts"][2]["Source"], "/y/_data");
    }
}
