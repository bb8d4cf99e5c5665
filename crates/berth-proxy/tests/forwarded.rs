//! What the proxy forwards, seen by a recording fake daemon: BuildKit's session ids, shared
//! keys and build ids reach the daemon namespaced by the scope, whatever the job named them.
//! (A fast check of the rewriting itself; the real daemon's side — builds working through
//! these names, another job's names refused — is in `attacks.rs` and `clients.rs`.)

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_proxy::{Policy, ProxyConfig, ScopedProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Every request head the fake daemon received, lowercased, in order.
type Heads = Arc<Mutex<Vec<String>>>;

/// A daemon that answers `/_ping` with API 1.41, `/session` with a 101 (then closes), and
/// anything else with `200 {}`; requests carry no bodies here.
async fn fake_daemon(path: PathBuf) -> Heads {
    let heads: Heads = Arc::default();
    let listener = UnixListener::bind(&path).unwrap();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match c.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end + 4);
                    seen.lock().unwrap().push(head.clone());
                    let answer: &[u8] = if head.starts_with("get /_ping") {
                        b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK"
                    } else if head.contains("/session ") {
                        let _ = c
                            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                            .await;
                        return;
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                    };
                    if c.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    heads
}

async fn send(sock: &std::path::Path, req: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn buildkit_ids_reach_the_daemon_namespaced_by_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = dir.path().join("daemon.sock");
    let heads = fake_daemon(daemon.clone()).await;
    let listen = dir.path().join("proxy.sock");
    let proxy = ScopedProxy::start(ProxyConfig {
        listen: listen.clone(),
        daemon_socket: daemon,
        scope: "fwd".into(),
        owner_labels: [("io.berth.owner".to_string(), "fwd-test".to_string())].into(),
        workspace: None,
        policy: Policy::default(),
    })
    .await
    .expect("proxy starts against the fake daemon");

    let answer = send(
        &listen,
        "POST /v1.41/session HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
         X-Docker-Expose-Session-Uuid: s1\r\nX-Docker-Expose-Session-Name: ctx\r\n\
         X-Docker-Expose-Session-Sharedkey: k1\r\n\
         X-Docker-Expose-Session-Grpc-Method: /moby.filesync.v1.FileSync/DiffCopy\r\n\
         X-Docker-Expose-Session-Other: dropped\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let answer = send(
        &listen,
        "POST /v1.41/build?version=2&remote=client-session&session=s1&buildid=b1 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = send(
        &listen,
        "POST /v1.41/build/cancel?id=b1 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(proxy);

    let heads = heads.lock().unwrap().clone();
    let find = |start: &str| {
        heads
            .iter()
            .find(|h| h.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` in {heads:#?}"))
            .clone()
    };
    let session = find("post /v1.41/session");
    for want in [
        "x-docker-expose-session-uuid: fwd.s1",
        "x-docker-expose-session-sharedkey: fwd.k1",
        "x-docker-expose-session-name: ctx",
        "x-docker-expose-session-grpc-method: /moby.filesync.v1.filesync/diffcopy",
        "upgrade: h2c",
    ] {
        assert!(session.contains(want), "`{want}` in {session}");
    }
    assert!(!session.contains("session-other"), "{session}");
    let build = find("post /v1.41/build?");
    for want in [
        "session=fwd.s1",
        "buildid=fwd.b1",
        "remote=client-session",
        "version=2",
        // BUILDKIT_CACHE_MOUNT_NS=berth-fwd and the scope label, percent-encoded JSON.
        "buildkit_cache_mount_ns%22%3a%22berth-fwd",
        "io.berth.scope%22%3a%22fwd",
    ] {
        assert!(build.contains(want), "`{want}` in {build}");
    }
    let cancel = find("post /v1.41/build/cancel");
    assert!(cancel.contains("?id=fwd.b1 "), "{cancel}");
}
