//! Removing everything a scope created: on shutdown, and by label after a crash.
//!
//! Owns: the removal order (containers with their anonymous volumes, then networks, then volumes,
//! then image tags the scope created, then untagged images it built, then its tag marker) and
//! retrying while late creates appear.
//! Must not: remove anything not both registered or labelled with this scope **and** labelled
//! with this owner; a failed removal never stops the others, and is reported.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::forward::Daemon;
use crate::parse::encode_segment;
use crate::scope::{SCOPE_LABEL, Scope};

/// What a reap removed and what it could not.
#[derive(Debug, Default, Clone)]
pub struct ReapReport {
    /// `kind name-or-id` of each object removed.
    pub removed: Vec<String>,
    /// `kind name-or-id` and the error, for each object that could not be removed.
    pub failed: Vec<(String, String)>,
}

impl ReapReport {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
}

const ROUNDS: usize = 5;

/// Removes everything of `scope` (registered, or labelled with its scope and owner labels).
pub async fn reap_scope(daemon: &Daemon, scope: &Scope) -> ReapReport {
    let mut report = ReapReport::default();
    for _ in 0..ROUNDS {
        let owned = scope.owned();
        let labelled = labelled(daemon, scope).await;
        let mut containers = owned.containers.clone();
        containers.extend(labelled.0);
        let mut networks = owned.networks.clone();
        networks.extend(labelled.1);
        let mut volumes = owned.volumes.clone();
        volumes.extend(labelled.2);
        let before = report.removed.len();
        dedup(&mut containers);
        dedup(&mut networks);
        dedup(&mut volumes);
        for id in &containers {
            remove(
                daemon,
                &mut report,
                "container",
                &format!("/containers/{}?force=1&v=1", encode_segment(id)),
                id,
            )
            .await;
        }
        for id in &networks {
            remove(
                daemon,
                &mut report,
                "network",
                &format!("/networks/{}", encode_segment(id)),
                id,
            )
            .await;
        }
        for v in &volumes {
            remove(
                daemon,
                &mut report,
                "volume",
                &format!("/volumes/{}?force=1", encode_segment(v)),
                v,
            )
            .await;
        }
        for t in &owned.tags {
            remove(
                daemon,
                &mut report,
                "image",
                &format!("/images/{}", encode_segment(t)),
                t,
            )
            .await;
        }
        // Images the scope built that no tag names any more (untagged builds, or builds whose
        // tags were just removed and that something else still held).
        for id in untagged_images(daemon, scope).await {
            remove(
                daemon,
                &mut report,
                "image",
                &format!("/images/{}", encode_segment(&id)),
                &id,
            )
            .await;
        }
        let again = labelled_any(daemon, scope).await;
        if !again && report.removed.len() >= before {
            break;
        }
    }
    report
        .failed
        .retain(|(what, _)| !report.removed.contains(what));
    report.failed.dedup();
    // The tag marker goes last: while an image of the scope remains, gc still needs it.
    if report
        .failed
        .iter()
        .all(|(what, _)| !what.starts_with("image "))
    {
        let (marker, _) = scope.tag_marker();
        remove(
            daemon,
            &mut report,
            "volume",
            &format!("/volumes/{}", encode_segment(&marker)),
            &marker,
        )
        .await;
    }
    report
}

/// Ids of images labelled with this scope and owner that have no tag.
async fn untagged_images(daemon: &Daemon, scope: &Scope) -> Vec<String> {
    let f = label_filter(scope);
    let Ok((_, v)) = daemon
        .call(Method::GET, &format!("/images/json{f}"), None)
        .await
    else {
        return Vec::new();
    };
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|i| {
                    i["RepoTags"].as_array().is_none_or(|t| {
                        t.iter()
                            .all(|t| t.as_str().is_none_or(|t| t == "<none>:<none>"))
                    })
                })
                .filter_map(|i| i["Id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn dedup(v: &mut Vec<String>) {
    v.sort();
    v.dedup();
}

async fn remove(daemon: &Daemon, report: &mut ReapReport, kind: &str, path: &str, name: &str) {
    let what = format!("{kind} {name}");
    if report.removed.contains(&what) {
        return;
    }
    match daemon.call(Method::DELETE, path, None).await {
        Ok((s, _)) if s.is_success() => report.removed.push(what),
        Ok((StatusCode::NOT_FOUND, _)) => {}
        Ok((s, v)) => report.failed.push((
            what,
            format!("{s}: {}", v["message"].as_str().unwrap_or("")),
        )),
        Err(e) => report.failed.push((what, e.to_string())),
    }
}

fn label_filter(scope: &Scope) -> String {
    let mut labels = vec![json!(format!("{SCOPE_LABEL}={}", scope.name()))];
    if let Some(o) = scope.labels().get(berth_engine::labels::OWNER) {
        labels.push(json!(format!("{}={o}", berth_engine::labels::OWNER)));
    }
    let f = json!({ "label": labels }).to_string();
    crate::parse::QueryOut::new().push("filters", &f).finish()
}

/// Objects on the daemon labelled with this scope and owner: (containers, networks, volumes).
async fn labelled(daemon: &Daemon, scope: &Scope) -> (Vec<String>, Vec<String>, Vec<String>) {
    let f = label_filter(scope);
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o[key].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = match daemon
        .call(Method::GET, &format!("/containers/json{f}&all=1"), None)
        .await
    {
        Ok((_, v)) => ids(&v, "Id"),
        Err(_) => Vec::new(),
    };
    let n = match daemon
        .call(Method::GET, &format!("/networks{f}"), None)
        .await
    {
        Ok((_, v)) => ids(&v, "Id"),
        Err(_) => Vec::new(),
    };
    let v = match daemon
        .call(Method::GET, &format!("/volumes{f}"), None)
        .await
    {
        Ok((_, v)) => ids(&v["Volumes"], "Name"),
        Err(_) => Vec::new(),
    };
    (c, n, v)
}

async fn labelled_any(daemon: &Daemon, scope: &Scope) -> bool {
    let (c, n, v) = labelled(daemon, scope).await;
    !(c.is_empty() && n.is_empty() && v.is_empty())
}
