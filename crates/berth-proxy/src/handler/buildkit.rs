//! BuildKit through the daemon's own route: the client's session stream (`POST /session`,
//! `Upgrade: h2c`) and build cancellation. The build itself is `/build?version=2` (images.rs).
//!
//! Session ids and build ids are namespaced per scope on the daemon (`<scope>.<id>`; scope names
//! have no `.`), so a job can only name its own: it cannot point a build at another job's
//! session (which would read that job's files, secrets and registry credentials), take over an
//! id another job will use, or cancel another job's build. The session's shared key (which keys
//! BuildKit's cached copy of a local build context) is namespaced the same way, so no job can
//! seed or reuse another job's cached context.
//! The session stream itself carries gRPC calls from the daemon to the client (the daemon asks
//! the job for files, credentials and secrets); the job cannot call the daemon over it.

use http::{HeaderMap, HeaderValue, Method};

use super::*;

/// Headers of a session request, as the BuildKit client sends them.
const SESSION_UUID: &str = "x-docker-expose-session-uuid";
const SESSION_NAME: &str = "x-docker-expose-session-name";
const SESSION_SHARED_KEY: &str = "x-docker-expose-session-sharedkey";
const SESSION_METHOD: &str = "x-docker-expose-session-grpc-method";
/// More gRPC methods than any client exposes (the CLI exposes about ten).
const MAX_METHODS: usize = 64;

/// A client-chosen id (session, build): BuildKit's are 25 base-36 characters.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Handler<'_> {
    /// The checks both BuildKit streams (`/session`, `/grpc`) share: the policy serves BuildKit
    /// builds, and the request asks for the h2c upgrade they are.
    pub(super) fn buildkit_stream_allowed(
        &self,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<(), Refusal> {
        if !self.state.policy.builds {
            return Err(builds_off());
        }
        if !self.state.policy.buildkit {
            return Err(buildkit_off());
        }
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !upgrade.eq_ignore_ascii_case("h2c") {
            return Err(Refusal::bad(format!(
                "{what} needs `Upgrade: h2c` (it is a hijacked stream)"
            )));
        }
        Ok(())
    }

    /// The daemon's name for a session or build id the job chose.
    pub(super) fn scoped_id(&self, what: &str, id: &str) -> Result<String, Refusal> {
        if !valid_id(id) {
            return Err(Refusal::bad(format!(
                "invalid {what} id `{id}`: use [a-zA-Z0-9_-], at most 128 characters"
            )));
        }
        Ok(format!("{}.{id}", self.scope().name()))
    }

    pub(super) async fn session(
        &self,
        headers: &HeaderMap,
        client: hyper::upgrade::OnUpgrade,
    ) -> Answer {
        self.buildkit_stream_allowed(headers, "a BuildKit session")?;
        let one = |name: &str| -> Result<String, Refusal> {
            let mut all = headers.get_all(name).iter();
            let v = all
                .next()
                .ok_or_else(|| Refusal::bad(format!("header {name} is required")))?;
            if all.next().is_some() {
                return Err(Refusal::bad(format!("header {name} given more than once")));
            }
            let v = v
                .to_str()
                .map_err(|_| Refusal::bad(format!("header {name} is not ASCII")))?;
            if v.len() > 512 {
                return Err(Refusal::bad(format!("header {name} is too long")));
            }
            Ok(v.to_string())
        };
        let id = self.scoped_id("session", &one(SESSION_UUID)?)?;
        let name = one(SESSION_NAME)?;
        let shared = format!("{}.{}", self.scope().name(), one(SESSION_SHARED_KEY)?);
        let mut extra = vec![
            (SESSION_UUID, header_value(&id)?),
            (SESSION_NAME, header_value(&name)?),
            (SESSION_SHARED_KEY, header_value(&shared)?),
        ];
        let methods = headers.get_all(SESSION_METHOD).iter().collect::<Vec<_>>();
        if methods.len() > MAX_METHODS {
            return Err(Refusal::bad("too many exposed session methods"));
        }
        for m in methods {
            let s = m.to_str().unwrap_or_default();
            if !valid_method(s) {
                return Err(Refusal::bad(format!(
                    "invalid exposed session method `{}`",
                    String::from_utf8_lossy(m.as_bytes())
                )));
            }
            extra.push((SESSION_METHOD, m.clone()));
        }
        self.upgrade_as(
            self.path(&["session"]),
            forward::empty(),
            None,
            "h2c",
            &extra,
            client,
        )
        .await
    }

    pub(super) async fn build_cancel(&self) -> Answer {
        let id = self.q.single("id")?.unwrap_or_default();
        let id = self.scoped_id("build", id)?;
        let qs = QueryOut::new().push("id", &id).finish();
        self.pass(
            Method::POST,
            &format!("{}{qs}", self.path(&["build", "cancel"])),
            forward::empty(),
            None,
        )
        .await
    }
}

/// `/package.Service/Method`, as gRPC names them.
fn valid_method(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    let Some((service, method)) = rest.split_once('/') else {
        return false;
    };
    let ok = |p: &str, dots: bool| {
        !p.is_empty()
            && p.len() <= 200
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
    };
    ok(service, true) && ok(method, false)
}

fn header_value(s: &str) -> Result<HeaderValue, Refusal> {
    HeaderValue::from_str(s).map_err(|_| Refusal::bad("invalid header value"))
}

pub(super) fn builds_off() -> Refusal {
    Refusal::rule(
        rules::BUILDS,
        "image builds are turned off by this endpoint's policy (`builds = false`): the daemon makes a build's downloads from the host's network; build with `docker: dind`",
    )
}

pub(super) fn buildkit_off() -> Refusal {
    Refusal::rule(
        rules::BUILDKIT,
        "BuildKit builds are turned off by this endpoint's policy (`buildkit = false`); set DOCKER_BUILDKIT=0 to use the classic builder",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_methods() {
        assert!(valid_id("k3v8ypbq2n0n0w6y6j8rj5c8h"));
        for bad in ["", "a.b", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert!(valid_method("/moby.filesync.v1.FileSync/DiffCopy"));
        assert!(valid_method("/grpc.health.v1.Health/Check"));
        for bad in ["moby.x/Y", "/x", "/x/", "/x/y/z", "/x y/z", "/a/b.c"] {
            assert!(!valid_method(bad), "{bad}");
        }
    }
}
