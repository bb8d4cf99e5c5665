//! berth's build service (`berth serve`).
//!
//! Owns: the HTTP API and its OpenAPI document, bearer-token auth, the SQLite history (builds,
//! jobs, steps, the event log), the FIFO build queue, the executor that drives
//! [`berth_runner::run`] for each build, live logs, Server-Sent Events, crash recovery and the
//! embedded web UI. Must not: know Docker wire types (it talks to [`berth_engine::Engine`]), or
//! announce anything before it is committed to the database.

mod api;
pub mod auth;
mod body;
mod conn;
mod db;
mod error;
mod events;
mod executor;
mod metrics;
mod openapi;
mod queue;
mod recovery;
mod request;
mod source;
mod sse;
mod tls;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::Engine;
use berth_runner::DefaultDockerMode;
use sqlx::SqlitePool;

pub use error::ServerError;
pub use tls::TlsFiles;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Database, build sources, logs and artifacts live here.
    pub data: PathBuf,
    /// Builds running at once; more wait in the queue.
    pub max_builds: usize,
    /// Image used to clone git sources (needs `git` and `sh`).
    pub git_image: String,
    /// What `screwdriver.cd/dockerEnabled: true` selects when a submission does not say.
    pub default_docker_mode: DefaultDockerMode,
    /// Jobs of one build running at once (default: CPUs).
    pub parallel: Option<usize>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The largest request body in bytes (a source upload is base64 in JSON): 413 beyond it.
    pub max_body: u64,
    /// A request body must have arrived completely this long after the handler starts reading
    /// it; else 408 and the connection is closed (a client that trickles or stalls).
    pub body_timeout: Duration,
    /// A connection whose client accepts no byte of the answer for this long is closed (an SSE
    /// or log watcher that stopped reading; it reconnects with `Last-Event-ID`).
    pub stall_timeout: Duration,
    /// The rules of `docker: scoped` jobs' endpoints.
    pub scoped_policy: berth_runner::ScopedPolicy,
}

impl Config {
    pub fn new(listen: SocketAddr, data: PathBuf) -> Config {
        Config {
            listen,
            data,
            max_builds: 2,
            git_image: "berth-test/debian:bookworm".to_string(),
            default_docker_mode: DefaultDockerMode::Scoped,
            parallel: None,
            tls: None,
            max_body: 512 * 1024 * 1024,
            body_timeout: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(60),
            scoped_policy: berth_runner::ScopedPolicy::default(),
        }
    }
}

/// What every handler and the executor share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub pool: SqlitePool,
    pub log: Arc<events::EventLog>,
    pub queue: Arc<queue::Queue>,
    pub engine: Arc<dyn Engine>,
    pub config: Arc<Config>,
}

impl AppState {
    pub fn build_dir(&self, id: i64) -> PathBuf {
        self.config.data.join("builds").join(id.to_string())
    }
}

/// Opens the database under `data` (for `berth token`).
pub async fn open_db(data: &std::path::Path) -> Result<SqlitePool, ServerError> {
    db::open(data).await
}

/// A started service: where it listens, and the admin token if this was the first start.
pub struct Started {
    pub addr: SocketAddr,
    pub admin_token: Option<String>,
    pub recovered: recovery::Recovered,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    queue: Arc<queue::Queue>,
}

pub use recovery::Recovered;

impl Started {
    /// Serves until the listener fails.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `stop` completes; then stops the running builds (they end `interrupted`,
    /// with everything they created removed) and returns. Queued builds wait for the next start.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServerError> {
        tokio::select! {
            r = &mut self.serve => match r {
                Ok(r) => Ok(r?),
                Err(e) => Err(ServerError::Io(std::io::Error::other(e))),
            },
            () = stop => {
                self.queue.stop().await;
                self.serve.abort();
                Ok(())
            }
        }
    }
}

/// Opens the database, recovers from a previous crash, starts the queue and the HTTP listener.
pub async fn start(config: Config, engine: Arc<dyn Engine>) -> Result<Started, ServerError> {
    let pool = db::open(&config.data).await?;
    let admin_token = auth::ensure_admin(&pool).await?;
    let log = Arc::new(events::EventLog::new(pool.clone()));
    let state = AppState {
        queue: Arc::new(queue::Queue::new(config.max_builds)),
        pool,
        log,
        engine,
        config: Arc::new(config),
    };
    // Bad certificate files are a startup error, before anything else happens.
    let acceptor = state.config.tls.as_ref().map(tls::acceptor).transpose()?;
    let recovered = recovery::recover(&state).await?;
    queue::spawn_dispatcher(state.clone());

    let listener = tokio::net::TcpListener::bind(state.config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: state.config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr()?;
    let queue = state.queue.clone();
    let stall = state.config.stall_timeout;
    let app = api::router(state);
    let limits = conn::Limits { stall };
    let serve = match acceptor {
        Some(acceptor) => tokio::spawn(tls::serve(listener, acceptor, app, limits)),
        None => tokio::spawn(conn::serve(listener, app, limits)),
    };
    Ok(Started {
        addr,
        admin_token,
        recovered,
        serve,
        queue,
    })
}
