//! Name/value sections: `environment`, `secrets` and `parameters`.

use indexmap::IndexMap;

use super::{Ctx, is_env_name, map_entries, seq_items, unknown_key};
use crate::Parameter;
use crate::yaml::{Kind, Node};

/// `NAME: scalar` map; values stringified as written. `what` names the section in messages.
pub(crate) fn environment(cx: &mut Ctx, node: &Node, what: &str) -> IndexMap<String, String> {
    let mut out = IndexMap::new();
    for (k, v) in map_entries(cx, node, what) {
        let name = k.key_text();
        if !is_env_name(&name) {
            cx.error(
                k.location,
                format!("invalid environment variable name `{name}`: use letters, digits and `_`, not starting with a digit"),
            );
            continue;
        }
        match v.scalar_text() {
            Some(value) => {
                out.insert(name, value);
            }
            None if matches!(v.kind, Kind::Null) => cx.error(
                v.location,
                format!(
                    "environment variable `{name}` has no value (write `\"\"` for an empty string)"
                ),
            ),
            None => cx.error(
                v.location,
                format!(
                    "environment variable `{name}` must be a string, number or boolean, found {}",
                    v.type_name()
                ),
            ),
        }
    }
    out
}

/// `secrets:` list of environment variable names.
pub(crate) fn secrets(cx: &mut Ctx, node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for item in seq_items(cx, node, "secrets") {
        match &item.kind {
            Kind::Str(name) if is_env_name(name) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Kind::Str(name) => cx.error(
                item.location,
                format!("invalid secret name `{name}`: use letters, digits and `_`, not starting with a digit"),
            ),
            _ => cx.error(item.location, format!("a secret must be a name, found {}", item.type_name())),
        }
    }
    out
}

/// `parameters:` (pipeline or job): `name: value`, `name: [choices]` or
/// `name: {value: ..., description: ...}`.
pub(crate) fn parameters(cx: &mut Ctx, node: &Node) -> IndexMap<String, Parameter> {
    let mut out = IndexMap::new();
    for (k, v) in map_entries(cx, node, "parameters") {
        let name = k.key_text();
        if !is_env_name(&name) {
            cx.error(
                k.location,
                format!("invalid parameter name `{name}`: use letters, digits and `_`, not starting with a digit"),
            );
            continue;
        }
        if let Some(p) = parameter(cx, &name, v) {
            out.insert(name, p);
        }
    }
    out
}

fn parameter(cx: &mut Ctx, name: &str, node: &Node) -> Option<Parameter> {
    let mut description = None;
    let value_node = match &node.kind {
        Kind::Map(entries) => {
            let mut value = None;
            for (k, v) in entries {
                match k.key_text().as_str() {
                    "value" => value = Some(v),
                    "description" => match v.scalar_text() {
                        Some(d) => description = Some(d),
                        None => cx.error(
                            v.location,
                            format!(
                                "parameter `{name}`: `description` must be a string, found {}",
                                v.type_name()
                            ),
                        ),
                    },
                    _ => {
                        unknown_key(cx, k, &["value", "description"]);
                    }
                }
            }
            let Some(value) = value else {
                cx.error(node.location, format!("parameter `{name}` has no `value`"));
                return None;
            };
            value
        }
        _ => node,
    };
    let (value, choices) = value(cx, name, value_node)?;
    Some(Parameter {
        value,
        description,
        choices,
    })
}

fn value(cx: &mut Ctx, name: &str, node: &Node) -> Option<(String, Vec<String>)> {
    match &node.kind {
        Kind::Seq(items) => {
            let mut choices = Vec::new();
            for item in items {
                match item.scalar_text() {
                    Some(c) => choices.push(c),
                    None => {
                        cx.error(
                            item.location,
                            format!(
                                "parameter `{name}`: a choice must be a string or number, found {}",
                                item.type_name()
                            ),
                        );
                        return None;
                    }
                }
            }
            let Some(first) = choices.first().cloned() else {
                cx.error(
                    node.location,
                    format!("parameter `{name}` has an empty list of choices"),
                );
                return None;
            };
            Some((first, choices))
        }
        Kind::Null => {
            cx.error(
                node.location,
                format!("parameter `{name}` has no value (write `\"\"` for an empty string)"),
            );
            None
        }
        _ => match node.scalar_text() {
            Some(v) => Some((v, Vec::new())),
            None => {
                cx.error(
                    node.location,
                    format!("parameter `{name}` must be a string, number, list or `{{value, description}}`, found {}", node.type_name()),
                );
                None
            }
        },
    }
}
