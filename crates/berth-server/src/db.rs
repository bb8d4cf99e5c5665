//! The SQLite database: opening it (WAL, migrations embedded in the binary) and the queries on
//! builds, jobs and steps. Owns the schema; must not know about HTTP or the runner.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::ServerError;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens (creating if needed) `<data>/berth.db` and brings its schema up to date.
pub async fn open(data: &Path) -> Result<SqlitePool, ServerError> {
    std::fs::create_dir_all(data).map_err(|source| ServerError::DataDir {
        path: data.to_path_buf(),
        source,
    })?;
    let path = data.join("berth.db");
    let opts = SqliteConnectOptions::from_str("sqlite:")
        .map_err(|source| ServerError::Open {
            path: path.clone(),
            source,
        })?
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL: a commit survives a crash of the process (not of the machine's power).
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(opts)
        .await
        .map_err(|source| ServerError::Open {
            path: path.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Build states. `queued` and `running` are live; the others are final.
pub const LIVE: [&str; 2] = ["queued", "running"];

pub fn is_final(status: &str) -> bool {
    !LIVE.contains(&status)
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub name: String,
    pub index: i64,
    pub status: String,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub name: String,
    pub status: String,
    pub image: Option<String>,
    pub result: Option<serde_json::Value>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub steps: Vec<StepRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildRow {
    pub id: i64,
    pub status: String,
    /// 1-based place in the queue while queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    pub submitted_by: String,
    pub rerun_of: Option<i64>,
    pub message: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub request: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<JobRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

const BUILD_COLUMNS: &str = "id, status, submitted_by, rerun_of, message, created_at, started_at, \
     finished_at, request, (SELECT COUNT(*) FROM builds q WHERE q.status = 'queued' AND q.id <= b.id) AS pos";

fn build_from_row(r: &sqlx::sqlite::SqliteRow) -> BuildRow {
    let status: String = r.get("status");
    let started_at: Option<i64> = r.get("started_at");
    let finished_at: Option<i64> = r.get("finished_at");
    let request: String = r.get("request");
    BuildRow {
        id: r.get("id"),
        position: (status == "queued").then(|| r.get("pos")),
        status,
        submitted_by: r.get("submitted_by"),
        rerun_of: r.get("rerun_of"),
        message: r.get("message"),
        created_at: r.get("created_at"),
        started_at,
        finished_at,
        duration_ms: started_at.map(|s| finished_at.unwrap_or_else(now_ms) - s),
        request: serde_json::from_str(&request).unwrap_or(serde_json::Value::Null),
        graph: None,
        jobs: None,
        pipeline: None,
    }
}

/// One page of builds, newest first, optionally only those with `status`.
pub async fn list_builds(
    pool: &SqlitePool,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<BuildRow>, i64), sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BUILD_COLUMNS} FROM builds b WHERE (?1 IS NULL OR status = ?1) \
         ORDER BY id DESC LIMIT ?2 OFFSET ?3"
    )))
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM builds WHERE (?1 IS NULL OR status = ?1)")
            .bind(status)
            .fetch_one(pool)
            .await?;
    Ok((rows.iter().map(build_from_row).collect(), total))
}

/// A build with its jobs and steps.
pub async fn get_build(pool: &SqlitePool, id: i64) -> Result<Option<BuildRow>, sqlx::Error> {
    let Some(r) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BUILD_COLUMNS}, graph, pipeline FROM builds b WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let mut build = build_from_row(&r);
    let graph: String = r.get("graph");
    build.graph = serde_json::from_str(&graph).ok();
    build.pipeline = Some(r.get("pipeline"));
    let jobs = sqlx::query(
        "SELECT name, status, image, result, started_at, finished_at, duration_ms FROM jobs \
         WHERE build_id = ? ORDER BY COALESCE(started_at, 9223372036854775807), name",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let steps = sqlx::query(
        "SELECT job, name, idx, status, exit_code, started_at, duration_ms FROM steps \
         WHERE build_id = ? ORDER BY job, idx",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    build.jobs = Some(
        jobs.iter()
            .map(|j| {
                let name: String = j.get("name");
                let result: Option<String> = j.get("result");
                JobRow {
                    steps: steps
                        .iter()
                        .filter(|s| s.get::<String, _>("job") == name)
                        .map(|s| StepRow {
                            name: s.get("name"),
                            index: s.get("idx"),
                            status: s.get("status"),
                            exit_code: s.get("exit_code"),
                            started_at: s.get("started_at"),
                            duration_ms: s.get("duration_ms"),
                        })
                        .collect(),
                    name,
                    status: j.get("status"),
                    image: j.get("image"),
                    result: result.and_then(|r| serde_json::from_str(&r).ok()),
                    started_at: j.get("started_at"),
                    finished_at: j.get("finished_at"),
                    duration_ms: j.get("duration_ms"),
                }
            })
            .collect(),
    );
    Ok(Some(build))
}

/// Status of one job of a build, if it has started.
pub async fn job_status(
    pool: &SqlitePool,
    build: i64,
    job: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM jobs WHERE build_id = ? AND name = ?")
        .bind(build)
        .bind(job)
        .fetch_optional(pool)
        .await
}

pub async fn build_status(pool: &SqlitePool, build: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM builds WHERE id = ?")
        .bind(build)
        .fetch_optional(pool)
        .await
}

/// The pipeline text and request of a build (for running and re-running it).
pub async fn build_input(
    pool: &SqlitePool,
    id: i64,
) -> Result<Option<(String, serde_json::Value)>, sqlx::Error> {
    let row = sqlx::query("SELECT pipeline, request FROM builds WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|r| {
        let req: String = r.get("request");
        (
            r.get("pipeline"),
            serde_json::from_str(&req).unwrap_or(serde_json::Value::Null),
        )
    }))
}
