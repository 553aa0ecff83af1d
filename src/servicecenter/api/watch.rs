//! Watch and list-watch over WebSocket (`GET .../microservices/{serviceId}/watcher` and
//! `.../listwatcher`): a consumer hears about the instances of its providers.
//!
//! Service-center 1.3.0 behaviour (`server/service/event/*`, `server/broker/websocket.go`,
//! servicecomb-notes c.8): each text frame is
//! `{"action":"CREATE"|"UPDATE"|"DELETE"|"INIT","key":{tenant, appId, serviceName, version,
//! environment},"instance":{…}}`; list-watch first sends one `INIT` frame per existing
//! provider instance. An unknown consumer gets the text `Service does not exist.` and the
//! socket ends; a consumer deleted later gets `Service does not exit.` (sic). The server pings
//! every 30 s.
//!
//! Level-triggered (DESIGN.md decision 1): every revision bump ([`ChangeFeed`](crate::servicecenter::registry::changelog::ChangeFeed)) makes each
//! watcher recompute the set of its providers' instances and send the difference, so a
//! missed wake-up costs latency, never an event.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::extract::{ServiceAt, Tenant};
use crate::servicecenter::core::Core;
use crate::servicecenter::error::ScError;
use crate::servicecenter::registry::dependencies::providers_of;
use crate::servicecenter::registry::{MicroServiceInstance, Registry};

/// How often the server pings a watcher.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// The `key` of a watch event (service-center's `MicroServiceKey`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchKey {
    /// `domain/project`.
    pub tenant: String,
    /// The provider's appId.
    pub app_id: String,
    /// The provider's serviceName.
    pub service_name: String,
    /// The provider's version.
    pub version: String,
    /// The provider's environment, left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub environment: String,
}

/// One text frame.
#[derive(Debug, Serialize)]
struct Event<'a> {
    action: &'a str,
    key: &'a WatchKey,
    instance: &'a MicroServiceInstance,
}

type Snapshot = BTreeMap<(String, String), (WatchKey, MicroServiceInstance)>;

/// The instances of every provider of `consumer_id`; `None` when the consumer is gone.
fn snapshot(reg: &Registry, domain: &str, project: &str, consumer_id: &str) -> Option<Snapshot> {
    reg.service(domain, project, consumer_id).ok()?;
    let mut out = Snapshot::new();
    for pid in providers_of(reg, consumer_id) {
        let Some(p) = reg.entry(&pid) else { continue };
        let key = WatchKey {
            tenant: format!("{}/{}", p.domain, p.project),
            app_id: p.service.app_id.clone(),
            service_name: p.service.service_name.clone(),
            version: p.service.version.clone(),
            environment: p.service.environment.clone(),
        };
        for (iid, r) in &p.instances {
            out.insert((pid.clone(), iid.clone()), (key.clone(), r.body.clone()));
        }
    }
    Some(out)
}

/// The frames that turn `old` into `new`: CREATE, UPDATE, DELETE.
fn diff(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, (key, inst)) in new {
        let action = match old.get(k) {
            None => "CREATE",
            Some((_, o)) if o != inst => "UPDATE",
            Some(_) => continue,
        };
        out.push(frame(action, key, inst));
    }
    for (k, (key, inst)) in old {
        if !new.contains_key(k) {
            out.push(frame("DELETE", key, inst));
        }
    }
    out
}

fn frame(action: &str, key: &WatchKey, instance: &MicroServiceInstance) -> String {
    serde_json::to_string(&Event {
        action,
        key,
        instance,
    })
    .unwrap_or_default()
}

/// `GET .../watcher` and `.../listwatcher` (`list` true: INIT frames first).
pub async fn handle(
    core: Core,
    domain: String,
    project: String,
    service_id: String,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    list: bool,
) -> Response {
    match ws {
        Ok(ws) => ws
            .on_upgrade(move |socket| run(core, domain, project, service_id, socket, list))
            .into_response(),
        Err(e) => ScError::invalid(format!("a websocket upgrade is required: {e}")).into_response(),
    }
}

async fn run(
    core: Core,
    domain: String,
    project: String,
    consumer_id: String,
    mut socket: WebSocket,
    list: bool,
) {
    let (mut rx, first) = {
        let reg = core.lock();
        (
            reg.changes.subscribe(),
            snapshot(&reg, &domain, &project, &consumer_id),
        )
    };
    let Some(mut current) = first else {
        let _ = socket
            .send(Message::Text("Service does not exist.".into()))
            .await;
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    tracing::debug!(consumer_id = %consumer_id, list, "watcher connected");
    if list {
        for (key, inst) in current.values() {
            if socket
                .send(Message::Text(frame("INIT", key, inst).into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let next = snapshot(&core.lock(), &domain, &project, &consumer_id);
                let Some(next) = next else {
                    let _ = socket.send(Message::Text("Service does not exit.".into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                };
                let mut failed = false;
                for f in diff(&current, &next) {
                    if socket.send(Message::Text(f.into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    break;
                }
                current = next;
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::debug!(consumer_id = %consumer_id, "watcher gone");
}

/// The watch routes (`.../watcher`, `.../listwatcher`).
pub fn routes() -> axum::Router<Core> {
    const S: &str = "/v4/{project}/registry/microservices/{service_id}";
    axum::Router::new()
        .route(&format!("{S}/watcher"), axum::routing::get(watcher))
        .route(&format!("{S}/listwatcher"), axum::routing::get(listwatcher))
}

/// Route handler of `GET .../watcher`.
pub async fn watcher(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id,
    }: ServiceAt,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    handle(core, domain, project, service_id, ws, false).await
}

/// Route handler of `GET .../listwatcher`.
pub async fn listwatcher(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id,
    }: ServiceAt,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    handle(core, domain, project, service_id, ws, true).await
}
