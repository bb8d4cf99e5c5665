//! The runner against a fake engine: fast checks of the dispatcher and job lifecycle without
//! Docker (parallel limit, cleanup in every outcome, cancellation, timeout, skipped jobs).
//! The fake "runs" step scripts by reading the setup archive the runner hands to the first step's
//! exec: it understands `echo TEXT`, `sleep SECONDS` and `exit N`. The real-daemon suite in berth-cli/tests proves
//! the same behaviours against dockerd.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use berth_engine::*;
use berth_pipeline::{Event, Start};
use berth_runner::{JobResult, RunEvent, RunOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Fake {
    address: Option<DaemonAddress>,
    live: Mutex<BTreeMap<String, (ObjectKind, Labels)>>,
    scripts: Mutex<HashMap<(String, String), String>>,
    exits: Mutex<HashMap<String, i64>>,
    next: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            address: Some(DaemonAddress::resolve(Some("unix:///fake.sock"))),
            ..Default::default()
        })
    }
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.next.fetch_add(1, Ordering::SeqCst))
    }
    fn live(&self) -> Vec<String> {
        self.live.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl Engine for Fake {
    fn address(&self) -> &DaemonAddress {
        self.address.as_ref().unwrap()
    }
    async fn version(&self) -> Result<DaemonVersion, EngineError> {
        Ok(DaemonVersion {
            version: "fake".into(),
            api_version: "1.41".into(),
            os: "linux".into(),
            arch: "x".into(),
        })
    }
    async fn image_exists(&self, _: &str) -> Result<bool, EngineError> {
        Ok(true)
    }
    async fn image_info(&self, _: &str) -> Result<ImageInfo, EngineError> {
        Ok(ImageInfo::default())
    }
    async fn pull_image(
        &self,
        _: &str,
        _: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), EngineError> {
        Ok(())
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let id = self.id("c");
        self.live
            .lock()
            .unwrap()
            .insert(id.clone(), (ObjectKind::Container, spec.labels.clone()));
        Ok(id)
    }
    async fn start_container(&self, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    async fn inspect_container(&self, id: &str) -> Result<ContainerInfo, EngineError> {
        Ok(ContainerInfo {
            id: id.into(),
            running: true,
            ..Default::default()
        })
    }
    async fn kill_container(&self, _: &str, _: &str) -> Result<(), EngineError> {
        Ok(())
    }
    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.live.lock().unwrap().remove(id);
        Ok(())
    }
    fn container_logs(&self, _: &str, _: bool, _: Option<usize>) -> ByteStream {
        futures_util::stream::empty().boxed()
    }
    async fn put_archive(&self, id: &str, _: &str, tar: Bytes) -> Result<(), EngineError> {
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = format!("/{}", entry.path().unwrap().display());
            if path.starts_with("/sd/berth/steps/") {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                self.scripts
                    .lock()
                    .unwrap()
                    .insert((id.to_string(), path), text);
            }
        }
        Ok(())
    }
    fn get_archive(&self, _: &str, path: &str) -> ByteStream {
        let what = path.to_string();
        futures_util::stream::once(async move { Err(EngineError::NotFound { what }) }).boxed()
    }
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecHandle, EngineError> {
        let id = self.id("e");
        let path = spec.cmd.last().cloned().unwrap_or_default();
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&(container.to_string(), path))
            .cloned();
        let Some(script) = script else {
            // berth's own probes (signals, OOM counter): succeed quietly.
            self.exits.lock().unwrap().insert(id.clone(), 0);
            return Ok(ExecHandle {
                id,
                output: futures_util::stream::empty().boxed(),
            });
        };
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let mut out = Vec::new();
        let mut code = 0;
        for line in script.lines() {
            if let Some(t) = line.strip_prefix("echo ") {
                out.push(Ok(Bytes::from(format!("{t}\n"))));
            } else if let Some(s) = line.strip_prefix("sleep ") {
                tokio::time::sleep(Duration::from_secs_f64(s.parse().unwrap())).await;
            } else if let Some(n) = line.strip_prefix("exit ") {
                code = n.parse().unwrap();
                break;
            }
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.exits.lock().unwrap().insert(id.clone(), code);
        Ok(ExecHandle {
            id,
            output: futures_util::stream::iter(out).boxed(),
        })
    }
    async fn exec_with_stdin(
        &self,
        container: &str,
        spec: &ExecSpec,
        stdin: Bytes,
    ) -> Result<Option<ExecHandle>, EngineError> {
        // The first step's exec brings the setup archive: unpack it as `tar` would.
        self.put_archive(container, "/", stdin).await?;
        self.exec(container, spec).await.map(Some)
    }
    async fn exec_exit_code(&self, id: &str) -> Result<Option<i64>, EngineError> {
        Ok(self.exits.lock().unwrap().get(id).copied())
    }
    async fn create_network(
        &self,
        _: &str,
        labels: &Labels,
        _: bool,
    ) -> Result<String, EngineError> {
        let id = self.id("n");
        self.live
            .lock()
            .unwrap()
            .insert(id.clone(), (ObjectKind::Network, labels.clone()));
        Ok(id)
    }
    async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.live.lock().unwrap().remove(id);
        Ok(())
    }
    async fn create_volume(&self, name: &str, labels: &Labels) -> Result<(), EngineError> {
        self.live
            .lock()
            .unwrap()
            .insert(name.to_string(), (ObjectKind::Volume, labels.clone()));
        Ok(())
    }
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.live.lock().unwrap().remove(name);
        Ok(())
    }
    async fn list_containers(&self) -> Result<Vec<LabelledObject>, EngineError> {
        self.list_labelled(ObjectKind::Container, berth_engine::labels::OWNER, None)
            .await
    }
    async fn list_labelled(
        &self,
        kind: ObjectKind,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<LabelledObject>, EngineError> {
        Ok(self
            .live
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (k, l))| {
                *k == kind
                    && l.get(key)
                        .is_some_and(|v| value.is_none_or(|want| v == want))
            })
            .map(|(id, (k, l))| LabelledObject {
                kind: *k,
                id: id.clone(),
                name: id.clone(),
                labels: l.clone(),
            })
            .collect())
    }
}

struct Outcome {
    results: BTreeMap<String, JobResult>,
    skipped: Vec<String>,
    exit_code: i32,
    events: Vec<RunEvent>,
}

async fn run(
    fake: Arc<Fake>,
    yaml: &str,
    tweak: impl FnOnce(&mut RunOptions),
    cancel: CancellationToken,
) -> Outcome {
    let pipeline = berth_pipeline::parse(yaml, "test.yaml").expect("valid pipeline");
    let dir = tempfile::tempdir().unwrap();
    let owner = Owner::register_in(dir.path().join("owners")).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let start = Start::Event {
        event: Event::Commit,
        branch: "main".into(),
        tag: None,
    };
    let mut opts = RunOptions::new(src, dir.path().join("out"), start);
    tweak(&mut opts);
    let (tx, mut rx) = mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    let summary = berth_runner::run(fake, &owner, &pipeline, opts, tx, cancel)
        .await
        .expect("run");
    let events = collector.await.unwrap();
    Outcome {
        results: summary
            .jobs
            .iter()
            .map(|j| (j.job.clone(), j.result.clone()))
            .collect(),
        skipped: summary.skipped.iter().map(|(j, _)| j.clone()).collect(),
        exit_code: summary.exit_code(),
        events,
    }
}

#[tokio::test]
async fn parallel_limit_is_honoured_and_everything_is_removed() {
    let fake = Fake::new();
    let jobs: String = (1..=4)
        .map(|i| {
            format!(
                "  j{i}:\n    image: x\n    requires: [~commit]\n    steps:\n      - s: sleep 0.2\n"
            )
        })
        .collect();
    let out = run(
        fake.clone(),
        &format!("jobs:\n{jobs}"),
        |o| o.parallel = 2,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.results.len(), 4);
    assert_eq!(fake.max_running.load(Ordering::SeqCst), 2);
    assert!(fake.live().is_empty(), "left: {:?}", fake.live());
}

#[tokio::test]
async fn failure_skips_downstream_runs_teardown_and_cleans_up() {
    let fake = Fake::new();
    let yaml = "jobs:\n  a:\n    image: x\n    requires: [~commit]\n    steps:\n      - teardown-t: echo td\n      - s: exit 4\n      - never: echo no\n  b:\n    image: x\n    requires: [a]\n    steps:\n      - s: echo b\n";
    let out = run(fake.clone(), yaml, |_| {}, CancellationToken::new()).await;
    assert_eq!(out.exit_code, 1);
    assert_eq!(
        out.results["a"],
        JobResult::Failure {
            step: "s".into(),
            exit_code: 4
        }
    );
    assert_eq!(out.skipped, ["b"]);
    let steps: Vec<String> = out
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Job {
                detail: berth_runner::JobEvent::StepFinished { step, .. },
                ..
            } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["s", "teardown-t"]);
    assert!(fake.live().is_empty());
}

#[tokio::test]
async fn cancellation_stops_running_jobs_promptly_and_cleans_up() {
    let fake = Fake::new();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let yaml =
        "jobs:\n  a:\n    image: x\n    requires: [~commit]\n    steps:\n      - s: sleep 30\n";
    let started = std::time::Instant::now();
    let out = run(fake.clone(), yaml, |_| {}, cancel).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.results["a"], JobResult::Cancelled);
    assert_eq!(out.exit_code, 130);
    assert!(fake.live().is_empty());
}

#[tokio::test]
async fn timeout_is_reported_and_cleans_up() {
    let fake = Fake::new();
    let yaml =
        "jobs:\n  a:\n    image: x\n    requires: [~commit]\n    steps:\n      - s: sleep 30\n";
    let out = run(
        fake.clone(),
        yaml,
        |o| {
            o.default_timeout = Duration::from_millis(200);
            o.stop_grace = Duration::from_millis(100);
        },
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        out.results["a"],
        JobResult::TimedOut {
            step: Some("s".into())
        }
    );
    assert_eq!(out.exit_code, 1);
    assert!(fake.live().is_empty());
}
