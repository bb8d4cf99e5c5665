//! The `io.berth.*` labels every object berth creates carries.
//!
//! **Invariant: every container, network and volume berth creates has [`OWNER`]**, naming the
//! berth process instance (see [`crate::Owner`]) so that `berth gc` can find and remove it once
//! that process is gone, and never while it lives.

/// The berth process instance that created the object.
pub const OWNER: &str = "io.berth.owner";
/// Hostname of the machine the owner runs on (liveness can only be checked there).
pub const OWNER_HOST: &str = "io.berth.owner-host";
/// Path of the owner's liveness lock file on its host (see [`crate::Owner`]), so any berth
/// process — whatever its temp dir or `BERTH_OWNERS_DIR` — checks the right file.
pub const OWNER_LOCK: &str = "io.berth.owner-lock";
/// The scoped-socket scope (berth-proxy) an object was created through.
pub const SCOPE: &str = "io.berth.scope";
/// On a scope's tag marker (a volume carrying the scope's owner labels, created by the scoped
/// socket when the scope first creates an image tag): the scope whose job-local image tags
/// (`<scope>_<repo>:<tag>`) `berth gc` removes once the owner is dead.
pub const TAGS_OF: &str = "io.berth.tags-of";
/// Build id within the owner.
pub const BUILD: &str = "io.berth.build";
/// Job name.
pub const JOB: &str = "io.berth.job";
/// What the object is for: `job`, `service`, `dind`, `workspace`, `network`, `cache`.
pub const ROLE: &str = "io.berth.role";
