//! Secret values: from `--secret`, a dotenv file, or the environment, checked before a run.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretError {
    #[error(
        "secret{} {} declared by the pipeline but not given: pass --secret NAME=value, --secrets-file FILE, or set {} in the environment",
        if names.len() > 1 { "s" } else { "" },
        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        if names.len() > 1 { "them" } else { "it" }
    )]
    Missing { names: Vec<String> },
    #[error("{file}:{line}: {message}")]
    Dotenv {
        file: String,
        line: usize,
        message: String,
    },
}

/// Values for `declared` names: `given` (from `--secret` and files) first, else `env`.
pub fn resolve_secrets(
    declared: &[String],
    given: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, SecretError> {
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for name in declared {
        match given.get(name).cloned().or_else(|| env(name)) {
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None => missing.push(name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(values)
    } else {
        Err(SecretError::Missing { names: missing })
    }
}

/// Parses a dotenv file: `NAME=value`, optional `export `, `#` comments, single or double quotes.
pub fn parse_dotenv(file: &str, text: &str) -> Result<BTreeMap<String, String>, SecretError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let err = |message: &str| SecretError::Dotenv {
            file: file.to_string(),
            line: i + 1,
            message: message.to_string(),
        };
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| err("expected NAME=value"))?;
        let name = name.trim();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(err("invalid variable name"));
        }
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            v.replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            v.to_string()
        } else {
            value.to_string()
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_forms() {
        let m = parse_dotenv("f", "# c\nA=1\nexport B=\"two words\"\nC='x=y'\n\n").unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "x=y");
        assert_eq!(
            parse_dotenv("f", "A=1\nnope\n").unwrap_err().to_string(),
            "f:2: expected NAME=value"
        );
    }

    #[test]
    fn missing_secrets_are_named() {
        let given = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let names = vec!["A".to_string(), "B".to_string(), "C".to_string()];
        let env = |n: &str| (n == "C").then(|| "3".to_string());
        assert_eq!(
            resolve_secrets(&names, &given, env)
                .unwrap_err()
                .to_string(),
            "secret `B` declared by the pipeline but not given: pass --secret NAME=value, --secrets-file FILE, or set it in the environment"
        );
    }
}
