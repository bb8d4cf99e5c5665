//! Execs: created only in owned containers and never privileged; started only when owned.

use http::Method;
use hyper::body::Incoming;
use serde_json::Value;

use super::*;

impl Handler<'_> {
    pub(super) async fn exec_create(&self, r: &str, body: Incoming) -> Answer {
        let cfg = json_body(self.state, body, &body::EXEC_CREATE).await?;
        policy::check_exec(&cfg)?;
        let id = self.container(r).await?;
        let path = self.path(&["containers", &id, "exec"]);
        self.rewritten(Method::POST, &path, Some(Value::Object(cfg)), |scope, v| {
            if let Some(id) = v["Id"].as_str() {
                scope.add_exec(id);
            }
        })
        .await
    }

    pub(super) async fn exec_start(
        &self,
        id: &str,
        body: Incoming,
        wants_upgrade: bool,
        client: hyper::upgrade::OnUpgrade,
    ) -> Answer {
        let id = self.scope().resolve_exec(id)?;
        let cfg = json_body(self.state, body, &body::EXEC_START).await?;
        let detach = cfg.get("Detach") == Some(&Value::Bool(true));
        let path = self.path(&["exec", &id, "start"]);
        let body = forward::full(Value::Object(cfg).to_string());
        if wants_upgrade && !detach {
            return self.upgrade(path, body, client).await;
        }
        self.pass(Method::POST, &path, body, Some("application/json"))
            .await
    }
}
