//! The web UI in a real browser (Debian's chromium driven through chromium-driver): a build
//! submitted through the API shows its log growing and its job turning green; a second build
//! is cancelled from its page. Screenshots land in `<target tmp>/berth-server-browser/`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Not a test: the server child process (see `common`).
#[test]
fn server_child() {
    common::child_main();
}

/// chromedriver, stopped on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chromedriver path from scripts/ensure-browser, or a loud skip (a failure in CI).
fn ensure_browser() -> Option<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ensure-browser");
    let out = Command::new(script).stderr(Stdio::inherit()).output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => {
            let why =
                "chromium and chromium-driver are not available (scripts/ensure-browser failed)";
            if std::env::var("BERTH_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
                panic!("BERTH_REQUIRE_DOCKER=1 but {why}");
            }
            eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
            None
        }
    }
}

async fn start_browser(driver: &str, profile: &std::path::Path) -> (Driver, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::rustls()
        .expect("tls connector")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("webdriver session");
    (driver, client)
}

async fn wait_css(c: &Client, css: &str, limit: Duration) -> fantoccini::elements::Element {
    c.wait()
        .at_most(limit)
        .every(Duration::from_millis(100))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element `{css}` within {limit:?}: {e}"))
}

/// The log pane's text; empty while the page is still being drawn.
async fn log_text(c: &Client) -> String {
    match c.find(Locator::Css("#log")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_page_follows_the_log_and_cancels() {
    if !docker() {
        return;
    }
    let Some(driver_path) = ensure_browser() else {
        return;
    };
    berth_engine::install_crypto_provider();
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("berth-server-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let dir = tempdir();
    let server = Server::start(&dir.path().join("data"), 2, None);
    let (_driver, c) = start_browser(&driver_path, &dir.path().join("profile")).await;
    let shot = |name: &'static str| {
        let c = c.clone();
        let path = shots.join(name);
        async move {
            let png = c.screenshot().await.expect("screenshot");
            std::fs::write(&path, png).unwrap();
            eprintln!("screenshot: {}", path.display());
        }
    };

    let steps = format!(
        "jobs:\n  main:\n    image: {BUSYBOX}\n    requires: [~commit]\n    steps:\n\
         \x20     - setup: printf '\\033[32mready\\033[0m and \\033[1;31mred\\033[0m\\n'\n\
         \x20     - count: for i in $(seq 1 16); do echo line $i; sleep 0.4; done\n\
         \x20     - finish: echo all done\n\
         \x20 publish:\n    image: {BUSYBOX}\n    requires: [main]\n    steps:\n\
         \x20     - publish: echo published\n"
    );
    let first = server.submit(json!({"pipeline": steps})).await;

    c.goto(&format!("{}/builds/{first}", server.url))
        .await
        .unwrap();
    let input = wait_css(&c, "#token-input", Duration::from_secs(10)).await;
    input.send_keys(&server.token).await.unwrap();
    c.find(Locator::Css("#token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The log grows while the job runs.
    let start = Instant::now();
    let early = loop {
        let t = log_text(&c).await;
        if t.contains("line 3") {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "log did not start: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shot("1-build-running.png").await;
    assert!(
        !early.contains("line 16"),
        "the log should still be growing: {early}"
    );
    let later = loop {
        let t = log_text(&c).await;
        if t.len() > early.len() + 10 {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "log did not grow"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(later.starts_with(&early[..early.len().min(20)]));
    // ANSI colours are rendered, not printed.
    assert!(!later.contains("\u{1b}["), "raw escapes in the log");
    wait_css(&c, "#log span.f32", Duration::from_secs(5)).await;

    wait_css(
        &c,
        ".job[data-job='main'][data-status='success']",
        Duration::from_secs(60),
    )
    .await;
    wait_css(
        &c,
        "#build-status[data-status='success']",
        Duration::from_secs(60),
    )
    .await;
    wait_css(
        &c,
        ".job[data-job='publish'][data-status='success']",
        Duration::from_secs(5),
    )
    .await;
    assert!(log_text(&c).await.contains("all done"));
    wait_css(
        &c,
        "#steps li[data-step='count'][data-status='success']",
        Duration::from_secs(5),
    )
    .await;
    shot("2-build-success.png").await;

    // A second build, cancelled from its page.
    let second = server
        .submit(json!({"pipeline": pipeline("      - wait: echo waiting; sleep 300\n")}))
        .await;
    c.goto(&format!("{}/builds/{second}", server.url))
        .await
        .unwrap();
    wait_css(
        &c,
        ".job[data-job='main'][data-status='running']",
        Duration::from_secs(60),
    )
    .await;
    wait_css(&c, "#cancel", Duration::from_secs(5))
        .await
        .click()
        .await
        .unwrap();
    wait_css(
        &c,
        "#build-status[data-status='cancelled']",
        Duration::from_secs(60),
    )
    .await;
    wait_css(
        &c,
        ".job[data-job='main'][data-status='cancelled']",
        Duration::from_secs(10),
    )
    .await;
    shot("3-build-cancelled.png").await;

    // The builds list, at laptop and phone widths.
    c.goto(&server.url).await.unwrap();
    wait_css(
        &c,
        &format!("tr[data-build='{second}']"),
        Duration::from_secs(10),
    )
    .await;
    shot("4-builds-laptop.png").await;
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{}/builds/{first}", server.url))
        .await
        .unwrap();
    wait_css(
        &c,
        "#build-status[data-status='success']",
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shot("5-build-phone.png").await;
    c.goto(&server.url).await.unwrap();
    wait_css(
        &c,
        &format!("tr[data-build='{first}']"),
        Duration::from_secs(10),
    )
    .await;
    shot("6-builds-phone.png").await;
    c.close().await.unwrap();
    assert_eq!(server.build(second).await["status"], "cancelled");
}
