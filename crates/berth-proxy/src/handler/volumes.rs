//! Volumes: list (own only), create (local driver, no driver options, namespaced name); also
//! the implicit creation of named volumes a container mounts.

use http::{HeaderValue, Method, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::*;

impl Handler<'_> {
    pub(super) async fn create_volume(
        &self,
        dn: &str,
        mut spec: Map<String, Value>,
    ) -> Result<Value, Refusal> {
        spec.insert("Name".into(), json!(dn));
        let labels = policy::own_labels(spec.get("Labels"), self.scope().labels())?;
        spec.insert("Labels".into(), labels);
        let (status, _, v) = self
            .call(
                Method::POST,
                &self.path(&["volumes", "create"]),
                Some(Value::Object(spec)),
            )
            .await?;
        if !status.is_success() {
            let msg = v["message"].as_str().unwrap_or("volume create failed");
            return Err(Refusal::Daemon(crate::rewrite::strip_message(
                self.scope(),
                msg,
            )));
        }
        // Volume create returns an existing volume of that name: only ours may be adopted.
        if crate::rewrite::label(&v, crate::scope::SCOPE_LABEL) != Some(self.scope().name())
            || crate::rewrite::label(&v, berth_engine::labels::OWNER)
                != self
                    .scope()
                    .labels()
                    .get(berth_engine::labels::OWNER)
                    .map(String::as_str)
        {
            return Err(Refusal::rule(
                rules::NAMES,
                format!("volume `{dn}` exists and is not this job's"),
            ));
        }
        self.scope().add_volume(dn);
        Ok(v)
    }

    pub(super) async fn volume_list(&self) -> Answer {
        let qs = self.scoped_filters_query()?;
        self.rewritten(
            Method::GET,
            &format!("{}{qs}", self.path(&["volumes"])),
            None,
            |scope, v| {
                if let Some(Value::Array(a)) = v.get_mut("Volumes") {
                    a.retain(|n| n["Name"].as_str().is_some_and(|n| scope.owns_volume(n)));
                }
            },
        )
        .await
    }

    pub(super) async fn volume_create(&self, body: Incoming) -> Answer {
        let cfg = json_body(self.state, body, &body::VOLUME_CREATE).await?;
        policy::check_volume_create(&cfg)?;
        let name = string_field(&cfg, "Name")?.to_string();
        let name = if name.is_empty() { random_name() } else { name };
        let dn = self.new_name(&name)?;
        let mut spec = Map::new();
        if let Some(l) = cfg.get("Labels") {
            spec.insert("Labels".into(), l.clone());
        }
        let mut v = self.create_volume(&dn, spec).await?;
        strip_names(self.scope(), &mut v);
        let mut out = Response::new(forward::full(v.to_string()));
        *out.status_mut() = StatusCode::CREATED;
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(out)
    }
}
