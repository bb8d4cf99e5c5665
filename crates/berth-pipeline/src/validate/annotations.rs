//! The annotations berth acts on: `screwdriver.cd/timeout`, `screwdriver.cd/cpu`,
//! `screwdriver.cd/ram` and `screwdriver.cd/dockerEnabled`. All others are kept as written.

use std::time::Duration;

use indexmap::IndexMap;

use super::Ctx;
use crate::Resources;
use crate::yaml::{Kind, Node};

pub(crate) const TIMEOUT: &str = "screwdriver.cd/timeout";
pub(crate) const CPU: &str = "screwdriver.cd/cpu";
pub(crate) const RAM: &str = "screwdriver.cd/ram";
pub(crate) const DOCKER_ENABLED: &str = "screwdriver.cd/dockerEnabled";

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What the merged annotations of a job mean to berth.
#[derive(Debug, Default)]
pub(crate) struct ActedOn {
    pub timeout: Option<Duration>,
    pub resources: Resources,
    pub docker_enabled: bool,
}

pub(crate) fn acted_on(cx: &mut Ctx, annotations: &IndexMap<String, Node>) -> ActedOn {
    let mut out = ActedOn::default();
    if let Some(v) = annotations.get(TIMEOUT) {
        match number(v) {
            Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= 1_000_000.0 => {
                out.timeout = Some(Duration::from_secs(n as u64 * 60));
            }
            _ => cx.error(
                v.location,
                format!("`{TIMEOUT}` must be a positive whole number of minutes"),
            ),
        }
    }
    if let Some(v) = annotations.get(CPU) {
        let named = name(v).and_then(|n| match n.as_str() {
            "micro" => Some(0.5),
            "low" => Some(2.0),
            "high" => Some(6.0),
            "turbo" => Some(12.0),
            _ => None,
        });
        match named.or_else(|| number(v)) {
            Some(n) if n > 0.0 && n <= 4096.0 => out.resources.cpus = Some(n),
            _ => cx.error(
                v.location,
                format!("`{CPU}` must be MICRO, LOW, HIGH, TURBO or a positive number of CPUs"),
            ),
        }
    }
    if let Some(v) = annotations.get(RAM) {
        let named = name(v).and_then(|n| match n.as_str() {
            "micro" => Some(1.0),
            "low" => Some(2.0),
            "high" => Some(12.0),
            "turbo" => Some(16.0),
            _ => None,
        });
        match named.or_else(|| number(v)) {
            Some(n) if n > 0.0 && n <= 1_048_576.0 => {
                out.resources.memory_bytes = Some((n * GIB).round() as u64);
            }
            _ => cx.error(
                v.location,
                format!("`{RAM}` must be MICRO, LOW, HIGH, TURBO or a positive number of GB"),
            ),
        }
    }
    if let Some(v) = annotations.get(DOCKER_ENABLED) {
        match &v.kind {
            Kind::Bool(b) => out.docker_enabled = *b,
            Kind::Str(s) if s == "true" || s == "false" => out.docker_enabled = s == "true",
            _ => cx.error(
                v.location,
                format!("`{DOCKER_ENABLED}` must be true or false"),
            ),
        }
    }
    out
}

/// A number, or a string holding one.
fn number(v: &Node) -> Option<f64> {
    let n = match &v.kind {
        Kind::Int(i) => *i as f64,
        Kind::Float(f) => *f,
        Kind::Str(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A string, lowercased.
fn name(v: &Node) -> Option<String> {
    v.as_str().map(|s| s.trim().to_lowercase())
}
