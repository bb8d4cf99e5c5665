//! `steps:`: `- name: command` items or plain command strings (`step-N`), `teardown-*` last.

use super::{Ctx, is_word, seq_items};
use crate::Step;
use crate::yaml::{Kind, Node};

/// Reads a `steps` list; regular steps first, then `teardown-*` steps, each in file order.
pub(crate) fn steps(cx: &mut Ctx, node: &Node) -> Vec<Step> {
    if matches!(node.kind, Kind::Null) || node.as_seq().is_some_and(<[_]>::is_empty) {
        cx.error(node.location, "`steps` must not be empty");
        return Vec::new();
    }
    let mut out: Vec<Step> = Vec::new();
    for (i, item) in seq_items(cx, node, "steps").iter().enumerate() {
        let Some(step) = step(cx, item, i + 1) else {
            continue;
        };
        if out.iter().any(|s| s.name == step.name) {
            cx.error(
                step.location,
                format!("duplicate step name `{}`", step.name),
            );
            continue;
        }
        out.push(step);
    }
    let (mut regular, teardown): (Vec<Step>, Vec<Step>) =
        out.into_iter().partition(|s| !s.teardown);
    regular.extend(teardown);
    regular
}

fn step(cx: &mut Ctx, item: &Node, position: usize) -> Option<Step> {
    let (name, command, location) = match &item.kind {
        Kind::Str(_) | Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => (
            format!("step-{position}"),
            item.scalar_text().unwrap_or_default(),
            item.location,
        ),
        Kind::Map(entries) => {
            let [(k, v)] = entries.as_slice() else {
                let keys: Vec<String> = entries
                    .iter()
                    .map(|(k, _)| format!("`{}`", k.key_text()))
                    .collect();
                let msg = if keys.is_empty() {
                    "a step must be `- name: command`, found an empty map".to_string()
                } else {
                    format!(
                        "a step must have exactly one name, found {} keys ({}); write each step as its own `- name: command` item",
                        keys.len(),
                        keys.join(", ")
                    )
                };
                cx.error(item.location, msg);
                return None;
            };
            let name = k.key_text();
            let command = match &v.kind {
                Kind::Str(s) => s.clone(),
                Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {
                    v.scalar_text().unwrap_or_default()
                }
                _ => {
                    cx.error(
                        v.location,
                        format!(
                            "step `{name}` must be a command string, found {}",
                            v.type_name()
                        ),
                    );
                    return None;
                }
            };
            (name, command, k.location)
        }
        _ => {
            cx.error(
                item.location,
                format!(
                    "a step must be `- name: command` or a command string, found {}",
                    item.type_name()
                ),
            );
            return None;
        }
    };
    if !is_word(&name) {
        cx.error(
            location,
            format!("invalid step name `{name}`: use letters, digits, `_` and `-`"),
        );
        return None;
    }
    if command.trim().is_empty() {
        cx.error(location, format!("step `{name}` has an empty command"));
        return None;
    }
    let teardown = name.starts_with("teardown-");
    Some(Step {
        name,
        command,
        teardown,
        location,
    })
}
