//! `docker:` (none/socket/dind/scoped), `dind:` options and `screwdriver.cd/dockerEnabled`.

use super::{Ctx, map_entries, unknown_key};
use crate::suggest::did_you_mean;
use crate::yaml::{Kind, Node};
use crate::{DindOptions, DockerMode, Location};

/// The `docker:` keyword as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DockerKey {
    None,
    Socket,
    Dind,
    Scoped,
}

pub(crate) const DIND_NEEDS_DIND: &str = "`dind` options need `docker: dind`";

const MODES: &[&str] = &["none", "socket", "dind", "scoped"];

/// `dind:` fields as written (unset fields fall back to `shared`, then defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct DindPartial {
    pub tls: Option<bool>,
    pub runtime: Option<String>,
    pub cache: Option<String>,
}

pub(crate) fn docker_key(cx: &mut Ctx, node: &Node) -> Option<DockerKey> {
    let Kind::Str(s) = &node.kind else {
        cx.error(
            node.location,
            format!(
                "`docker` must be one of none, socket, dind, scoped, found {}",
                node.type_name()
            ),
        );
        return None;
    };
    match s.as_str() {
        "none" => Some(DockerKey::None),
        "socket" => Some(DockerKey::Socket),
        "dind" => Some(DockerKey::Dind),
        "scoped" => Some(DockerKey::Scoped),
        _ => {
            let hint = match did_you_mean(s, MODES.iter().copied()) {
                h if h.is_empty() => " (expected none, socket, dind or scoped)".to_string(),
                h => h,
            };
            cx.error(node.location, format!("unknown docker mode `{s}`{hint}"));
            None
        }
    }
}

pub(crate) fn dind(cx: &mut Ctx, node: &Node) -> Option<DindPartial> {
    if !matches!(node.kind, Kind::Map(_)) {
        cx.error(
            node.location,
            format!("`dind` must be a map, found {}", node.type_name()),
        );
        return None;
    }
    let mut out = DindPartial::default();
    for (k, v) in map_entries(cx, node, "dind") {
        match k.key_text().as_str() {
            "tls" => match v.kind {
                Kind::Bool(b) => out.tls = Some(b),
                _ => cx.error(v.location, format!("`dind.tls` must be true or false, found {}", v.type_name())),
            },
            "runtime" => match v.as_str() {
                Some(r) if !r.trim().is_empty() => out.runtime = Some(r.to_string()),
                _ => cx.error(v.location, "`dind.runtime` must be a runtime name"),
            },
            "cache" => match v.as_str() {
                Some(c) if is_volume_name(c) => out.cache = Some(c.to_string()),
                _ => cx.error(
                    v.location,
                    "`dind.cache` must be a volume name (letters, digits, `_`, `.`, `-`, starting with a letter or digit)",
                ),
            },
            _ => {
                unknown_key(cx, k, &["tls", "runtime", "cache"]);
            }
        }
    }
    Some(out)
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]*$`
fn is_volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Job `dind` fields over `shared` ones; located at the job's when it has one.
pub(crate) fn merge_dind(
    shared: Option<(DindPartial, Location)>,
    job: Option<(DindPartial, Location)>,
) -> Option<(DindPartial, Location)> {
    match (shared, job) {
        (Some((s, _)), Some((j, loc))) => Some((
            DindPartial {
                tls: j.tls.or(s.tls),
                runtime: j.runtime.or(s.runtime),
                cache: j.cache.or(s.cache),
            },
            loc,
        )),
        (s, j) => j.or(s),
    }
}

/// The job's docker mode from `docker:`, `dind:` (merged with `shared`'s) and `dockerEnabled`.
/// `job_dind` is where the job itself says `dind:`: an error unless the mode is dind.
pub(crate) fn resolve(
    cx: &mut Ctx,
    docker: Option<(DockerKey, Location)>,
    dind: Option<(DindPartial, Location)>,
    job_dind: Option<Location>,
    docker_enabled: bool,
) -> DockerMode {
    let mode = match docker.map(|(d, _)| d) {
        Some(DockerKey::None) => DockerMode::None,
        Some(DockerKey::Socket) => DockerMode::Socket,
        Some(DockerKey::Scoped) => DockerMode::Scoped,
        Some(DockerKey::Dind) => {
            let d = DindOptions::default();
            let p = dind.clone().map(|(p, _)| p).unwrap_or_default();
            return DockerMode::Dind(DindOptions {
                tls: p.tls.unwrap_or(d.tls),
                runtime: p.runtime,
                cache: p.cache,
            });
        }
        None if docker_enabled => DockerMode::Default,
        None => DockerMode::None,
    };
    if let Some(loc) = job_dind {
        cx.error(loc, DIND_NEEDS_DIND);
    }
    mode
}
