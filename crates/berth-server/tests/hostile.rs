//! Hostile input against a real server (issue 7): malformed and oversized bodies, unknown
//! fields, path traversal in log and artifact paths (plain, percent-encoded, NUL), forged build
//! ids, and source tars that try to write outside the build directory. Every answer must be a
//! clear 4xx (JSON `message` for the API's own checks), the server must not panic or die, and
//! nothing outside the data directory may be read or written.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Not a test: the server child process (see `common`).
#[test]
fn server_child() {
    common::child_main();
}

const SENTINEL: &str = "BERTH-SENTINEL-OUTSIDE-THE-DATA-DIR";

/// Sends `head` (request line + headers, without the final blank line) and `body` on a fresh
/// connection, exactly as given (no client-side path normalization); returns status and body.
async fn raw(url: &str, head: &str, body: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = head.replace('\n', "\r\n").into_bytes();
    req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    req.extend_from_slice(body);
    // The server may answer (and close) before reading everything: ignore write errors.
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("server did not answer within 20 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {head:?}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data, link) in entries {
        // Raw headers: the tar crate's builder refuses `..`, which is the point here.
        let mut h = tar::Header::new_old();
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        out.extend_from_slice(&vec![0u8; pad]);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_4xx_and_read_nothing_outside_the_data_dir() {
    if !docker() {
        return;
    }
    let dir = tempdir();
    let data = dir.path().join("data");
    // Files next to (outside) the data directory that traversal would reach.
    std::fs::write(dir.path().join("secret.txt"), SENTINEL).unwrap();
    std::fs::create_dir_all(dir.path().join("main/artifacts")).unwrap();
    std::fs::write(dir.path().join("main/artifacts/secret.txt"), SENTINEL).unwrap();
    let mut server = Server::start(&data, 2, None);
    let auth = format!("Authorization: Bearer {}", server.token);

    // A real build, so build 1 with job `main`, a log and artifacts exist.
    let id = server
        .submit(json!({"pipeline": pipeline("      - a: echo hi > $SD_ARTIFACTS_DIR/ok.txt; ln -s /etc/passwd $SD_ARTIFACTS_DIR/passwd; ln -s / $SD_ARTIFACTS_DIR/root\n")}))
        .await;
    let b = server.wait_final(id).await;
    assert_eq!(b["status"], "success", "{b:#}");

    let mut answers = Vec::new();
    let mut check = |what: &str, status: u16, body: String, want: &[u16]| {
        eprintln!("HOSTILE: {what} -> {status}");
        assert!(
            want.contains(&status),
            "{what}: answered {status}, wanted one of {want:?}: {body}"
        );
        assert!(
            !body.contains(SENTINEL),
            "{what}: read outside the data dir"
        );
        assert!(
            !body.contains("root:x:0:0"),
            "{what}: served the host's /etc/passwd"
        );
        answers.push((what.to_string(), status));
    };

    // --- Bodies.
    let post = |body: &str, ctype: &str| {
        format!(
            "POST /api/builds HTTP/1.1\nHost: x\n{auth}\nContent-Type: {ctype}\nContent-Length: {}",
            body.len()
        )
    };
    for (what, body) in [
        ("malformed json", "{\"pipeline\": "),
        ("not json at all", "\u{0}\u{1}garbage"),
        ("json array", "[1,2,3]"),
        ("wrong field type", "{\"pipeline\": 42}"),
        ("missing pipeline", "{}"),
        ("trailing data", "{\"pipeline\": \"x\"} {}"),
        (
            "deep json nesting",
            &format!(
                "{{\"pipeline\": {}1{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
        ),
        ("invalid utf-8 escape", "{\"pipeline\": \"\\ud800\"}"),
    ] {
        let (s, b) = raw(
            &server.url,
            &post(body, "application/json"),
            body.as_bytes(),
        )
        .await;
        check(what, s, b, &[400, 422]);
    }
    let (s, b) = raw(&server.url, &post("{}", "text/plain"), b"{}").await;
    check("wrong content type", s, b, &[400, 415]);
    let unknown = r#"{"pipeline": "jobs: {}", "privileged": true}"#;
    let (s, b) = raw(
        &server.url,
        &post(unknown, "application/json"),
        unknown.as_bytes(),
    )
    .await;
    check("unknown field", s, b.clone(), &[400]);
    assert!(
        b.contains("privileged"),
        "the unknown field is not named: {b}"
    );
    let unknown_git = r#"{"pipeline": "jobs: {}", "git": {"url": "x", "ref": "y", "depth": 1}}"#;
    let (s, b) = raw(
        &server.url,
        &post(unknown_git, "application/json"),
        unknown_git.as_bytes(),
    )
    .await;
    check("unknown nested field", s, b, &[400]);
    // Declared far beyond the limit: refused from the header, before reading a byte of it.
    let head = format!(
        "POST /api/builds HTTP/1.1\nHost: x\n{auth}\nContent-Type: application/json\nContent-Length: 900000000"
    );
    let (s, b) = raw(&server.url, &head, b"{\"pipeline\": \"").await;
    check("oversized declared body", s, b, &[413]);
    // Hostile pipelines inside a valid body: deep nesting, a billion-laughs alias bomb, huge.
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\njobs: *h\n";
    for (what, pipeline) in [
        (
            "deeply nested yaml",
            format!("jobs: {}{}", "[".repeat(50_000), "]".repeat(50_000)),
        ),
        (
            "deeply nested yaml maps",
            format!(
                "jobs:{}",
                (0..20_000)
                    .map(|i| format!("\n{}k:", " ".repeat(i % 200)))
                    .collect::<String>()
            ),
        ),
        ("yaml alias bomb", bomb.to_string()),
        (
            "8 MB pipeline",
            format!(
                "jobs:\n  main:\n    image: x\n    steps:\n{}",
                "      - a: echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
                    .repeat(120_000)
            ),
        ),
        ("NUL in pipeline", "jobs:\n  ma\u{0}in: {}\n".to_string()),
    ] {
        let body = serde_json::to_string(&json!({"pipeline": pipeline})).unwrap();
        let (s, b) = raw(
            &server.url,
            &post(&body, "application/json"),
            body.as_bytes(),
        )
        .await;
        check(what, s, b, &[400, 413, 422]);
    }
    // Bad base64 and a tar escaping its directory.
    let body = json!({"pipeline": "jobs:\n  main:\n    image: x\n    requires: [~commit]\n    steps: [true]\n", "source_tar": "!!!not base64"}).to_string();
    let (s, b) = raw(
        &server.url,
        &post(&body, "application/json"),
        body.as_bytes(),
    )
    .await;
    check("bad base64 source", s, b, &[400, 422]);

    // --- Paths: traversal in job names (log and artifacts), plain, encoded, double-encoded.
    for job in [
        "..",
        "..%2F..%2Fsecret.txt",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fsecret.txt",
        "..%252F..%252Fsecret.txt",
        "main%2F..%2F..%2F..%2Fsecret.txt",
        "main%00",
        "%00",
        ".",
        "...",
        "main%5C..%5C..",
        "%2F",
        "..%5c..%5csecret.txt",
        "main%0A",
        "~",
        "%C0%AE%C0%AE",
    ] {
        for route in [
            "jobs/{job}/log",
            "jobs/{job}/log?follow=true",
            "artifacts/{job}",
        ] {
            let path = format!("/api/builds/{id}/{}", route.replace("{job}", job));
            let (s, b) = raw(
                &server.url,
                &format!("GET {path} HTTP/1.1\nHost: x\n{auth}"),
                b"",
            )
            .await;
            check(&path, s, b, &[400, 404]);
        }
    }
    // Unnormalized paths are not resolved by the router.
    for path in [
        format!("/api/builds/{id}/jobs/../../../secret.txt/log"),
        format!("/api/builds/{id}/artifacts/../../../../main"),
        format!("/api/builds/{id}/../{id}/artifacts/main/../../../x"),
        "/api/../../../../etc/passwd".to_string(),
        "/../../../etc/passwd".to_string(),
        "/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/app.js/..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "//etc/passwd".to_string(),
    ] {
        let (s, b) = raw(
            &server.url,
            &format!("GET {path} HTTP/1.1\nHost: x\n{auth}"),
            b"",
        )
        .await;
        check(&path, s, b, &[400, 404]);
    }

    // --- Forged build ids.
    for bad in [
        "0",
        "-1",
        "999999",
        "9223372036854775807",
        "99999999999999999999999",
        "1e3",
        "0x1",
        "abc",
        "1%00",
        "%31",
        "1.0",
        "+1",
        " 1",
    ] {
        let valid = bad == "%31" || bad == "+1";
        for route in ["", "/events", "/jobs/main/log", "/artifacts/main"] {
            if valid && route == "/events" {
                continue; // an endless stream of a real build
            }
            let path = format!("/api/builds/{}{route}", bad.replace(' ', "%20"));
            let (s, b) = raw(
                &server.url,
                &format!("GET {path} HTTP/1.1\nHost: x\n{auth}"),
                b"",
            )
            .await;
            // `%31` is `1` once decoded: that one may legitimately answer.
            let want: &[u16] = if bad == "%31" || bad == "+1" {
                &[200, 400, 404]
            } else {
                &[400, 404]
            };
            if route == "/events" && s == 200 {
                continue; // a stream; the build id was valid
            }
            check(&path, s, b, want);
        }
        for route in ["/cancel", "/rerun"] {
            let path = format!("/api/builds/{}{route}", bad.replace(' ', "%20"));
            let head = format!(
                "POST {path} HTTP/1.1\nHost: x\n{auth}\nContent-Type: application/json\nContent-Length: 2"
            );
            let (s, b) = raw(&server.url, &head, b"{}").await;
            let want: &[u16] = if bad == "%31" || bad == "+1" {
                &[200, 202, 400, 404, 409, 422]
            } else {
                &[400, 404]
            };
            check(&path, s, b, want);
        }
    }
    // Query strings.
    for q in [
        "status=%00",
        "limit=-1",
        "limit=99999999999999999999",
        "offset=-5",
        "status=running&status=queued",
        "limit=abc",
    ] {
        let path = format!("/api/builds?{q}");
        let (s, b) = raw(
            &server.url,
            &format!("GET {path} HTTP/1.1\nHost: x\n{auth}"),
            b"",
        )
        .await;
        check(&path, s, b, &[200, 400, 422]);
    }

    // --- The artifacts of the real build: the job's symlinks are served as links, not followed.
    let r = server
        .get(&format!("/api/builds/{id}/artifacts/main"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let tarball = r.bytes().await.unwrap();
    let mut names = Vec::new();
    for e in tar::Archive::new(&tarball[..]).entries().unwrap() {
        let e = e.unwrap();
        let kind = e.header().entry_type();
        names.push((e.path().unwrap().display().to_string(), kind));
        if e.path().unwrap().ends_with("passwd") || e.path().unwrap().ends_with("root") {
            assert!(kind.is_symlink(), "a symlink was followed: {:?}", e.path());
        }
    }
    assert!(!String::from_utf8_lossy(&tarball).contains("root:x:0:0"));
    assert!(
        names.iter().any(|(n, _)| n.ends_with("ok.txt")),
        "{names:?}"
    );

    // --- Source tars that try to escape: `..` entries, absolute paths, and a symlink then a
    // file through it. The build must not write outside its directory.
    let escape = dir.path().join("escaped.txt");
    for (what, tarball) in [
        (
            "dotdot entry",
            tar_with(&[("../../../escaped.txt", tar::EntryType::Regular, b"x", None)]),
        ),
        (
            "absolute entry",
            tar_with(&[(
                &*format!("{}", escape.display()),
                tar::EntryType::Regular,
                b"x",
                None,
            )]),
        ),
        (
            "symlink then file through it",
            tar_with(&[
                (
                    "up",
                    tar::EntryType::Symlink,
                    b"",
                    Some(dir.path().to_str().unwrap()),
                ),
                ("up/escaped.txt", tar::EntryType::Regular, b"x", None),
            ]),
        ),
        (
            "hardlink to outside",
            tar_with(&[(
                "h",
                tar::EntryType::Link,
                b"",
                Some(dir.path().join("secret.txt").to_str().unwrap()),
            )]),
        ),
    ] {
        use base64::Engine as _;
        let body = json!({
            "pipeline": pipeline("      - a: cat h up/escaped.txt 2>&1; true\n"),
            "source_tar": base64::engine::general_purpose::STANDARD.encode(&tarball),
        });
        let r = server.post("/api/builds").json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or_default();
        eprintln!("HOSTILE: source tar {what} -> {status} {v}");
        assert!(matches!(status, 202 | 400 | 422), "{what}: {status} {v}");
        if status == 202 {
            let b = server.wait_final(v["id"].as_i64().unwrap()).await;
            eprintln!("HOSTILE: source tar {what}: build {}", b["status"]);
            let log = server.log(v["id"].as_i64().unwrap(), "main").await;
            assert!(
                !log.contains(SENTINEL),
                "{what}: the job read {SENTINEL}: {log}"
            );
        }
        assert!(!escape.exists(), "{what}: wrote {}", escape.display());
        answers.push((format!("source tar {what}"), status));
    }

    // Still alive and well.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
    let r = server.get("/healthz").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    eprintln!(
        "HOSTILE: {} hostile requests, all 4xx or refused, server alive",
        answers.len()
    );
}
