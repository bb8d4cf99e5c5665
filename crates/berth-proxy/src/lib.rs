//! berth's scoped Docker socket: a per-job Docker Engine API endpoint.
//!
//! A job talks to its endpoint as if it were the daemon; the proxy parses each request the way
//! the daemon would (or refuses it), authorizes it against the job's scope and the policy,
//! rewrites names, paths and labels, forwards a request it built itself, and rewrites the
//! answer. When the job ends, everything the scope created is removed.
//!
//! Codemap: `listen` (endpoint lifecycle) → `handler` (route table, per-endpoint logic) using
//! `parse` (paths, queries), `body` (JSON like Go), `policy` (the rules), `scope` (ownership and
//! names), `rewrite` (bind paths, answer names), `events`, `forward` (daemon connection), and
//! `reap` (cleanup).
//!
//! Must not: depend on the runner, server or CLI. Only this crate and berth-engine know Docker
//! wire types.

mod body;
mod events;
mod forward;
mod handler;
mod listen;
mod parse;
mod policy;
mod proto;
mod reap;
mod refusal;
mod rewrite;
mod scope;
mod state;

pub use forward::MAX_IDLE as MAX_IDLE_DAEMON_CONNECTIONS;
pub use listen::{DaemonConnections, ProxyConfig, ScopedProxy, StartError};
pub use policy::{Policy, PolicyFileError, rules};
pub use reap::ReapReport;
pub use rewrite::{Workspace, WorkspaceError};
pub use scope::{SCOPE_LABEL, ScopeNameError, validate_scope};

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/` (not an API): each takes arbitrary
    //! bytes and runs them through what the proxy does with a client's request before anything
    //! reaches the daemon. None of them may panic, whatever the input.

    use serde_json::{Map, Value};

    use crate::body::{self, Schema};
    use crate::policy::{self, Policy};

    /// A request target (`path?query`): path canonicalization, Go-style query parsing, the
    /// lookups the handlers make, and the `filters` re-serialization.
    pub fn request_target(data: &[u8]) {
        let Ok(s) = std::str::from_utf8(data) else {
            return;
        };
        let (path, query) = match s.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (s, None),
        };
        if let Ok(t) = crate::parse::parse_path(path) {
            let segs = t.seg();
            let _ = t.forward_path(&segs);
        }
        if let Ok(q) = crate::parse::Query::parse(query) {
            for name in [
                "all", "filters", "name", "force", "v", "follow", "tail", "t",
            ] {
                let _ = q.single(name);
                let _ = q.multi(name);
                let _ = q.flag(name);
            }
            if let Ok(Some(f)) = q.single("filters") {
                let _ = crate::handler::reserialize_filters(f, Some("io.berth.scope=fuzz"));
            }
            let mut out = crate::parse::QueryOut::new();
            let _ = out.copy(&q, &["all", "filters", "name", "tail"]);
            let _ = out.finish();
        }
        let _ = crate::parse::percent_decode(s, true);
    }

    /// A JSON body: strict parsing (duplicates, Go key folding), normalization against each
    /// endpoint's schema, then the policy checks that endpoint applies.
    pub fn json_body(data: &[u8]) {
        let Ok(v) = body::parse_strict(data) else {
            return;
        };
        let policy = Policy::default();
        type Check = fn(&Policy, &mut Map<String, Value>);
        let schemas: [(&'static Schema, Check); 5] = [
            (&body::CREATE, |p, m| {
                if let Some(Value::Object(mut hc)) = m.remove("HostConfig") {
                    let _ = policy::check_host_config(p, &mut hc);
                }
                let _ = policy::own_labels(m.get("Labels"), &Default::default());
            }),
            (&body::HOST_CONFIG, |p, m| {
                let _ = policy::check_host_config(p, m);
            }),
            (&body::EXEC_CREATE, |_, m| {
                let _ = policy::check_exec(m);
            }),
            (&body::NETWORK_CREATE, |_, m| {
                let _ = policy::check_network_create(m);
            }),
            (&body::VOLUME_CREATE, |_, m| {
                let _ = policy::check_volume_create(m);
            }),
        ];
        for (schema, check) in schemas {
            if let Ok(mut m) = body::normalize(v.clone(), schema) {
                check(&policy, &mut m);
            }
        }
        if let Ok(m) = body::normalize(v, &body::ENDPOINT) {
            let _ = policy::check_endpoint(&m);
        }
    }

    /// Raw bytes on a connection: hyper's HTTP/1 framing as the proxy serves it, then the
    /// proxy's own framing check, path and query parsing, and a bounded body read.
    pub fn http_request(data: &[u8]) {
        use http_body_util::{BodyExt, Full, Limited};
        use hyper::service::service_fn;
        use tokio::io::AsyncWriteExt;

        thread_local! {
            static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
        }
        let input = data.to_vec();
        RT.with(|rt| {
            rt.block_on(async move {
                let (mut client, server) = tokio::io::duplex(64 * 1024);
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let ok = crate::handler::check_framing(&req).is_ok();
                    let _ = crate::parse::parse_path(req.uri().path());
                    let _ = crate::parse::Query::parse(req.uri().query());
                    if ok {
                        let _ = Limited::new(req.into_body(), 1 << 20).collect().await;
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        bytes::Bytes::new(),
                    )))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(server), svc)
                    .with_upgrades();
                let write = async move {
                    let _ = client.write_all(&input).await;
                    let _ = client.shutdown().await;
                    // Drain the answers so the server never blocks on a full pipe.
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(&mut client, &mut sink).await;
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    tokio::join!(conn, write)
                })
                .await;
            });
        });
    }
}

#[cfg(test)]
mod fuzz_seeds {
    //! The cargo-fuzz entry points run on the committed seeds and any saved crash inputs
    //! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`), so every crash found becomes a
    //! regression test of the default suite.

    fn inputs(target: &str) -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        ["seeds", "regressions"]
            .iter()
            .filter_map(|d| std::fs::read_dir(root.join(d).join(target)).ok())
            .flatten()
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .collect()
    }

    #[test]
    fn fuzz_entry_points_accept_their_seeds_and_regressions() {
        let mut n = 0;
        for input in inputs("proxy_request_target") {
            crate::fuzzing::request_target(&input);
            n += 1;
        }
        for input in inputs("proxy_json_body") {
            crate::fuzzing::json_body(&input);
            n += 1;
        }
        for input in inputs("proxy_http_request") {
            crate::fuzzing::http_request(&input);
            n += 1;
        }
        crate::fuzzing::http_request(
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        crate::fuzzing::json_body(b"{\"HostConfig\":{\"Privileged\":true}}");
        assert!(n >= 3, "fuzz seeds not found");
    }
}

#[cfg(test)]
mod never_panics {
    //! The parsers see attacker-controlled bytes: they must answer, never panic.
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn paths_and_queries(s in "\\PC{0,64}", b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = crate::parse::parse_path(&s);
            let _ = crate::parse::parse_path(&format!("/{s}"));
            let _ = crate::parse::Query::parse(Some(&s));
            let _ = crate::parse::percent_decode(&String::from_utf8_lossy(&b), true);
        }

        #[test]
        fn bodies(b in proptest::collection::vec(any::<u8>(), 0..256), s in "[{}\\[\\]\":,a-zA-Z0-9ſK ]{0,128}") {
            for input in [b.as_slice(), s.as_bytes()] {
                if let Ok(v) = crate::body::parse_strict(input)
                    && let Ok(mut m) = crate::body::normalize(v, &crate::body::CREATE)
                    && let Some(serde_json::Value::Object(mut hc)) = m.remove("HostConfig")
                {
                    let _ = crate::policy::check_host_config(&crate::policy::Policy::default(), &mut hc);
                }
            }
        }

        #[test]
        fn tags_and_names(s in "\\PC{0,40}") {
            let scope = crate::scope::Scope::new("p", Default::default()).expect("scope");
            let _ = scope.local_tag(&s);
            let _ = scope.job_name(&s);
            let _ = crate::scope::normalize_tag(&s);
            let _ = crate::scope::valid_object_name(&s);
        }
    }
}
