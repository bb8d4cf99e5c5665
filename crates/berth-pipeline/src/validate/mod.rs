//! Validation: walks the YAML node tree and builds the [`Pipeline`], collecting diagnostics.
//!
//! Owns: the diagnostic collector ([`Ctx`]), small node helpers shared by the submodules, and
//! the top level of the file (`jobs`, `shared`, `parameters`, `annotations`, ...).

mod annotations;
mod docker;
mod job;
mod requires;
mod services;
mod steps;
mod vars;

use indexmap::IndexMap;

use crate::suggest::suggest;
use crate::yaml::{self, Kind, Node};
use crate::{Diagnostic, Diagnostics, Location, Pipeline, Severity};

/// Collects diagnostics for one file.
pub(crate) struct Ctx<'a> {
    file: &'a str,
    source: &'a str,
    diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    fn new(source: &'a str, file: &'a str) -> Self {
        Ctx {
            file,
            source,
            diags: Vec::new(),
        }
    }

    fn push(&mut self, severity: Severity, location: Location, message: String) {
        let source_line = (location.line > 0)
            .then(|| self.source.lines().nth(location.line - 1))
            .flatten()
            .map(|l| l.trim_end_matches('\r').to_string());
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_string(),
            location,
            message,
            source_line,
        });
    }

    pub fn error(&mut self, location: Location, message: impl Into<String>) {
        self.push(Severity::Error, location, message.into());
    }

    pub fn warning(&mut self, location: Location, message: impl Into<String>) {
        self.push(Severity::Warning, location, message.into());
    }

    /// Errors first, then by position; identical diagnostics (e.g. from `shared`, reported
    /// once per job) collapse into one.
    fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| {
            (
                d.severity == Severity::Warning,
                d.location.line,
                d.location.column,
            )
        });
        let mut out: Vec<Diagnostic> = Vec::with_capacity(self.diags.len());
        for d in self.diags {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }
}

/// Parses and validates pipeline text.
pub(crate) fn parse(source: &str, file: &str) -> Result<Pipeline, Diagnostics> {
    let mut cx = Ctx::new(source, file);
    let pipeline = match yaml::parse(source) {
        Ok(root) => Some(pipeline(&mut cx, &root, file)),
        Err(e) => {
            cx.error(e.location, e.message);
            None
        }
    };
    let diags = cx.finish();
    match pipeline {
        Some(mut p) if diags.iter().all(|d| d.severity == Severity::Warning) => {
            p.warnings = diags;
            Ok(p)
        }
        _ => Err(Diagnostics(diags)),
    }
}

const TOP_KEYS: &[&str] = &[
    "jobs",
    "shared",
    "parameters",
    "annotations",
    "version",
    "cache",
    "childPipelines",
    "subscribe",
    "template",
    "stages",
];

fn pipeline(cx: &mut Ctx, root: &Node, file: &str) -> Pipeline {
    let mut p = Pipeline {
        file: file.to_string(),
        jobs: IndexMap::new(),
        annotations: IndexMap::new(),
        parameters: IndexMap::new(),
        warnings: Vec::new(),
    };
    let Some(entries) = root.as_map() else {
        if matches!(root.kind, Kind::Null) {
            cx.error(
                root.location,
                "the pipeline file is empty: it needs a `jobs` map",
            );
            return p;
        }
        cx.error(
            root.location,
            format!(
                "the pipeline file must be a map with a `jobs` key, found {}",
                root.type_name()
            ),
        );
        return p;
    };
    let mut shared = None;
    let mut jobs = None;
    let mut misspelt_jobs = false;
    for (k, v) in entries {
        let key = k.key_text();
        match key.as_str() {
            "jobs" => jobs = Some((k, v)),
            "shared" => shared = Some(v),
            "parameters" => p.parameters = vars::parameters(cx, v),
            "annotations" => {
                p.annotations = map_entries(cx, v, "annotations")
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_value()))
                    .collect();
            }
            "version" => {
                if v.scalar_text().is_none() {
                    cx.error(
                        v.location,
                        format!(
                            "`version` must be a number or string, found {}",
                            v.type_name()
                        ),
                    );
                }
            }
            "cache" | "childPipelines" | "subscribe" => {
                cx.warning(k.location, format!("`{key}` is not applied by local runs"));
            }
            "template" | "stages" => cx.error(k.location, format!("`{key}` is not supported yet")),
            _ => misspelt_jobs |= unknown_key(cx, k, TOP_KEYS).as_deref() == Some("jobs"),
        }
    }
    let shared = match shared {
        Some(node) => job::section(cx, node, None),
        None => job::Section::empty(),
    };
    let Some((jobs_key, jobs_node)) = jobs else {
        if !misspelt_jobs {
            cx.error(
                root.location,
                "missing `jobs`: the pipeline needs at least one job",
            );
        }
        return p;
    };
    let job_entries = map_entries(cx, jobs_node, "jobs");
    if job_entries.is_empty() {
        if matches!(jobs_node.kind, Kind::Map(_) | Kind::Null) {
            cx.error(jobs_key.location, "`jobs` must define at least one job");
        }
        return p;
    }
    let names: Vec<String> = job_entries.iter().map(|(k, _)| k.key_text()).collect();
    let mut requires = Vec::new();
    for (k, v) in job_entries {
        let name = k.key_text();
        if !is_word(&name) {
            cx.error(
                k.location,
                format!("invalid job name `{name}`: use letters, digits, `_` and `-`"),
            );
        }
        let section = job::section(cx, v, Some(&name));
        requires.push((name.clone(), section.requires.clone()));
        if let Some(job) = job::merge(cx, &shared, section, &name, k.location) {
            p.jobs.insert(name, job);
        }
    }
    requires::check_graph(cx, &names, &requires);
    if let Some((_, loc)) = &shared.dind
        && !p
            .jobs
            .values()
            .any(|j| matches!(j.docker, crate::DockerMode::Dind(_)))
    {
        cx.error(*loc, docker::DIND_NEEDS_DIND);
    }
    p
}

/// `^[\w-]+$`: job and step names.
pub(crate) fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`: environment variable names.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The entries of a map node; null counts as empty, anything else is an error.
pub(crate) fn map_entries<'n>(cx: &mut Ctx, node: &'n Node, what: &str) -> &'n [(Node, Node)] {
    match &node.kind {
        Kind::Map(entries) => entries,
        Kind::Null => &[],
        _ => {
            cx.error(
                node.location,
                format!("`{what}` must be a map, found {}", node.type_name()),
            );
            &[]
        }
    }
}

/// The items of a list node; null counts as empty, anything else is an error.
pub(crate) fn seq_items<'n>(cx: &mut Ctx, node: &'n Node, what: &str) -> &'n [Node] {
    match &node.kind {
        Kind::Seq(items) => items,
        Kind::Null => &[],
        _ => {
            cx.error(
                node.location,
                format!("`{what}` must be a list, found {}", node.type_name()),
            );
            &[]
        }
    }
}

/// A string value, or an error naming `what`.
pub(crate) fn string(cx: &mut Ctx, node: &Node, what: &str) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        _ => {
            cx.error(
                node.location,
                format!("`{what}` must be a string, found {}", node.type_name()),
            );
            None
        }
    }
}

/// Reports an unknown key; returns the suggested key, if any.
pub(crate) fn unknown_key(cx: &mut Ctx, key: &Node, valid: &[&str]) -> Option<String> {
    let name = key.key_text();
    let suggestion = suggest(&name, valid.iter().copied());
    let hint = suggestion
        .as_ref()
        .map(|s| format!(", did you mean `{s}`?"))
        .unwrap_or_default();
    cx.error(key.location, format!("unknown key `{name}`{hint}"));
    suggestion
}
