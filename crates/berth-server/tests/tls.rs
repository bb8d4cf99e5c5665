//! `berth serve --tls-cert --tls-key`: the API answers over HTTPS with the given certificate, and
//! plain HTTP on that port gets nothing; bad certificate files are a clear startup error.

mod common;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn self_signed(dir: &std::path::Path) -> (berth_server::TlsFiles, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let files = berth_server::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
    (files, cert.cert.der().clone())
}

async fn engine() -> Arc<dyn berth_engine::Engine> {
    let address = berth_engine::DaemonAddress::resolve(None);
    Arc::new(
        berth_engine::DockerEngine::connect(address)
            .await
            .expect("daemon"),
    )
}

#[tokio::test]
async fn the_api_is_served_over_tls_with_the_given_certificate() {
    if !common::docker() {
        return;
    }
    berth_engine::install_crypto_provider();
    let dir = common::tempdir();
    let (files, der) = self_signed(dir.path());
    let mut config =
        berth_server::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    config.tls = Some(files);
    let started = berth_server::start(config, engine().await)
        .await
        .expect("start");
    let addr = started.addr;
    let server = tokio::spawn(started.wait());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the configured certificate");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP on the TLS port is not served.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP must not be answered"
    );
    server.abort();
}

#[tokio::test]
async fn a_bad_certificate_file_is_a_clear_startup_error() {
    if !common::docker() {
        return;
    }
    berth_engine::install_crypto_provider();
    let dir = common::tempdir();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let mut config =
        berth_server::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    config.tls = Some(berth_server::TlsFiles {
        cert: cert.clone(),
        key: dir.path().join("missing.pem"),
    });
    let err = match berth_server::start(config, engine().await).await {
        Ok(_) => panic!("a bad certificate must not start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("cert.pem"), "{err}");
}
