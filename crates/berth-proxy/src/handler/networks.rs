//! Networks: list (own only), create (bridge only, namespaced name), connect/disconnect of
//! owned containers to owned networks.

use http::Method;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::*;

impl Handler<'_> {
    pub(super) async fn network_list(&self) -> Answer {
        let qs = self.scoped_filters_query()?;
        self.rewritten(
            Method::GET,
            &format!("{}{qs}", self.path(&["networks"])),
            None,
            |scope, v| {
                if let Value::Array(a) = v {
                    a.retain(|n| n["Id"].as_str().is_some_and(|id| scope.owns_network(id)));
                }
            },
        )
        .await
    }

    pub(super) async fn network_create(&self, body: Incoming) -> Answer {
        let mut cfg = json_body(self.state, body, &body::NETWORK_CREATE).await?;
        policy::check_network_create(&cfg)?;
        let name = string_field(&cfg, "Name")?.to_string();
        let dn = self.new_name(&name)?;
        cfg.insert("Name".into(), json!(dn));
        cfg.insert("CheckDuplicate".into(), json!(true));
        let labels = policy::own_labels(cfg.get("Labels"), self.scope().labels())?;
        cfg.insert("Labels".into(), labels);
        self.rewritten(
            Method::POST,
            &self.path(&["networks", "create"]),
            Some(Value::Object(cfg)),
            |scope, v| {
                if let Some(id) = v["Id"].as_str() {
                    scope.add_network(id);
                }
            },
        )
        .await
    }

    pub(super) async fn network_connect(&self, r: &str, action: &str, body: Incoming) -> Answer {
        let schema = if action == "connect" {
            &body::NETWORK_CONNECT
        } else {
            &body::NETWORK_DISCONNECT
        };
        let mut cfg = json_body(self.state, body, schema).await?;
        let id = self.network(r).await?;
        let c = string_field(&cfg, "Container")?.to_string();
        let cid = self.container(&c).await?;
        cfg.insert("Container".into(), json!(cid));
        if let Some(Value::Object(ep)) = cfg.get_mut("EndpointConfig") {
            policy::check_endpoint(ep)?;
            if let Some(l) = self.links(ep).await? {
                ep.insert("Links".into(), l);
            }
        }
        let path = self.path(&["networks", &id, action]);
        self.rewritten(Method::POST, &path, Some(Value::Object(cfg)), |_, _| {})
            .await
    }
}
