//! `berth gc`: remove what berth runs that died left on the daemon, and only that: containers,
//! networks and volumes by owner label, then the job-local image tags and images of dead
//! scoped sockets (see `berth_engine::reap`).

use std::collections::BTreeSet;

use berth_engine::{Engine, ObjectKind, Owner, labels};

use crate::args::GcArgs;
use crate::{ExitCode, Failure};

pub(crate) async fn gc(docker_host: Option<&str>, args: GcArgs) -> Result<ExitCode, Failure> {
    let engine = super::connect(docker_host).await?;
    if args.dry_run {
        let (mut dead_scopes, mut live_scopes) = (BTreeSet::new(), BTreeSet::new());
        for kind in [
            ObjectKind::Container,
            ObjectKind::Network,
            ObjectKind::Volume,
        ] {
            for o in engine.list_labelled(kind, labels::OWNER, None).await? {
                if o.labels.contains_key(labels::TAGS_OF) {
                    continue;
                }
                let scopes = if Owner::is_dead(&o.labels) {
                    println!("would remove {kind} {}", o.name);
                    &mut dead_scopes
                } else {
                    &mut live_scopes
                };
                if let Some(s) = o.labels.get(labels::SCOPE) {
                    scopes.insert(s.clone());
                }
            }
        }
        let plan = berth_engine::dead_scope_images(&engine, dead_scopes, live_scopes).await?;
        for o in plan.tags.iter().chain(&plan.images).chain(&plan.markers) {
            println!("would remove {} {}", o.kind, o.name);
        }
        return Ok(ExitCode::Success);
    }
    let (owners, report) = berth_engine::reap_dead_owners(&engine).await?;
    for o in &report.removed {
        println!("removed {} {}", o.kind, o.name);
    }
    for (o, e) in &report.failed {
        eprintln!("berth: failed to remove {} {}: {e}", o.kind, o.name);
    }
    println!(
        "gc: removed {} object{} of {} dead run{}",
        report.removed.len(),
        if report.removed.len() == 1 { "" } else { "s" },
        owners.len(),
        if owners.len() == 1 { "" } else { "s" }
    );
    if report.is_clean() {
        Ok(ExitCode::Success)
    } else {
        Ok(ExitCode::Infrastructure)
    }
}
