//! The event log: every build, job and step change is committed to SQLite together with an event
//! row, and only then broadcast to live watchers. Ids only grow, and broadcast order is id order
//! (one writer at a time), so a watcher that remembers the last id it saw misses nothing.
//! Must not: hold unbounded buffers — the broadcast channel is bounded and lagging watchers
//! catch up from the database (see `sse`).

use std::sync::Arc;

use berth_runner::{JobEvent, RunEvent};
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, broadcast};

use crate::db::now_ms;

/// Live events kept for watchers that fall behind; beyond this they re-read the database.
const BROADCAST_CAPACITY: usize = 1024;

/// One committed event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub build_id: i64,
    /// The event as JSON text.
    pub data: Arc<str>,
}

/// A state change committed with its event.
pub enum Update<'a> {
    /// A runner event: job and step rows follow it.
    Run(&'a RunEvent),
    /// A daemon event of one of the build's own objects (no state of ours changes).
    Docker(&'a berth_engine::DaemonEvent),
    /// The build's own status (and, when it starts, the owner of what it creates).
    Status {
        status: &'a str,
        message: Option<&'a str>,
        owner: Option<&'a str>,
    },
}

pub struct EventLog {
    pool: SqlitePool,
    live: broadcast::Sender<Arc<StoredEvent>>,
    /// Serializes commit + broadcast so that watchers see ids in increasing order.
    writer: Mutex<()>,
}

impl EventLog {
    pub fn new(pool: SqlitePool) -> EventLog {
        EventLog {
            pool,
            live: broadcast::channel(BROADCAST_CAPACITY).0,
            writer: Mutex::new(()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.live.subscribe()
    }

    /// Commits `update` and its event, then announces the event. Returns the event id.
    /// Records a status change of a build that gives no owner (the common case).
    pub async fn set_status(
        &self,
        build_id: i64,
        status: &str,
        message: Option<&str>,
    ) -> Result<i64, sqlx::Error> {
        let update = Update::Status {
            status,
            message,
            owner: None,
        };
        self.record(build_id, update).await
    }

    pub async fn record(&self, build_id: i64, update: Update<'_>) -> Result<i64, sqlx::Error> {
        let data = event_json(build_id, &update).to_string();
        let _guard = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        apply(&mut tx, build_id, &update).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (build_id, data, created_at) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(build_id)
        .bind(&data)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let _ = self.live.send(Arc::new(StoredEvent {
            id,
            build_id,
            data: data.into(),
        }));
        Ok(id)
    }

    /// The newest event's id (0 when there is none).
    pub async fn latest_id(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&self.pool)
            .await
    }

    /// Up to `limit` committed events after `after`, of one build or all.
    pub async fn since(
        &self,
        build: Option<i64>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, build_id, data FROM events WHERE id > ?1 AND (?2 IS NULL OR build_id = ?2) \
             ORDER BY id LIMIT ?3",
        )
        .bind(after)
        .bind(build)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| StoredEvent {
                id: r.get("id"),
                build_id: r.get("build_id"),
                data: r.get::<String, _>("data").into(),
            })
            .collect())
    }
}

/// Whether a runner event is worth keeping (pull progress is too chatty to store).
pub fn is_recorded(event: &RunEvent) -> bool {
    !matches!(
        event,
        RunEvent::Job {
            detail: JobEvent::PullProgress { .. },
            ..
        }
    )
}

fn event_json(build_id: i64, update: &Update<'_>) -> Value {
    match update {
        Update::Run(event) => {
            let mut v = serde_json::to_value(event).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                // The runner's own build number and host paths mean nothing to API clients.
                if o.get("event").and_then(Value::as_str) == Some("build_started") {
                    o.remove("build_id");
                    o.remove("output_dir");
                }
                if let Some(s) = o.get_mut("summary").and_then(Value::as_object_mut) {
                    s.remove("build_id");
                    s.remove("output_dir");
                }
                o.insert("build".into(), json!(build_id));
            }
            v
        }
        Update::Docker(e) => json!({
            "event": "docker",
            "build": build_id,
            "kind": e.kind,
            "action": e.action,
            "id": e.id.get(..12).unwrap_or(&e.id),
            "name": e.name,
            "exit_code": e.exit_code,
            "job": e.labels.get("io.berth.job"),
            "role": e.labels.get("io.berth.role"),
        }),
        Update::Status {
            status, message, ..
        } => {
            json!({"event": "build_status", "build": build_id, "status": status, "message": message})
        }
    }
}

async fn apply(
    conn: &mut SqliteConnection,
    build: i64,
    update: &Update<'_>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    match update {
        Update::Status {
            status,
            message,
            owner,
        } => {
            let (started, finished) = match *status {
                "running" => (Some(now), None),
                s if crate::db::is_final(s) => (None, Some(now)),
                _ => (None, None),
            };
            sqlx::query(
                "UPDATE builds SET status = ?2, message = COALESCE(?3, message), \
                 owner = COALESCE(?4, owner), started_at = COALESCE(?5, started_at), \
                 finished_at = COALESCE(?6, finished_at) WHERE id = ?1",
            )
            .bind(build)
            .bind(status)
            .bind(message)
            .bind(owner)
            .bind(started)
            .bind(finished)
            .execute(&mut *conn)
            .await?;
            if crate::db::is_final(status) {
                // Jobs and steps cut short by the build's end (cancel, crash) end with it.
                let end = if *status == "interrupted" {
                    "interrupted"
                } else {
                    "cancelled"
                };
                sqlx::query(
                    "UPDATE jobs SET status = ?2, finished_at = ?3 WHERE build_id = ?1 \
                     AND status IN ('pulling', 'running')",
                )
                .bind(build)
                .bind(end)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE steps SET status = ?2 WHERE build_id = ?1 AND status = 'running'",
                )
                .bind(build)
                .bind(end)
                .execute(&mut *conn)
                .await?;
            }
        }
        Update::Run(RunEvent::Job { job, detail }) => {
            apply_job(conn, build, job, detail, now).await?
        }
        Update::Run(RunEvent::JobSkipped { job, reason }) => {
            sqlx::query(
                "INSERT INTO jobs (build_id, name, status, result) VALUES (?1, ?2, 'skipped', ?3) \
                 ON CONFLICT (build_id, name) DO UPDATE SET status = 'skipped', result = ?3",
            )
            .bind(build)
            .bind(job)
            .bind(json!({"status": "skipped", "reason": reason}).to_string())
            .execute(&mut *conn)
            .await?;
        }
        Update::Run(_) | Update::Docker(_) => {}
    }
    Ok(())
}

async fn apply_job(
    conn: &mut SqliteConnection,
    build: i64,
    job: &str,
    detail: &JobEvent,
    now: i64,
) -> Result<(), sqlx::Error> {
    let upsert = "INSERT INTO jobs (build_id, name, status, image, started_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (build_id, name) DO UPDATE SET status = ?3, image = COALESCE(?4, image), \
         started_at = COALESCE(started_at, ?5)";
    match detail {
        JobEvent::Pulling { image } => {
            sqlx::query(upsert)
                .bind(build)
                .bind(job)
                .bind("pulling")
                .bind(image)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
        JobEvent::Started { image, .. } => {
            sqlx::query(upsert)
                .bind(build)
                .bind(job)
                .bind("running")
                .bind(image)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
        JobEvent::StepStarted { step, index } => {
            sqlx::query(
                "INSERT OR REPLACE INTO steps (build_id, job, name, idx, status, started_at) \
                 VALUES (?, ?, ?, ?, 'running', ?)",
            )
            .bind(build)
            .bind(job)
            .bind(step)
            .bind(*index as i64)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        JobEvent::StepFinished {
            step,
            exit_code,
            duration_ms,
        } => {
            sqlx::query(
                "UPDATE steps SET status = ?4, exit_code = ?5, duration_ms = ?6 \
                 WHERE build_id = ?1 AND job = ?2 AND name = ?3",
            )
            .bind(build)
            .bind(job)
            .bind(step)
            .bind(if *exit_code == 0 {
                "success"
            } else {
                "failure"
            })
            .bind(exit_code)
            .bind(*duration_ms as i64)
            .execute(&mut *conn)
            .await?;
        }
        JobEvent::StepSkipped { step } => {
            sqlx::query(
                "INSERT OR REPLACE INTO steps (build_id, job, name, idx, status) VALUES (?1, ?2, ?3, \
                 (SELECT COALESCE(MAX(idx), -1) + 1 FROM steps WHERE build_id = ?1 AND job = ?2), 'skipped')",
            )
            .bind(build)
            .bind(job)
            .bind(step)
            .execute(&mut *conn)
            .await?;
        }
        JobEvent::Finished {
            result,
            duration_ms,
        } => {
            sqlx::query(
                "INSERT INTO jobs (build_id, name, status, result, finished_at, duration_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (build_id, name) DO UPDATE SET \
                 status = ?3, result = ?4, finished_at = ?5, duration_ms = ?6",
            )
            .bind(build)
            .bind(job)
            .bind(result.label())
            .bind(serde_json::to_string(result).unwrap_or_default())
            .bind(now)
            .bind(*duration_ms as i64)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE steps SET status = 'cancelled' WHERE build_id = ? AND job = ? AND status = 'running'",
            )
            .bind(build)
            .bind(job)
            .execute(&mut *conn)
            .await?;
        }
        JobEvent::Output { .. } | JobEvent::PullProgress { .. } => {}
    }
    Ok(())
}
