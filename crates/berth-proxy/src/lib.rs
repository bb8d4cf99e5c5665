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
