//! The API load generator: `concurrency` keep-alive connections over a unix socket, each on its
//! own thread, sharing a fixed number of operations; per-operation latency and the batch's wall
//! time are recorded.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::http::Conn;

/// Docker API version every request names (the oldest engine berth supports).
const API: &str = "/v1.41";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /_ping`.
    Ping,
    /// `GET /containers/json?all=1`.
    List,
    /// `POST /containers/create` then `DELETE /containers/{id}?force=1` (one operation).
    CreateDelete,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Ping => "`GET /_ping`",
            Op::List => "`GET /containers/json?all=1`",
            Op::CreateDelete => "`POST /containers/create` + `DELETE`",
        }
    }
}

/// Label on every container the benchmark creates directly, so a crashed run can be cleaned up.
pub const BENCH_LABEL: &str = "berth-bench";

pub struct Batch {
    pub wall: Duration,
    pub latencies: Vec<Duration>,
}

/// Runs `total` operations over `concurrency` keep-alive connections to `socket`; with `fresh`,
/// each operation opens its own connection instead (what a proxy that never reuses daemon
/// connections pays).
pub fn batch(
    socket: &Path,
    op: Op,
    concurrency: usize,
    total: usize,
    fresh: bool,
) -> anyhow::Result<Batch> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let socket = socket.to_path_buf();
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut conn = Conn::new(
                    UnixStream::connect(&socket)
                        .with_context(|| format!("connect {}", socket.display()))?,
                );
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    if fresh {
                        conn = Conn::new(UnixStream::connect(&socket)?);
                    }
                    one(&mut conn, op)?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for h in handles {
        latencies.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??,
        );
    }
    Ok(Batch {
        wall: start.elapsed(),
        latencies,
    })
}

fn one(conn: &mut Conn<UnixStream>, op: Op) -> anyhow::Result<()> {
    match op {
        Op::Ping => expect(
            conn.request("GET", &format!("{API}/_ping"), &[], None)?,
            200,
        ),
        Op::List => expect(
            conn.request("GET", &format!("{API}/containers/json?all=1"), &[], None)?,
            200,
        ),
        Op::CreateDelete => {
            let body = format!(
                r#"{{"Image":"{}","Cmd":["true"],"Labels":{{"{BENCH_LABEL}":"1"}}}}"#,
                crate::scenarios::BUSYBOX
            );
            let r = conn.request(
                "POST",
                &format!("{API}/containers/create"),
                &[],
                Some(body.as_bytes()),
            )?;
            let text = String::from_utf8_lossy(&r.body).into_owned();
            expect(r, 201)?;
            let id = text
                .split("\"Id\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .with_context(|| format!("no Id in {text}"))?
                .to_string();
            expect(
                conn.request(
                    "DELETE",
                    &format!("{API}/containers/{id}?force=1"),
                    &[],
                    None,
                )?,
                204,
            )
        }
    }
}

fn expect(r: crate::http::Response, status: u16) -> anyhow::Result<()> {
    if r.status != status {
        bail!(
            "HTTP {} (wanted {status}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(())
}
