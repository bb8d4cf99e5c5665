//! Daemon events (`GET /events`) of berth's own objects, as plain berth types.

use std::collections::HashMap;

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use crate::{DockerEngine, EngineError, Labels};

/// One container, network or volume event (`create`, `start`, `die`, `oom`, `destroy`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonEvent {
    /// `container`, `network` or `volume`.
    pub kind: String,
    pub action: String,
    pub id: String,
    pub name: Option<String>,
    /// For `die`.
    pub exit_code: Option<i64>,
    /// The object's labels (for containers; the daemon sends them with each event).
    pub labels: Labels,
    /// Unix time in nanoseconds.
    pub time_nano: Option<i64>,
}

impl DockerEngine {
    pub(crate) fn do_events(
        &self,
        label: &str,
    ) -> BoxStream<'static, Result<DaemonEvent, EngineError>> {
        let filters = HashMap::from([
            ("label".to_string(), vec![label.to_string()]),
            (
                "type".to_string(),
                vec!["container".into(), "network".into(), "volume".into()],
            ),
        ]);
        // `since` the current second: nothing is missed between this call and the request.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let opts = EventsOptionsBuilder::default()
            .since(&now.to_string())
            .filters(&filters)
            .build();
        self.docker
            .events(Some(opts))
            .map_err(|e| EngineError::from_bollard(e, || "daemon events".to_string()))
            .map_ok(|m| {
                let actor = m.actor.unwrap_or_default();
                let mut attributes = actor.attributes.unwrap_or_default();
                let name = attributes.remove("name");
                let exit_code = attributes.remove("exitCode").and_then(|c| c.parse().ok());
                DaemonEvent {
                    kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
                    action: m.action.unwrap_or_default(),
                    id: actor.id.unwrap_or_default(),
                    name,
                    exit_code,
                    labels: attributes
                        .into_iter()
                        .filter(|(k, _)| k.starts_with("io.berth."))
                        .collect(),
                    time_nano: m.time_nano,
                }
            })
            .boxed()
    }
}
