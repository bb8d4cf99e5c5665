//! `/metrics` in the Prometheus text format: builds by status, queue length, running builds and
//! a histogram of job durations — all read from the database, so they survive restarts.

use std::fmt::Write;

use crate::AppState;

const BUCKETS_S: [f64; 8] = [1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0];

pub async fn render(state: &AppState) -> Result<String, sqlx::Error> {
    let mut out = String::new();
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM builds GROUP BY status ORDER BY status")
            .fetch_all(&state.pool)
            .await?;
    let _ = writeln!(out, "# HELP berth_builds Builds in the history, by status.");
    let _ = writeln!(out, "# TYPE berth_builds gauge");
    for (status, n) in &by_status {
        let _ = writeln!(out, "berth_builds{{status=\"{status}\"}} {n}");
    }
    let queued = by_status
        .iter()
        .find(|(s, _)| s == "queued")
        .map_or(0, |(_, n)| *n);
    let _ = writeln!(out, "# HELP berth_queue_length Builds waiting for a slot.");
    let _ = writeln!(out, "# TYPE berth_queue_length gauge");
    let _ = writeln!(out, "berth_queue_length {queued}");
    let _ = writeln!(out, "# HELP berth_builds_running Builds running now.");
    let _ = writeln!(out, "# TYPE berth_builds_running gauge");
    let _ = writeln!(out, "berth_builds_running {}", state.queue.running());

    let _ = writeln!(
        out,
        "# HELP berth_job_duration_seconds How long finished jobs took."
    );
    let _ = writeln!(out, "# TYPE berth_job_duration_seconds histogram");
    for le in BUCKETS_S {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE duration_ms <= ?")
            .bind((le * 1000.0) as i64)
            .fetch_one(&state.pool)
            .await?;
        let _ = writeln!(out, "berth_job_duration_seconds_bucket{{le=\"{le}\"}} {n}");
    }
    let (count, sum): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(duration_ms), 0) FROM jobs WHERE duration_ms IS NOT NULL",
    )
    .fetch_one(&state.pool)
    .await?;
    let _ = writeln!(
        out,
        "berth_job_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "berth_job_duration_seconds_sum {}",
        sum as f64 / 1000.0
    );
    let _ = writeln!(out, "berth_job_duration_seconds_count {count}");
    Ok(out)
}
