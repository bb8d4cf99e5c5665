//! Request targets as the daemon's Go router reads them, or a refusal.
//!
//! Owns: percent-decoding the path exactly once (the daemon routes on the decoded path),
//! recognising the API version prefix, splitting into segments, and parsing query strings with
//! Go's `url.ParseQuery` rules, then rebuilding a query from the parameters a route understands.
//! Must not: accept anything the daemon would read differently. Every spelling the daemon
//! redirects, rejects or reads in a surprising way (`//`, `.`/`..` segments, trailing `/`,
//! non-canonical version prefixes, `;` in queries, repeated single-valued parameters) is refused.

use crate::refusal::Refusal;

/// The oldest API version the proxy speaks: below 1.24 the daemon accepted host configuration on
/// `start` and other semantics this filter does not model.
pub const MIN_API_MINOR: u32 = 24;

/// A canonical request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `Some((1, minor))` when the request named a version.
    pub version: Option<(u32, u32)>,
    /// Decoded path segments after the version prefix.
    pub segments: Vec<String>,
}

impl Target {
    /// The path to forward: version prefix (if any) plus the given segments, each re-encoded.
    pub fn forward_path(&self, segments: &[&str]) -> String {
        let mut out = String::new();
        if let Some((major, minor)) = self.version {
            out.push_str(&format!("/v{major}.{minor}"));
        }
        for s in segments {
            out.push('/');
            out.push_str(&encode_segment(s));
        }
        out
    }

    pub fn seg(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

/// Parses a raw (still percent-encoded) request path.
pub fn parse_path(raw: &str) -> Result<Target, Refusal> {
    if !raw.starts_with('/') {
        return Err(Refusal::bad("the request path must start with `/`"));
    }
    let decoded = percent_decode(raw, false)
        .ok_or_else(|| Refusal::bad("malformed percent-encoding in the request path"))?;
    if decoded
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == '?' || c == '#')
    {
        return Err(Refusal::bad(
            "control characters, `\\`, `?` or `#` in the decoded request path",
        ));
    }
    let body = &decoded[1..];
    let mut segments: Vec<String> = body.split('/').map(str::to_string).collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Refusal::bad(
            "empty, `.` or `..` segments (or a trailing `/`) in the request path",
        ));
    }
    let mut version = None;
    if let Some(first) = segments.first()
        && let Some(v) = first.strip_prefix('v')
        && !v.is_empty()
        && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        version = Some(parse_version(v)?);
        segments.remove(0);
    }
    if segments.is_empty() {
        return Err(Refusal::bad("the request path names no endpoint"));
    }
    Ok(Target { version, segments })
}

/// Only the canonical spelling `1.N` (no leading zeros, no extra dots) is accepted.
fn parse_version(v: &str) -> Result<(u32, u32), Refusal> {
    let bad = || {
        Refusal::bad(format!(
            "API version `{v}` is not spelled canonically (like `1.41`) or is older than 1.{MIN_API_MINOR}"
        ))
    };
    let (major, minor) = v.split_once('.').ok_or_else(bad)?;
    let canonical = |s: &str| !s.is_empty() && s.len() <= 3 && (s == "0" || !s.starts_with('0'));
    if major != "1" || !canonical(minor) || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let minor: u32 = minor.parse().map_err(|_| bad())?;
    if minor < MIN_API_MINOR {
        return Err(bad());
    }
    Ok((1, minor))
}

/// Go's `url.PathUnescape` (`plus_is_space == false`) or `QueryUnescape` (`true`): `%XX` with two
/// hex digits, anything else after `%` is an error. The result must be UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi * 16 + lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes one path segment; `/` inside it stays a separator, as the daemon decodes before routing.
pub fn encode_segment(s: &str) -> String {
    encode(s, true)
}

/// A parsed query string (Go `url.ParseQuery` semantics, minus its leniencies).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, Refusal> {
        let mut pairs = Vec::new();
        let Some(raw) = raw else {
            return Ok(Query { pairs });
        };
        if raw.contains(';') {
            return Err(Refusal::bad("`;` in the query string"));
        }
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = percent_decode(k, true)
                .ok_or_else(|| Refusal::bad("malformed percent-encoding in the query"))?;
            let v = percent_decode(v, true)
                .ok_or_else(|| Refusal::bad("malformed percent-encoding in the query"))?;
            pairs.push((k, v));
        }
        Ok(Query { pairs })
    }

    /// A single-valued parameter; given twice it is refused (the daemon would take the first,
    /// a filter reading the last would be walked around).
    pub fn single(&self, name: &str) -> Result<Option<&str>, Refusal> {
        let mut found = self.pairs.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(Refusal::bad(format!(
                "query parameter `{name}` given more than once"
            )));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// All values of a multi-valued parameter (like `t` on `/build`).
    pub fn multi(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Daemon boolean: Go's `httputils.BoolValue` is true unless "", "0", "no", "false", "none".
    pub fn flag(&self, name: &str) -> Result<bool, Refusal> {
        Ok(self.single(name)?.is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        }))
    }
}

/// A query string being rebuilt from understood parameters only.
#[derive(Debug, Default)]
pub struct QueryOut {
    out: String,
}

impl QueryOut {
    pub fn new() -> QueryOut {
        QueryOut::default()
    }

    pub fn push(&mut self, k: &str, v: &str) -> &mut Self {
        self.out.push(if self.out.is_empty() { '?' } else { '&' });
        self.out.push_str(&encode(k, false));
        self.out.push('=');
        self.out.push_str(&encode(v, false));
        self
    }

    /// Copies single-valued parameters through unchanged (refusing duplicates).
    pub fn copy(&mut self, q: &Query, names: &[&str]) -> Result<&mut Self, Refusal> {
        for n in names {
            if let Some(v) = q.single(n)? {
                self.push(n, v);
            }
        }
        Ok(self)
    }

    pub fn finish(&self) -> String {
        self.out.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_only_canonical() {
        assert_eq!(
            parse_path("/v1.41/containers/json").unwrap().version,
            Some((1, 41))
        );
        for p in [
            "/v1.41./containers/json",
            "/v01.41/containers/json",
            "/v1.041/containers/json",
            "/v1.41.0.0/containers/json",
            "/v1/containers/json",
            "/v./containers/json",
            "/v1..41/containers/json",
            "/v1.12/containers/json",
            "/v1.23/containers/json",
        ] {
            assert!(parse_path(p).is_err(), "{p}");
        }
        assert_eq!(parse_path("/containers/json").unwrap().version, None);
    }

    #[test]
    fn paths_decode_once_and_refuse_ambiguity() {
        assert_eq!(
            parse_path("/containers%2Fjson").unwrap().segments,
            ["containers", "json"]
        );
        assert_eq!(
            parse_path("/containers/%6a%73%6f%6e").unwrap().segments,
            ["containers", "json"]
        );
        for p in [
            "//containers/json",
            "/containers//json",
            "/containers/%2e/json",
            "/containers/json/",
            "/containers/%2e%2e/json",
            "/containers/%zz/json",
            "/containers/%00/json",
            "/containers/%252e/json/x%",
        ] {
            assert!(parse_path(p).is_err(), "{p}");
        }
        // Decoded once: %252e is the literal `%2e`, a name, not a dot.
        assert_eq!(
            parse_path("/containers/%252e/json").unwrap().segments,
            ["containers", "%2e", "json"]
        );
    }

    #[test]
    fn queries_like_go() {
        let q = Query::parse(Some("%66ilters=a&Filters=b&x=1+2")).unwrap();
        assert_eq!(q.single("filters").unwrap(), Some("a"));
        assert_eq!(q.single("x").unwrap(), Some("1 2"));
        assert!(Query::parse(Some("a=1;b=2")).is_err());
        assert!(Query::parse(Some("a=%zz")).is_err());
        let q = Query::parse(Some("filters=a&filters=b")).unwrap();
        assert!(q.single("filters").is_err());
        assert_eq!(q.multi("filters"), ["a", "b"]);
    }
}
