//! The spanned YAML node tree: the only module that touches serde-saphyr.
//!
//! Owns: turning pipeline text into a generic [`Node`] tree where every key and value carries
//! its line/column (anchors, aliases and `<<` merge keys already resolved), and turning YAML
//! syntax errors into a message plus location.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::{Location, Value};

/// A YAML node with the place it is used (for aliases: where the alias is written).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub location: Location,
    /// Source text of a plain scalar as written (e.g. `1.0`), when recoverable.
    pub raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text, the way YAML wrote it when known (`1.0` stays `1.0`); `None` for
    /// null, lists and maps.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(b) => Some(self.raw.clone().unwrap_or_else(|| b.to_string())),
            Kind::Int(i) => Some(self.raw.clone().unwrap_or_else(|| i.to_string())),
            Kind::Float(f) => Some(self.raw.clone().unwrap_or_else(|| f.to_string())),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// The node as a kept-as-written [`Value`].
    pub fn to_value(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::Int(*i),
            Kind::Float(f) => Value::Float(*f),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Seq(items.iter().map(Node::to_value).collect()),
            Kind::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text(), v.to_value()))
                    .collect(),
            ),
        }
    }

    /// A mapping key as text (non-string scalar keys stringified).
    pub fn key_text(&self) -> String {
        self.scalar_text().unwrap_or_else(|| match self.kind {
            Kind::Null => "null".to_string(),
            _ => String::new(),
        })
    }
}

/// A YAML error: message (lowercased start, no trailing period) and where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub location: Location,
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 40,
            max_events: 200_000,
            max_nodes: 100_000,
            max_aliases: 5_000,
            max_anchors: 5_000,
            max_recorded_anchor_events: 200_000,
            max_documents: 2,
        },
        with_snippet: false,
        strict_booleans: true,
    }
}

/// Parses `source` into a node tree. An empty document is a `Null` node.
pub(crate) fn parse(source: &str) -> Result<Node, SyntaxError> {
    // The budget (depth, events, aliases) is the real guard; catching a panic is the last resort
    // so that `crate::parse` never panics whatever the input.
    let result = std::panic::catch_unwind(|| {
        serde_saphyr::from_str_with_options::<Option<Spanned<Raw>>>(source, options())
    });
    let Ok(result) = result else {
        return Err(SyntaxError {
            message: "invalid yaml: the yaml parser failed on this input".to_string(),
            location: Location::default(),
        });
    };
    match result {
        Ok(Some(s)) => Ok(convert(s, source)),
        Ok(None) => Ok(Node {
            kind: Kind::Null,
            location: Location { line: 1, column: 1 },
            raw: None,
        }),
        Err(e) => Err(syntax_error(&e)),
    }
}

fn syntax_error(e: &serde_saphyr::Error) -> SyntaxError {
    let location = e
        .location()
        .map(|l| Location {
            line: usize::try_from(l.line()).unwrap_or(0),
            column: usize::try_from(l.column()).unwrap_or(0),
        })
        .unwrap_or_default();
    let text = e.to_string();
    // The plain rendering may append " at line X column Y"; the location is reported separately.
    let first = text.lines().next().unwrap_or("invalid yaml").trim();
    let first = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = match first.find(", set DuplicateKeyPolicy") {
        Some(i) => &first[..i],
        None => first,
    };
    let message = if first.starts_with("multiple YAML documents") {
        "multiple yaml documents in one file are not supported".to_string()
    } else {
        tidy(first)
    };
    SyntaxError {
        message: format!("invalid yaml: {message}"),
        location,
    }
}

/// Lowercases the first letter and drops a trailing period.
fn tidy(s: &str) -> String {
    let s = s.trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn location_of(l: &serde_saphyr::Location) -> Location {
    Location {
        line: usize::try_from(l.line()).unwrap_or(0),
        column: usize::try_from(l.column()).unwrap_or(0),
    }
}

/// Source text of the scalar at the defined location, when it is a plain token.
fn raw_text(l: &serde_saphyr::Location, source: &str) -> Option<String> {
    let span = l.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let text = source.get(start..start.checked_add(len)?)?;
    let text = text.trim();
    if text.is_empty() || text.contains(['\n', '"', '\'', '#', ':', '!', '&', '*']) {
        return None;
    }
    Some(text.to_string())
}

fn convert(s: Spanned<Raw>, source: &str) -> Node {
    let location = location_of(&s.referenced);
    let (kind, raw) = match s.value.0 {
        RawKind::Null => (Kind::Null, None),
        RawKind::Bool(b) => (Kind::Bool(b), raw_text(&s.defined, source)),
        RawKind::Int(i) => (Kind::Int(i), raw_text(&s.defined, source)),
        RawKind::Float(f) => (Kind::Float(f), raw_text(&s.defined, source)),
        RawKind::Str(v) => (Kind::Str(v), None),
        RawKind::Seq(items) => (
            Kind::Seq(items.into_iter().map(|i| convert(i, source)).collect()),
            None,
        ),
        RawKind::Map(entries) => (
            Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (convert(k, source), convert(v, source)))
                    .collect(),
            ),
            None,
        ),
    };
    Node {
        kind,
        location,
        raw,
    }
}

/// Deserialization target before locations are converted.
struct Raw(RawKind);

enum RawKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any yaml value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(RawKind::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(RawKind::Int(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw(match i64::try_from(v) {
            Ok(i) => RawKind::Int(i),
            Err(_) => RawKind::Str(v.to_string()),
        }))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw(match i64::try_from(v) {
            Ok(i) => RawKind::Int(i),
            Err(_) => RawKind::Str(v.to_string()),
        }))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw(match i64::try_from(v) {
            Ok(i) => RawKind::Int(i),
            Err(_) => RawKind::Str(v.to_string()),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(RawKind::Float(v)))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Raw, E> {
        Ok(Raw(RawKind::Str(v.to_string())))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(RawKind::Str(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(RawKind::Str(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw(RawKind::Str(String::from_utf8_lossy(v).into_owned())))
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(RawKind::Null))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw(RawKind::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw(RawKind::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw(RawKind::Map(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(n: &Node) -> (usize, usize) {
        (n.location.line, n.location.column)
    }

    #[test]
    fn scalars_keep_their_text_and_location() {
        let root = parse("a: 1.0\nb: yes\nc: 0x1F\nd: true\ne: 'q'\n").unwrap();
        let m = root.as_map().unwrap();
        assert_eq!(m[0].1.kind, Kind::Float(1.0));
        assert_eq!(m[0].1.scalar_text().as_deref(), Some("1.0"));
        assert_eq!(loc(&m[0].1), (1, 4));
        assert_eq!(
            m[1].1.kind,
            Kind::Str("yes".into()),
            "yaml 1.2 booleans only"
        );
        assert_eq!(m[2].1.scalar_text().as_deref(), Some("0x1F"));
        assert_eq!(m[3].1.kind, Kind::Bool(true));
        assert_eq!(loc(&m[4].0), (5, 1));
    }

    #[test]
    fn aliases_and_merge_keys_resolve() {
        let root = parse("a: &x {k: v}\nb:\n  - *x\nc:\n  <<: *x\n  o: 1\n").unwrap();
        let m = root.as_map().unwrap();
        let alias = &m[1].1.as_seq().unwrap()[0];
        assert_eq!(alias.as_map().unwrap()[0].1.as_str(), Some("v"));
        assert_eq!(loc(alias), (3, 5), "located where the alias is used");
        let merged: Vec<String> = m[2]
            .1
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.key_text())
            .collect();
        assert_eq!(merged, ["o", "k"]);
    }

    #[test]
    fn syntax_errors_have_locations() {
        let e = parse("a: [1\n").unwrap_err();
        assert_eq!(e.message, "invalid yaml: unclosed bracket '['");
        assert_eq!((e.location.line, e.location.column), (1, 4));
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.message, "invalid yaml: duplicate mapping key: a");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(
            e.message,
            "invalid yaml: multiple yaml documents in one file are not supported"
        );
    }

    #[test]
    fn empty_documents_are_null() {
        assert_eq!(parse("").unwrap().kind, Kind::Null);
        assert_eq!(parse("# nothing\n").unwrap().kind, Kind::Null);
    }
}
