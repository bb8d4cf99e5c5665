//! Realistic `screwdriver.yaml` files modelled on public Screwdriver projects.

use std::path::Path;

use berth_pipeline::{DockerMode, Event, Filter, Requirement, load};

fn fixture(name: &str) -> berth_pipeline::Pipeline {
    // Relative to the crate (cargo's working directory for tests) so snapshots are portable.
    let path = Path::new("tests/fixtures").join(name);
    match load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{name} failed to load:\n{e}"),
    }
}

fn names<T>(map: &indexmap::IndexMap<String, T>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn node_library() {
    let p = fixture("node-library.yaml");
    assert_eq!(names(&p.jobs), ["main", "publish"]);
    assert!(p.warnings.is_empty());
    let main = &p.jobs["main"];
    assert_eq!(main.image, "node:18");
    assert_eq!(main.environment["CI"], "true");
    assert_eq!(main.resources.cpus, Some(6.0));
    assert_eq!(main.resources.memory_bytes, Some(12 * 1024 * 1024 * 1024));
    assert_eq!(
        main.steps[2].command,
        "npm run coverage\necho \"coverage done\"\n"
    );
    let publish = &p.jobs["publish"];
    assert_eq!(publish.secrets, ["NPM_TOKEN", "GIT_KEY"]);
    assert_eq!(
        publish.timeout,
        Some(std::time::Duration::from_secs(30 * 60))
    );
    assert_eq!(
        publish.requires,
        [Requirement::Job {
            name: "main".into(),
            any: false
        }]
    );
    insta::assert_debug_snapshot!(p);
}

#[test]
fn go_service() {
    let p = fixture("go-service.yaml");
    assert_eq!(p.parameters["REGION"].value, "us-west-2");
    assert_eq!(p.parameters["REGION"].choices, ["us-west-2", "us-east-1"]);
    let test = &p.jobs["test"];
    assert_eq!(test.environment["GO111MODULE"], "on");
    assert_eq!(test.environment["CGO_ENABLED"], "0");
    let steps: Vec<&str> = test.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["vet", "test", "teardown-logs", "teardown-cleanup"]);
    let aliases: Vec<&[String]> = test.services.iter().map(|s| s.aliases.as_slice()).collect();
    assert_eq!(
        aliases,
        [
            &["postgres".to_string()][..],
            &["cache".to_string()],
            &["team-fake-s3".to_string(), "fake-s3".to_string()]
        ]
    );
    assert_eq!(
        test.services[1].command.as_deref(),
        Some(&["redis-server", "--save", "", "--appendonly", "no"].map(String::from)[..])
    );
    let image = &p.jobs["image"];
    let DockerMode::Dind(opts) = &image.docker else {
        panic!("{:?}", image.docker)
    };
    assert!(opts.tls);
    assert_eq!(opts.cache.as_deref(), Some("go-service-dind"));
    assert_eq!(p.jobs["deploy"].docker, DockerMode::Default);
    assert_eq!(p.jobs["deploy"].secrets, ["GITHUB_TOKEN"]);
    insta::assert_debug_snapshot!(p);
}

#[test]
fn anchors_and_merge_keys() {
    let p = fixture("anchors.yaml");
    let main = &p.jobs["main"];
    let steps: Vec<(&str, &str)> = main
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.command.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("install", "npm ci"),
            ("lint", "npm run lint"),
            ("test", "npm test")
        ]
    );
    assert_eq!(
        main.requires[0],
        Requirement::Trigger {
            event: Event::Commit,
            filter: Some(Filter::Exact("main".into()))
        }
    );
    let release = &p.jobs["release"];
    assert_eq!(release.environment["NODE_ENV"], "production");
    assert_eq!(release.environment["VERSION_FILE"], "package.json");
    let Requirement::Trigger {
        event: Event::Tag,
        filter: Some(Filter::Regex(re)),
    } = &release.requires[0]
    else {
        panic!("{:?}", release.requires)
    };
    assert!(re.is_match("v1.2.3"));
    assert_eq!(
        p.jobs["after-other-pipeline"].requires,
        [Requirement::Remote {
            pipeline: 1234,
            job: "publish".into(),
            any: true
        }]
    );
    insta::assert_debug_snapshot!(p);
}

#[test]
fn ui_app_with_warnings() {
    let p = fixture("ui-app.yaml");
    let warnings: Vec<String> = p.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(
        warnings,
        [
            "`cache` is not applied by local runs",
            "`settings` is not applied by local runs",
            "`sourcePaths` is not applied by local runs",
        ]
    );
    assert_eq!(
        p.jobs["deploy-prod"].resources.memory_bytes,
        Some(8 * 1024 * 1024 * 1024)
    );
    assert_eq!(p.jobs["deploy-prod"].resources.cpus, Some(4.0));
    insta::assert_debug_snapshot!(p);
}
