//! `/info` (sanitized: no host names, paths, proxies or counts of others' objects) and
//! `/system/df` (own objects only).

use http::Method;
use serde_json::{Value, json};

use super::*;

impl Handler<'_> {
    pub(super) async fn info(&self) -> Answer {
        let count = self.scope().container_count();
        self.rewritten(Method::GET, &self.path(&["info"]), None, move |_, v| {
            const KEEP: &[&str] = &[
                "ID", "Images", "Driver", "MemoryLimit", "SwapLimit", "KernelMemory", "KernelMemoryTCP",
                "CpuCfsPeriod", "CpuCfsQuota", "CPUShares", "CPUSet", "PidsLimit", "IPv4Forwarding",
                "BridgeNfIptables", "BridgeNfIp6tables", "OomKillDisable", "SystemTime", "LoggingDriver",
                "CgroupDriver", "CgroupVersion", "KernelVersion", "OperatingSystem", "OSVersion", "OSType",
                "Architecture", "IndexServerAddress", "NCPU", "MemTotal", "ServerVersion", "DefaultRuntime",
                "ExperimentalBuild", "SecurityOptions", "Isolation", "Plugins",
            ];
            let Value::Object(m) = v else { return };
            m.retain(|k, _| KEEP.contains(&k.as_str()));
            m.insert("Name".into(), json!("berth-scoped"));
            m.insert("Containers".into(), json!(count));
            for k in ["ContainersRunning", "ContainersPaused", "ContainersStopped", "NFd", "NGoroutines", "NEventsListener"] {
                m.insert(k.into(), json!(0));
            }
            m.insert("Debug".into(), json!(false));
            m.insert("Labels".into(), json!([]));
            m.insert("Runtimes".into(), json!({"runc": {"path": "runc"}}));
            m.insert("Swarm".into(), json!({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null}));
            m.insert("Warnings".into(), json!([]));
        })
        .await
    }

    pub(super) async fn system_df(&self) -> Answer {
        self.rewritten(
            Method::GET,
            &self.path(&["system", "df"]),
            None,
            |scope, v| {
                if let Some(Value::Array(a)) = v.get_mut("Containers") {
                    a.retain(|c| c["Id"].as_str().is_some_and(|id| scope.owns_container(id)));
                }
                if let Some(Value::Array(a)) = v.get_mut("Volumes") {
                    a.retain(|n| n["Name"].as_str().is_some_and(|n| scope.owns_volume(n)));
                }
                if let Some(Value::Array(a)) = v.get_mut("Images") {
                    a.retain(|i| {
                        i["RepoTags"].as_array().is_some_and(|t| {
                            t.iter()
                                .filter_map(Value::as_str)
                                .any(|t| scope.owns_tag(t))
                        })
                    });
                }
                if let Value::Object(m) = v {
                    m.insert("BuildCache".into(), json!([]));
                }
            },
        )
        .await
    }

    /// Prunes run on the daemon with the scope's label filter appended (label filters AND), so
    /// only the scope's objects can match; a job's own `label!=` filters are kept.
    pub(super) async fn prune(&self, kind: &str) -> Answer {
        let qs = self.scoped_filters_query()?;
        let path = format!("{}{qs}", self.path(&[kind, "prune"]));
        self.rewritten(Method::POST, &path, None, |_, _| {}).await
    }
}
