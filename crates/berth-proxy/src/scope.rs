//! What belongs to the scope, and the scope's namespace of names.
//!
//! Owns: the registry of objects created through this endpoint (containers, networks, execs by
//! full id; volumes by daemon name; image tags), the mapping between the names a job sees (`db`)
//! and the daemon's (`<scope>_db`), and resolving a job's reference to a full id it owns.
//! **Only full ids leave this module**: names and id prefixes are resolved here, once.
//! Must not: authorize anything else; a reference that is not owned resolves to the daemon's own
//! "no such ..." answer, so a job cannot tell foreign objects from missing ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use http::{Method, StatusCode};

use crate::forward::Daemon;
use crate::parse::encode_segment;
use crate::refusal::Refusal;

/// The label naming the scope on everything created through the endpoint.
pub const SCOPE_LABEL: &str = berth_engine::labels::SCOPE;

#[derive(Debug, thiserror::Error)]
pub enum ScopeNameError {
    #[error(
        "scope name `{0}` must be 1 to 40 characters of a-z, 0-9 and `-`, starting with a letter or digit"
    )]
    Invalid(String),
}

/// Validates a scope name. `_` is excluded so that `<scope>_<name>` can be split unambiguously:
/// no scope's namespace is a prefix of another's.
pub fn validate_scope(name: &str) -> Result<(), ScopeNameError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ScopeNameError::Invalid(name.to_string()))
    }
}

/// Docker's rule for container, network and volume names a job may give.
pub fn valid_object_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[derive(Debug, Default)]
struct Registry {
    containers: BTreeSet<String>,
    networks: BTreeSet<String>,
    volumes: BTreeSet<String>,
    execs: BTreeSet<String>,
    tags: BTreeSet<String>,
}

/// One scope: its name, labels and registry.
#[derive(Debug)]
pub struct Scope {
    name: String,
    labels: BTreeMap<String, String>,
    registry: Mutex<Registry>,
}

/// What the registry holds, for reaping.
#[derive(Debug, Default, Clone)]
pub struct Owned {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
    pub tags: Vec<String>,
}

impl Scope {
    /// `owner_labels` (io.berth.owner, io.berth.owner-host) are added to everything created,
    /// together with io.berth.scope.
    pub fn new(
        name: &str,
        owner_labels: BTreeMap<String, String>,
    ) -> Result<Scope, ScopeNameError> {
        validate_scope(name)?;
        let mut labels = owner_labels;
        labels.insert(SCOPE_LABEL.to_string(), name.to_string());
        Ok(Scope {
            name: name.to_string(),
            labels,
            registry: Mutex::new(Registry::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels every created object carries.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    fn reg(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A poisoned lock only means another request panicked mid-update; the sets stay usable.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scope's tag marker: a volume named `<scope>.berth-tags` (no job name can produce it:
    /// job names become `<scope>_<name>`, and scope names have no `.`), with the scope's owner
    /// labels and `io.berth.tags-of=<scope>` but no scope label, so the job never sees it. It
    /// lets `berth gc` attribute the scope's job-local tags to its owner after a crash.
    pub fn tag_marker(&self) -> (String, BTreeMap<String, String>) {
        let mut labels = self.labels.clone();
        labels.remove(SCOPE_LABEL);
        labels.insert(berth_engine::labels::TAGS_OF.to_string(), self.name.clone());
        (format!("{}.berth-tags", self.name), labels)
    }

    /// `db` → `<scope>_db`.
    pub fn daemon_name(&self, job_name: &str) -> String {
        format!("{}_{}", self.name, job_name)
    }

    /// `<scope>_db` → `db`; `/<scope>_db` → `/db`; anything else unchanged.
    pub fn job_name<'a>(&self, daemon_name: &'a str) -> Option<&'a str> {
        let rest = daemon_name.strip_prefix('/').unwrap_or(daemon_name);
        rest.strip_prefix(self.name.as_str())?.strip_prefix('_')
    }

    pub fn add_container(&self, id: &str) {
        self.reg().containers.insert(id.to_string());
    }
    pub fn add_network(&self, id: &str) {
        self.reg().networks.insert(id.to_string());
    }
    pub fn add_volume(&self, daemon_name: &str) {
        self.reg().volumes.insert(daemon_name.to_string());
    }
    pub fn add_exec(&self, id: &str) {
        self.reg().execs.insert(id.to_string());
    }
    pub fn add_tag(&self, tag: &str) {
        self.reg().tags.insert(normalize_tag(tag));
    }
    pub fn owns_container(&self, id: &str) -> bool {
        self.reg().containers.contains(id)
    }
    pub fn owns_network(&self, id: &str) -> bool {
        self.reg().networks.contains(id)
    }
    pub fn owns_volume(&self, daemon_name: &str) -> bool {
        self.reg().volumes.contains(daemon_name)
    }
    pub fn owns_exec(&self, id: &str) -> bool {
        self.reg().execs.contains(id)
    }
    /// The job-local daemon tag for a tag the job creates: `<scope>_<repo>:<tag>`. Tags naming a
    /// registry host (`localhost:5000/x`, `ghcr.io/x`) and digests have no local form.
    pub fn local_tag(&self, tag: &str) -> Option<String> {
        let n = normalize_tag(tag);
        if n.contains('@') {
            return None;
        }
        if let Some((first, _)) = n.split_once('/')
            && (first.contains('.') || first.contains(':') || first == "localhost")
        {
            return None;
        }
        Some(format!("{}_{n}", self.name))
    }

    /// An image reference the job reads (run, inspect, tag source): its own local tag when it
    /// has one of that name, else the shared image.
    pub fn image_ref(&self, r: &str) -> String {
        match self.local_tag(r) {
            Some(l) if self.owns_tag(&l) => l,
            _ => r.to_string(),
        }
    }

    pub fn owns_tag(&self, tag: &str) -> bool {
        self.reg().tags.contains(&normalize_tag(tag))
    }
    pub fn container_count(&self) -> usize {
        self.reg().containers.len()
    }

    pub fn owned(&self) -> Owned {
        let r = self.reg();
        Owned {
            containers: r.containers.iter().cloned().collect(),
            networks: r.networks.iter().cloned().collect(),
            volumes: r.volumes.iter().cloned().collect(),
            tags: r.tags.iter().cloned().collect(),
        }
    }

    fn unique_prefix(set: &BTreeSet<String>, r: &str) -> Option<String> {
        if r.is_empty() || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut it = set.iter().filter(|id| id.starts_with(r));
        let first = it.next()?;
        it.next().is_none().then(|| first.clone())
    }

    /// A job's container reference (full id, job name, or unique id prefix) → owned full id.
    pub async fn resolve_container(&self, daemon: &Daemon, r: &str) -> Result<String, Refusal> {
        if self.owns_container(r) {
            return Ok(r.to_string());
        }
        let name = r.strip_prefix('/').unwrap_or(r);
        if valid_object_name(name) {
            let dn = self.daemon_name(name);
            let path = format!("/containers/{}/json", encode_segment(&dn));
            let (status, v) = daemon
                .call(Method::GET, &path, None)
                .await
                .map_err(|e| Refusal::Daemon(e.to_string()))?;
            if status == StatusCode::OK {
                let id = v["Id"].as_str().unwrap_or_default();
                if v["Name"].as_str() == Some(&format!("/{dn}")) && self.owns_container(id) {
                    return Ok(id.to_string());
                }
            }
        }
        if let Some(id) = Scope::unique_prefix(&self.reg().containers, r) {
            return Ok(id);
        }
        Err(Refusal::no_such_container(r))
    }

    /// A job's network reference → owned full id.
    pub async fn resolve_network(&self, daemon: &Daemon, r: &str) -> Result<String, Refusal> {
        if self.owns_network(r) {
            return Ok(r.to_string());
        }
        if valid_object_name(r) {
            let dn = self.daemon_name(r);
            let path = format!("/networks/{}", encode_segment(&dn));
            let (status, v) = daemon
                .call(Method::GET, &path, None)
                .await
                .map_err(|e| Refusal::Daemon(e.to_string()))?;
            if status == StatusCode::OK {
                let id = v["Id"].as_str().unwrap_or_default();
                if v["Name"].as_str() == Some(dn.as_str()) && self.owns_network(id) {
                    return Ok(id.to_string());
                }
            }
        }
        if let Some(id) = Scope::unique_prefix(&self.reg().networks, r) {
            return Ok(id);
        }
        Err(Refusal::no_such_network(r))
    }

    /// A job's volume name → the owned daemon name.
    pub fn resolve_volume(&self, r: &str) -> Result<String, Refusal> {
        let dn = self.daemon_name(r);
        if valid_object_name(r) && self.owns_volume(&dn) {
            Ok(dn)
        } else {
            Err(Refusal::no_such_volume(r))
        }
    }

    /// An exec id → itself when owned (exec ids are global and leak through events).
    pub fn resolve_exec(&self, r: &str) -> Result<String, Refusal> {
        if self.owns_exec(r) {
            Ok(r.to_string())
        } else {
            Err(Refusal::no_such_exec(r))
        }
    }
}

/// `busybox` → `busybox:latest`; `docker.io/library/x:1` → `x:1`. Digests are kept as given.
pub fn normalize_tag(tag: &str) -> String {
    let t = tag
        .strip_prefix("docker.io/library/")
        .or_else(|| tag.strip_prefix("index.docker.io/library/"))
        .or_else(|| tag.strip_prefix("docker.io/"))
        .unwrap_or(tag);
    let last = t.rsplit('/').next().unwrap_or(t);
    if last.contains(':') || last.contains('@') {
        t.to_string()
    } else {
        format!("{t}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_cannot_overlap() {
        assert!(validate_scope("job-1").is_ok());
        assert!(validate_scope("a_b").is_err());
        assert!(validate_scope("").is_err());
        assert!(validate_scope("A").is_err());
        let s = Scope::new("job-1", BTreeMap::new()).unwrap();
        assert_eq!(s.daemon_name("db"), "job-1_db");
        assert_eq!(s.job_name("job-1_db"), Some("db"));
        assert_eq!(s.job_name("/job-1_db"), Some("db"));
        assert_eq!(s.job_name("job-10_db"), None);
    }

    #[test]
    fn tags_normalize() {
        assert_eq!(normalize_tag("busybox"), "busybox:latest");
        assert_eq!(normalize_tag("docker.io/library/busybox:1"), "busybox:1");
        assert_eq!(normalize_tag("localhost:5000/x"), "localhost:5000/x:latest");
        let s = Scope::new("j1", BTreeMap::new()).unwrap();
        assert_eq!(
            s.local_tag("postgres:16").as_deref(),
            Some("j1_postgres:16")
        );
        assert_eq!(s.local_tag("a/b").as_deref(), Some("j1_a/b:latest"));
        assert_eq!(s.local_tag("localhost:5000/x"), None);
        assert_eq!(s.image_ref("a/b"), "a/b");
        s.add_tag("j1_a/b:latest");
        assert_eq!(s.image_ref("a/b"), "j1_a/b:latest");
    }
}
