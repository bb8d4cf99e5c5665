//! Reaping by label: remove what berth made, containers first, then networks, then volumes,
//! then (for dead owners) the image tags and images of their scoped sockets.
//!
//! Cleanup errors are collected and reported alongside whatever else went wrong; one failed
//! removal never stops the others.
//!
//! Scoped-socket images (berth-proxy): a scope's job-local tags are named `<scope>_<repo>:<tag>`
//! and carry no labels, so a dead scope is recognised by its owner-labelled objects — its
//! containers, networks and volumes (label [`labels::SCOPE`]), the images it built or committed
//! (which carry the scope's labels), and its tag marker (a volume labelled [`labels::TAGS_OF`],
//! created when the scope first tags). For each dead scope, gc removes every tag with its
//! prefix, then every image labelled with that scope and a dead owner that no tag names any
//! more. Images no dead scope created or tagged are never touched; a shared image only loses
//! the dead scope's own tags. The marker goes last, so a gc that fails half-way finds it again.

use std::collections::BTreeSet;

use crate::{Engine, EngineError, ImageSummary, LabelledObject, ObjectKind, Owner, labels};

/// What a reap removed and what it could not.
#[derive(Debug, Default)]
pub struct ReapReport {
    pub removed: Vec<LabelledObject>,
    pub failed: Vec<(LabelledObject, EngineError)>,
}

impl ReapReport {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
    fn absorb(&mut self, other: ReapReport) {
        self.removed.extend(other.removed);
        self.failed.extend(other.failed);
    }
}

/// Removes every container, network and volume whose label `key` equals `value`.
pub async fn reap(engine: &dyn Engine, key: &str, value: &str) -> Result<ReapReport, EngineError> {
    reap_matching(engine, key, Some(value), |_| true).await
}

/// Removes everything labelled by berth whose owner is certainly dead (see [`Owner::is_dead`]),
/// then the image tags and images of dead owners' scoped sockets (see the module doc).
/// Returns the owners that were reaped along with the report.
pub async fn reap_dead_owners(
    engine: &dyn Engine,
) -> Result<(BTreeSet<String>, ReapReport), EngineError> {
    let mut dead = BTreeSet::new();
    let mut scopes = BTreeSet::new();
    let mut live = BTreeSet::new();
    let mut report = reap_matching(engine, labels::OWNER, None, |o| {
        // Tag markers stay until their scope's images are gone.
        if o.labels.contains_key(labels::TAGS_OF) {
            return false;
        }
        let is_dead = Owner::is_dead(&o.labels);
        if is_dead {
            if let Some(id) = o.labels.get(labels::OWNER) {
                dead.insert(id.clone());
            }
            if let Some(s) = o.labels.get(labels::SCOPE) {
                scopes.insert(s.clone());
            }
        } else if let Some(s) = o.labels.get(labels::SCOPE) {
            live.insert(s.clone());
        }
        is_dead
    })
    .await?;
    let plan = dead_scope_images(engine, scopes, live).await?;
    for o in plan.markers.iter().chain(&plan.images) {
        if let Some(id) = o.labels.get(labels::OWNER) {
            dead.insert(id.clone());
        }
    }
    // One at a time: untagging the last tag of an image deletes it, which must not race with
    // the removal of its other tags.
    let mut images = ReapReport::default();
    for o in plan.tags.into_iter().chain(plan.images) {
        images.absorb(remove_all(engine, vec![o]).await);
    }
    if images.is_clean() {
        images.absorb(remove_all(engine, plan.markers).await);
    }
    report.absorb(images);
    Ok((dead, report))
}

/// What gc removes of dead scopes' images, in order.
#[derive(Debug, Default)]
pub struct DeadScopeImages {
    /// Job-local tags (`<scope>_…`) of dead scopes.
    pub tags: Vec<LabelledObject>,
    /// Images labelled with a dead scope and a dead owner that no tag will name any more.
    pub images: Vec<LabelledObject>,
    /// The dead scopes' tag markers (volumes).
    pub markers: Vec<LabelledObject>,
}

/// Plans the removal of dead scopes' images: `scopes` (from dead owners' other objects) plus
/// the scopes of dead tag markers and of images labelled with a dead owner — less any scope
/// that also has a live owner (`live`, or a live marker or image): a scope name reused by a
/// new run after a crash keeps its tags until that run is gone too.
pub async fn dead_scope_images(
    engine: &dyn Engine,
    mut scopes: BTreeSet<String>,
    mut live: BTreeSet<String>,
) -> Result<DeadScopeImages, EngineError> {
    let mut plan = DeadScopeImages::default();
    for m in engine
        .list_labelled(ObjectKind::Volume, labels::TAGS_OF, None)
        .await?
    {
        let Some(s) = m.labels.get(labels::TAGS_OF).cloned() else {
            continue;
        };
        if Owner::is_dead(&m.labels) {
            scopes.insert(s);
            plan.markers.push(m);
        } else {
            live.insert(s);
        }
    }
    let images = engine.list_images().await?;
    let built_by_dead = |i: &ImageSummary| {
        i.labels.contains_key(labels::SCOPE)
            && i.labels.contains_key(labels::OWNER)
            && Owner::is_dead(&i.labels)
    };
    for i in &images {
        if let Some(s) = i.labels.get(labels::SCOPE)
            && i.labels.contains_key(labels::OWNER)
        {
            if built_by_dead(i) {
                scopes.insert(s.clone());
            } else {
                live.insert(s.clone());
            }
        }
    }
    scopes.retain(|s| !live.contains(s));
    plan.markers.retain(|m| {
        m.labels
            .get(labels::TAGS_OF)
            .is_some_and(|s| scopes.contains(s))
    });
    let of_dead_scope = |tag: &str| {
        tag.split_once('_')
            .is_some_and(|(scope, rest)| !rest.is_empty() && scopes.contains(scope))
    };
    for i in images {
        let (dead_tags, kept): (Vec<String>, Vec<String>) =
            i.tags.iter().cloned().partition(|t| of_dead_scope(t));
        let image_goes = kept.is_empty()
            && built_by_dead(&i)
            && i.labels
                .get(labels::SCOPE)
                .is_some_and(|s| scopes.contains(s));
        for t in dead_tags {
            plan.tags.push(LabelledObject {
                kind: ObjectKind::Image,
                id: t.clone(),
                name: t,
                labels: i.labels.clone(),
            });
        }
        if image_goes {
            plan.images.push(LabelledObject {
                kind: ObjectKind::Image,
                name: i.id.clone(),
                id: i.id,
                labels: i.labels,
            });
        }
    }
    Ok(plan)
}

/// Passes over the daemon until one is clean: a process killed mid-request can have a create
/// still in flight (a container appears on a network after the containers were listed), and
/// several reapers may work at once. Failures of the last pass are reported.
const PASSES: usize = 3;

async fn reap_matching(
    engine: &dyn Engine,
    key: &str,
    value: Option<&str>,
    mut keep: impl FnMut(&LabelledObject) -> bool,
) -> Result<ReapReport, EngineError> {
    let mut report = ReapReport::default();
    for pass in 1..=PASSES {
        let mut this = ReapReport::default();
        for kind in [
            ObjectKind::Container,
            ObjectKind::Network,
            ObjectKind::Volume,
        ] {
            let objects: Vec<_> = engine
                .list_labelled(kind, key, value)
                .await?
                .into_iter()
                .filter(&mut keep)
                .collect();
            this.absorb(remove_all(engine, objects).await);
        }
        report.removed.extend(this.removed);
        if this.failed.is_empty() || pass == PASSES {
            report.failed = this.failed;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    Ok(report)
}

/// Removes the given objects concurrently.
pub async fn remove_all(engine: &dyn Engine, objects: Vec<LabelledObject>) -> ReapReport {
    let results = futures_util::future::join_all(objects.into_iter().map(|o| async move {
        let r = match o.kind {
            ObjectKind::Container => engine.remove_container(&o.id).await,
            ObjectKind::Network => engine.remove_network(&o.id).await,
            ObjectKind::Volume => engine.remove_volume(&o.id).await,
            ObjectKind::Image => engine.remove_image(&o.id).await,
        };
        (o, r)
    }))
    .await;
    let mut report = ReapReport::default();
    for (o, r) in results {
        match r {
            Ok(()) => report.removed.push(o),
            Err(e) => report.failed.push((o, e)),
        }
    }
    report
}

/// [`reap`], waiting up to `wait` for an unreachable daemon to answer again (a daemon that
/// stopped or restarted under a run: the run's own removals failed, so what it left is still
/// there once the daemon is back). `on_wait` is called once, with the connection error, when
/// the first attempt cannot reach the daemon.
pub async fn reap_when_reachable(
    engine: &dyn Engine,
    key: &str,
    value: &str,
    wait: std::time::Duration,
    on_wait: impl FnOnce(&EngineError),
) -> Result<ReapReport, EngineError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut on_wait = Some(on_wait);
    loop {
        match reap(engine, key, value).await {
            Err(e) if e.is_connection() && tokio::time::Instant::now() < deadline => {
                if let Some(f) = on_wait.take() {
                    f(&e);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            r => return r,
        }
    }
}
