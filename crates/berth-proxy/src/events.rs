//! `GET /events`, filtered to the scope's objects and with scoped names stripped.
//!
//! Owns: the line-by-line transform of the daemon's event stream (one JSON object per line).
//! Ownership is checked per event, at the time it arrives, against the scope's registry, so
//! objects created after the subscription are included and others' never are.
//! Must not: pass through any event it cannot parse or attribute to an owned object.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use crate::forward::{BoxBody, BoxError, Daemon};
use crate::parse::{Query, QueryOut, Target};
use crate::refusal::Refusal;
use crate::rewrite::strip_names;
use crate::scope::Scope;
use crate::state::State;

/// Longest event line buffered.
const MAX_LINE: usize = 1 << 20;

pub async fn events(
    state: &Arc<State>,
    target: &Target,
    q: &Query,
) -> Result<Response<BoxBody>, Refusal> {
    let mut qo = QueryOut::new();
    qo.copy(q, &["since", "until"])?;
    if let Some(f) = q.single("filters")? {
        // Validated and re-serialized; ownership is enforced on each event below.
        let v = crate::body::parse_strict(f.as_bytes())
            .map_err(|e| Refusal::bad(format!("filters: {e}")))?;
        qo.push("filters", &v.to_string());
    }
    let path = format!("{}{}", target.forward_path(&["events"]), qo.finish());
    let req = Daemon::request(Method::GET, &path)
        .body(crate::forward::empty())
        .map_err(|e| Refusal::Daemon(e.to_string()))?;
    let resp = state
        .daemon
        .send(req)
        .await
        .map_err(|e| Refusal::Daemon(e.to_string()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let bytes = crate::forward::read_limited(resp.into_body(), 1 << 20)
            .await
            .map_err(|e| Refusal::Daemon(e.to_string()))?;
        let mut out = Response::new(crate::forward::full(bytes));
        *out.status_mut() = status;
        return Ok(out);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let mut body = resp.into_body();
    let st = state.clone();
    state.tracker.spawn(async move {
        let mut buf = BytesMut::new();
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                () = st.cancel.cancelled() => return,
                () = tx.closed() => return,
            };
            let Some(Ok(frame)) = frame else { return };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(nl + 1);
                if let Some(out) = filter_event(&st.scope, &line)
                    && tx.send(out).await.is_err()
                {
                    return;
                }
            }
            if buf.len() > MAX_LINE {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let mut out = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(out)
}

/// One event line → the rewritten line, or `None` when it is not the scope's.
pub fn filter_event(scope: &Scope, line: &[u8]) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(line).ok()?;
    let ty = v["Type"].as_str()?.to_string();
    let id = v["Actor"]["ID"].as_str()?.to_string();
    let owned = match ty.as_str() {
        "container" => scope.owns_container(&id),
        "network" => scope.owns_network(&id),
        "volume" => scope.owns_volume(&id),
        _ => false,
    };
    if !owned {
        return None;
    }
    if let Some(Value::Object(attrs)) = v.get_mut("Actor").and_then(|a| a.get_mut("Attributes")) {
        // A network event names the container it concerns: only owned ones may show.
        if let Some(c) = attrs.get("container").and_then(Value::as_str)
            && !scope.owns_container(c)
        {
            return None;
        }
    }
    strip_names(scope, &mut v);
    let mut s = v.to_string();
    s.push('\n');
    Some(Bytes::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owned_events_pass_with_names_stripped() {
        let scope = Scope::new("j1", Default::default()).expect("scope");
        scope.add_container("aaa");
        scope.add_network("nnn");
        let own = br#"{"Type":"container","Action":"start","Actor":{"ID":"aaa","Attributes":{"name":"j1_db"}}}"#;
        let out = filter_event(&scope, own).expect("own event passes");
        assert!(String::from_utf8_lossy(&out).contains(r#""name":"db""#));
        for foreign in [
            &br#"{"Type":"container","Action":"start","Actor":{"ID":"bbb","Attributes":{"name":"j2_db"}}}"#[..],
            br#"{"Type":"network","Action":"connect","Actor":{"ID":"nnn","Attributes":{"container":"bbb"}}}"#,
            br#"{"Type":"image","Action":"tag","Actor":{"ID":"sha256:x","Attributes":{}}}"#,
            br#"{"Type":"container","Actor":{}}"#,
            b"not json",
        ] {
            assert!(filter_event(&scope, foreign).is_none());
        }
    }
}
