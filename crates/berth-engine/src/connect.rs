//! Finding and connecting to the daemon the way the docker CLI does.

use std::path::PathBuf;
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::EngineError;

/// Per-request bound on daemon calls that are not streams.
pub(crate) const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How long the first contact may take before the daemon counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the daemon listens, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonAddress {
    pub url: String,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl std::fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl DaemonAddress {
    /// `explicit` (from `--docker-host`), else `DOCKER_HOST`, else the default unix socket.
    /// TLS comes from `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` (default `~/.docker`).
    pub fn resolve(explicit: Option<&str>) -> DaemonAddress {
        let url = explicit
            .map(str::to_string)
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let verify = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
        let tls = (verify && url.starts_with("tcp://")).then(|| {
            let dir = std::env::var_os("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker")
                });
            TlsFiles {
                ca: dir.join("ca.pem"),
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            }
        });
        DaemonAddress { url, tls }
    }

    /// The socket path when the daemon is reached over a local unix socket.
    pub fn unix_socket(&self) -> Option<PathBuf> {
        self.url.strip_prefix("unix://").map(PathBuf::from)
    }
}

/// The bollard-backed [`crate::Engine`].
#[derive(Clone)]
pub struct DockerEngine {
    pub(crate) docker: Docker,
    pub(crate) address: DaemonAddress,
}

impl DockerEngine {
    /// Connects, negotiates the API version, and checks the daemon answers.
    pub async fn connect(address: DaemonAddress) -> Result<DockerEngine, EngineError> {
        let unreachable = |reason: String| EngineError::Unreachable {
            address: address.clone(),
            reason,
        };
        let version = bollard::API_DEFAULT_VERSION;
        if let Some(path) = address.url.strip_prefix("unix://")
            && let Ok(Ok(Some(pinged))) =
                tokio::time::timeout(CONNECT_TIMEOUT, ping_api_version(path)).await
        {
            let version = if pinged < *version { &pinged } else { version };
            let docker = Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, version)
                .map_err(|e| unreachable(e.to_string()))?;
            return Ok(DockerEngine { docker, address });
        }
        let docker = if let Some(path) = address.url.strip_prefix("unix://") {
            Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, version)
        } else if let Some(tls) = &address.tls {
            install_crypto_provider();
            Docker::connect_with_ssl(
                &address.url,
                &tls.key,
                &tls.cert,
                &tls.ca,
                REQUEST_TIMEOUT_SECS,
                version,
            )
        } else if address.url.starts_with("tcp://") || address.url.starts_with("http://") {
            Docker::connect_with_http(&address.url, REQUEST_TIMEOUT_SECS, version)
        } else {
            return Err(unreachable(
                "unsupported address scheme (use unix:// or tcp://)".to_string(),
            ));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("no answer within 10 s".to_string())),
        };
        Ok(DockerEngine { docker, address })
    }
}

/// The daemon's API version from the `Api-Version` header of `GET /_ping` on a unix socket:
/// what the docker CLI asks, and far cheaper for the daemon than bollard's negotiation through
/// `/version` (which asks containerd and runs `runc --version` and `docker-init --version`).
/// `None` when the answer carries no usable version (the caller negotiates the usual way).
async fn ping_api_version(path: &str) -> std::io::Result<Option<ClientVersion>> {
    let mut stream = tokio::net::UnixStream::connect(path).await?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await?;
    // HTTP/1.0: the daemon closes after its answer (a few hundred bytes; bounded anyway).
    let mut answer = Vec::new();
    stream.take(16 * 1024).read_to_end(&mut answer).await?;
    Ok(parse_ping(&String::from_utf8_lossy(&answer)))
}

/// The API version of a `/_ping` answer, when its status is 200.
fn parse_ping(answer: &str) -> Option<ClientVersion> {
    let (head, _) = answer.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    if lines.next()?.split(' ').nth(1)? != "200" {
        return None;
    }
    let value = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("api-version")
            .then(|| v.trim())
    })?;
    let (major, minor) = value.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// rustls needs one process-wide crypto provider; berth uses ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::parse_ping;

    #[test]
    fn ping_answers_give_the_api_version() {
        let ok = "HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nDocker-Experimental: false\r\n\r\nOK";
        let v = parse_ping(ok).unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_ping("HTTP/1.0 500 Internal\r\nApi-Version: 1.41\r\n\r\n").is_none());
        assert!(parse_ping("HTTP/1.0 200 OK\r\nServer: x\r\n\r\nOK").is_none());
        assert!(parse_ping("HTTP/1.0 200 OK\r\nApi-Version: one\r\n\r\n").is_none());
        assert!(parse_ping("garbage").is_none());
    }
}
