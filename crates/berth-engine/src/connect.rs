//! Finding and connecting to the daemon the way the docker CLI does.

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;

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

/// rustls needs one process-wide crypto provider; berth uses ring.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
