//! The build queue: builds wait in the database as `queued` and start in submission order while
//! fewer than `max_builds` run. Because the queue *is* the database, queued builds survive a
//! restart. Secret values are the exception: they are kept in memory only, never stored.

use std::collections::{BTreeMap, HashMap};

use berth_engine::Owner;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::events::Update;

pub struct Queue {
    max: usize,
    wake: Notify,
    /// Held while a build changes from queued to running or cancelled, so the two never race.
    gate: Mutex<()>,
    running: std::sync::Mutex<HashMap<i64, CancellationToken>>,
    stopping: std::sync::atomic::AtomicBool,
    secrets: std::sync::Mutex<HashMap<i64, BTreeMap<String, String>>>,
}

impl Queue {
    pub fn new(max: usize) -> Queue {
        Queue {
            max: max.max(1),
            wake: Notify::new(),
            gate: Mutex::new(()),
            running: Default::default(),
            stopping: Default::default(),
            secrets: Default::default(),
        }
    }

    /// Something changed (a submission, a build ended): look for work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn set_secrets(&self, build: i64, secrets: BTreeMap<String, String>) {
        if !secrets.is_empty() {
            lock(&self.secrets).insert(build, secrets);
        }
    }

    pub fn take_secrets(&self, build: i64) -> BTreeMap<String, String> {
        lock(&self.secrets).remove(&build).unwrap_or_default()
    }

    pub fn running(&self) -> usize {
        lock(&self.running).len()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts no more builds and stops the running ones (they end `interrupted`, cleaned up);
    /// returns once they have all ended. Queued builds stay queued for the next start.
    pub async fn stop(&self) {
        let _gate = self.gate.lock().await;
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for token in lock(&self.running).values() {
            token.cancel();
        }
        drop(_gate);
        while self.running() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn finished(&self, build: i64) {
        lock(&self.running).remove(&build);
        self.wake();
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a cancel request did.
pub enum Cancelled {
    /// It was queued and is now cancelled.
    Dequeued,
    /// It is running; its jobs are being stopped.
    Stopping,
    /// It had already ended.
    AlreadyFinished,
}

pub async fn cancel(state: &AppState, build: i64) -> Result<Cancelled, sqlx::Error> {
    let _gate = state.queue.gate.lock().await;
    if let Some(token) = lock(&state.queue.running).get(&build) {
        token.cancel();
        return Ok(Cancelled::Stopping);
    }
    if crate::db::build_status(&state.pool, build)
        .await?
        .as_deref()
        == Some("queued")
    {
        state.queue.take_secrets(build);
        state
            .log
            .set_status(build, "cancelled", Some("cancelled while queued"))
            .await?;
        return Ok(Cancelled::Dequeued);
    }
    Ok(Cancelled::AlreadyFinished)
}

/// Starts queued builds, oldest first, whenever a slot is free.
pub fn spawn_dispatcher(state: AppState) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = start_ready(&state).await {
                tracing::error!("failed to start queued builds: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            state.queue.wake.notified().await;
        }
    });
}

async fn start_ready(state: &AppState) -> Result<(), sqlx::Error> {
    loop {
        let _gate = state.queue.gate.lock().await;
        if state.queue.is_stopping() || state.queue.running() >= state.queue.max {
            return Ok(());
        }
        let Some(id): Option<i64> =
            sqlx::query_scalar("SELECT id FROM builds WHERE status = 'queued' ORDER BY id LIMIT 1")
                .fetch_optional(&state.pool)
                .await?
        else {
            return Ok(());
        };
        let owner = match Owner::register() {
            Ok(o) => o,
            Err(e) => {
                let message = format!("failed to register the build's owner lock: {e}");
                state.log.set_status(id, "error", Some(&message)).await?;
                continue;
            }
        };
        // The owner id is committed before anything labelled with it can exist.
        state
            .log
            .record(
                id,
                Update::Status {
                    status: "running",
                    message: None,
                    owner: Some(owner.id()),
                },
            )
            .await?;
        let token = CancellationToken::new();
        lock(&state.queue.running).insert(id, token.clone());
        tokio::spawn(crate::executor::run_build(state.clone(), id, owner, token));
    }
}
