//! The state one scoped endpoint shares between its connections.
//!
//! Owns: the daemon handle and its API version, the scope, the policy, the workspace, the
//! cancellation token and task tracker that end open streams on shutdown, and the scope's own
//! network.
//! Must not: hold per-request data.

use http::{Method, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forward::Daemon;
use crate::policy::Policy;
use crate::refusal::Refusal;
use crate::rewrite::Workspace;
use crate::scope::Scope;

/// The first API version with volume `Subpath` mounts.
pub const SUBPATH_API: (u32, u32) = (1, 45);

#[derive(Debug)]
pub struct State {
    pub daemon: Daemon,
    pub scope: Scope,
    pub policy: Policy,
    pub workspace: Option<Workspace>,
    /// The daemon's API version (`(1, 45)`), learned when the endpoint started.
    pub api: Option<(u32, u32)>,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    scope_net: tokio::sync::Mutex<bool>,
    tag_marker: tokio::sync::Mutex<bool>,
    /// Image references recently found readable (shared, not another scope's), and when.
    readable: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a readable-image verdict is reused. A shared name cannot become another scope's
/// image meanwhile: jobs create only job-local tags, and registry-qualified ones only when the
/// name does not exist; the bound covers an operator removing and re-creating a name.
const READABLE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl State {
    pub fn new(
        daemon: Daemon,
        scope: Scope,
        policy: Policy,
        workspace: Option<Workspace>,
        api: Option<(u32, u32)>,
    ) -> State {
        State {
            daemon,
            scope,
            policy,
            workspace,
            api,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            scope_net: tokio::sync::Mutex::new(false),
            tag_marker: tokio::sync::Mutex::new(false),
            readable: Default::default(),
        }
    }

    /// Whether `image` was found readable within [`READABLE_FOR`].
    pub fn readable_recently(&self, image: &str) -> bool {
        let m = self.readable.lock().unwrap_or_else(|p| p.into_inner());
        m.get(image).is_some_and(|t| t.elapsed() < READABLE_FOR)
    }

    pub fn remember_readable(&self, image: &str) {
        let mut m = self.readable.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= 1024 {
            m.retain(|_, t| t.elapsed() < READABLE_FOR);
        }
        m.insert(image.to_string(), std::time::Instant::now());
    }

    /// Whether binds inside the workspace become volume `Subpath` mounts: the workspace is a
    /// volume and the daemon speaks API ≥ 1.45.
    pub fn subpath_mounts(&self) -> bool {
        self.workspace.as_ref().is_some_and(|w| w.volume.is_some())
            && self.api.is_some_and(|v| v >= SUBPATH_API)
    }

    /// The daemon name of the scope's own network: the scope name itself, which no job-given
    /// name (`<scope>_<name>`) and no other scope can collide with.
    pub fn scope_network_name(&self) -> String {
        self.scope.name().to_string()
    }

    /// Creates the scope's tag marker (see [`Scope::tag_marker`]) before its first job-local
    /// tag, so that no tag exists that `berth gc` could not attribute after a crash.
    pub async fn tag_marker(&self) -> Result<(), Refusal> {
        let mut created = self.tag_marker.lock().await;
        if *created {
            return Ok(());
        }
        let (name, labels) = self.scope.tag_marker();
        let body = json!({ "Name": name, "Driver": "local", "Labels": labels });
        let (status, v) = self
            .daemon
            .call(Method::POST, "/volumes/create", Some(&body))
            .await
            .map_err(|e| Refusal::Daemon(e.to_string()))?;
        if status != StatusCode::CREATED {
            return Err(Refusal::Daemon(format!(
                "failed to create the scope's tag marker {name}: {}",
                v["message"].as_str().unwrap_or("unexpected answer")
            )));
        }
        *created = true;
        Ok(())
    }

    /// Creates the scope's network on first use; returns its daemon name.
    pub async fn scope_network(&self) -> Result<String, Refusal> {
        let name = self.scope_network_name();
        let mut created = self.scope_net.lock().await;
        if *created {
            return Ok(name);
        }
        let body = json!({
            "Name": name,
            "CheckDuplicate": true,
            "Driver": "bridge",
            "Labels": self.scope.labels(),
        });
        let (status, v) = self
            .daemon
            .call(Method::POST, "/networks/create", Some(&body))
            .await
            .map_err(|e| Refusal::Daemon(e.to_string()))?;
        match (status, v["Id"].as_str()) {
            (StatusCode::CREATED, Some(id)) => {
                self.scope.add_network(id);
                *created = true;
                Ok(name)
            }
            _ => Err(Refusal::Daemon(format!(
                "failed to create the scope's network {name}: {}",
                v["message"].as_str().unwrap_or("unexpected answer")
            ))),
        }
    }
}
