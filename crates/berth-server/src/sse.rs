//! Server-Sent Events: per-build and global streams of the event log. A stream first replays
//! what the database holds after `Last-Event-ID`, then follows live events. Memory per watcher
//! is bounded: a small channel to the client, and a watcher that lags behind the bounded
//! broadcast re-reads the database from its last id instead of the server buffering for it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::events::{EventLog, StoredEvent};

/// Events read from the database at a time; a watcher blocked on a slow client holds at most
/// one page (an output event can be tens of KiB when a job prints fast).
const PAGE: i64 = 16;

/// The id after which to start: `Last-Event-ID`, else `?after=`, else from the beginning.
pub fn start_after(headers: &HeaderMap, after: Option<i64>) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(after)
        .unwrap_or(0)
}

pub fn stream(
    log: Arc<EventLog>,
    build: Option<i64>,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<StoredEvent>(8);
    tokio::spawn(async move {
        let _ = pump(&log, build, after, &tx).await;
    });
    Sse::new(ReceiverStream::new(rx).map(|e| to_sse(&e))).keep_alive(KeepAlive::default())
}

fn to_sse(e: &StoredEvent) -> Result<Event, Infallible> {
    Ok(Event::default().id(e.id.to_string()).data(&*e.data))
}

/// Feeds one watcher until it goes away. Errors end the stream (the client reconnects).
async fn pump(
    log: &EventLog,
    build: Option<i64>,
    mut last: i64,
    tx: &mpsc::Sender<StoredEvent>,
) -> Result<(), ()> {
    // Subscribe before reading the database, so nothing committed in between is missed.
    let mut live = log.subscribe();
    loop {
        loop {
            let page = log.since(build, last, PAGE).await.map_err(|_| ())?;
            let n = page.len();
            for e in page {
                last = e.id;
                tx.send(e).await.map_err(|_| ())?;
            }
            if (n as i64) < PAGE {
                break;
            }
        }
        loop {
            match live.recv().await {
                Ok(e) => {
                    if e.id <= last || build.is_some_and(|b| b != e.build_id) {
                        continue;
                    }
                    last = e.id;
                    tx.send(StoredEvent::clone(&e)).await.map_err(|_| ())?;
                }
                // Fell behind the broadcast: catch up from the database, then go on live.
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Update;

    /// A watcher that stops reading while thousands of events are committed (more than the
    /// broadcast keeps) gets every one of them, in order, once it reads again.
    #[tokio::test]
    async fn a_stalled_watcher_catches_up_from_the_database() {
        let dir = std::env::temp_dir().join(format!("berth-sse-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = crate::db::open(&dir).await.unwrap();
        sqlx::query(
            "INSERT INTO builds (id, status, pipeline, request, graph, submitted_by, created_at) \
             VALUES (1, 'running', '', '{}', '[]', 't', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let log = Arc::new(EventLog::new(pool));
        let (tx, mut rx) = mpsc::channel(4);
        let watcher = log.clone();
        tokio::spawn(async move { pump(&watcher, Some(1), 0, &tx).await });
        let total = 3000;
        for _ in 0..total {
            let update = Update::Status {
                status: "running",
                message: None,
                owner: None,
            };
            log.record(1, update).await.unwrap();
        }
        let mut ids = Vec::new();
        while ids.len() < total {
            ids.push(rx.recv().await.unwrap().id);
        }
        assert_eq!(ids, (1..=total as i64).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
