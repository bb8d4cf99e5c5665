//! The endpoint: a unix socket served with hyper's HTTP/1.1 server (upgrades enabled).
//!
//! Owns: [`ScopedProxy`] — starting an endpoint for a scope, and closing it: stop accepting, end
//! open connections and streams, wait for in-flight requests, then reap the scope.
//! Each endpoint is served by its own thread running a single-threaded tokio runtime: a
//! request's client connection, handler and daemon connection then run on one thread, with no
//! cross-thread wake-ups per request (which cost more than the proxy's own work on `/_ping`),
//! and one job's load cannot starve the caller's runtime.
//! Must not: look at requests; every request goes to `handler`, one at a time per connection,
//! so each request on a keep-alive connection is authorized on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::forward::Daemon;
use crate::policy::Policy;
use crate::reap::{ReapReport, reap_scope};
use crate::rewrite::Workspace;
use crate::scope::{Scope, ScopeNameError};
use crate::state::State;

/// `1.45` → `(1, 45)`.
fn parse_api_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What a scoped endpoint needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to create the endpoint's unix socket (replaced if a stale socket is there).
    pub listen: PathBuf,
    /// The real daemon's unix socket.
    pub daemon_socket: PathBuf,
    /// The scope (job) name: `[a-z0-9-]{1,40}`, unique among live scopes on the daemon.
    pub scope: String,
    /// The owner labels (`Owner::labels()`), added to everything created with `io.berth.scope`.
    pub owner_labels: BTreeMap<String, String>,
    /// The job's workspace; without one, no bind mounts are allowed.
    pub workspace: Option<Workspace>,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Scope(#[from] ScopeNameError),
    #[error("the owner labels must include io.berth.owner")]
    NoOwner,
    #[error("failed to reach the Docker daemon at {path}: {reason}")]
    Daemon { path: PathBuf, reason: String },
    #[error("failed to listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Counts of an endpoint's daemon connections (see [`ScopedProxy::daemon_connections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonConnections {
    /// Open now: idle in the pool, in use, or hijacked.
    pub open: usize,
    /// Idle in the pool (at most [`crate::MAX_IDLE_DAEMON_CONNECTIONS`]).
    pub idle: usize,
    /// Opened since the endpoint started.
    pub opened: usize,
}

/// A running scoped endpoint. Call [`ScopedProxy::shutdown_and_reap`] when the job ends;
/// dropping it without that stops serving but leaves the scope's objects to `berth gc`.
#[derive(Debug)]
pub struct ScopedProxy {
    state: Arc<State>,
    listen: PathBuf,
    /// Ends the endpoint's thread (and with it every task still on its runtime).
    stop: tokio_util::sync::CancellationToken,
    /// Resolves when the endpoint's thread has stopped accepting.
    accept_done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Resolves when the endpoint's thread has ended.
    thread_done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl ScopedProxy {
    /// Checks the daemon answers, binds the socket and starts serving.
    pub async fn start(config: ProxyConfig) -> Result<ScopedProxy, StartError> {
        if !config
            .owner_labels
            .contains_key(berth_engine::labels::OWNER)
        {
            return Err(StartError::NoOwner);
        }
        let scope = Scope::new(&config.scope, config.owner_labels)?;
        // The probe's connection is driven by the caller's runtime: not pooled for the endpoint.
        let probe = Daemon::new(&config.daemon_socket);
        // One `/_ping`: the daemon answers, and its `Api-Version` header decides how workspace
        // binds are mounted (volume `Subpath` mounts need 1.45; no header counts as old) —
        // the docker CLI's way, and far cheaper for the daemon than `/version`.
        let ping = async {
            let req = Daemon::request(Method::GET, "/_ping").body(crate::forward::empty())?;
            let resp = probe.send(req).await?;
            let status = resp.status();
            let api = resp
                .headers()
                .get("api-version")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_api_version);
            crate::forward::read_limited(resp.into_body(), 4096).await?;
            Ok::<_, crate::forward::ForwardError>((status, api))
        };
        let api = match ping.await {
            Ok((StatusCode::OK, api)) => api,
            Ok((s, _)) => {
                return Err(StartError::Daemon {
                    path: config.daemon_socket,
                    reason: format!("/_ping answered {s}"),
                });
            }
            Err(e) => {
                return Err(StartError::Daemon {
                    path: config.daemon_socket,
                    reason: e.to_string(),
                });
            }
        };
        drop(probe);
        let daemon = Daemon::new(&config.daemon_socket);
        let listen = config.listen.clone();
        remove_stale_socket(&listen);
        let listener = std::os::unix::net::UnixListener::bind(&listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| StartError::Listen {
                path: listen.clone(),
                source,
            })?;
        let state = Arc::new(State::new(
            daemon,
            scope,
            config.policy,
            config.workspace,
            api,
        ));
        let stop = tokio_util::sync::CancellationToken::new();
        let (accept_tx, accept_rx) = tokio::sync::oneshot::channel();
        let (thread_tx, thread_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let stop2 = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("berth-proxy-{}", state.scope.name()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    accept_loop(listener, st.clone()).await;
                    let _ = accept_tx.send(());
                    // In-flight requests and streams keep running here until they end or the
                    // endpoint is stopped.
                    tokio::select! {
                        () = st.tracker.wait() => {}
                        () = stop2.cancelled() => {}
                    }
                    stop2.cancelled().await;
                });
                drop(rt);
                let _ = thread_tx.send(());
            });
        let ready = match spawned {
            Ok(_) => ready_rx
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the endpoint thread ended early"))),
            Err(e) => Err(e),
        };
        if let Err(source) = ready {
            stop.cancel();
            return Err(StartError::Listen {
                path: listen.clone(),
                source,
            });
        }
        Ok(ScopedProxy {
            state,
            listen,
            stop,
            accept_done: Some(accept_rx),
            thread_done: Some(thread_rx),
        })
    }

    /// The daemon's API version, as learned at start (`None` if it did not say).
    pub fn daemon_api_version(&self) -> Option<(u32, u32)> {
        self.state.api
    }

    /// Whether binds inside the workspace are forwarded as volume `Subpath` mounts: the
    /// workspace is a volume and the daemon speaks API ≥ 1.45.
    pub fn uses_subpath_mounts(&self) -> bool {
        self.state.subpath_mounts()
    }

    pub fn socket_path(&self) -> &Path {
        &self.listen
    }

    pub fn scope(&self) -> &str {
        self.state.scope.name()
    }

    /// The endpoint's daemon connections: open now (idle in the pool or in use), idle in the
    /// pool, and opened in total. For tests and diagnostics of connection reuse.
    pub fn daemon_connections(&self) -> DaemonConnections {
        let (open, opened) = self.state.daemon.connections();
        DaemonConnections {
            open,
            idle: self.state.daemon.idle_connections(),
            opened,
        }
    }

    /// Creates (on first use) the scope's own bridge network and returns its daemon name. The
    /// runner attaches the job's container to it so the job reaches the containers it starts by
    /// their job-visible names.
    pub async fn scope_network(&self) -> Result<String, String> {
        self.state.scope_network().await.map_err(|e| e.to_string())
    }

    /// Closes the endpoint (no new connections, open streams ended), waits briefly for
    /// in-flight requests, then removes everything the scope created.
    pub async fn shutdown_and_reap(mut self) -> ReapReport {
        self.state.cancel.cancel();
        if let Some(a) = self.accept_done.take() {
            let _ = a.await;
        }
        let _ = std::fs::remove_file(&self.listen);
        self.state.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.state.tracker.wait()).await;
        self.stop.cancel();
        if let Some(t) = self.thread_done.take() {
            let _ = t.await;
        }
        reap_scope(&self.state.daemon, &self.state.scope).await
    }
}

impl Drop for ScopedProxy {
    /// Stops serving (the scope's objects stay for `berth gc`, unless shut down first).
    fn drop(&mut self) {
        self.state.cancel.cancel();
        self.stop.cancel();
    }
}

/// Accepts connections until the endpoint is cancelled; each is served on its own task.
async fn accept_loop(listener: tokio::net::UnixListener, st: Arc<State>) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("scoped socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = st.cancel.cancelled() => return,
        };
        let st2 = st.clone();
        st.tracker.spawn(async move {
            let svc = {
                let st3 = st2.clone();
                service_fn(move |req| {
                    let st4 = st3.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(crate::handler::handle(st4, req).await)
                    }
                })
            };
            let conn = http1::Builder::new()
                .max_buf_size(256 * 1024)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("scoped socket connection ended: {e}");
                },
                () = st2.cancel.cancelled() => {}
            }
        });
    }
}

fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(path)
        && m.file_type().is_socket()
    {
        let _ = std::fs::remove_file(path);
    }
}
