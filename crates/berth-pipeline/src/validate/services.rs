//! `services:`: sidecar containers of a job, with GitLab-style default aliases.

use std::time::Duration;

use indexmap::IndexMap;

use super::{Ctx, seq_items, unknown_key, vars};
use crate::Service;
use crate::yaml::{Kind, Node};

const SERVICE_KEYS: &[&str] = &[
    "image",
    "alias",
    "aliases",
    "command",
    "entrypoint",
    "environment",
    "timeout",
];

pub(crate) fn services(cx: &mut Ctx, node: &Node) -> Vec<Service> {
    seq_items(cx, node, "services")
        .iter()
        .filter_map(|item| service(cx, item))
        .collect()
}

fn service(cx: &mut Ctx, node: &Node) -> Option<Service> {
    let entries = match &node.kind {
        Kind::Str(image) => return image_ok(cx, node, image).then(|| plain(image)),
        Kind::Map(entries) => entries,
        _ => {
            cx.error(
                node.location,
                format!(
                    "a service must be an image name or a map, found {}",
                    node.type_name()
                ),
            );
            return None;
        }
    };
    let mut image = None;
    let mut aliases: Vec<String> = Vec::new();
    let mut svc = plain("");
    let mut ok = true;
    for (k, v) in entries {
        match k.key_text().as_str() {
            "image" => match v.as_str() {
                Some(i) if image_ok(cx, v, i) => image = Some(i.to_string()),
                Some(_) => ok = false,
                None => {
                    cx.error(
                        v.location,
                        format!("service `image` must be a string, found {}", v.type_name()),
                    );
                    ok = false;
                }
            },
            "alias" => ok &= alias(cx, v, &mut aliases),
            "aliases" => match &v.kind {
                Kind::Seq(items) => {
                    for item in items {
                        ok &= alias(cx, item, &mut aliases);
                    }
                }
                _ => {
                    cx.error(
                        v.location,
                        format!("service `aliases` must be a list, found {}", v.type_name()),
                    );
                    ok = false;
                }
            },
            "command" => svc.command = Some(words(cx, v, "command")?),
            "entrypoint" => svc.entrypoint = Some(words(cx, v, "entrypoint")?),
            "environment" => svc.environment = vars::environment(cx, v, "environment"),
            "timeout" => match v.kind {
                Kind::Int(n) if n > 0 => {
                    svc.ready_timeout = Some(Duration::from_secs(n.unsigned_abs()))
                }
                _ => {
                    cx.error(
                        v.location,
                        "service `timeout` must be a positive whole number of seconds",
                    );
                    ok = false;
                }
            },
            _ => {
                unknown_key(cx, k, SERVICE_KEYS);
                ok = false;
            }
        }
    }
    let Some(image) = image else {
        if ok {
            cx.error(node.location, "service has no `image`");
        }
        return None;
    };
    if !ok {
        return None;
    }
    svc.aliases = if aliases.is_empty() {
        default_aliases(&image)
    } else {
        aliases
    };
    svc.image = image;
    Some(svc)
}

fn plain(image: &str) -> Service {
    Service {
        image: image.to_string(),
        aliases: default_aliases(image),
        command: None,
        entrypoint: None,
        environment: IndexMap::new(),
        ready_timeout: None,
    }
}

fn image_ok(cx: &mut Ctx, node: &Node, image: &str) -> bool {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        cx.error(node.location, format!("invalid service image `{image}`"));
        return false;
    }
    true
}

fn alias(cx: &mut Ctx, node: &Node, out: &mut Vec<String>) -> bool {
    match node.as_str() {
        Some(a) if is_hostname(a) => {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
            true
        }
        Some(a) => {
            cx.error(
                node.location,
                format!("invalid service alias `{a}`: use letters, digits, `_`, `.` and `-`"),
            );
            false
        }
        None => {
            cx.error(
                node.location,
                format!(
                    "a service alias must be a string, found {}",
                    node.type_name()
                ),
            );
            false
        }
    }
}

fn is_hostname(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A list taken as is, or a string split into shell words.
fn words(cx: &mut Ctx, node: &Node, what: &str) -> Option<Vec<String>> {
    match &node.kind {
        Kind::Seq(items) => items
            .iter()
            .map(|i| {
                i.scalar_text().or_else(|| {
                    cx.error(
                        i.location,
                        format!(
                            "service `{what}` items must be strings, found {}",
                            i.type_name()
                        ),
                    );
                    None
                })
            })
            .collect(),
        Kind::Str(s) => match shell_words(s) {
            Ok(w) if !w.is_empty() => Some(w),
            Ok(_) => {
                cx.error(node.location, format!("service `{what}` must not be empty"));
                None
            }
            Err(e) => {
                cx.error(node.location, format!("service `{what}`: {e}"));
                None
            }
        },
        _ => {
            cx.error(
                node.location,
                format!(
                    "service `{what}` must be a string or a list, found {}",
                    node.type_name()
                ),
            );
            None
        }
    }
}

/// Splits like a shell splits simple words: whitespace separates, single and double quotes
/// group, backslash escapes outside single quotes.
pub(crate) fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unclosed single quote".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unclosed double quote".to_string()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed double quote".to_string()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// GitLab-style aliases: `registry:5000/org/img:tag` -> `org-img`, `img`.
pub(crate) fn default_aliases(image: &str) -> Vec<String> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let no_tag = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    let mut parts: Vec<&str> = no_tag.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            parts.remove(0);
        }
    }
    let mut out = Vec::new();
    let joined = parts.join("-");
    if !joined.is_empty() {
        out.push(joined);
    }
    if let Some(last) = parts.last()
        && !out.iter().any(|o| o == last)
    {
        out.push((*last).to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        assert_eq!(default_aliases("postgres:16"), ["postgres"]);
        assert_eq!(default_aliases("redis"), ["redis"]);
        assert_eq!(
            default_aliases("bitnami/redis:7.2"),
            ["bitnami-redis", "redis"]
        );
        assert_eq!(
            default_aliases("registry.example.com:5000/org/img:1.0@sha256:abc"),
            ["org-img", "img"]
        );
        assert_eq!(default_aliases("localhost/team/db"), ["team-db", "db"]);
        assert_eq!(default_aliases("localhost:5000/db:1"), ["db"]);
        assert_eq!(default_aliases("mysql@sha256:0123"), ["mysql"]);
    }

    #[test]
    fn splitting() {
        assert_eq!(
            shell_words("redis-server --port 6380").unwrap(),
            ["redis-server", "--port", "6380"]
        );
        assert_eq!(
            shell_words(r#"sh -c 'echo "a b"' "x y" z\ w"#).unwrap(),
            ["sh", "-c", "echo \"a b\"", "x y", "z w"]
        );
        assert_eq!(shell_words("''").unwrap(), [""]);
        assert!(shell_words("'oops").is_err());
        assert!(shell_words("\"oops").is_err());
    }
}
