//! Reaping by label: remove what berth made, containers first, then networks, then volumes.
//!
//! Cleanup errors are collected and reported alongside whatever else went wrong; one failed
//! removal never stops the others.

use std::collections::BTreeSet;

use crate::{Engine, EngineError, LabelledObject, ObjectKind, Owner, labels};

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

/// Removes everything labelled by berth whose owner is certainly dead (see [`Owner::is_dead`]).
/// Returns the owners that were reaped along with the report.
pub async fn reap_dead_owners(
    engine: &dyn Engine,
) -> Result<(BTreeSet<String>, ReapReport), EngineError> {
    let mut dead = BTreeSet::new();
    let report = reap_matching(engine, labels::OWNER, None, |o| {
        let is_dead = Owner::is_dead(&o.labels);
        if let Some(id) = o.labels.get(labels::OWNER).filter(|_| is_dead) {
            dead.insert(id.clone());
        }
        is_dead
    })
    .await?;
    Ok((dead, report))
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
