//! The rules of the scoped socket (issue 4, section 3), each with the name a refusal carries.
//!
//! Owns: the configurable [`Policy`] (capability allowlist, log drivers, resource limits, body
//! size) and the ownership-independent checks of container, exec, network, volume and build
//! requests. Values are checked with exact types: anything the daemon could read as "on" in a
//! way this module does not recognise is refused, not guessed at.
//! Must not: look anything up on the daemon (ownership checks live in `handler`), or parse
//! bytes (it sees only bodies `body` normalized).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::refusal::Refusal;

/// Rule names, as they appear in refusals and in docs/scoped-socket.md.
pub mod rules {
    pub const PRIVILEGED: &str = "privileged";
    pub const NAMESPACES: &str = "host-namespaces";
    pub const CAPABILITIES: &str = "capabilities";
    pub const DEVICES: &str = "devices";
    pub const SECURITY_OPT: &str = "security-options";
    pub const SYSCTLS: &str = "sysctls";
    pub const CGROUP_PARENT: &str = "cgroup-parent";
    pub const RUNTIME: &str = "runtime";
    pub const PATH_OVERRIDES: &str = "masked-readonly-paths";
    pub const STORAGE_OPT: &str = "storage-options";
    pub const BIND_OUTSIDE: &str = "bind-outside-workspace";
    pub const VOLUME_OPTIONS: &str = "volume-driver-options";
    pub const MOUNT_TYPE: &str = "mount-type";
    pub const PROPAGATION: &str = "mount-propagation";
    pub const LOG_DRIVER: &str = "log-driver";
    pub const RESOURCES: &str = "resource-limits";
    pub const NETWORK_DRIVER: &str = "network-driver";
    pub const BUILD_HOST: &str = "build-host-access";
    pub const BUILD_CACHE: &str = "shared-build-cache";
    pub const BUILDKIT: &str = "buildkit";
    pub const BUILDS: &str = "builds";
    pub const IMAGE_TAGS: &str = "shared-image-tags";
    pub const IMPORT: &str = "image-import";
    pub const ENDPOINT: &str = "unsupported-endpoint";
    pub const LABELS: &str = "reserved-labels";
    pub const NAMES: &str = "names";
    pub const FIELD: &str = "field-type";
}
use rules::*;

/// The configurable part of the rules; read from the `--policy` JSON file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Capabilities a container may add (`NET_ADMIN`, without `CAP_`); default none.
    pub cap_add: Vec<String>,
    /// Log drivers a container may use besides the daemon default.
    pub log_drivers: Vec<String>,
    /// Memory limit (bytes) applied to containers that set none; 0 for none.
    pub default_memory: i64,
    /// Highest memory limit a container may ask for; 0 for no maximum.
    pub max_memory: i64,
    /// Pids limit applied to containers that set none; 0 for none.
    pub default_pids: i64,
    /// Highest pids limit; 0 for no maximum.
    pub max_pids: i64,
    /// CPU limit (billionths of a CPU) applied to containers that set none; 0 for none.
    pub default_nano_cpus: i64,
    /// Highest CPU limit; 0 for no maximum.
    pub max_nano_cpus: i64,
    /// Largest JSON request body accepted.
    pub max_body_bytes: usize,
    /// Publish every requested port on a free loopback port instead of the one asked for, so
    /// concurrent jobs never collide (`docker port` and inspect show the real one).
    pub remap_published_ports: bool,
    /// Serve BuildKit builds through the daemon's `/build?version=2` route and `/session`.
    /// BuildKit runs build steps outside any container the job creates, so the memory, pids and
    /// CPU limits above do not apply to them; turn this off where they must.
    pub buildkit: bool,
    /// Serve image builds at all. The daemon makes a build's downloads (`ADD <url>`, base images,
    /// BuildKit's http and git sources) itself, from the host's network namespace, where the
    /// proxy cannot see them; turn builds off where the host's loopback or link-local services
    /// must stay out of jobs' reach (docs/scoped-socket.md, "What the daemon fetches itself").
    pub builds: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            cap_add: Vec::new(),
            log_drivers: vec!["json-file".into(), "local".into()],
            default_memory: 4 << 30,
            max_memory: 0,
            default_pids: 4096,
            max_pids: 0,
            default_nano_cpus: 0,
            max_nano_cpus: 0,
            max_body_bytes: 1 << 20,
            remap_published_ports: true,
            buildkit: true,
            builds: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("failed to read the policy file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the policy file {path} is invalid: {source}")]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
}

impl Policy {
    /// Reads a policy file (JSON, the fields of [`Policy`], all optional).
    pub fn load(path: &std::path::Path) -> Result<Policy, PolicyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| PolicyFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Absent or JSON null.
fn unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// Absent, null, false, 0, "", [] or {}.
fn empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
    }
}

fn must_be_empty(m: &Map<String, Value>, key: &str, rule: &'static str) -> Result<(), Refusal> {
    if empty(m.get(key)) {
        Ok(())
    } else {
        Err(Refusal::rule(rule, format!("{key} may not be set")))
    }
}

/// A string field (absent/null reads as "").
pub fn string_field<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str, Refusal> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Refusal::rule(FIELD, format!("{key} must be a string"))),
    }
}

/// A list of strings (absent/null reads as empty).
pub fn strings_field(m: &Map<String, Value>, key: &str) -> Result<Vec<String>, Refusal> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Refusal::rule(FIELD, format!("{key} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(Refusal::rule(
            FIELD,
            format!("{key} must be a list of strings"),
        )),
    }
}

fn int_field(m: &Map<String, Value>, key: &str) -> Result<i64, Refusal> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Refusal::rule(FIELD, format!("{key} must be an integer"))),
        Some(_) => Err(Refusal::rule(FIELD, format!("{key} must be an integer"))),
    }
}

/// `false`, absent or null; anything else that is not exactly `true` is refused as well.
fn must_be_false(m: &Map<String, Value>, key: &str, rule: &'static str) -> Result<(), Refusal> {
    match m.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(()),
        _ => Err(Refusal::rule(rule, format!("{key} is not allowed"))),
    }
}

/// A namespace mode that may name another container; returns the container reference if any.
/// `allowed` are the plain values accepted.
pub fn namespace_mode(
    hc: &Map<String, Value>,
    key: &str,
    allowed: &[&str],
    container_ok: bool,
) -> Result<Option<String>, Refusal> {
    let v = string_field(hc, key)?;
    if allowed.contains(&v) {
        return Ok(None);
    }
    if container_ok
        && let Some(r) = v.strip_prefix("container:")
        && !r.is_empty()
    {
        return Ok(Some(r.to_string()));
    }
    Err(Refusal::rule(
        NAMESPACES,
        format!("{key} `{v}` is not allowed (host or foreign namespaces)"),
    ))
}

/// Checks of `HostConfig` that need no daemon lookups; applies resource limits.
pub fn check_host_config(policy: &Policy, hc: &mut Map<String, Value>) -> Result<(), Refusal> {
    must_be_false(hc, "Privileged", PRIVILEGED)?;
    namespace_mode(hc, "UTSMode", &[""], false)?;
    namespace_mode(hc, "UsernsMode", &[""], false)?;
    namespace_mode(hc, "CgroupnsMode", &["", "private"], false)?;
    namespace_mode(hc, "Cgroup", &[""], false)?;
    // PidMode, IpcMode and NetworkMode may name an owned container: checked by the handler,
    // but the plain values are decided here.
    namespace_mode(hc, "PidMode", &[""], true)?;
    namespace_mode(hc, "IpcMode", &["", "private", "shareable", "none"], true)?;
    let net = string_field(hc, "NetworkMode")?;
    if net == "host" || net.starts_with("container:") && net.len() == "container:".len() {
        return Err(Refusal::rule(
            NAMESPACES,
            "NetworkMode `host` is not allowed",
        ));
    }
    for cap in strings_field(hc, "CapAdd")? {
        let norm = cap.to_ascii_uppercase();
        let norm = norm.strip_prefix("CAP_").unwrap_or(&norm);
        let ok = policy
            .cap_add
            .iter()
            .any(|a| a.to_ascii_uppercase().trim_start_matches("CAP_") == norm && norm != "ALL");
        if !ok {
            return Err(Refusal::rule(
                CAPABILITIES,
                format!("adding capability `{cap}` is not allowed"),
            ));
        }
    }
    strings_field(hc, "CapDrop")?;
    for key in ["Devices", "DeviceCgroupRules", "DeviceRequests"] {
        must_be_empty(hc, key, DEVICES)?;
    }
    for key in [
        "BlkioWeightDevice",
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
    ] {
        must_be_empty(hc, key, DEVICES)?;
    }
    for opt in strings_field(hc, "SecurityOpt")? {
        check_security_opt(&opt)?;
    }
    must_be_empty(hc, "Sysctls", SYSCTLS)?;
    must_be_empty(hc, "CgroupParent", CGROUP_PARENT)?;
    must_be_empty(hc, "StorageOpt", STORAGE_OPT)?;
    // OCI annotations reach the runtime; none are needed by a job.
    must_be_empty(hc, "Annotations", RUNTIME)?;
    must_be_empty(hc, "CpuRealtimePeriod", RESOURCES)?;
    must_be_empty(hc, "CpuRealtimeRuntime", RESOURCES)?;
    must_be_false(hc, "OomKillDisable", RESOURCES)?;
    let runtime = string_field(hc, "Runtime")?;
    if !matches!(runtime, "" | "runc") {
        return Err(Refusal::rule(
            RUNTIME,
            format!("runtime `{runtime}` is not allowed"),
        ));
    }
    let isolation = string_field(hc, "Isolation")?;
    if !matches!(isolation, "" | "default") {
        return Err(Refusal::rule(
            RUNTIME,
            format!("isolation `{isolation}` is not allowed"),
        ));
    }
    for key in ["MaskedPaths", "ReadonlyPaths"] {
        if !unset(hc.get(key)) {
            return Err(Refusal::rule(
                PATH_OVERRIDES,
                format!("{key} may not be set"),
            ));
        }
    }
    let driver = string_field(hc, "VolumeDriver")?;
    if !matches!(driver, "" | "local") {
        return Err(Refusal::rule(
            VOLUME_OPTIONS,
            format!("volume driver `{driver}` is not allowed"),
        ));
    }
    if let Some(Value::Object(log)) = hc.get("LogConfig") {
        let t = string_field(log, "Type")?;
        if !t.is_empty() && !policy.log_drivers.iter().any(|d| d == t) {
            return Err(Refusal::rule(
                LOG_DRIVER,
                format!("log driver `{t}` is not allowed"),
            ));
        }
    } else if !unset(hc.get("LogConfig")) {
        return Err(Refusal::rule(FIELD, "LogConfig must be an object"));
    }
    if int_field(hc, "OomScoreAdj")? < 0 {
        return Err(Refusal::rule(
            RESOURCES,
            "a negative OomScoreAdj would shield the container from the host's OOM killer",
        ));
    }
    if policy.remap_published_ports {
        remap_ports(hc)?;
    }
    apply_limits(policy, hc)
}

/// `-p 8080:80` → `-p 127.0.0.1::80`: the daemon picks a free loopback port.
fn remap_ports(hc: &mut Map<String, Value>) -> Result<(), Refusal> {
    let Some(bindings) = hc.get_mut("PortBindings") else {
        return Ok(());
    };
    let Value::Object(ports) = bindings else {
        return if bindings.is_null() {
            Ok(())
        } else {
            Err(Refusal::rule(FIELD, "PortBindings must be an object"))
        };
    };
    for list in ports.values_mut() {
        let Value::Array(list) = list else {
            continue;
        };
        for b in list.iter_mut() {
            let Value::Object(b) = b else {
                return Err(Refusal::rule(FIELD, "port bindings must be objects"));
            };
            let ip = if string_field(b, "HostIp")? == "::1" {
                "::1"
            } else {
                "127.0.0.1"
            };
            b.insert("HostIp".into(), Value::String(ip.into()));
            b.insert("HostPort".into(), Value::String(String::new()));
        }
    }
    Ok(())
}

fn apply_limits(policy: &Policy, hc: &mut Map<String, Value>) -> Result<(), Refusal> {
    let limit =
        |hc: &mut Map<String, Value>, key: &str, default: i64, max: i64, unlimited_below: i64| {
            let v = int_field(hc, key)?;
            if v <= unlimited_below {
                if default > 0 {
                    hc.insert(key.to_string(), Value::from(default));
                } else if max > 0 {
                    return Err(Refusal::rule(
                        RESOURCES,
                        format!("{key} must be set (at most {max})"),
                    ));
                }
            } else if max > 0 && v > max {
                return Err(Refusal::rule(
                    RESOURCES,
                    format!("{key} {v} is above the maximum {max}"),
                ));
            }
            Ok(())
        };
    limit(hc, "Memory", policy.default_memory, policy.max_memory, 0)?;
    limit(hc, "PidsLimit", policy.default_pids, policy.max_pids, 0)?;
    if int_field(hc, "CpuQuota")? > 0 {
        if policy.max_nano_cpus > 0 {
            return Err(Refusal::rule(
                RESOURCES,
                "set a CPU limit with NanoCpus (--cpus), not CpuQuota",
            ));
        }
    } else {
        limit(
            hc,
            "NanoCpus",
            policy.default_nano_cpus,
            policy.max_nano_cpus,
            0,
        )?;
    }
    Ok(())
}

/// Only `no-new-privileges` is allowed: every seccomp, AppArmor, SELinux label or systempaths
/// option, in any spelling, is refused.
fn check_security_opt(opt: &str) -> Result<(), Refusal> {
    let (key, value) = opt
        .split_once('=')
        .or_else(|| opt.split_once(':'))
        .unwrap_or((opt, ""));
    if key == "no-new-privileges" && matches!(value, "" | "true" | "false") {
        return Ok(());
    }
    Err(Refusal::rule(
        SECURITY_OPT,
        format!("security option `{opt}` is not allowed"),
    ))
}

/// Exec: privileged execs are refused.
pub fn check_exec(exec: &Map<String, Value>) -> Result<(), Refusal> {
    must_be_false(exec, "Privileged", PRIVILEGED)
}

/// Network create: bridge only, no driver or IPAM options, no swarm features.
pub fn check_network_create(n: &Map<String, Value>) -> Result<(), Refusal> {
    let driver = string_field(n, "Driver")?;
    if !matches!(driver, "" | "bridge") {
        return Err(Refusal::rule(
            NETWORK_DRIVER,
            format!("network driver `{driver}` is not allowed"),
        ));
    }
    must_be_empty(n, "Options", NETWORK_DRIVER)?;
    must_be_false(n, "Ingress", NETWORK_DRIVER)?;
    must_be_false(n, "ConfigOnly", NETWORK_DRIVER)?;
    must_be_empty(n, "ConfigFrom", NETWORK_DRIVER)?;
    let scope = string_field(n, "Scope")?;
    if !matches!(scope, "" | "local") {
        return Err(Refusal::rule(
            NETWORK_DRIVER,
            format!("network scope `{scope}` is not allowed"),
        ));
    }
    if let Some(Value::Object(ipam)) = n.get("IPAM") {
        let d = string_field(ipam, "Driver")?;
        if !matches!(d, "" | "default") {
            return Err(Refusal::rule(
                NETWORK_DRIVER,
                format!("IPAM driver `{d}` is not allowed"),
            ));
        }
        must_be_empty(ipam, "Options", NETWORK_DRIVER)?;
    }
    Ok(())
}

/// Endpoint settings (create and connect): no driver options. Links are checked by the handler.
pub fn check_endpoint(e: &Map<String, Value>) -> Result<(), Refusal> {
    must_be_empty(e, "DriverOpts", NETWORK_DRIVER)
}

/// Volume create: local driver, no driver options (`o=bind,device=/etc` mounts the host).
pub fn check_volume_create(v: &Map<String, Value>) -> Result<(), Refusal> {
    let driver = string_field(v, "Driver")?;
    if !matches!(driver, "" | "local") {
        return Err(Refusal::rule(
            VOLUME_OPTIONS,
            format!("volume driver `{driver}` is not allowed"),
        ));
    }
    must_be_empty(v, "DriverOpts", VOLUME_OPTIONS)
}

/// Replaces the client's `io.berth.*` labels with the proxy's. Returns the new label map.
pub fn own_labels(
    given: Option<&Value>,
    ours: &std::collections::BTreeMap<String, String>,
) -> Result<Value, Refusal> {
    let mut out = Map::new();
    match given {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if k.starts_with("io.berth.") {
                    return Err(Refusal::rule(
                        LABELS,
                        format!("label `{k}` is reserved for berth"),
                    ));
                }
                if !v.is_string() {
                    return Err(Refusal::rule(FIELD, "label values must be strings"));
                }
                out.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err(Refusal::rule(FIELD, "Labels must be an object")),
    }
    for (k, v) in ours {
        out.insert(k.clone(), Value::String(v.clone()));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hc(v: Value) -> Result<Map<String, Value>, Refusal> {
        let mut m = v.as_object().unwrap().clone();
        check_host_config(&Policy::default(), &mut m).map(|()| m)
    }

    #[test]
    fn escalations_are_refused() {
        for (v, rule) in [
            (json!({"Privileged": true}), PRIVILEGED),
            (json!({"Privileged": 1}), PRIVILEGED),
            (json!({"PidMode": "host"}), NAMESPACES),
            (json!({"UsernsMode": "host"}), NAMESPACES),
            (json!({"NetworkMode": "host"}), NAMESPACES),
            (json!({"CapAdd": ["sys_admin"]}), CAPABILITIES),
            (json!({"CapAdd": ["ALL"]}), CAPABILITIES),
            (json!({"Devices": [{"PathOnHost": "/dev/sda"}]}), DEVICES),
            (json!({"SecurityOpt": ["seccomp=unconfined"]}), SECURITY_OPT),
            (json!({"SecurityOpt": ["seccomp:unconfined"]}), SECURITY_OPT),
            (
                json!({"SecurityOpt": ["apparmor=unconfined"]}),
                SECURITY_OPT,
            ),
            (json!({"SecurityOpt": ["label=disable"]}), SECURITY_OPT),
            (json!({"SecurityOpt": ["label:disable"]}), SECURITY_OPT),
            (json!({"Sysctls": {"kernel.x": "1"}}), SYSCTLS),
            (json!({"CgroupParent": "/"}), CGROUP_PARENT),
            (json!({"Runtime": "runsc"}), RUNTIME),
            (json!({"MaskedPaths": []}), PATH_OVERRIDES),
            (json!({"LogConfig": {"Type": "syslog"}}), LOG_DRIVER),
        ] {
            assert_eq!(hc(v.clone()).unwrap_err().rule_name(), rule, "{v}");
        }
    }

    #[test]
    fn limits_are_applied() {
        let m = hc(json!({})).unwrap();
        assert_eq!(m["Memory"], 4i64 << 30);
        assert_eq!(m["PidsLimit"], 4096);
        assert!(hc(json!({"SecurityOpt": ["no-new-privileges:true"]})).is_ok());
    }
}
