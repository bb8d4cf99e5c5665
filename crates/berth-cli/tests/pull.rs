//! Pull policies against a real daemon and a real (if tiny) registry: the test serves the
//! registry v2 API for one image on a loopback port (the daemon treats 127.0.0.0/8 registries as
//! insecure, so plain HTTP works and nothing leaves the machine). The image's manifest, config and
//! layer come from `docker save` of the local busybox test image.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One image's blobs and manifest, served at `127.0.0.1:PORT/berth-pull/busybox:TAG`.
struct Registry {
    port: u16,
    manifest_requests: Arc<AtomicUsize>,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("image.tar");
        let ok = Command::new("docker")
            .args(["save", "-o"])
            .arg(&tar)
            .arg(BUSYBOX)
            .status()
            .expect("docker save");
        assert!(ok.success());
        let ok = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(dir.path())
            .status()
            .expect("tar");
        assert!(ok.success());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap())
                .unwrap();
        let base: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(manifest[0]["Config"].as_str().unwrap()))
                .expect("config"),
        )
        .unwrap();
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        let mut add_layer = |data: Vec<u8>| {
            // Served uncompressed under the gzip media type: the daemon detects the
            // compression itself, and the digest is of the bytes served.
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": data.len(),
                "digest": sha256(&data),
            }));
            blobs.push((sha256(&data), data));
        };
        for l in manifest[0]["Layers"].as_array().unwrap() {
            add_layer(std::fs::read(dir.path().join(l.as_str().unwrap())).expect("layer"));
        }
        // One more layer no daemon has seen: 4 MB of noise, so the pull really downloads
        // (and reports progress) instead of finding every layer in the store.
        let extra = unique_layer(4 << 20);
        let mut config = base.clone();
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(sha256(&extra).into());
        config["history"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"created_by": "berth pull test layer"}));
        add_layer(extra);
        let config = serde_json::to_vec(&config).unwrap();
        blobs.push((sha256(&config), config.clone()));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": sha256(&config),
            },
            "layers": layers,
        }))
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let manifest_requests = Arc::new(AtomicUsize::new(0));
        let counter = manifest_requests.clone();
        let blobs = Arc::new(blobs);
        let manifest = Arc::new(manifest);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (blobs, manifest, counter) = (blobs.clone(), manifest.clone(), counter.clone());
                std::thread::spawn(move || serve(conn, &blobs, &manifest, &counter));
            }
        });
        Registry {
            port,
            manifest_requests,
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("127.0.0.1:{}/berth-pull/busybox:{tag}", self.port)
    }
}

fn serve(
    conn: TcpStream,
    blobs: &[(String, Vec<u8>)],
    manifest: &[u8],
    manifest_requests: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let (status, ctype, data): (&str, &str, Vec<u8>) = if path == "/v2/" {
            ("200 OK", "application/json", b"{}".to_vec())
        } else if path.contains("/manifests/") {
            manifest_requests.fetch_add(1, Ordering::SeqCst);
            (
                "200 OK",
                "application/vnd.docker.distribution.manifest.v2+json",
                manifest.to_vec(),
            )
        } else if let Some(d) = path.split("/blobs/").nth(1) {
            match blobs.iter().find(|(digest, _)| digest == d) {
                Some((_, b)) => ("200 OK", "application/octet-stream", b.clone()),
                None => ("404 Not Found", "application/json", b"{}".to_vec()),
            }
        } else {
            ("404 Not Found", "application/json", b"{}".to_vec())
        };
        let digest = sha256(&data);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n",
            data.len()
        );
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" {
            // Blobs trickle out in 256 KiB pieces, like a registry over a network, so the
            // daemon reports download progress before the layer is complete.
            for piece in data.chunks(256 << 10) {
                if out.write_all(piece).and_then(|()| out.flush()).is_err() {
                    return;
                }
                if data.len() > 1 << 20 {
                    std::thread::sleep(std::time::Duration::from_millis(15));
                }
            }
        }
    }
}

/// A layer tar with one file of `size` pseudo-random bytes, different on every call.
fn unique_layer(size: usize) -> Vec<u8> {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        data.extend_from_slice(&seed.to_le_bytes());
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, "pull-test-noise", data.as_slice())
        .unwrap();
    b.into_inner().unwrap()
}

fn remove_image(image: &str) {
    let _ = Command::new("docker")
        .args(["rmi", "-f", image])
        .output()
        .expect("docker rmi");
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .expect("docker image inspect")
        .status
        .success()
}

fn pipeline(image: &str) -> String {
    format!(
        "jobs:\n  main:\n    image: {image}\n    requires: [~commit]\n    steps:\n      - hello: echo pulled-and-ran\n"
    )
}

#[test]
fn a_missing_image_is_pulled_once_with_progress_and_the_job_runs() {
    if !docker() {
        return;
    }
    let reg = Registry::start();
    let image = reg.image(&format!("missing-{}", std::process::id()));
    remove_image(&image);
    let p = Project::new(&pipeline(&image));
    let run = p.run_json(&[]);
    run.assert_code(0);
    assert!(
        run.output("main").contains("pulled-and-ran"),
        "{}",
        run.dump()
    );
    assert!(
        run.events
            .iter()
            .any(|e| e["type"] == "pulling" && e["image"] == image.as_str()),
        "a pulling event: {}",
        run.dump()
    );
    assert!(
        reg.manifest_requests.load(Ordering::SeqCst) >= 1,
        "the manifest was fetched"
    );
    assert!(
        image_exists(&image),
        "the pulled image stays (it is the cache)"
    );

    // The default policy does not pull an image that is already there.
    let before = reg.manifest_requests.load(Ordering::SeqCst);
    let again = p.run_json(&[]);
    again.assert_code(0);
    assert!(
        !again.events.iter().any(|e| e["type"] == "pulling"),
        "{}",
        again.dump()
    );
    assert_eq!(reg.manifest_requests.load(Ordering::SeqCst), before);

    // Not on a terminal: one line says what is being pulled.
    remove_image(&image);
    let out = p.run(&[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("[main] pulling {image}")), "{err}");

    // On a terminal (a pty from script(1)): a progress bar with the bytes pulled.
    remove_image(&image);
    let cmd = format!("NO_COLOR=1 {} run", common::berth_bin().display());
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(p.path())
        .output()
        .expect("script");
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{screen}");
    assert!(
        screen.contains(&format!("pulling {image} [")) && screen.contains("MiB"),
        "a progress bar: {screen:?}"
    );
    remove_image(&image);
    run.assert_nothing_left();
    again.assert_nothing_left();
}

#[test]
fn pull_always_falls_back_to_the_local_copy_when_the_registry_is_unreachable() {
    if !docker() {
        return;
    }
    // A registry on a closed loopback port: connection refused at once.
    let image = format!(
        "127.0.0.1:9/berth-pull/busybox:always-{}",
        std::process::id()
    );
    let ok = Command::new("docker")
        .args(["tag", BUSYBOX, &image])
        .status()
        .expect("docker tag");
    assert!(ok.success());
    let p = Project::new(&pipeline(&image));
    let run = p.run_json(&["--pull", "always"]);
    let warned = run.events.iter().any(|e| {
        e["event"] == "warning"
            && e["message"].as_str().is_some_and(|m| {
                m.contains(&format!("could not pull {image}")) && m.contains("using the local copy")
            })
    });
    remove_image(&image);
    run.assert_code(0);
    assert!(
        warned,
        "a warning names the image and the fallback: {}",
        run.dump()
    );
    assert!(run.output("main").contains("pulled-and-ran"));

    // Without a local copy the same failure is the job's error, naming the image.
    let run = p.run_json(&["--pull", "always"]);
    assert_ne!(run.code, 0, "{}", run.dump());
    let status = run.status("main");
    assert_eq!(status, "error", "{}", run.dump());
    assert!(run.stdout.contains("could not be pulled"), "{}", run.dump());
    run.assert_nothing_left();
}
