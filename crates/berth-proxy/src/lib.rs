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
mod reap;
mod refusal;
mod rewrite;
mod scope;
mod state;

pub use listen::{ProxyConfig, ScopedProxy, StartError};
pub use policy::{Policy, PolicyFileError, rules};
pub use reap::ReapReport;
pub use rewrite::{Workspace, WorkspaceError};
pub use scope::{SCOPE_LABEL, ScopeNameError, validate_scope};

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
