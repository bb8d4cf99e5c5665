//! Attack tests against the real daemon: every request here must be refused, and the daemon's
//! state is checked afterwards (nothing created, the other job's objects untouched, shared
//! image tags unchanged), not just the HTTP status.

mod common;

use common::*;
use serde_json::{Value, json};

/// Creates that must be refused. `{IMG}` is the test image, `{WS}` the job's workspace path,
/// `{B}` the other scope's container id, `{BNAME}` its daemon name, `{BNET}` its network id.
const CREATE_ATTACKS: &[(&str, &str)] = &[
    (
        "privileged",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged":true}}"#,
    ),
    (
        "privileged lowercase keys",
        r#"{"image":"{IMG}","hostconfig":{"privileged":true}}"#,
    ),
    (
        "privileged as number",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged":1}}"#,
    ),
    (
        "privileged as string",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged":"true"}}"#,
    ),
    (
        "privileged at top level (deprecated embedded HostConfig)",
        r#"{"Image":"{IMG}","Privileged":true}"#,
    ),
    (
        "binds at top level",
        r#"{"Image":"{IMG}","Binds":["/etc:/host"]}"#,
    ),
    (
        "deprecated Cpuset at top level",
        r#"{"Image":"{IMG}","Cpuset":"0"}"#,
    ),
    (
        "case-variant duplicate HostConfig, last privileged",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged":false},"hostconfig":{"Privileged":true}}"#,
    ),
    (
        "duplicate HostConfig objects merged by the daemon",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["/etc:/host"]},"HostConfig":{"Privileged":false}}"#,
    ),
    (
        "duplicate key inside HostConfig",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged":false,"Privileged":true}}"#,
    ),
    (
        "case-variant keys inside HostConfig",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged":false,"PRIVILEGED":true}}"#,
    ),
    (
        "long s folding: Bind\\u017f",
        r#"{"Image":"{IMG}","HostConfig":{"Bind\u017f":["/etc:/host"]}}"#,
    ),
    (
        "Kelvin sign folding: Networ\\u212aMode host",
        r#"{"Image":"{IMG}","HostConfig":{"Networ\u212aMode":"host"}}"#,
    ),
    (
        "long s folding: \\u017fecurityOpt",
        r#"{"Image":"{IMG}","HostConfig":{"\u017fecurityOpt":["seccomp=unconfined"]}}"#,
    ),
    (
        "dotless i is not a fold of i",
        r#"{"Image":"{IMG}","HostConf\u0131g":{"Privileged":true}}"#,
    ),
    (
        "trailing second JSON value",
        r#"{"Image":"{IMG}"} {"Image":"{IMG}","HostConfig":{"Privileged":true}}"#,
    ),
    (
        "unknown HostConfig field",
        r#"{"Image":"{IMG}","HostConfig":{"Privileged2":true}}"#,
    ),
    (
        "network mode host",
        r#"{"Image":"{IMG}","HostConfig":{"NetworkMode":"host"}}"#,
    ),
    (
        "pid mode host",
        r#"{"Image":"{IMG}","HostConfig":{"PidMode":"host"}}"#,
    ),
    (
        "ipc mode host",
        r#"{"Image":"{IMG}","HostConfig":{"IpcMode":"host"}}"#,
    ),
    (
        "uts mode host",
        r#"{"Image":"{IMG}","HostConfig":{"UTSMode":"host"}}"#,
    ),
    (
        "userns mode host",
        r#"{"Image":"{IMG}","HostConfig":{"UsernsMode":"host"}}"#,
    ),
    (
        "cgroupns mode host",
        r#"{"Image":"{IMG}","HostConfig":{"CgroupnsMode":"host"}}"#,
    ),
    (
        "pid mode of another job's container",
        r#"{"Image":"{IMG}","HostConfig":{"PidMode":"container:{B}"}}"#,
    ),
    (
        "network mode of another job's container",
        r#"{"Image":"{IMG}","HostConfig":{"NetworkMode":"container:{B}"}}"#,
    ),
    (
        "ipc mode of another job's container by daemon name",
        r#"{"Image":"{IMG}","HostConfig":{"IpcMode":"container:{BNAME}"}}"#,
    ),
    (
        "cap add SYS_ADMIN",
        r#"{"Image":"{IMG}","HostConfig":{"CapAdd":["SYS_ADMIN"]}}"#,
    ),
    (
        "cap add ALL",
        r#"{"Image":"{IMG}","HostConfig":{"CapAdd":["ALL"]}}"#,
    ),
    (
        "cap add cap_sys_ptrace lowercase",
        r#"{"Image":"{IMG}","HostConfig":{"CapAdd":["cap_sys_ptrace"]}}"#,
    ),
    (
        "devices",
        r#"{"Image":"{IMG}","HostConfig":{"Devices":[{"PathOnHost":"/dev/mem","PathInContainer":"/dev/mem","CgroupPermissions":"rwm"}]}}"#,
    ),
    (
        "device cgroup rules",
        r#"{"Image":"{IMG}","HostConfig":{"DeviceCgroupRules":["a *:* rwm"]}}"#,
    ),
    (
        "device requests",
        r#"{"Image":"{IMG}","HostConfig":{"DeviceRequests":[{"Count":-1,"Capabilities":[["gpu"]]}]}}"#,
    ),
    (
        "seccomp unconfined",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["seccomp=unconfined"]}}"#,
    ),
    (
        "seccomp colon spelling",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["seccomp:unconfined"]}}"#,
    ),
    (
        "custom seccomp profile",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]}}"#,
    ),
    (
        "apparmor unconfined",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["apparmor=unconfined"]}}"#,
    ),
    (
        "selinux label disable",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["label=disable"]}}"#,
    ),
    (
        "selinux label type spc_t",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["label:type:spc_t"]}}"#,
    ),
    (
        "systempaths unconfined",
        r#"{"Image":"{IMG}","HostConfig":{"SecurityOpt":["systempaths=unconfined"]}}"#,
    ),
    (
        "sysctls",
        r#"{"Image":"{IMG}","HostConfig":{"Sysctls":{"net.ipv4.ip_forward":"1"}}}"#,
    ),
    (
        "cgroup parent",
        r#"{"Image":"{IMG}","HostConfig":{"CgroupParent":"/"}}"#,
    ),
    (
        "runtime",
        r#"{"Image":"{IMG}","HostConfig":{"Runtime":"io.containerd.runsc.v1"}}"#,
    ),
    (
        "masked paths emptied",
        r#"{"Image":"{IMG}","HostConfig":{"MaskedPaths":[]}}"#,
    ),
    (
        "readonly paths emptied",
        r#"{"Image":"{IMG}","HostConfig":{"ReadonlyPaths":[]}}"#,
    ),
    (
        "storage options",
        r#"{"Image":"{IMG}","HostConfig":{"StorageOpt":{"size":"1G"}}}"#,
    ),
    (
        "oom kill disable",
        r#"{"Image":"{IMG}","HostConfig":{"OomKillDisable":true}}"#,
    ),
    (
        "volumes from another job's container",
        r#"{"Image":"{IMG}","HostConfig":{"VolumesFrom":["{BNAME}"]}}"#,
    ),
    (
        "volumes from another job's container by id",
        r#"{"Image":"{IMG}","HostConfig":{"VolumesFrom":["{B}:ro"]}}"#,
    ),
    (
        "links to another job's container",
        r#"{"Image":"{IMG}","HostConfig":{"Links":["{B}:db"]}}"#,
    ),
    (
        "endpoint links to another job's container",
        r#"{"Image":"{IMG}","NetworkingConfig":{"EndpointsConfig":{"bridge":{"Links":["{B}:db"]}}}}"#,
    ),
    (
        "bind /etc",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["/etc:/host"]}}"#,
    ),
    (
        "bind /",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["/:/host:ro"]}}"#,
    ),
    (
        "bind dot-dot out of the workspace",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["{WS}/../../etc:/host"]}}"#,
    ),
    (
        "bind workspace prefix sibling",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["{WS}x:/host"]}}"#,
    ),
    (
        "bind symlink to /etc inside the workspace",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["{WS}/etclink:/host"]}}"#,
    ),
    (
        "bind through symlink to /etc",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["{WS}/etclink/passwd:/host"]}}"#,
    ),
    (
        "bind through relative symlink climbing out",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["{WS}/sub/up/etc:/host"]}}"#,
    ),
    (
        "bind with rshared propagation",
        r#"{"Image":"{IMG}","HostConfig":{"Binds":["{WS}:/host:rshared"]}}"#,
    ),
    (
        "mount bind /etc",
        r#"{"Image":"{IMG}","HostConfig":{"Mounts":[{"Type":"bind","Source":"/etc","Target":"/host"}]}}"#,
    ),
    (
        "mount bind through symlink",
        r#"{"Image":"{IMG}","HostConfig":{"Mounts":[{"Type":"bind","Source":"{WS}/etclink","Target":"/host"}]}}"#,
    ),
    (
        "mount lowercase keys bind /etc",
        r#"{"Image":"{IMG}","HostConfig":{"mounts":[{"type":"bind","source":"/etc","target":"/host"}]}}"#,
    ),
    (
        "anonymous volume with bind driver options",
        r#"{"Image":"{IMG}","HostConfig":{"Mounts":[{"Type":"volume","Target":"/x","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/etc"}}}}]}}"#,
    ),
    (
        "named volume with driver options",
        r#"{"Image":"{IMG}","HostConfig":{"Mounts":[{"Type":"volume","Source":"v1","Target":"/x","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"o":"bind","device":"/"}}}}]}}"#,
    ),
    (
        "mount type npipe",
        r#"{"Image":"{IMG}","HostConfig":{"Mounts":[{"Type":"npipe","Source":"/var/run/docker.sock","Target":"/x"}]}}"#,
    ),
    (
        "volume driver",
        r#"{"Image":"{IMG}","HostConfig":{"VolumeDriver":"evil"}}"#,
    ),
    (
        "log driver syslog",
        r#"{"Image":"{IMG}","HostConfig":{"LogConfig":{"Type":"syslog","Config":{}}}}"#,
    ),
    (
        "log driver gelf",
        r#"{"Image":"{IMG}","HostConfig":{"LogConfig":{"Type":"gelf","Config":{"gelf-address":"udp://127.0.0.1:1"}}}}"#,
    ),
    (
        "reserved owner label",
        r#"{"Image":"{IMG}","Labels":{"io.berth.owner":"someone-else"}}"#,
    ),
    (
        "reserved scope label",
        r#"{"Image":"{IMG}","Labels":{"io.berth.scope":"other"}}"#,
    ),
    (
        "another job's network by name",
        r#"{"Image":"{IMG}","HostConfig":{"NetworkMode":"net"},"NetworkingConfig":{"EndpointsConfig":{"net":{}}}}"#,
    ),
    (
        "another job's network by id",
        r#"{"Image":"{IMG}","HostConfig":{"NetworkMode":"{BNET}"}}"#,
    ),
    (
        "endpoint driver options",
        r#"{"Image":"{IMG}","NetworkingConfig":{"EndpointsConfig":{"bridge":{"DriverOpts":{"x":"y"}}}}}"#,
    ),
];

fn fill(t: &str, ctx: &[(&str, &str)]) -> String {
    let mut s = t.to_string();
    for (k, v) in ctx {
        s = s.replace(k, v);
    }
    s
}

/// Every create attack is refused, and afterwards the daemon has no container of that name and
/// no container of the attacking scope at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_create_attacks_are_refused_and_create_nothing() {
    if !docker_or_skip("container_create_attacks").await {
        return;
    }
    let a = start("atk").await;
    let b = start("victim").await;
    let b_id = b.run("db", &["sleep", "300"]).await;
    let r = b
        .send(&post_json("/networks/create", r#"{"Name":"net"}"#))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let b_net = r.json()["Id"].as_str().unwrap().to_string();
    std::os::unix::fs::symlink("/etc", a.ws.join("etclink")).unwrap();
    std::fs::create_dir_all(a.ws.join("sub")).unwrap();
    std::os::unix::fs::symlink("../..", a.ws.join("sub/up")).unwrap();
    let ctx = [
        ("{IMG}", BUSYBOX.to_string()),
        ("{WS}", JOB_WS.to_string()),
        ("{BNAME}", b.daemon_name("db")),
        ("{BNET}", b_net.clone()),
        ("{B}", b_id.clone()),
    ];
    let ctx: Vec<(&str, &str)> = ctx.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (i, (what, tmpl)) in CREATE_ATTACKS.iter().enumerate() {
        let body = fill(tmpl, &ctx);
        let name = format!("atk{i}");
        let r = a
            .send(&post_json(
                &format!("/containers/create?name={name}"),
                &body,
            ))
            .await;
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "attack `{what}` was not refused: {} {}",
            r.status,
            r.body
        );
        assert!(
            r.message().starts_with("berth scoped socket: ") || r.status == 404,
            "attack `{what}`: refusal is not Docker-style: {}",
            r.body
        );
        assert!(
            !daemon_has_container(&a.daemon_name(&name)).await,
            "attack `{what}` created a container"
        );
    }
    let mine = daemon_list(&format!("{{\"label\":[\"io.berth.scope={}\"]}}", a.scope)).await;
    assert!(
        mine.iter().all(|o| !o.starts_with("container")),
        "attacks left containers: {mine:?}"
    );
    // The other job's container still runs.
    assert_eq!(daemon_inspect(&b_id).await["State"]["Running"], true);
    eprintln!(
        "{} container-create attack cases refused",
        CREATE_ATTACKS.len()
    );
    a.finish().await;
    b.finish().await;
}

/// Another job's containers, execs, networks and volumes do not exist for this job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_jobs_objects_answer_404_and_stay_untouched() {
    if !docker_or_skip("other_jobs_objects").await {
        return;
    }
    let a = start("probe").await;
    let b = start("owner").await;
    let b_id = b.run("db", &["sleep", "300"]).await;
    let r = b
        .send(&post_json(
            &format!("/containers/{b_id}/exec"),
            r#"{"Cmd":["true"]}"#,
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let b_exec = r.json()["Id"].as_str().unwrap().to_string();
    let r = b
        .send(&post_json("/networks/create", r#"{"Name":"net"}"#))
        .await;
    let b_net = r.json()["Id"].as_str().unwrap().to_string();
    let r = b
        .send(&post_json("/volumes/create", r#"{"Name":"data"}"#))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let bn = b.daemon_name("db");
    let short = &b_id[..12];
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("inspect by name".into(), get("/containers/db/json")),
        (
            "inspect by daemon name".into(),
            get(&format!("/containers/{bn}/json")),
        ),
        (
            "inspect by full id".into(),
            get(&format!("/containers/{b_id}/json")),
        ),
        (
            "inspect by short id".into(),
            get(&format!("/containers/{short}/json")),
        ),
        (
            "inspect by 1-char prefix".into(),
            get(&format!("/containers/{}/json", &b_id[..1])),
        ),
        ("stop".into(), post(&format!("/containers/{b_id}/stop"))),
        ("kill".into(), post(&format!("/containers/{b_id}/kill"))),
        ("pause".into(), post(&format!("/containers/{short}/pause"))),
        (
            "rename".into(),
            post(&format!("/containers/{b_id}/rename?name=stolen")),
        ),
        (
            "remove".into(),
            delete(&format!("/containers/{b_id}?force=1")),
        ),
        (
            "logs".into(),
            get(&format!("/containers/{b_id}/logs?stdout=1")),
        ),
        ("export".into(), get(&format!("/containers/{b_id}/export"))),
        (
            "archive read".into(),
            get(&format!("/containers/{b_id}/archive?path=/etc/hostname")),
        ),
        ("top".into(), get(&format!("/containers/{b_id}/top"))),
        (
            "attach".into(),
            post(&format!("/containers/{b_id}/attach?stream=1&stdout=1")),
        ),
        (
            "commit".into(),
            post(&format!("/commit?container={b_id}&repo=stolen")),
        ),
        (
            "exec create".into(),
            post_json(
                &format!("/containers/{b_id}/exec"),
                r#"{"Cmd":["cat","/etc/hostname"]}"#,
            ),
        ),
        (
            "exec start of another job's exec".into(),
            post_json(&format!("/exec/{b_exec}/start"), r#"{"Detach":true}"#),
        ),
        (
            "exec inspect of another job's exec".into(),
            get(&format!("/exec/{b_exec}/json")),
        ),
        (
            "exec resize of another job's exec".into(),
            post(&format!("/exec/{b_exec}/resize?h=1&w=1")),
        ),
        ("network inspect by name".into(), get("/networks/net")),
        (
            "network inspect by id".into(),
            get(&format!("/networks/{b_net}")),
        ),
        (
            "network remove".into(),
            delete(&format!("/networks/{b_net}")),
        ),
        (
            "network connect own-less".into(),
            post_json(
                &format!("/networks/{b_net}/connect"),
                &format!("{{\"Container\":\"{b_id}\"}}"),
            ),
        ),
        ("volume inspect".into(), get("/volumes/data")),
        (
            "volume inspect by daemon name".into(),
            get(&format!("/volumes/{}", b.daemon_name("data"))),
        ),
        ("volume remove".into(), delete("/volumes/data?force=1")),
    ];
    for (what, req) in &cases {
        let r = a.send(req).await;
        assert_eq!(
            r.status, 404,
            "`{what}` on another job's object: {} {}",
            r.status, r.body
        );
    }
    // The daemon's own wording, with the job's reference.
    let r = a.send(&get("/containers/db/json")).await;
    assert_eq!(r.message(), "No such container: db");
    // Lists, df and events show nothing of the other job.
    for path in [
        "/containers/json?all=1",
        "/networks",
        "/volumes",
        "/system/df",
    ] {
        let r = a.send(&get(path)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            !r.body.contains(&b_id) && !r.body.contains(&b_net) && !r.body.contains(&b.scope),
            "{path} leaks: {}",
            r.body
        );
    }
    let r = a
        .send(&get("/containers/json?all=1&%66ilters=%7B%7D"))
        .await;
    assert!(!r.body.contains(&b_id));
    let a_id = a.run("mine", &["true"]).await;
    let _ = a.send(&post(&format!("/containers/{a_id}/wait"))).await;
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let r = a
        .send(&get(&format!(
            "/events?since={}&until={until}",
            until - 120
        )))
        .await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains(&b_id) && !r.body.contains(&b_net),
        "events leak: {}",
        r.body
    );
    // ... while its own events are there, under its own names.
    assert!(r.body.contains(&a_id), "own events missing: {}", r.body);
    assert!(
        r.body.contains("\"name\":\"mine\""),
        "names not stripped: {}",
        r.body
    );
    // Prunes only reach the job's own objects.
    let b_stopped = b.create("stopped", &["true"]).await;
    let a_stopped = a.create("stopped", &["true"]).await;
    for kind in ["containers", "networks", "volumes"] {
        let r = a.send(&post(&format!("/{kind}/prune"))).await;
        assert_eq!(r.status, 200, "{kind} prune: {}", r.body);
    }
    assert!(
        !daemon_has_container(&a_stopped).await,
        "own stopped container not pruned"
    );
    assert_eq!(daemon_inspect(&b_stopped).await["Id"], b_stopped.as_str());
    // B's objects are untouched.
    let st = daemon_inspect(&b_id).await;
    assert_eq!(st["State"]["Running"], true);
    assert_eq!(st["State"]["Paused"], false);
    assert_eq!(st["Name"], format!("/{bn}"));
    let ex = daemon(&get(&format!("/exec/{b_exec}/json"))).await.json();
    assert_eq!(ex["Running"], false);
    assert!(
        ex["ExitCode"].is_null() || ex["Pid"] == 0,
        "exec was started: {ex}"
    );
    assert_eq!(
        daemon(&get(&format!("/networks/{b_net}"))).await.status,
        200
    );
    assert_eq!(
        daemon(&get(&format!("/volumes/{}", b.daemon_name("data"))))
            .await
            .status,
        200
    );
    assert_eq!(daemon(&get("/images/stolen/json")).await.status, 404);
    eprintln!("{} cross-job attack cases refused", cases.len() + 6);
    a.finish().await;
    b.finish().await;
}

/// Paths, queries and framing the daemon reads differently from a naive filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parsing_differentials_are_refused() {
    if !docker_or_skip("parsing_differentials").await {
        return;
    }
    let a = start("parse").await;
    let evil = format!(r#"{{"Image":"{BUSYBOX}","HostConfig":{{"Privileged":true}}}}"#);
    let ok = format!(r#"{{"Image":"{BUSYBOX}","Cmd":["true"]}}"#);
    let mut cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("version prefix v1.41.", get("/v1.41./containers/json"), &[400]),
        ("version prefix v01.41", get("/v01.41/containers/json"), &[400]),
        ("version prefix v1.041", get("/v1.041/containers/json"), &[400]),
        ("version prefix v1.41.0.0", get("/v1.41.0.0/containers/json"), &[400]),
        ("version prefix v1", get("/v1/containers/json"), &[400]),
        ("version prefix v1..41", get("/v1..41/containers/json"), &[400]),
        ("old API version with start body semantics", post_json("/v1.23/containers/create?name=pv", &evil), &[400]),
        ("uppercase version prefix", get("/V1.41/containers/json"), &[403]),
        ("double slash", get("//containers/json"), &[400]),
        ("empty segment", get("/containers//json"), &[400]),
        ("encoded dot segment", get("/containers/%2e/json"), &[400]),
        ("encoded dot-dot segment", get("/containers/%2e%2e/%2e%2e/version"), &[400]),
        ("trailing slash", get("/containers/json/"), &[400]),
        ("bad percent escape", get("/containers/%zz/json"), &[400]),
        ("encoded NUL", get("/containers/a%00b/json"), &[400]),
        ("encoded slash create privileged", post_json("/containers%2Fcreate?name=p1", &evil), &[403]),
        ("encoded letters create privileged", post_json("/%63ontainers/create?name=p2", &evil), &[403]),
        ("versioned create privileged", post_json("/v1.41/containers/create?name=p3", &evil), &[403]),
        ("name with slash routes elsewhere", post("/containers/a/b/start"), &[403]),
        ("repeated name parameter", post_json("/containers/create?name=p4&name=p5", &ok), &[400]),
        ("repeated filters", get("/containers/json?filters=%7B%7D&filters=%7B%7D"), &[400]),
        ("semicolon in query", get("/containers/json?all=1;filters=x"), &[400]),
        ("bad query escape", get("/containers/json?all=%zz"), &[400]),
        ("filters with duplicate keys", get("/containers/json?filters=%7B%22label%22%3A%5B%5D%2C%22label%22%3A%5B%5D%7D"), &[400]),
        ("plugins", get("/plugins"), &[403]),
        ("plugin install", post("/plugins/pull?remote=x"), &[403]),
        ("swarm init", post_json("/swarm/init", "{}"), &[403]),
        ("services", get("/services"), &[403]),
        ("secrets", get("/secrets"), &[403]),
        ("configs", get("/configs"), &[403]),
        ("nodes", get("/nodes"), &[403]),
        ("container update (limits)", post_json("/containers/x/update", "{}"), &[403]),
        ("image load", post("/images/load"), &[403]),
        ("image import", post("/images/create?fromSrc=-&repo=berth-test/busybox&tag=latest"), &[403]),
        ("session without its h2c upgrade", post("/session"), &[400]),
        ("grpc without its h2c upgrade", post("/grpc"), &[400]),
        ("grpc upgrading to tcp", b"POST /grpc HTTP/1.1\r\nHost: d\r\nConnection: Upgrade, close\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n".to_vec(), &[400]),
        ("build cache prune (shared cache)", post("/build/prune"), &[403]),
        ("image prune (shared cache)", post("/images/prune"), &[403]),
        ("HEAD on a GET route", b"HEAD /containers/json HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n".to_vec(), &[403]),
        ("lowercase method", b"post /containers/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}".to_vec(), &[400, 403]),
        ("start with a body (pre-1.24 host config)", post_json("/containers/x/start", r#"{"Privileged":true}"#), &[400]),
        ("oversized body", post_json("/containers/create?name=p6", &format!(r#"{{"Image":"{BUSYBOX}","Env":["{}"]}}"#, "x".repeat(2 << 20))), &[400]),
        ("non-object body", post_json("/containers/create?name=p7", "[1]"), &[400]),
        ("two Content-Length headers", format!("POST /containers/create?name=p8 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nContent-Length: 2\r\n\r\n{evil}", evil.len()).into_bytes(), &[400]),
    ];
    // CL + TE: the daemon lets chunked win. hyper does the same and drops the Content-Length
    // before the proxy sees the request, so the body that is authorized is the chunked one, the
    // one the daemon would have read; it is then re-framed. Refused either way, never created.
    let chunked = format!("{:x}\r\n{evil}\r\n0\r\n\r\n", evil.len());
    cases.push((
        "Content-Length with chunked",
        format!("POST /containers/create?name=p9 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}").into_bytes(),
        &[400, 403],
    ));
    // The same with a harmless Content-Length-sized prefix: whichever framing a filter picked,
    // the proxy authorizes and forwards the chunked body only.
    let prefix = format!(r#"{{"Image":"{BUSYBOX}"}}"#);
    cases.push((
        "Content-Length covering a harmless prefix, chunked privileged",
        format!("POST /containers/create?name=p13 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}", prefix.len()).into_bytes(),
        &[400, 403],
    ));
    cases.push((
        "chunked privileged body",
        format!("POST /containers/create?name=p10 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}").into_bytes(),
        &[403],
    ));
    cases.push((
        "TE identity, chunked",
        format!("POST /containers/create?name=p11 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: identity, chunked\r\n\r\n{chunked}").into_bytes(),
        &[400, 403, 501],
    ));
    cases.push((
        "obsolete line folding",
        format!("POST /containers/create?name=p12 HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nX-A: a\r\n b\r\nContent-Length: {}\r\n\r\n{evil}", evil.len()).into_bytes(),
        &[400, 403],
    ));
    for (what, req, statuses) in &cases {
        let r = a.send(req).await;
        assert!(
            statuses.contains(&r.status),
            "`{what}`: {} {}",
            r.status,
            r.body
        );
    }
    for i in 1..=13 {
        assert!(
            !daemon_has_container(&a.daemon_name(&format!("p{i}"))).await,
            "p{i} created"
        );
    }
    assert!(!daemon_has_container("p4").await && !daemon_has_container("p5").await);
    let left = daemon_list(&format!("{{\"label\":[\"io.berth.scope={}\"]}}", a.scope)).await;
    assert!(left.iter().all(|o| !o.starts_with("container")), "{left:?}");
    eprintln!("{} parsing attack cases refused", cases.len());
    a.finish().await;
}

/// Every request on a keep-alive connection is authorized, not only the first; a pipelined
/// request after a refused upgrade is parsed and authorized too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_requests_are_each_authorized() {
    if !docker_or_skip("keep_alive").await {
        return;
    }
    let a = start("keepalive").await;
    let b = start("keepalive-victim").await;
    let b_id = b.run("db", &["sleep", "300"]).await;
    let evil = format!(r#"{{"Image":"{BUSYBOX}","HostConfig":{{"Privileged":true}}}}"#);
    let ok = format!(r#"{{"Image":"{BUSYBOX}","Cmd":["true"]}}"#);
    // 1: ping, then a privileged create.
    let mut req = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n".to_vec();
    req.extend(post_json("/containers/create?name=k1", &evil));
    let rs = a.send_all(&req).await;
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 403]);
    // 2: an allowed create, then a privileged one.
    let mut req = post_json_keepalive("/containers/create?name=k2", &ok);
    req.extend(post_json("/containers/create?name=k3", &evil));
    let rs = a.send_all(&req).await;
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [201, 403]);
    // 3: an attach upgrade to another job's container (refused), then a pipelined create.
    let mut req = format!("POST /containers/{b_id}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n").into_bytes();
    req.extend(post_json("/containers/create?name=k4", &evil));
    let rs = a.send_all(&req).await;
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [404, 403]);
    // 4: a body that smuggles a second request after its Content-Length.
    let smuggled = String::from_utf8(post_json("/containers/create?name=k5", &evil)).unwrap();
    let req = format!(
        "POST /containers/create?name=k6 HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ok}{smuggled}",
        ok.len()
    );
    let rs = a.send_all(req.as_bytes()).await;
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [201, 403]);
    for n in ["k1", "k3", "k4", "k5"] {
        assert!(
            !daemon_has_container(&a.daemon_name(n)).await,
            "{n} created"
        );
    }
    assert!(daemon_has_container(&a.daemon_name("k2")).await);
    assert!(daemon_has_container(&a.daemon_name("k6")).await);
    assert_eq!(daemon_inspect(&b_id).await["State"]["Running"], true);
    eprintln!("4 keep-alive attack cases refused");
    a.finish().await;
    b.finish().await;
}

/// Exec, network, volume and build requests that reach the host are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_network_volume_and_build_escalations_are_refused() {
    if !docker_or_skip("exec_network_volume_build").await {
        return;
    }
    let a = start("misc").await;
    let id = a.run("box", &["sleep", "300"]).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "privileged exec",
            post_json(
                &format!("/containers/{id}/exec"),
                r#"{"Cmd":["id"],"Privileged":true}"#,
            ),
        ),
        (
            "privileged exec lowercase",
            post_json(
                &format!("/containers/{id}/exec"),
                r#"{"cmd":["id"],"privileged":true}"#,
            ),
        ),
        (
            "privileged exec duplicate",
            post_json(
                &format!("/containers/{id}/exec"),
                r#"{"Cmd":["id"],"Privileged":false,"privileged":true}"#,
            ),
        ),
        (
            "volume with bind device options",
            post_json(
                "/volumes/create",
                r#"{"Name":"hostetc","DriverOpts":{"type":"none","o":"bind","device":"/etc"}}"#,
            ),
        ),
        (
            "volume with lowercase driver opts",
            post_json(
                "/volumes/create",
                r#"{"Name":"hostetc2","driveropts":{"type":"none","o":"bind","device":"/etc"}}"#,
            ),
        ),
        (
            "volume with another driver",
            post_json("/volumes/create", r#"{"Name":"v3","Driver":"evil"}"#),
        ),
        (
            "network with host driver",
            post_json("/networks/create", r#"{"Name":"n1","Driver":"host"}"#),
        ),
        (
            "network with macvlan",
            post_json(
                "/networks/create",
                r#"{"Name":"n2","Driver":"macvlan","Options":{"parent":"eth0"}}"#,
            ),
        ),
        (
            "network bridge options",
            post_json(
                "/networks/create",
                r#"{"Name":"n3","Options":{"com.docker.network.bridge.name":"docker0"}}"#,
            ),
        ),
        (
            "network ingress",
            post_json("/networks/create", r#"{"Name":"n4","Ingress":true}"#),
        ),
        (
            "network config-from",
            post_json(
                "/networks/create",
                r#"{"Name":"n5","ConfigFrom":{"Network":"x"}}"#,
            ),
        ),
        (
            "build remote context",
            post("/build?remote=http://127.0.0.1:1/x.tar"),
        ),
        ("build host network", post("/build?networkmode=host")),
        (
            "build container network",
            post(&format!("/build?networkmode=container:{id}")),
        ),
        ("build cgroup parent", post("/build?cgroupparent=/")),
        (
            "build with an unknown builder version",
            post("/build?version=3"),
        ),
        (
            "build repeated networkmode",
            post("/build?networkmode=bridge&networkmode=host"),
        ),
        (
            "build with a repeated version",
            post("/build?version=1&version=2"),
        ),
        ("build squash", post("/build?squash=1")),
    ];
    let busybox_before = daemon(&get(&format!("/images/{BUSYBOX}/json")))
        .await
        .json()["Id"]
        .clone();
    for (what, req) in &cases {
        let r = a.send(req).await;
        assert!(
            matches!(r.status, 400 | 403),
            "`{what}`: {} {}",
            r.status,
            r.body
        );
    }
    let c = daemon_inspect(&id).await;
    assert_eq!(
        c["ExecIDs"],
        Value::Null,
        "an exec was created: {}",
        c["ExecIDs"]
    );
    for v in ["hostetc", "hostetc2", "v3"] {
        assert_eq!(
            daemon(&get(&format!("/volumes/{}", a.daemon_name(v))))
                .await
                .status,
            404
        );
    }
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        assert_eq!(
            daemon(&get(&format!("/networks/{}", a.daemon_name(n))))
                .await
                .status,
            404
        );
    }
    assert_eq!(
        daemon(&get(&format!("/images/{BUSYBOX}/json")))
            .await
            .json()["Id"],
        busybox_before
    );
    eprintln!(
        "{} exec/network/volume/build attack cases refused",
        cases.len()
    );
    a.finish().await;
}

/// No `docker tag myimg postgres:16`: tags a job creates are job-local, so shared tags are never
/// overwritten, and shared images cannot be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_tag_poisoning_is_refused() {
    if !docker_or_skip("image_tag_poisoning").await {
        return;
    }
    let a = start("tags").await;
    let b = start("tags-next-job").await;
    let debian_before = daemon(&get(&format!("/images/{DEBIAN}/json"))).await.json()["Id"].clone();
    let busybox_before = daemon(&get(&format!("/images/{BUSYBOX}/json")))
        .await
        .json()["Id"]
        .clone();
    let id = a.create("c", &["true"]).await;
    let refused: Vec<(&str, Vec<u8>)> = vec![
        (
            "repeated repo parameter",
            post(&format!(
                "/images/{DEBIAN}/tag?repo=x&repo=berth-test/busybox"
            )),
        ),
        (
            "delete a shared image",
            delete(&format!("/images/{BUSYBOX}")),
        ),
        (
            "delete a shared image with docker.io prefix",
            delete(&format!("/images/docker.io/{BUSYBOX}")),
        ),
        (
            "force delete a shared image by id",
            delete(&format!(
                "/images/{}?force=1",
                busybox_before.as_str().unwrap_or("x")
            )),
        ),
        (
            "tag over an existing registry-qualified tag",
            post(&format!(
                "/images/{BUSYBOX}/tag?repo=localhost/berth-test/busybox&tag=latest"
            )),
        ),
        (
            "import over a shared tag",
            post("/images/create?fromSrc=-&repo=berth-test/busybox&tag=latest"),
        ),
    ];
    // A registry-qualified tag that exists (made directly on the daemon, labelled for cleanup
    // by the tag's removal below).
    let r = daemon(&post(&format!(
        "/images/{BUSYBOX}/tag?repo=localhost/berth-test/busybox&tag=latest"
    )))
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for (what, req) in &refused {
        let r = a.send(req).await;
        assert!(
            matches!(r.status, 400 | 403),
            "`{what}`: {} {}",
            r.status,
            r.body
        );
    }
    // Poisoning attempts succeed only inside the job's own namespace.
    let poison: Vec<(&str, Vec<u8>)> = vec![
        (
            "tag over a shared tag",
            post("/images/berth-test/busybox:latest/tag?repo=berth-test/debian&tag=bookworm"),
        ),
        (
            "tag over a shared tag, default latest",
            post(&format!("/images/{DEBIAN}/tag?repo=berth-test/busybox")),
        ),
        (
            "tag with docker.io prefix",
            post(&format!(
                "/images/{BUSYBOX}/tag?repo=docker.io/library/berth-test-x&tag=1"
            )),
        ),
        (
            "commit over a shared tag",
            post(&format!(
                "/commit?container={id}&repo=berth-test/busybox&tag=latest"
            )),
        ),
    ];
    for (what, req) in &poison {
        let r = a.send(req).await;
        assert!(
            matches!(r.status, 200 | 201),
            "`{what}`: {} {}",
            r.status,
            r.body
        );
    }
    // The shared tags are unchanged on the daemon and for the next job ...
    assert_eq!(
        daemon(&get(&format!("/images/{DEBIAN}/json"))).await.json()["Id"],
        debian_before
    );
    assert_eq!(
        daemon(&get(&format!("/images/{BUSYBOX}/json")))
            .await
            .json()["Id"],
        busybox_before
    );
    assert_eq!(
        b.send(&get(&format!("/images/{DEBIAN}/json"))).await.json()["Id"],
        debian_before
    );
    // ... while the job sees its own tag under the plain name.
    assert_eq!(
        a.send(&get(&format!("/images/{DEBIAN}/json"))).await.json()["Id"],
        busybox_before
    );
    // Its own tags can be deleted by it, and everything else is reaped with the scope.
    let r = a
        .send(&delete("/images/docker.io/library/berth-test-x:1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let scope = a.scope.clone();
    a.finish().await;
    b.finish().await;
    for t in [
        "berth-test/debian:bookworm",
        "berth-test/busybox:latest",
        "berth-test-x:1",
    ] {
        assert_eq!(
            daemon(&get(&format!("/images/{scope}_{t}/json")))
                .await
                .status,
            404,
            "{t} not reaped"
        );
    }
    assert_eq!(
        daemon(&get(&format!("/images/{DEBIAN}/json"))).await.json()["Id"],
        debian_before
    );
    assert_eq!(
        daemon(&get(&format!("/images/{BUSYBOX}/json")))
            .await
            .json()["Id"],
        busybox_before
    );
    let _ = daemon(&delete("/images/localhost/berth-test/busybox:latest")).await;
    eprintln!(
        "{} image attack cases refused or confined",
        refused.len() + poison.len()
    );
}

/// A symlink swapped in *after* a good bind was checked still cannot lead out: the forwarded
/// path is the resolved one. And a legitimate bind of the workspace works and reads the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_binds_are_translated_and_cannot_escape() {
    if !docker_or_skip("workspace_binds").await {
        return;
    }
    let a = start("binds").await;
    std::fs::write(a.ws.join("hello.txt"), "from the workspace\n").unwrap();
    std::fs::create_dir_all(a.ws.join("d")).unwrap();
    std::fs::write(a.ws.join("d/inner.txt"), "inner\n").unwrap();
    std::os::unix::fs::symlink("d", a.ws.join("dlink")).unwrap();
    let body = json!({
        "Image": BUSYBOX,
        "Cmd": ["sh", "-c", "cat /src/hello.txt /in/inner.txt"],
        "HostConfig": {"Binds": [format!("{JOB_WS}:/src:ro"), format!("{JOB_WS}/dlink:/in")]}
    });
    let r = a
        .send(&post_json(
            "/containers/create?name=reader",
            &body.to_string(),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["Id"].as_str().unwrap().to_string();
    let ins = daemon_inspect(&id).await;
    let binds = ins["HostConfig"]["Binds"].to_string();
    let host = std::fs::canonicalize(&a.ws).unwrap();
    assert!(
        binds.contains(&format!("{}/d:/in", host.display())),
        "{binds}"
    );
    // Through the endpoint, inspect shows the job's own view of the bind sources.
    let seen = a.send(&get(&format!("/containers/{id}/json"))).await.json();
    assert_eq!(seen["HostConfig"]["Binds"][1], format!("{JOB_WS}/d:/in"));
    assert!(
        !seen["Mounts"]
            .to_string()
            .contains(&host.display().to_string()),
        "{}",
        seen["Mounts"]
    );
    // So does the container list (`docker ps`, compose): no host path leaks there either.
    let list = a.send(&get("/containers/json?all=1")).await.json();
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Id"] == id.as_str())
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        !listed["Mounts"]
            .to_string()
            .contains(&host.display().to_string()),
        "{}",
        listed["Mounts"]
    );
    assert!(
        listed["Mounts"]
            .to_string()
            .contains(&format!("{JOB_WS}/d")),
        "{}",
        listed["Mounts"]
    );
    assert_eq!(
        a.send(&post(&format!("/containers/{id}/start")))
            .await
            .status,
        204
    );
    let _ = a.send(&post(&format!("/containers/{id}/wait"))).await;
    let logs = a
        .send(&get(&format!("/containers/{id}/logs?stdout=1")))
        .await;
    assert!(
        logs.body.contains("from the workspace") && logs.body.contains("inner"),
        "{}",
        logs.body
    );
    // Swap the directory for a link to /etc after the check: the created container keeps the
    // resolved host path, so it still mounts the workspace directory, never /etc.
    std::fs::remove_dir_all(a.ws.join("d")).unwrap();
    std::os::unix::fs::symlink("/etc", a.ws.join("d")).unwrap();
    let r = a
        .send(&post_json(
            "/containers/create?name=escape",
            &json!({
                "Image": BUSYBOX, "HostConfig": {"Binds": [format!("{JOB_WS}/dlink:/in")]}
            })
            .to_string(),
        ))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!daemon_has_container(&a.daemon_name("escape")).await);
    a.finish().await;
}

/// Daemon connections are pooled per endpoint. A request that leaves its daemon connection in
/// an unknown state — a body cut short that carries a smuggled request, conflicting framing, an
/// answer abandoned mid-stream — must not hand that connection to the next request: the next
/// requests (another client, same endpoint; and another scope) get correct answers, and
/// nothing the first request carried reaches the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_daemon_connections_carry_nothing_between_requests() {
    if !docker_or_skip("pooled_connections").await {
        return;
    }
    let a = start("reuse").await;
    let c = start("reuse-other").await;
    let a_id = a.run("web", &["sleep", "300"]).await;
    let c_id = c.run("web", &["sleep", "300"]).await;
    let evil = format!(r#"{{"Image":"{BUSYBOX}","HostConfig":{{"Privileged":true}}}}"#);
    let pooled = |s: &Scoped| s.proxy.as_ref().expect("proxy").daemon_connections();
    for _ in 0..4 {
        assert_eq!(a.send(&get("/_ping")).await.status, 200);
    }
    assert!(
        pooled(&a).idle >= 1,
        "no pooled connection: {:?}",
        pooled(&a)
    );

    // 1: an archive upload that promises 4096 bytes, sends a smuggled privileged create
    // instead, and closes. Had the daemon connection been reused, the next request's bytes
    // would complete this body (or the smuggled one would be read as a request).
    let mut smuggled = post_json("/containers/create?name=s1", &evil);
    smuggled.resize(1024, 0);
    let mut req = format!(
        "PUT /containers/{a_id}/archive?path=/tmp HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\nContent-Length: 4096\r\n\r\n"
    )
    .into_bytes();
    req.extend(&smuggled);
    let _ = raw_cut_short(&a.sock, &req).await.expect("cut short");

    // 2: conflicting framing carrying a smuggled create in its chunk data.
    let body = String::from_utf8(post_json("/containers/create?name=s2", &evil)).unwrap();
    let req = format!(
        "PUT /containers/{a_id}/archive?path=/tmp HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let rs = raw_all(&a.sock, req.as_bytes()).await.expect("framing");
    assert!(
        rs.first().is_some_and(|r| r.status >= 400),
        "conflicting framing accepted: {rs:?}"
    );

    // 3: a followed log stream abandoned after its first bytes.
    raw_abandon(
        &a.sock,
        get(&format!(
            "/containers/{a_id}/logs?follow=1&stdout=1&stderr=1"
        ))
        .as_slice(),
    )
    .await
    .expect("abandon");

    // Now other clients of the same endpoint, and another scope, concurrently.
    let mut checks = Vec::new();
    for i in 0..16 {
        let (s, own, other) = if i % 2 == 0 {
            (&a, &a_id, &c_id)
        } else {
            (&c, &c_id, &a_id)
        };
        checks.push(async move {
            let r = s.send(&get(&format!("/containers/{own}/json"))).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["Id"], own.as_str());
            assert_eq!(r.json()["Name"], "/web");
            let r = s.send(&get("/containers/json")).await;
            let ids: Vec<Value> = r
                .json()
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| c["Id"].clone())
                .collect();
            assert_eq!(ids, [json!(own)], "{}", r.body);
            let r = s.send(&get(&format!("/containers/{other}/json"))).await;
            assert_eq!(r.status, 404, "{}", r.body);
            let r = s.send(&get("/_ping")).await;
            assert_eq!((r.status, r.body.as_str()), (200, "OK"));
        });
    }
    futures_util::future::join_all(checks).await;
    let name = format!("ok{}", std::process::id());
    a.create(&name, &["true"]).await;

    for n in ["s1", "s2"] {
        for s in [&a, &c] {
            assert!(
                !daemon_has_container(&s.daemon_name(n)).await,
                "{n} created"
            );
        }
    }
    let left = daemon_list(&all_owner_filter()).await;
    for o in &left {
        if let Some(id) = o.strip_prefix("container ") {
            assert_ne!(
                daemon_inspect(id).await["HostConfig"]["Privileged"],
                true,
                "a privileged container exists: {id}"
            );
        }
    }
    assert_eq!(daemon_inspect(&c_id).await["State"]["Running"], true);
    assert!(pooled(&a).idle <= berth_proxy::MAX_IDLE_DAEMON_CONNECTIONS);
    eprintln!("3 connection-reuse attack cases refused");
    a.finish().await;
    c.finish().await;
}

/// Many requests at concurrency 16 reuse daemon connections, and the pool stays bounded: once
/// they are answered, no more than the pool's bound stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_connections_are_reused_and_bounded() {
    if !docker_or_skip("pool_bounded").await {
        return;
    }
    let a = start("pool").await;
    a.create("one", &["true"]).await;
    let bound = berth_proxy::MAX_IDLE_DAEMON_CONNECTIONS;
    let n = 400;
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        while sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
            let r = a.send(&get("/containers/json?all=1")).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json().as_array().map(Vec::len), Some(1));
        }
    };
    futures_util::future::join_all((0..16).map(|_| worker())).await;
    let stats = || a.proxy.as_ref().expect("proxy").daemon_connections();
    // Each list is a daemon call, so 400 requests without reuse would open 400+ connections.
    assert!(stats().opened < n / 4, "little reuse: {:?}", stats());
    assert!(stats().idle <= bound, "{:?}", stats());
    // Closed connections end once the daemon side sees the close (waited for, not timed).
    for _ in 0..500 {
        if stats().open <= bound {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(stats().open <= bound, "{:?}", stats());
    eprintln!("{n} requests at concurrency 16: {:?}", stats());
    a.finish().await;
}

/// A workspace held by a Docker volume. On API ≥ 1.45 binds inside it (`Binds` and bind-type
/// `Mounts`, from a 1.41 client too) become volume `Subpath` mounts that the daemon resolves
/// inside the volume at mount time: files written through them land in the volume, symlinks to
/// `/etc` or `..` never mount the host's `/etc`, and swapping a directory for such a symlink
/// between create and start (the race of the host-path translation) gains nothing. On older
/// engines the same binds take the host-path translation, which refuses the symlinks up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_workspace_binds_become_subpath_mounts_and_cannot_escape() {
    if !docker_or_skip("volume_workspace_binds").await {
        return;
    }
    let a = start_volume("vbinds").await;
    let api = daemon_api().await;
    let modern = api >= (1, 45);
    assert_eq!(
        a.proxy.as_ref().unwrap().uses_subpath_mounts(),
        modern,
        "daemon API {api:?}"
    );
    if !modern {
        eprintln!(
            "NOTE volume_workspace_binds: daemon API {}.{} < 1.45 has no volume Subpath mounts; \
             checking the host-path translation instead and skipping the Subpath assertions \
             (inspect shape, create/start race)",
            api.0, api.1
        );
    }
    let vol = a.ws_volume.clone().unwrap();
    let host = std::fs::canonicalize(&a.ws).unwrap();
    std::fs::create_dir_all(a.ws.join("sub")).unwrap();
    std::fs::create_dir_all(a.ws.join("d")).unwrap();
    std::fs::write(a.ws.join("sub/hello.txt"), "from the volume\n").unwrap();
    std::os::unix::fs::symlink("/etc", a.ws.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../..", a.ws.join("sub/up")).unwrap();

    // A bind of `sub` and a read-only bind-type mount of the whole workspace, from an old client.
    let body = json!({
        "Image": BUSYBOX,
        "Cmd": ["sh", "-c", "cat /src/hello.txt && echo written > /src/out.txt && ls /m && if echo x > /m/ro-test; then echo WRITABLE; fi"],
        "HostConfig": {
            "Binds": [format!("{JOB_WS}/sub:/src")],
            "Mounts": [{"Type": "bind", "Source": JOB_WS, "Target": "/m", "ReadOnly": true}]
        }
    });
    let r = a
        .send(&post_json(
            "/v1.41/containers/create?name=writer",
            &body.to_string(),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["Id"].as_str().unwrap().to_string();
    let ins = daemon_inspect(&id).await;
    if modern {
        let mounts = ins["HostConfig"]["Mounts"].as_array().cloned().unwrap();
        let by_target = |t: &str| {
            mounts
                .iter()
                .find(|m| m["Target"] == t)
                .cloned()
                .unwrap_or_else(|| panic!("no mount at {t}: {mounts:?}"))
        };
        let src = by_target("/src");
        assert_eq!(src["Type"], "volume", "{src}");
        assert_eq!(src["Source"], vol.as_str(), "{src}");
        assert_eq!(src["VolumeOptions"]["Subpath"], "sub", "{src}");
        assert_ne!(src["ReadOnly"], true, "{src}");
        let m = by_target("/m");
        assert_eq!(m["Type"], "volume", "{m}");
        assert_eq!(m["Source"], vol.as_str(), "{m}");
        assert!(
            m["VolumeOptions"]["Subpath"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{m}"
        );
        assert_eq!(m["ReadOnly"], true, "{m}");
        assert!(
            ins["HostConfig"]["Binds"]
                .as_array()
                .is_none_or(|b| b.is_empty()),
            "{}",
            ins["HostConfig"]["Binds"]
        );
        let daemon_mounts = ins["Mounts"].as_array().cloned().unwrap();
        assert_eq!(
            daemon_mounts
                .iter()
                .filter(|m| m["Type"] == "volume" && m["Name"] == vol.as_str())
                .count(),
            2,
            "{daemon_mounts:?}"
        );
    } else {
        let binds = ins["HostConfig"]["Binds"].to_string();
        assert!(
            binds.contains(&format!("{}/sub:/src", host.display())),
            "{binds}"
        );
    }
    // Through the endpoint: the job's own paths, no host path.
    let seen = a.send(&get(&format!("/containers/{id}/json"))).await.json();
    let seen_s = seen.to_string();
    assert!(
        !seen_s.contains(&host.display().to_string()) && !seen_s.contains("/_data"),
        "{seen_s}"
    );
    assert!(seen_s.contains(&format!("{JOB_WS}/sub")), "{seen_s}");
    let list = a.send(&get("/containers/json?all=1")).await.json();
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Id"] == id.as_str())
        .unwrap_or_else(|| panic!("{list}"))
        .to_string();
    assert!(
        !listed.contains(&host.display().to_string()) && !listed.contains("/_data"),
        "{listed}"
    );
    assert_eq!(
        a.send(&post(&format!("/containers/{id}/start")))
            .await
            .status,
        204
    );
    let _ = daemon_wait(&id).await;
    let logs = a
        .send(&get(&format!("/containers/{id}/logs?stdout=1&stderr=1")))
        .await;
    assert!(
        logs.body.contains("from the volume")
            && logs.body.contains("etc-link")
            && !logs.body.contains("WRITABLE"),
        "{}",
        logs.body
    );
    assert_eq!(
        std::fs::read_to_string(a.ws.join("sub/out.txt")).unwrap(),
        "written\n"
    );

    // Lexical escapes are refused before anything reaches the daemon, on every engine.
    for (name, src) in [
        ("lex1", format!("{JOB_WS}/../../etc")),
        ("lex2", "/etc".into()),
    ] {
        let r = a
            .send(&post_json(
                &format!("/containers/create?name={name}"),
                &json!({"Image": BUSYBOX, "HostConfig": {"Binds": [format!("{src}:/x")]}})
                    .to_string(),
            ))
            .await;
        assert_eq!(r.status, 403, "{name}: {}", r.body);
        assert!(!daemon_has_container(&a.daemon_name(name)).await);
    }

    // Symlinks out of the workspace: refused by the proxy on old engines; on new ones the
    // daemon resolves them inside the volume, so the container never sees the host's /etc.
    let probe = "if test -e /x/passwd || test -e /x/etc/passwd || test -e /x/shadow; then echo LEAK; else echo clean; fi";
    for (name, src) in [
        ("etclink", format!("{JOB_WS}/etc-link")),
        ("up", format!("{JOB_WS}/sub/up")),
        ("uplink", format!("{JOB_WS}/sub/up/etc-link")),
    ] {
        let r = a
            .send(&post_json(
                &format!("/containers/create?name={name}"),
                &json!({
                    "Image": BUSYBOX, "Cmd": ["sh", "-c", probe],
                    "HostConfig": {"Binds": [format!("{src}:/x")]}
                })
                .to_string(),
            ))
            .await;
        if !modern {
            assert_eq!(r.status, 403, "{name}: {}", r.body);
            assert!(!daemon_has_container(&a.daemon_name(name)).await);
            continue;
        }
        assert_no_host_etc(&a, name, r).await;
    }

    // The race: a directory checked at create becomes a link to /etc before start.
    let r = a
        .send(&post_json(
            "/containers/create?name=swapped",
            &json!({
                "Image": BUSYBOX, "Cmd": ["sh", "-c", probe],
                "HostConfig": {"Binds": [format!("{JOB_WS}/d:/x")]}
            })
            .to_string(),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    std::fs::remove_dir_all(a.ws.join("d")).unwrap();
    std::os::unix::fs::symlink("/etc", a.ws.join("d")).unwrap();
    if modern {
        assert_no_host_etc(&a, "swapped", r).await;
    } else {
        eprintln!(
            "NOTE volume_workspace_binds: skipping the create/start swap on API < 1.45: the \
             host-path translation has the residual race documented in docs/scoped-socket.md"
        );
    }
    a.finish().await;
}

/// A create answer for a bind through a link to /etc, on a Subpath-capable engine: either the
/// daemon refuses the create or the start, or the container runs and sees nothing of /etc.
async fn assert_no_host_etc(a: &Scoped, name: &str, r: Resp) {
    if r.status != 201 {
        assert!(r.status >= 400, "{name}: {} {}", r.status, r.body);
        assert!(!daemon_has_container(&a.daemon_name(name)).await);
        eprintln!("{name}: the daemon refused the create: {}", r.message());
        return;
    }
    let id = r.json()["Id"].as_str().unwrap().to_string();
    let ins = daemon_inspect(&id).await;
    assert!(
        !ins["Mounts"].to_string().contains("\"/etc\"")
            && !ins["HostConfig"].to_string().contains("\"/etc"),
        "{name}: {ins}"
    );
    let s = a.send(&post(&format!("/containers/{id}/start"))).await;
    if s.status != 204 {
        assert!(s.status >= 400, "{name}: {} {}", s.status, s.body);
        eprintln!("{name}: the daemon refused the start: {}", s.message());
        let st = daemon_inspect(&id).await;
        assert_ne!(st["State"]["Running"], true, "{name}: {st}");
        return;
    }
    let _ = daemon_wait(&id).await;
    let logs = a
        .send(&get(&format!("/containers/{id}/logs?stdout=1&stderr=1")))
        .await;
    assert!(
        logs.body.contains("clean") && !logs.body.contains("LEAK"),
        "{name}: {}",
        logs.body
    );
    eprintln!("{name}: the container ran and saw nothing of /etc");
}

/// A build context (tar) holding one Dockerfile.
fn context_tar(dockerfile: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let o = std::process::Command::new("tar")
        .args(["-C", dir.path().to_str().unwrap(), "-cf", "-", "Dockerfile"])
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

/// `POST /build?{query}` with a tar context, the way the docker CLI sends it.
fn build_request(query: &str, tar: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /build?{query} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        tar.len()
    )
    .into_bytes();
    r.extend_from_slice(tar);
    r
}

/// A session request as the BuildKit client sends it, with the given id and upgrade.
fn session_request(id: &str, upgrade: &str) -> Vec<u8> {
    format!(
        "POST /v1.41/session HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade, close\r\nUpgrade: {upgrade}\r\n\
         X-Docker-Expose-Session-Uuid: {id}\r\nX-Docker-Expose-Session-Name: ctx\r\n\
         X-Docker-Expose-Session-Sharedkey: k\r\n\
         X-Docker-Expose-Session-Grpc-Method: /moby.filesync.v1.FileSync/DiffCopy\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// BuildKit through the daemon's route: what could reach the host, other jobs' sessions and
/// builds, the shared build cache, or shared tags is refused, and the daemon shows it: no image
/// was built, the shared image is unchanged, the other job's build ran to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_attacks_are_refused() {
    if !docker_or_skip("buildkit_attacks").await {
        return;
    }
    let a = start("bka").await;
    let b = start("bkb").await;
    let tar = context_tar(&format!("FROM {BUSYBOX}\nRUN echo built > /built\n"));
    let busybox_before = daemon(&get(&format!("/images/{BUSYBOX}/json")))
        .await
        .json()["Id"]
        .clone();
    let outputs = enc(&format!(
        r#"[{{"Type":"moby","Attrs":{{"name":"{BUSYBOX}"}}}}]"#
    ));
    let proxy_arg = enc(r#"{"HTTP_PROXY":"http://127.0.0.1:3128"}"#);
    let proxy_arg_lower = enc(r#"{"https_proxy":"http://127.0.0.1:3128"}"#);
    let cache_ns = enc(&format!(
        r#"{{"BUILDKIT_CACHE_MOUNT_NS":"berth-{}"}}"#,
        b.scope
    ));
    let other_session = format!("{}.s1", b.scope);
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "BuildKit with host network",
            "version=2&networkmode=host".into(),
            &[403],
        ),
        (
            "BuildKit with a git context",
            "version=2&remote=https://127.0.0.1:1/x.git".into(),
            &[403],
        ),
        (
            "BuildKit upload-request context",
            "version=2&remote=upload-request".into(),
            &[403],
        ),
        (
            "BuildKit outputs tagging a shared image",
            format!("version=2&outputs={outputs}"),
            &[403],
        ),
        (
            "BuildKit cgroup parent",
            "version=2&cgroupparent=/".into(),
            &[403],
        ),
        (
            "classic build with a proxy build arg",
            format!("buildargs={proxy_arg}"),
            &[403],
        ),
        (
            "BuildKit with a lowercase proxy build arg",
            format!("version=2&buildargs={proxy_arg_lower}"),
            &[403],
        ),
        (
            "BuildKit naming the other job's cache namespace",
            format!("version=2&buildargs={cache_ns}"),
            &[403],
        ),
        (
            "classic build with --add-host",
            "extrahosts=pypi.org:127.0.0.1".into(),
            &[403],
        ),
        (
            "BuildKit with --add-host",
            "version=2&extrahosts=pypi.org:127.0.0.1".into(),
            &[403],
        ),
        (
            "classic build from a client session",
            "remote=client-session&session=s1".into(),
            &[400],
        ),
        (
            "BuildKit with the other job's session by its daemon id",
            format!("version=2&remote=client-session&session={other_session}"),
            &[400],
        ),
        (
            "BuildKit with an upload-request build id",
            "version=2&buildid=upload-request:x".into(),
            &[400],
        ),
        (
            "BuildKit with repeated session",
            "version=2&remote=client-session&session=s1&session=s2".into(),
            &[400],
        ),
    ];
    for (what, query, want) in &cases {
        let r = a
            .send(&build_request(&format!("{query}&t=poisoned"), &tar))
            .await;
        assert!(
            want.contains(&r.status),
            "`{what}`: {} {}",
            r.status,
            r.body
        );
    }
    let raw_cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "session with the other job's daemon id",
            session_request(&other_session, "h2c"),
            &[400],
        ),
        (
            "session upgrading to tcp",
            session_request("s1", "tcp"),
            &[400],
        ),
        ("session without an id", session_request("", "h2c"), &[400]),
        (
            "cancel the other job's build by its daemon id",
            post(&format!("/build/cancel?id={}.x", b.scope)),
            &[400],
        ),
    ];
    for (what, req, want) in &raw_cases {
        let r = a.send(req).await;
        assert!(
            want.contains(&r.status),
            "`{what}`: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", a.daemon_name("poisoned"))))
            .await
            .status,
        404,
        "a refused build produced an image"
    );
    assert_eq!(daemon(&get("/images/poisoned/json")).await.status, 404);
    assert_eq!(
        daemon(&get(&format!("/images/{BUSYBOX}/json")))
            .await
            .json()["Id"],
        busybox_before,
        "the shared image was re-tagged"
    );

    // Build ids are per job: b cancelling `victim` does not reach a's build `victim`, which
    // runs to its end; a cancelling its own does stop it (so the cancel path itself works).
    // The scope name keeps the step out of the layer cache of earlier runs.
    let slow = context_tar(&format!(
        "FROM {BUSYBOX}\nRUN sleep 4 && echo {} > /slow\n",
        a.scope
    ));
    let sock = a.sock.clone();
    let req = build_request("version=2&buildid=victim&t=slow", &slow);
    let victim = tokio::spawn(async move { raw(&sock, &req).await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!victim.is_finished(), "a's build ended before the cancel");
    let r = b.send(&post("/build/cancel?id=victim")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let done = victim.await.unwrap().expect("a's build answered");
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("moby.image.id") && !done.body.contains("\"error"),
        "a's build was disturbed by b's cancel: {}",
        done.body
    );
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", a.daemon_name("slow"))))
            .await
            .status,
        200
    );
    let slow2 = context_tar(&format!(
        "FROM {BUSYBOX}\nRUN sleep 4 && echo {}-2 > /slow\n",
        a.scope
    ));
    let sock = a.sock.clone();
    let req = build_request("version=2&buildid=mine&t=slow2", &slow2);
    let own = tokio::spawn(async move { raw(&sock, &req).await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !own.is_finished(),
        "a's second build ended before the cancel"
    );
    let r = a.send(&post("/build/cancel?id=mine")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let done = own.await.unwrap().expect("a's second build answered");
    assert!(
        done.body.contains("\"error") || done.status >= 400,
        "a's own cancel did not stop its build: {} {}",
        done.status,
        done.body
    );
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", a.daemon_name("slow2"))))
            .await
            .status,
        404
    );
    eprintln!(
        "{} BuildKit attack cases refused; build ids are per job",
        cases.len() + raw_cases.len() + 1
    );
    a.finish().await;
    b.finish().await;
}

/// `RUN --network=host` in a BuildKit build: the daemon grants `network.host` only for
/// `--network host`, which the endpoint refuses, so neither reaches the host's network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_cannot_reach_the_host_network() {
    if !docker_or_skip("buildkit_host_network").await {
        return;
    }
    let Some(bin) = docker20_cli("buildkit_host_network").await else {
        return;
    };
    let a = start("bknet").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nRUN --network=host echo on-the-host > /x\n"),
    )
    .unwrap();
    let o = buildkit_build(bin, &a, dir.path(), &["-t", "hostnet"]).await;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "RUN --network=host built: {err}");
    eprintln!(
        "RUN --network=host: {}",
        err.lines().last().unwrap_or_default()
    );
    let o = buildkit_build(bin, &a, dir.path(), &["--network", "host", "-t", "hostnet"]).await;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "--network host built: {err}");
    assert!(err.contains("build-host-access"), "{err}");
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", a.daemon_name("hostnet"))))
            .await
            .status,
        404
    );
    a.finish().await;
}

/// Another job's build artifacts are not there for a job: its job-local tags and the images it
/// built are absent from lists and answer 404 to inspect, history, create and tag — by plain
/// name, by daemon name and by id — and the daemon shows nothing was created from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_jobs_images_are_invisible() {
    if !docker_or_skip("other_jobs_images").await {
        return;
    }
    let a = start("imga").await;
    let b = start("imgb").await;
    let tar = context_tar(&format!("FROM {BUSYBOX}\nRUN echo {} > /secret\n", a.scope));
    let r = a.send(&build_request("t=app:1", &tar)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a
        .send(&post(&format!("/images/{BUSYBOX}/tag?repo=mine&tag=1")))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let app_daemon = a.daemon_name("app:1");
    let app_id = daemon(&get(&format!("/images/{app_daemon}/json")))
        .await
        .json()["Id"]
        .as_str()
        .expect("a's image exists")
        .to_string();
    // a sees its own under plain names.
    let list = a.send(&get("/images/json")).await.json();
    let tags: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["RepoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert!(tags.contains(&"app:1".to_string()), "{tags:?}");
    assert!(tags.contains(&"mine:1".to_string()), "{tags:?}");
    assert!(!tags.iter().any(|t| t.starts_with(&a.scope)), "{tags:?}");
    // b sees neither a's tags nor a's image, but the shared image is there.
    let list = b.send(&get("/images/json")).await;
    assert!(!list.body.contains(&a.scope), "{}", list.body);
    assert!(!list.body.contains(&app_id), "{}", list.body);
    assert!(list.body.contains(BUSYBOX), "{}", list.body);
    let short = &app_id["sha256:".len()..][..12];
    for r in [
        app_daemon.as_str(),
        app_id.as_str(),
        short,
        &a.daemon_name("mine:1"),
    ] {
        for path in [format!("/images/{r}/json"), format!("/images/{r}/history")] {
            let resp = b.send(&get(&path)).await;
            assert_eq!(resp.status, 404, "{path}: {}", resp.body);
        }
        let resp = b
            .send(&post_json(
                "/containers/create?name=from-a",
                &format!(r#"{{"Image":"{r}","Cmd":["cat","/secret"]}}"#),
            ))
            .await;
        assert_eq!(resp.status, 404, "create from {r}: {}", resp.body);
        let resp = b
            .send(&post(&format!("/images/{r}/tag?repo=stolen&tag=1")))
            .await;
        assert_eq!(resp.status, 404, "tag {r}: {}", resp.body);
    }
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", b.daemon_name("stolen:1"))))
            .await
            .status,
        404
    );
    assert!(
        daemon_list(&format!(r#"{{"label":["io.berth.scope={}"]}}"#, b.scope))
            .await
            .iter()
            .all(|o| !o.starts_with("container")),
        "b created a container from a's image"
    );
    // a itself still uses its image.
    let r = a
        .send(&post_json(
            "/containers/create?name=mine",
            r#"{"Image":"app:1","Cmd":["true"]}"#,
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    a.finish().await;
    b.finish().await;
}

/// With `"builds": false` a build that would make the daemon fetch from the host's loopback
/// (`ADD http://127.0.0.1:PORT/…`) is refused, and the host-side listener sees no connection;
/// with builds on, the same build does reach it (the residual the policy exists for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_off_keep_the_daemon_from_fetching_host_loopback() {
    if !docker_or_skip("builds_off").await {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut c, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhost-secret\n")
                .await;
        }
    });
    let tar = context_tar(&format!(
        "FROM {BUSYBOX}\nADD http://127.0.0.1:{port}/s /s\nRUN cat /s\n"
    ));
    let policy = berth_proxy::Policy {
        builds: false,
        ..Default::default()
    };
    let off = start_with("bldoff", policy).await;
    let r = off.send(&build_request("t=fetched&nocache=1", &tar)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.message().contains("builds"), "{}", r.body);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(
        daemon(&get(&format!(
            "/images/{}/json",
            off.daemon_name("fetched")
        )))
        .await
        .status,
        404
    );
    off.finish().await;
    let on = start("bldon").await;
    let r = on.send(&build_request("t=fetched&nocache=1", &tar)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the daemon did not fetch from the host's loopback: {}",
        r.body
    );
    on.finish().await;
    server.abort();
}

/// A protobuf encoder for the attack requests below (length-delimited fields only).
fn pb(fields: &[(u32, Vec<u8>)]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for (n, b) in fields {
        varint(&mut out, (u64::from(*n) << 3) | 2);
        varint(&mut out, b.len() as u64);
        out.extend_from_slice(b);
    }
    out
}

/// A `map<string, string>` entry.
fn pb_entry(k: &str, v: &str) -> Vec<u8> {
    pb(&[(1, k.as_bytes().to_vec()), (2, v.as_bytes().to_vec())])
}

/// One gRPC message frame.
fn grpc_frame(msg: &[u8], compressed: bool) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// (what, method path, body, extra headers, expected gRPC status).
type GrpcCase<'a> = (&'a str, &'a str, Vec<u8>, Vec<(&'a str, String)>, &'a str);

type GrpcSender = hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// BuildKit's API through a scoped endpoint, the way buildx reaches it: `POST /grpc` with
/// `Upgrade: h2c`, then HTTP/2 on the upgraded connection.
async fn grpc_connect(sock: &std::path::Path) -> GrpcSender {
    use http_body_util::Empty;
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = http::Request::post("/v1.41/grpc")
        .header("host", "docker")
        .header("connection", "Upgrade")
        .header("upgrade", "h2c")
        .body(Empty::new())
        .unwrap();
    let resp = h1.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 101, "no upgrade to h2c");
    let up = hyper::upgrade::on(resp).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), up)
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// One unary call; the gRPC status (from the headers or the trailers) and message.
async fn grpc_call(
    sender: &mut GrpcSender,
    path: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (String, String) {
    use http_body_util::BodyExt;
    sender.ready().await.unwrap();
    let mut b = http::Request::post(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let resp = sender
        .send_request(b.body(http_body_util::Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let get = |k: &str| {
        head.get(k)
            .or_else(|| trailers.get(k))
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

/// buildx's route (`/grpc`): every call that could reach the host, another job's builds or
/// sessions, the shared cache or shared tags is refused, a harmless call works, and the daemon
/// shows nothing happened: the shared image is unchanged, the build cache was not pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_grpc_attacks_are_refused() {
    if !docker_or_skip("buildkit_grpc").await {
        return;
    }
    let a = start("grpca").await;
    let b = start("grpcb").await;
    let busybox_before = daemon(&get(&format!("/images/{BUSYBOX}/json")))
        .await
        .json()["Id"]
        .clone();
    let cache_before = daemon(&get("/system/df")).await.json()["BuildCache"]
        .as_array()
        .map_or(0, Vec::len);
    let mut g = grpc_connect(&a.sock).await;
    let solve = "/moby.buildkit.v1.Control/Solve";
    let s = |v: &str| v.as_bytes().to_vec();
    let other = |id: &str| format!("{}.{id}", b.scope);
    let exporter = |kind: &str, attrs: &[(&str, &str)]| {
        let mut f = vec![(1, s(kind))];
        f.extend(attrs.iter().map(|(k, v)| (2, pb_entry(k, v))));
        pb(&f)
    };
    let dockerfile = |extra: Vec<(u32, Vec<u8>)>| {
        let mut f = vec![(1, s("ref1")), (6, s("dockerfile.v0"))];
        f.extend(extra);
        grpc_frame(&pb(&f), false)
    };
    // The channel works: a harmless call answers OK.
    let (code, msg) = grpc_call(
        &mut g,
        "/moby.buildkit.v1.Control/ListWorkers",
        grpc_frame(&[], false),
        &[],
    )
    .await;
    assert_eq!(code, "0", "ListWorkers: {msg}");
    let cases: Vec<GrpcCase> = vec![
        (
            "solve asking for security.insecure",
            solve,
            dockerfile(vec![(9, s("security.insecure"))]),
            vec![],
            "7",
        ),
        (
            "solve asking for network.host",
            solve,
            dockerfile(vec![(9, s("network.host"))]),
            vec![],
            "7",
        ),
        (
            "solve with a client-made LLB graph",
            solve,
            dockerfile(vec![(2, pb(&[(1, s("op"))]))]),
            vec![],
            "7",
        ),
        (
            "solve with a custom frontend",
            solve,
            grpc_frame(
                &pb(&[
                    (1, s("r")),
                    (6, s("gateway.v0")),
                    (7, pb_entry("source", "evil/frontend")),
                ]),
                false,
            ),
            vec![],
            "7",
        ),
        (
            "solve exporting to the shared tag with push",
            solve,
            dockerfile(vec![(
                13,
                exporter("image", &[("name", BUSYBOX), ("push", "true")]),
            )]),
            vec![],
            "7",
        ),
        (
            "solve with a moby exporter option",
            solve,
            dockerfile(vec![
                (3, s("moby")),
                (4, pb_entry("dangling-name-prefix", "x")),
            ]),
            vec![],
            "7",
        ),
        (
            "solve with an unknown field",
            solve,
            grpc_frame(&pb(&[(1, s("r")), (99, s("x"))]), false),
            vec![],
            "7",
        ),
        (
            "solve with host network mode",
            solve,
            dockerfile(vec![(7, pb_entry("force-network-mode", "host"))]),
            vec![],
            "7",
        ),
        (
            "solve with a git context",
            solve,
            dockerfile(vec![(7, pb_entry("context", "https://127.0.0.1:1/x.git"))]),
            vec![],
            "7",
        ),
        (
            "solve with --add-host",
            solve,
            dockerfile(vec![(7, pb_entry("add-hosts", "pypi.org=127.0.0.1"))]),
            vec![],
            "7",
        ),
        (
            "solve with a proxy build arg",
            solve,
            dockerfile(vec![(
                7,
                pb_entry("build-arg:HTTP_PROXY", "http://127.0.0.1:3128"),
            )]),
            vec![],
            "7",
        ),
        (
            "solve in the other job's cache namespace",
            solve,
            dockerfile(vec![(
                7,
                pb_entry(
                    "build-arg:BUILDKIT_CACHE_MOUNT_NS",
                    &format!("berth-{}", b.scope),
                ),
            )]),
            vec![],
            "7",
        ),
        (
            "solve labelling as the other job",
            solve,
            dockerfile(vec![(7, pb_entry("label:io.berth.scope", &b.scope))]),
            vec![],
            "7",
        ),
        (
            "solve with the other job's ref",
            solve,
            grpc_frame(&pb(&[(1, s(&other("r")))]), false),
            vec![],
            "3",
        ),
        (
            "solve with the other job's session",
            solve,
            dockerfile(vec![(5, s(&other("s")))]),
            vec![],
            "3",
        ),
        (
            "status of the other job's build",
            "/moby.buildkit.v1.Control/Status",
            grpc_frame(&pb(&[(1, s(&other("r")))]), false),
            vec![],
            "3",
        ),
        (
            "gateway call into the other job's build",
            "/moby.buildkit.v1.frontend.LLBBridge/Ping",
            grpc_frame(&[], false),
            vec![("buildkit-controlapi-buildid", other("r"))],
            "3",
        ),
        (
            "gateway solve of an LLB graph",
            "/moby.buildkit.v1.frontend.LLBBridge/Solve",
            grpc_frame(
                &pb(&[(1, pb(&[(1, s("op"))])), (2, s("dockerfile.v0"))]),
                false,
            ),
            vec![("buildkit-controlapi-buildid", "r".to_string())],
            "7",
        ),
        (
            "compressed solve",
            solve,
            grpc_frame(&pb(&[(1, s("r"))]), true),
            vec![],
            "3",
        ),
        (
            "gzip-encoded solve",
            solve,
            dockerfile(vec![]),
            vec![("grpc-encoding", "gzip".to_string())],
            "3",
        ),
        (
            "two messages in a unary solve",
            solve,
            [dockerfile(vec![]), dockerfile(vec![(9, s("network.host"))])].concat(),
            vec![],
            "3",
        ),
    ];
    // Calls off the allowlist, each with an empty request.
    let denied = [
        (
            "gateway container",
            "/moby.buildkit.v1.frontend.LLBBridge/NewContainer",
        ),
        (
            "gateway exec",
            "/moby.buildkit.v1.frontend.LLBBridge/ExecProcess",
        ),
        (
            "disk usage of the shared cache",
            "/moby.buildkit.v1.Control/DiskUsage",
        ),
        (
            "prune of the shared cache",
            "/moby.buildkit.v1.Control/Prune",
        ),
        (
            "every job's build history",
            "/moby.buildkit.v1.Control/ListenBuildHistory",
        ),
        (
            "history update",
            "/moby.buildkit.v1.Control/UpdateBuildHistory",
        ),
        (
            "session over the control API",
            "/moby.buildkit.v1.Control/Session",
        ),
        (
            "content store",
            "/containerd.services.content.v1.Content/Read",
        ),
    ];
    let cases: Vec<GrpcCase> = cases
        .into_iter()
        .chain(
            denied
                .iter()
                .map(|(what, path)| (*what, *path, grpc_frame(&[], false), vec![], "7")),
        )
        .collect();
    for (what, path, body, headers, want) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, msg) = grpc_call(&mut g, path, body.clone(), &h).await;
        assert_eq!(&code, want, "`{what}`: {msg}");
        if *want == "7" {
            assert!(msg.contains("berth"), "`{what}`: {msg}");
        }
    }
    assert_eq!(
        daemon(&get(&format!("/images/{BUSYBOX}/json")))
            .await
            .json()["Id"],
        busybox_before,
        "the shared image changed"
    );
    let cache_after = daemon(&get("/system/df")).await.json()["BuildCache"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(cache_after >= cache_before, "the build cache was pruned");
    eprintln!("{} gRPC attack cases refused", cases.len());
    a.finish().await;
    b.finish().await;
}

/// Why the `shared-build-cache` rule exists, shown on the daemon itself (not through the
/// proxy): a layer built with a proxy build argument pointing anywhere is taken from the cache by
/// the identical step of a later build — BuildKit's with no proxy argument at all, the classic
/// builder's with its own proxy argument (the docker CLI adds them from its proxy settings) —
/// and one built with `--add-host` by a classic build without it. A job that could pass them
/// would decide what other jobs' identical steps contain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_leaves_proxy_args_and_added_hosts_out_of_the_cache_key() {
    if !docker_or_skip("cache_key").await {
        return;
    }
    let nonce = unique_scope("cachekey");
    let poison = enc(r#"{"HTTP_PROXY":"http://127.0.0.1:9/poison"}"#);
    let own = enc(r#"{"HTTP_PROXY":"http://proxy.example:3128"}"#);
    let mut tags = Vec::new();
    let mut results = Vec::new();
    for (what, dockerfile, attacker, victim) in [
        (
            "classic, proxy build arg",
            format!("FROM {BUSYBOX}\nRUN echo \"$HTTP_PROXY {nonce}-1\" > /p\n"),
            format!("buildargs={poison}"),
            format!("buildargs={own}"),
        ),
        (
            "BuildKit, proxy build arg",
            format!("FROM {BUSYBOX}\nRUN echo \"$HTTP_PROXY {nonce}-2\" > /p\n"),
            format!("version=2&buildargs={poison}"),
            "version=2".to_string(),
        ),
        (
            "classic, --add-host",
            format!("FROM {BUSYBOX}\nRUN grep pypi /etc/hosts > /h; echo {nonce}-3\n"),
            "extrahosts=pypi.org%3A10.9.9.9".to_string(),
            String::new(),
        ),
    ] {
        let tar = context_tar(&dockerfile);
        let mut ids = Vec::new();
        for query in [&attacker, &victim] {
            let tag = format!("berth-test/{nonce}:{}", tags.len());
            let r = daemon(&build_request(&format!("t={tag}&{query}"), &tar)).await;
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            let img = daemon(&get(&format!("/images/{tag}/json"))).await;
            assert_eq!(img.status, 200, "{what}: {}", r.body);
            ids.push(img.json()["Id"].as_str().unwrap_or_default().to_string());
            tags.push(tag);
        }
        results.push((what, ids));
    }
    // Removed before asserting, so a failure leaves no image behind either.
    for t in &tags {
        let _ = daemon(&delete(&format!("/images/{t}?force=1"))).await;
    }
    for (what, ids) in results {
        assert_eq!(
            ids[0], ids[1],
            "{what}: the later build did not reuse the layer built with it"
        );
    }
}

/// `"buildkit": false`: both BuildKit routes are refused with the rule, the classic builder
/// still builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_off_refuses_both_routes_and_keeps_classic_builds() {
    if !docker_or_skip("buildkit_off").await {
        return;
    }
    let s = start_with(
        "bkoff",
        berth_proxy::Policy {
            buildkit: false,
            ..Default::default()
        },
    )
    .await;
    let tar = context_tar(&format!("FROM {BUSYBOX}\nRUN echo {} > /x\n", s.scope));
    let r = s.send(&build_request("version=2&t=bk", &tar)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.message().contains("buildkit"), "{}", r.body);
    for req in [
        session_request("s1", "h2c"),
        b"POST /grpc HTTP/1.1\r\nHost: d\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ] {
        let r = s.send(&req).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.message().contains("buildkit"), "{}", r.body);
    }
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", s.daemon_name("bk"))))
            .await
            .status,
        404
    );
    let r = s.send(&build_request("t=classic", &tar)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        daemon(&get(&format!("/images/{}/json", s.daemon_name("classic"))))
            .await
            .status,
        200
    );
    s.finish().await;
}

/// The documented residual about cache mounts, checked so the docs cannot go stale: on BuildKit
/// 0.12+ (API ≥ 1.44) a step with an explicit cache-mount `id` is cached without the id, so a
/// second job's identical step reuses the first job's layer despite the per-job namespace; on
/// older BuildKit (20.10) the namespaced id keeps them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_cache_mount_ids_and_the_layer_cache() {
    if !docker_or_skip("cache_mount_ids").await {
        return;
    }
    let a = start("cmida").await;
    let b = start("cmidb").await;
    let nonce = unique_scope("cmid");
    let tar = context_tar(&format!(
        "FROM {BUSYBOX}\nRUN --mount=type=cache,id=x,target=/c cat /proc/sys/kernel/random/uuid > /y # {nonce}\n"
    ));
    // The step writes a fresh uuid when it runs: equal last layers mean it ran once.
    let mut ids = Vec::new();
    for s in [&a, &b] {
        let r = s.send(&build_request("version=2&t=cm", &tar)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let img = daemon(&get(&format!("/images/{}/json", s.daemon_name("cm")))).await;
        let layers = img.json()["RootFS"]["Layers"].clone();
        ids.push(
            layers
                .as_array()
                .and_then(|l| l.last())
                .cloned()
                .unwrap_or_default(),
        );
    }
    let shared = daemon_api().await >= (1, 44);
    assert_eq!(
        ids[0] == ids[1],
        shared,
        "explicit-id cache mount steps {} across jobs here; docs/scoped-socket.md says otherwise",
        if ids[0] == ids[1] {
            "share layers"
        } else {
            "do not share layers"
        }
    );
    a.finish().await;
    b.finish().await;
}
