//! Crash recovery at start: builds the previous server left `running` are marked `interrupted`
//! and everything labelled with their owner is reaped; half-submitted builds are marked
//! `error`; half-received uploads in `<data>/tmp/` are removed. Queued builds are left queued:
//! the dispatcher runs them once recovery is done.

use berth_engine::labels;

use crate::{AppState, ServerError};

/// What recovery found and did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub interrupted: Vec<i64>,
    /// Containers, networks and volumes removed.
    pub reaped: usize,
    /// Builds still waiting to run.
    pub queued: i64,
}

pub async fn recover(state: &AppState) -> Result<Recovered, ServerError> {
    let mut out = Recovered::default();
    // Uploads being received when the previous server died: their requests were never answered.
    let _ = std::fs::remove_dir_all(state.config.data.join("tmp"));
    let running: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, owner FROM builds WHERE status = 'running' ORDER BY id")
            .fetch_all(&state.pool)
            .await?;
    for (id, owner) in running {
        let mut note = String::from("the server stopped while this build ran");
        if let Some(owner) = owner {
            match berth_engine::reap(state.engine.as_ref(), labels::OWNER, &owner).await {
                Ok(report) => {
                    out.reaped += report.removed.len();
                    if !report.removed.is_empty() {
                        note += &format!(
                            "; {} container(s), network(s) or volume(s) it left were removed",
                            report.removed.len()
                        );
                    }
                    if !report.is_clean() {
                        note += &format!("; {} could not be removed", report.failed.len());
                    }
                }
                Err(e) => note += &format!("; failed to remove what it left: {e}"),
            }
        }
        state.log.set_status(id, "interrupted", Some(&note)).await?;
        out.interrupted.push(id);
    }
    let half: Vec<i64> = sqlx::query_scalar("SELECT id FROM builds WHERE status = 'submitting'")
        .fetch_all(&state.pool)
        .await?;
    for id in half {
        state
            .log
            .set_status(
                id,
                "error",
                Some("the server stopped while this build was being submitted"),
            )
            .await?;
    }
    // Secret values live in memory only: a queued build that needed them cannot run now.
    let needing: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, request FROM builds WHERE status = 'queued'")
            .fetch_all(&state.pool)
            .await?;
    for (id, request) in needing {
        let has_secrets = serde_json::from_str::<crate::request::BuildRequest>(&request)
            .is_ok_and(|r| !r.secret_names.is_empty());
        if has_secrets {
            state
                .log
                .set_status(
                    id,
                    "error",
                    Some(
                        "its secret values were held in memory only and were lost when the \
                             server restarted; submit it again",
                    ),
                )
                .await?;
        } else {
            out.queued += 1;
        }
    }
    Ok(out)
}
