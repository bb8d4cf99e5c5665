//! JSON request bodies read the way the daemon's Go `encoding/json` reads them, or refused.
//!
//! Owns: strict decoding (no duplicate keys, no trailing data, size limit), key matching with
//! Go's rules (ASCII case-insensitive plus Unicode simple folding: `ſ` is `s`, `K` is `k`),
//! and normalizing objects against the schema of the daemon's structs so that every key that
//! reaches the policy has its canonical spelling. Two keys that fold to the same field, and any
//! key the schema does not know, are refused.
//! Must not: forward anything; callers re-serialize the normalized value and forward only that.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    #[error("request body has data after the JSON value")]
    Trailing,
    #[error("key `{key}` appears twice (or in two spellings) in {object}")]
    Duplicate { object: &'static str, key: String },
    #[error("unknown field `{key}` in {object}")]
    Unknown { object: &'static str, key: String },
    #[error("{object} must be a JSON object")]
    NotObject { object: &'static str },
}

/// Decodes a complete JSON document, refusing duplicate keys and trailing data.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = StrictValue::deserialize(&mut de).map_err(|e| BodyError::Syntax(e.to_string()))?;
    de.end().map_err(|_| BodyError::Trailing)?;
    Ok(v.0)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate key `{k}`")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Go's key folding: ASCII case-insensitive, plus the two non-ASCII letters whose simple case
/// folding orbit contains an ASCII letter (U+017F `ſ` with `s`, U+212A `K` with `k`).
pub fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// What a field's value is, as far as normalizing goes.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A scalar, array of scalars, or map with free keys (labels, options): kept as given.
    Any,
    /// A nested struct (or null).
    Obj(&'static Schema),
    /// An array of structs (or null).
    ArrayOf(&'static Schema),
    /// A map from free keys to structs (or null).
    MapOf(&'static Schema),
}

/// The fields of one of the daemon's structs, with canonical spellings.
#[derive(Debug)]
pub struct Schema {
    pub name: &'static str,
    pub fields: &'static [(&'static str, Shape)],
}

/// Rewrites `value` so every key has its canonical spelling; refuses unknown and duplicate keys.
pub fn normalize(value: Value, schema: &'static Schema) -> Result<Map<String, Value>, BodyError> {
    let Value::Object(input) = value else {
        return Err(BodyError::NotObject {
            object: schema.name,
        });
    };
    let mut out = Map::new();
    for (key, v) in input {
        let folded = fold(&key);
        let Some((canonical, shape)) = schema.fields.iter().find(|(name, _)| fold(name) == folded)
        else {
            return Err(BodyError::Unknown {
                object: schema.name,
                key,
            });
        };
        if out.contains_key(*canonical) {
            return Err(BodyError::Duplicate {
                object: schema.name,
                key,
            });
        }
        let v = normalize_shape(v, *shape)?;
        out.insert((*canonical).to_string(), v);
    }
    Ok(out)
}

fn normalize_shape(v: Value, shape: Shape) -> Result<Value, BodyError> {
    Ok(match (shape, v) {
        (_, Value::Null) => Value::Null,
        (Shape::Any, v) => v,
        (Shape::Obj(s), v) => Value::Object(normalize(v, s)?),
        (Shape::ArrayOf(s), Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .map(|i| normalize(i, s).map(Value::Object))
                .collect::<Result<_, _>>()?,
        ),
        (Shape::MapOf(s), Value::Object(m)) => Value::Object(
            m.into_iter()
                .map(|(k, i)| normalize(i, s).map(|o| (k, Value::Object(o))))
                .collect::<Result<_, _>>()?,
        ),
        (Shape::ArrayOf(s) | Shape::MapOf(s), _) => {
            return Err(BodyError::NotObject { object: s.name });
        }
    })
}

use Shape::{Any, ArrayOf, MapOf, Obj};

/// `POST /containers/create`: `container.Config` fields plus the wrapper's. Host configuration
/// at the top level (the deprecated embedded `HostConfig`) is deliberately unknown: the daemon
/// would apply it when `HostConfig` is absent.
pub static CREATE: Schema = Schema {
    name: "the container configuration",
    fields: &[
        ("Hostname", Any),
        ("Domainname", Any),
        ("User", Any),
        ("AttachStdin", Any),
        ("AttachStdout", Any),
        ("AttachStderr", Any),
        ("ExposedPorts", Any),
        ("Tty", Any),
        ("OpenStdin", Any),
        ("StdinOnce", Any),
        ("Env", Any),
        ("Cmd", Any),
        ("Healthcheck", Obj(&HEALTHCHECK)),
        ("ArgsEscaped", Any),
        ("Image", Any),
        ("Volumes", Any),
        ("WorkingDir", Any),
        ("Entrypoint", Any),
        ("NetworkDisabled", Any),
        ("MacAddress", Any),
        ("OnBuild", Any),
        ("Labels", Any),
        ("StopSignal", Any),
        ("StopTimeout", Any),
        ("Shell", Any),
        ("HostConfig", Obj(&HOST_CONFIG)),
        ("NetworkingConfig", Obj(&NETWORKING_CONFIG)),
    ],
};

pub static HEALTHCHECK: Schema = Schema {
    name: "Healthcheck",
    fields: &[
        ("Test", Any),
        ("Interval", Any),
        ("Timeout", Any),
        ("StartPeriod", Any),
        ("Retries", Any),
    ],
};

/// `container.HostConfig` with its embedded `Resources` (API 1.41).
pub static HOST_CONFIG: Schema = Schema {
    name: "HostConfig",
    fields: &[
        ("Binds", Any),
        ("ContainerIDFile", Any),
        ("LogConfig", Obj(&LOG_CONFIG)),
        ("NetworkMode", Any),
        ("PortBindings", Any),
        ("RestartPolicy", Obj(&RESTART_POLICY)),
        ("AutoRemove", Any),
        ("VolumeDriver", Any),
        ("VolumesFrom", Any),
        ("CapAdd", Any),
        ("CapDrop", Any),
        ("CgroupnsMode", Any),
        ("Dns", Any),
        ("DnsOptions", Any),
        ("DnsSearch", Any),
        ("ExtraHosts", Any),
        ("GroupAdd", Any),
        ("IpcMode", Any),
        ("Cgroup", Any),
        ("Links", Any),
        ("OomScoreAdj", Any),
        ("PidMode", Any),
        ("Privileged", Any),
        ("PublishAllPorts", Any),
        ("ReadonlyRootfs", Any),
        ("SecurityOpt", Any),
        ("StorageOpt", Any),
        ("Tmpfs", Any),
        ("UTSMode", Any),
        ("UsernsMode", Any),
        ("ShmSize", Any),
        ("Sysctls", Any),
        ("Runtime", Any),
        ("ConsoleSize", Any),
        ("Isolation", Any),
        ("CpuShares", Any),
        ("Memory", Any),
        ("NanoCpus", Any),
        ("CgroupParent", Any),
        ("BlkioWeight", Any),
        ("BlkioWeightDevice", Any),
        ("BlkioDeviceReadBps", Any),
        ("BlkioDeviceWriteBps", Any),
        ("BlkioDeviceReadIOps", Any),
        ("BlkioDeviceWriteIOps", Any),
        ("CpuPeriod", Any),
        ("CpuQuota", Any),
        ("CpuRealtimePeriod", Any),
        ("CpuRealtimeRuntime", Any),
        ("CpusetCpus", Any),
        ("CpusetMems", Any),
        ("Devices", Any),
        ("DeviceCgroupRules", Any),
        ("DeviceRequests", Any),
        ("KernelMemory", Any),
        ("KernelMemoryTCP", Any),
        ("MemoryReservation", Any),
        ("MemorySwap", Any),
        ("MemorySwappiness", Any),
        ("OomKillDisable", Any),
        ("PidsLimit", Any),
        ("Ulimits", Any),
        ("CpuCount", Any),
        ("CpuPercent", Any),
        ("IOMaximumIOps", Any),
        ("IOMaximumBandwidth", Any),
        ("Mounts", ArrayOf(&MOUNT)),
        ("MaskedPaths", Any),
        ("ReadonlyPaths", Any),
        ("Init", Any),
        ("Annotations", Any),
    ],
};

pub static LOG_CONFIG: Schema = Schema {
    name: "LogConfig",
    fields: &[("Type", Any), ("Config", Any)],
};

pub static RESTART_POLICY: Schema = Schema {
    name: "RestartPolicy",
    fields: &[("Name", Any), ("MaximumRetryCount", Any)],
};

pub static MOUNT: Schema = Schema {
    name: "a mount",
    fields: &[
        ("Type", Any),
        ("Source", Any),
        ("Target", Any),
        ("ReadOnly", Any),
        ("Consistency", Any),
        ("BindOptions", Obj(&BIND_OPTIONS)),
        ("VolumeOptions", Obj(&VOLUME_OPTIONS)),
        ("TmpfsOptions", Obj(&TMPFS_OPTIONS)),
    ],
};

pub static BIND_OPTIONS: Schema = Schema {
    name: "BindOptions",
    fields: &[
        ("Propagation", Any),
        ("NonRecursive", Any),
        ("CreateMountpoint", Any),
        ("ReadOnlyNonRecursive", Any),
        ("ReadOnlyForceRecursive", Any),
    ],
};

pub static VOLUME_OPTIONS: Schema = Schema {
    name: "VolumeOptions",
    fields: &[
        ("NoCopy", Any),
        ("Labels", Any),
        ("DriverConfig", Obj(&DRIVER_CONFIG)),
        ("Subpath", Any),
    ],
};

pub static DRIVER_CONFIG: Schema = Schema {
    name: "DriverConfig",
    fields: &[("Name", Any), ("Options", Any)],
};

pub static TMPFS_OPTIONS: Schema = Schema {
    name: "TmpfsOptions",
    fields: &[("SizeBytes", Any), ("Mode", Any), ("Options", Any)],
};

pub static NETWORKING_CONFIG: Schema = Schema {
    name: "NetworkingConfig",
    fields: &[("EndpointsConfig", MapOf(&ENDPOINT))],
};

pub static ENDPOINT: Schema = Schema {
    name: "an endpoint configuration",
    fields: &[
        ("IPAMConfig", Obj(&ENDPOINT_IPAM)),
        ("Links", Any),
        ("Aliases", Any),
        ("NetworkID", Any),
        ("EndpointID", Any),
        ("Gateway", Any),
        ("IPAddress", Any),
        ("IPPrefixLen", Any),
        ("IPv6Gateway", Any),
        ("GlobalIPv6Address", Any),
        ("GlobalIPv6PrefixLen", Any),
        ("MacAddress", Any),
        ("DriverOpts", Any),
        // Newer API versions (sent by newer clients even when downgraded); harmless on older
        // engines, which ignore them.
        ("DNSNames", Any),
        ("GwPriority", Any),
    ],
};

pub static ENDPOINT_IPAM: Schema = Schema {
    name: "IPAMConfig",
    fields: &[
        ("IPv4Address", Any),
        ("IPv6Address", Any),
        ("LinkLocalIPs", Any),
    ],
};

/// `POST /containers/{id}/exec`.
pub static EXEC_CREATE: Schema = Schema {
    name: "the exec configuration",
    fields: &[
        ("User", Any),
        ("Privileged", Any),
        ("Tty", Any),
        ("ConsoleSize", Any),
        ("AttachStdin", Any),
        ("AttachStderr", Any),
        ("AttachStdout", Any),
        ("Detach", Any),
        ("DetachKeys", Any),
        ("Env", Any),
        ("WorkingDir", Any),
        ("Cmd", Any),
    ],
};

/// `POST /exec/{id}/start`.
pub static EXEC_START: Schema = Schema {
    name: "the exec start options",
    fields: &[("Detach", Any), ("Tty", Any), ("ConsoleSize", Any)],
};

/// `POST /networks/create`.
pub static NETWORK_CREATE: Schema = Schema {
    name: "the network configuration",
    fields: &[
        ("Name", Any),
        ("CheckDuplicate", Any),
        ("Driver", Any),
        ("Scope", Any),
        ("EnableIPv6", Any),
        ("IPAM", Obj(&IPAM)),
        ("Internal", Any),
        ("Attachable", Any),
        ("Ingress", Any),
        ("ConfigOnly", Any),
        ("ConfigFrom", Any),
        ("Options", Any),
        ("Labels", Any),
    ],
};

pub static IPAM: Schema = Schema {
    name: "IPAM",
    fields: &[("Driver", Any), ("Options", Any), ("Config", Any)],
};

/// `POST /networks/{id}/connect`.
pub static NETWORK_CONNECT: Schema = Schema {
    name: "the network connect options",
    fields: &[("Container", Any), ("EndpointConfig", Obj(&ENDPOINT))],
};

/// `POST /networks/{id}/disconnect`.
pub static NETWORK_DISCONNECT: Schema = Schema {
    name: "the network disconnect options",
    fields: &[("Container", Any), ("Force", Any)],
};

/// `POST /volumes/create`.
pub static VOLUME_CREATE: Schema = Schema {
    name: "the volume configuration",
    fields: &[
        ("Name", Any),
        ("Driver", Any),
        ("DriverOpts", Any),
        ("Labels", Any),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_trailing_data_are_refused() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert_eq!(parse_strict(br#"{"a":1} {}"#), Err(BodyError::Trailing));
        assert_eq!(parse_strict(br#"{"a":1}  "#).unwrap()["a"], 1);
    }

    #[test]
    fn keys_fold_like_go() {
        let v = parse_strict(
            "{\"hostconfig\":{\"Bind\\u017f\":[],\"Networ\\u212aMode\":\"x\"}}".as_bytes(),
        )
        .unwrap();
        let m = normalize(v, &CREATE).unwrap();
        let hc = m["HostConfig"].as_object().unwrap();
        assert!(hc.contains_key("Binds"));
        assert_eq!(hc["NetworkMode"], "x");
        let v = parse_strict(br#"{"HostConfig":{},"hostconfig":{}}"#).unwrap();
        assert!(matches!(
            normalize(v, &CREATE),
            Err(BodyError::Duplicate { .. })
        ));
        let v = parse_strict(br#"{"Privileged":true}"#).unwrap();
        assert!(matches!(
            normalize(v, &CREATE),
            Err(BodyError::Unknown { .. })
        ));
        // The dotless/dotted i are not in an ASCII folding orbit: unknown, refused.
        let v = parse_strict("{\"HostConf\\u0131g\":{}}".as_bytes()).unwrap();
        assert!(matches!(
            normalize(v, &CREATE),
            Err(BodyError::Unknown { .. })
        ));
    }
}
