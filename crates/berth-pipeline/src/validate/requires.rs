//! `requires:`: parsing entries (`job`, `~job`, `~commit:/re/`, `sd@1:job`) and checking the
//! job graph (unknown jobs, self-requirements, cycles).

use std::collections::HashMap;

use super::{Ctx, is_word};
use crate::suggest::did_you_mean;
use crate::yaml::{Kind, Node};
use crate::{Event, Filter, Location, Requirement};

/// Reads `requires:` (a list or a single string).
pub(crate) fn requires(cx: &mut Ctx, node: &Node) -> Vec<(Requirement, Location)> {
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        Kind::Null => Vec::new(),
        _ => vec![node],
    };
    let mut out: Vec<(Requirement, Location)> = Vec::new();
    for item in items {
        let Some(text) = item.as_str() else {
            cx.error(
                item.location,
                format!(
                    "a requirement must be a string like `build` or `~commit`, found {}",
                    item.type_name()
                ),
            );
            continue;
        };
        match parse(text.trim()) {
            Ok(r) => {
                if !out.iter().any(|(o, _)| *o == r) {
                    out.push((r, item.location));
                }
            }
            Err(msg) => cx.error(item.location, msg),
        }
    }
    out
}

/// Parses one `requires` entry.
pub(crate) fn parse(text: &str) -> Result<Requirement, String> {
    let (any, rest) = match text.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if rest.starts_with("sd@") {
        return remote(text, rest, any);
    }
    let (head, filter) = match rest.split_once(':') {
        Some((h, f)) => (h, Some(f)),
        None => (rest, None),
    };
    let event = match head {
        "commit" => Some(Event::Commit),
        "pr" => Some(Event::Pr),
        "tag" => Some(Event::Tag),
        "release" => Some(Event::Release),
        _ => None,
    };
    match event {
        Some(event) if any => {
            let filter = filter.map(|f| parse_filter(text, f)).transpose()?;
            Ok(Requirement::Trigger { event, filter })
        }
        _ if filter.is_some() => Err(format!(
            "invalid requirement `{text}`: only `~commit`, `~pr`, `~tag` and `~release` take a `:filter`"
        )),
        _ if !is_word(rest) => Err(format!(
            "invalid requirement `{text}`: expected a job name, `~job`, `~commit`, `~pr`, `~tag`, `~release` or `sd@id:job`"
        )),
        _ => Ok(Requirement::Job {
            name: rest.to_string(),
            any,
        }),
    }
}

fn parse_filter(text: &str, f: &str) -> Result<Filter, String> {
    if f.is_empty() {
        return Err(format!(
            "invalid requirement `{text}`: empty filter after `:`"
        ));
    }
    match f.strip_prefix('/').and_then(|f| f.strip_suffix('/')) {
        Some(re) if f.len() >= 2 => regex::Regex::new(re).map(Filter::Regex).map_err(|e| {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("").trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            format!("invalid regex `{re}` in `{text}`: {last}")
        }),
        _ => Ok(Filter::Exact(f.to_string())),
    }
}

fn remote(text: &str, rest: &str, any: bool) -> Result<Requirement, String> {
    let bad = || format!("invalid requirement `{text}`: expected `sd@<pipeline id>:<job>`");
    let (id, job) = rest
        .strip_prefix("sd@")
        .and_then(|r| r.split_once(':'))
        .ok_or_else(bad)?;
    let pipeline = id.parse::<u64>().map_err(|_| bad())?;
    if !is_word(job) {
        return Err(bad());
    }
    Ok(Requirement::Remote {
        pipeline,
        job: job.to_string(),
        any,
    })
}

/// Checks local job requirements: unknown names, self-requirements and cycles.
pub(crate) fn check_graph(
    cx: &mut Ctx,
    names: &[String],
    jobs: &[(String, Vec<(Requirement, Location)>)],
) {
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // edges[i] = (upstream index, location of the entry in job i's requires)
    let mut edges: Vec<Vec<(usize, Location)>> = vec![Vec::new(); names.len()];
    for (job, reqs) in jobs {
        let Some(&i) = index.get(job.as_str()) else {
            continue;
        };
        for (r, loc) in reqs {
            let Requirement::Job { name, .. } = r else {
                continue;
            };
            if name == job {
                cx.error(*loc, format!("job `{job}` requires itself"));
                continue;
            }
            match index.get(name.as_str()) {
                Some(&up) => edges[i].push((up, *loc)),
                None => {
                    let hint = did_you_mean(name, names.iter().map(String::as_str));
                    cx.error(
                        *loc,
                        format!("unknown job `{name}` in `requires` of `{job}`{hint}"),
                    );
                }
            }
        }
    }
    for cycle in cycles(&edges) {
        let first = cycle[0];
        let loc = edges[first]
            .iter()
            .find(|(up, _)| *up == cycle[1 % cycle.len()])
            .map(|(_, l)| *l);
        let path: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&first))
            .map(|&i| names[i].as_str())
            .collect();
        cx.error(
            loc.unwrap_or_default(),
            format!(
                "requirement cycle: {} (each job requires the next)",
                path.join(" -> ")
            ),
        );
    }
}

/// Elementary cycles found by depth-first search, each rotated to start at its lowest index
/// and reported once.
fn cycles(edges: &[Vec<(usize, Location)>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Color {
        White,
        Grey,
        Black,
    }
    let mut color = vec![Color::White; edges.len()];
    let mut found: Vec<Vec<usize>> = Vec::new();
    for start in 0..edges.len() {
        if color[start] != Color::White {
            continue;
        }
        // Iterative DFS: (node, next edge index); `path` mirrors the grey nodes.
        let mut stack = vec![(start, 0usize)];
        let mut path = vec![start];
        color[start] = Color::Grey;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&(up, _)) = edges[node].get(*next) {
                *next += 1;
                match color[up] {
                    Color::White => {
                        color[up] = Color::Grey;
                        stack.push((up, 0));
                        path.push(up);
                    }
                    Color::Grey => {
                        let pos = path.iter().position(|&p| p == up).unwrap_or(0);
                        let mut cycle = path[pos..].to_vec();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, v)| **v)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        if !found.contains(&cycle) {
                            found.push(cycle);
                        }
                    }
                    Color::Black => {}
                }
            } else {
                color[node] = Color::Black;
                stack.pop();
                path.pop();
            }
        }
    }
    found
}
