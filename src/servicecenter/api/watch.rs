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
//! Level-triggered (DESIGN.md decision 1) and O(changes): a watcher is woken when one of
//! its providers (or anything the change log cannot name) changed (`Core::watcher`: one
//! task per core reads the log once per revision and wakes only the watchers concerned).
//! It then reads, under the registry lock, only what the change log
//! ([`ChangeLog`](crate::servicecenter::registry::changelog::ChangeLog)) names since the
//! revision it last saw: the current JSON of the changed instances of its providers (and
//! the shared entry of a provider that is new to it or whose service changed, whose every
//! instance is turned into JSON after the lock is released, one watcher at a time, on the
//! blocking pool; its providers are resolved again only when a service or its dependency
//! rules changed). It compares that with what it sent, builds the frames and sends them,
//! flushed once per batch. Watchers take turns for that work (one at a time, `TURNS`), so
//! the requests that arrive meanwhile wait for one watcher, not for every watcher woken.
//! Entries name what changed, not how, and the watcher compares with the registry as it is
//! now, so a missed wake-up costs latency, never an event; a watcher behind the log's oldest
//! entry (or after a reload from the store) reads every instance of its providers again.
//!
//! Bounded (DESIGN.md decision 11): at most [`Core::max_watchers`] watchers at once, one
//! more gets service-center's `400100 Not enough quota` (its code for "a resource limit is
//! reached"; service-center itself has no watcher limit); inbound messages and frames are
//! at most [`MAX_INBOUND_BYTES`] (service-center 1.3.0: 64 bytes, servicecomb-notes c.8),
//! a larger one closes the socket; a client that takes nothing for [`WRITE_TIMEOUT`] loses
//! its watcher (service-center's write timeout). The instance JSON a watcher keeps is shared between the
//! watchers that sent the same text, so many watchers of one large provider cost one copy
//! of its instances plus their ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::extract::{ServiceAt, Tenant};
use crate::servicecenter::core::{Core, Watcher};
use crate::servicecenter::error::{ScError, NOT_ENOUGH_QUOTA};
use crate::servicecenter::registry::changelog::Changed;
use crate::servicecenter::registry::dependencies::{providers_of, DependencyKey};
use crate::servicecenter::registry::{Registry, ServiceEntry};

/// How often the server pings a watcher.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// A watcher whose client takes nothing for this long is ended (service-center 1.3.0's write
/// timeout, servicecomb-notes c.8), with what it was about to be sent.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest message or frame a watcher may send, in bytes: watchers send nothing but
/// pings, pongs and a close (control frames carry at most 125 bytes).
pub const MAX_INBOUND_BYTES: usize = 4 * 1024;

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

impl WatchKey {
    fn of(p: &ServiceEntry) -> WatchKey {
        WatchKey {
            tenant: format!("{}/{}", p.domain, p.project),
            app_id: p.service.app_id.clone(),
            service_name: p.service.service_name.clone(),
            version: p.service.version.clone(),
            environment: p.service.environment.clone(),
        }
    }
}

/// One text frame, `{"action":…,"key":{…},"instance":{…}}`: what serde writes for a struct
/// of these three fields, from their JSON.
fn frame(action: &str, key: &str, instance: &str) -> String {
    let mut out = String::with_capacity(40 + key.len() + instance.len());
    out.push_str("{\"action\":\"");
    out.push_str(action);
    out.push_str("\",\"key\":");
    out.push_str(key);
    out.push_str(",\"instance\":");
    out.push_str(instance);
    out.push('}');
    out
}

/// One event to send: its frame is written when it is sent ([`frame`]), so a batch of
/// them (a list-watch's `INIT`s) holds shared texts, not frames.
struct Event {
    action: &'static str,
    key: Arc<str>,
    instance: Arc<str>,
}

impl Event {
    fn new(action: &'static str, key: &Arc<str>, instance: &Arc<str>) -> Event {
        Event {
            action,
            key: key.clone(),
            instance: instance.clone(),
        }
    }

    fn text(&self) -> String {
        frame(self.action, &self.key, &self.instance)
    }
}

/// JSON text, or `None` (logged) in the unexpected case that it cannot be written.
fn json<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value)
        .map_err(|e| tracing::warn!(error = %e, "a watch event cannot be written"))
        .ok()
}

/// What a watcher has sent: each provider's key and the JSON of each of its instances.
#[derive(Default)]
struct Sent {
    /// The registry revision this reflects; `None` before the first read.
    rev: Option<u64>,
    /// The consumer's dependency rules when its providers were last resolved.
    rules: Option<BTreeSet<DependencyKey>>,
    /// By provider serviceId.
    providers: BTreeMap<String, Provider>,
}

struct Provider {
    key: Arc<str>,
    /// Instance JSON by instanceId (both shared, see [`intern`]).
    instances: BTreeMap<Arc<str>, Arc<str>>,
}

/// What a watcher read under the lock ([`read`]): as [`Fresh`], but the providers to read
/// in full are their entries as shared at that revision, turned into JSON outside the lock
/// ([`Read::render`]). At the first read of a list-watch that is every instance of every
/// provider; 200 watchers of a provider of 2,000 instances connecting at once rendered
/// 400,000 instances under the lock, and heartbeats waited up to 192 ms (hostile bench,
/// finding 3).
struct Read {
    rev: u64,
    resolved: Option<(Option<BTreeSet<DependencyKey>>, BTreeSet<String>)>,
    /// Providers to read in full: serviceId and entry.
    whole: Vec<(String, Arc<ServiceEntry>)>,
    items: Vec<(String, String, Option<String>)>,
}

impl Read {
    /// Turns the providers read in full into JSON.
    fn render(self) -> Fresh {
        Fresh {
            rev: self.rev,
            resolved: self.resolved,
            whole: self
                .whole
                .iter()
                .filter_map(|(pid, entry)| whole(pid, entry))
                .collect(),
            items: self.items,
        }
    }
}

/// Renders that share the CPUs with the request handlers at once: the rest wait their turn.
static RENDERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// [`Read::render`], on tokio's blocking pool (where the OS shares the CPUs with the
/// runtime's workers, so the requests they serve go on) and one at a time, when it renders
/// providers in full; `None` if the render failed.
async fn render(read: Read) -> Option<Fresh> {
    if read.whole.is_empty() {
        return Some(read.render());
    }
    let _turn = RENDERS.acquire().await.ok()?;
    tokio::task::spawn_blocking(move || read.render())
        .await
        .ok()
}

/// What a watcher read, as JSON, applied to [`Sent`] outside the lock.
struct Fresh {
    rev: u64,
    /// The consumer's rules and providers, when resolved again.
    resolved: Option<(Option<BTreeSet<DependencyKey>>, BTreeSet<String>)>,
    /// Providers read in full.
    whole: Vec<Whole>,
    /// Single instances of the other providers: serviceId, instanceId, JSON (`None`: gone).
    items: Vec<(String, String, Option<String>)>,
}

/// A provider read in full.
struct Whole {
    /// Its serviceId.
    pid: String,
    /// Its key's JSON.
    key: String,
    /// Every instance's id and JSON.
    instances: Vec<(String, String)>,
}

/// Every instance of provider `pid` (service `p`).
fn whole(pid: &str, p: &ServiceEntry) -> Option<Whole> {
    let key = json(&WatchKey::of(p))?;
    let instances = p
        .instances
        .iter()
        .filter_map(|(iid, r)| Some((iid.clone(), json(&r.body)?)))
        .collect();
    Some(Whole {
        pid: pid.to_owned(),
        key,
        instances,
    })
}

/// Under the lock: what changed for the watcher of `consumer_id` since `sent.rev`; O(the
/// change log's entries since then + the instances of providers read in full). `None` when
/// the consumer is gone.
fn read(
    reg: &Registry,
    domain: &str,
    project: &str,
    consumer_id: &str,
    sent: &Sent,
) -> Option<Read> {
    reg.service(domain, project, consumer_id).ok()?;
    let rev = reg.revision();
    let rules = reg.dependencies.of(consumer_id);
    let mut fresh = Read {
        rev,
        resolved: None,
        whole: Vec::new(),
        items: Vec::new(),
    };
    // Every tenant: a watcher keeps only its providers' changes anyway.
    let changes = sent.rev.and_then(|since| reg.changelog.since(since, None));
    let Some(changes) = changes else {
        // Everything again (first read, or the log no longer reaches back to `sent.rev`).
        let providers: BTreeSet<String> = providers_of(reg, consumer_id).into_iter().collect();
        fresh.whole = providers
            .iter()
            .filter_map(|pid| Some((pid.clone(), reg.shared_entry(pid)?)))
            .collect();
        fresh.resolved = Some((rules.cloned(), providers));
        return Some(fresh);
    };
    let changed_services: BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Changed::Service { service_id } => Some(service_id.as_str()),
            Changed::Instance { .. } => None,
        })
        .collect();
    let providers: BTreeSet<String> =
        if !changed_services.is_empty() || rules != sent.rules.as_ref() {
            let now: BTreeSet<String> = providers_of(reg, consumer_id).into_iter().collect();
            fresh.resolved = Some((rules.cloned(), now.clone()));
            now
        } else {
            sent.providers.keys().cloned().collect()
        };
    let mut in_full = BTreeSet::new();
    for pid in &providers {
        if !sent.providers.contains_key(pid) || changed_services.contains(pid.as_str()) {
            in_full.insert(pid.as_str());
            if let Some(entry) = reg.shared_entry(pid) {
                fresh.whole.push((pid.clone(), entry));
            }
        }
    }
    for c in changes {
        let Changed::Instance {
            service_id,
            instance_id,
        } = c
        else {
            continue;
        };
        if !providers.contains(service_id) || in_full.contains(service_id.as_str()) {
            continue;
        }
        let body = reg
            .entry(service_id)
            .and_then(|p| p.instances.get(instance_id))
            .and_then(|r| json(&r.body));
        fresh
            .items
            .push((service_id.clone(), instance_id.clone(), body));
    }
    Some(fresh)
}

/// Outside the lock: applies `fresh` to `sent` and returns the frames that say so (`action`
/// for new instances: `INIT` on a list-watch's first read, else `CREATE`).
fn apply(sent: &mut Sent, fresh: Fresh, new_action: &'static str) -> Vec<Event> {
    let mut out = Vec::new();
    sent.rev = Some(fresh.rev);
    if let Some((rules, providers)) = fresh.resolved {
        sent.rules = rules;
        let gone: Vec<String> = sent
            .providers
            .keys()
            .filter(|pid| !providers.contains(*pid))
            .cloned()
            .collect();
        for pid in gone {
            if let Some(p) = sent.providers.remove(&pid) {
                for inst in p.instances.values() {
                    out.push(Event::new("DELETE", &p.key, inst));
                }
            }
        }
    }
    for Whole {
        pid,
        key,
        instances,
    } in fresh.whole
    {
        let key = intern(key);
        let old = sent
            .providers
            .remove(&pid)
            .map(|p| p.instances)
            .unwrap_or_default();
        let mut now = BTreeMap::new();
        for (iid, body) in instances {
            let (iid, body) = match old.get_key_value(iid.as_str()) {
                Some((i, o)) if **o == *body => (i.clone(), o.clone()),
                Some((i, _)) => {
                    let body = intern(body);
                    out.push(Event::new("UPDATE", &key, &body));
                    (i.clone(), body)
                }
                None => {
                    let body = intern(body);
                    out.push(Event::new(new_action, &key, &body));
                    (intern(iid), body)
                }
            };
            now.insert(iid, body);
        }
        for (iid, body) in &old {
            if !now.contains_key(iid) {
                out.push(Event::new("DELETE", &key, body));
            }
        }
        sent.providers.insert(
            pid,
            Provider {
                key,
                instances: now,
            },
        );
    }
    for (pid, iid, body) in fresh.items {
        let Some(p) = sent.providers.get_mut(&pid) else {
            continue;
        };
        match (body, p.instances.get(iid.as_str())) {
            (Some(body), Some(o)) if **o == *body => {}
            (Some(body), old) => {
                let action = if old.is_some() { "UPDATE" } else { new_action };
                let body = intern(body);
                out.push(Event::new(action, &p.key, &body));
                p.instances.insert(intern(iid), body);
            }
            (None, Some(_)) => {
                if let Some(old) = p.instances.remove(iid.as_str()) {
                    out.push(Event::new("DELETE", &p.key, &old));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// Texts shared by the watchers that hold equal ones (instance ids, instance and key JSON),
/// by hash;
/// entries whose text no watcher holds any more are swept as the table grows.
struct Interner {
    hasher: RandomState,
    texts: HashMap<u64, Weak<str>>,
    /// `texts.len()` after the last sweep.
    swept: usize,
}

/// One shared copy of `text`.
fn intern(text: String) -> Arc<str> {
    static TABLE: OnceLock<Mutex<Interner>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Mutex::new(Interner {
            hasher: RandomState::new(),
            texts: HashMap::new(),
            swept: 0,
        })
    });
    let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
    let hash = t.hasher.hash_one(text.as_str());
    if let Some(shared) = t.texts.get(&hash).and_then(Weak::upgrade) {
        if *shared == *text {
            return shared;
        }
    }
    let shared: Arc<str> = Arc::from(text);
    t.texts.insert(hash, Arc::downgrade(&shared));
    if t.texts.len() > 2 * t.swept + 1024 {
        t.texts.retain(|_, w| w.strong_count() > 0);
        t.swept = t.texts.len();
    }
    shared
}

/// `GET .../watcher` and `.../listwatcher` (`list` true: INIT frames first).
///
/// # Errors
/// 400001 without a WebSocket upgrade; 400100 when [`Core::max_watchers`] are open.
pub async fn handle(
    core: Core,
    domain: String,
    project: String,
    service_id: String,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    list: bool,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ScError::invalid(format!("a websocket upgrade is required: {e}"))
                .into_response()
        }
    };
    let Some(watcher) = core.watcher() else {
        tracing::warn!(
            max = core.max_watchers(),
            "watcher refused: too many watchers"
        );
        return ScError::new(
            NOT_ENOUGH_QUOTA,
            format!(
                "too many watchers: at most {} at once (--max-watchers)",
                core.max_watchers()
            ),
        )
        .into_response();
    };
    ws.max_message_size(MAX_INBOUND_BYTES)
        .max_frame_size(MAX_INBOUND_BYTES)
        .read_buffer_size(MAX_INBOUND_BYTES)
        .on_upgrade(move |socket| {
            // Counted in `service_center_notify_subscriber_total` while it runs.
            let subscribed = core.metrics().subscribe(&domain);
            let watching = run(core, watcher, domain, project, service_id, socket, list);
            async move {
                watching.await;
                drop(subscribed);
            }
        })
        .into_response()
}

/// Sends `msg`; false when the socket failed or the client took nothing for
/// [`WRITE_TIMEOUT`] (the watcher then ends).
async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Whose turn it is to do a watcher's work on the CPUs: one watcher at a time reads,
/// renders and writes its frames. 200 watchers woken by one change, each a task of its own,
/// filled both workers' run queues, and a heartbeat that arrived then waited behind all of
/// them (hostile bench, finding 3: p99 3.5x unloaded); taking turns, a request waits for at
/// most the watcher that has the turn. A watcher whose client does not take its frames at
/// once gives the turn up and waits for the client without it ([`or_give_up`]).
static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// `fut`, polled once while `turn` is held; if it is not ready then, the turn is given up
/// (set to `None`) and `fut` awaited without it.
async fn or_give_up<F: std::future::Future>(
    fut: F,
    turn: &mut Option<tokio::sync::SemaphorePermit<'static>>,
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    if turn.is_some() {
        if let std::task::Poll::Ready(out) = futures::poll!(fut.as_mut()) {
            return out;
        }
        *turn = None;
    }
    fut.await
}

/// Sends `events` as text frames, written as the socket's buffer fills and flushed once at
/// the end (not one write per frame: a list-watch's `INIT` is one frame per instance); false
/// when the socket failed or the client took nothing for [`WRITE_TIMEOUT`]. `turn` is given
/// up as soon as the client makes it wait ([`or_give_up`]).
async fn send_all(
    socket: &mut WebSocket,
    events: Vec<Event>,
    mut turn: Option<tokio::sync::SemaphorePermit<'static>>,
) -> bool {
    use futures::SinkExt;
    if events.is_empty() {
        return true;
    }
    // One timer for the batch, pushed back after each frame the client took (a timer per
    // frame was a timer-wheel entry per frame).
    let sending = async {
        let mut idle = std::pin::pin!(tokio::time::sleep(WRITE_TIMEOUT));
        for e in events {
            tokio::select! {
                biased;
                fed = socket.feed(Message::Text(e.text().into())) => fed.ok()?,
                () = &mut idle => return None,
            }
            idle.as_mut()
                .reset(tokio::time::Instant::now() + WRITE_TIMEOUT);
        }
        tokio::select! {
            biased;
            flushed = socket.flush() => flushed.ok(),
            () = &mut idle => None,
        }
    };
    or_give_up(sending, &mut turn).await.is_some()
}

/// Under the lock: [`read`], and the watcher follows the providers it resolved.
fn read_and_follow(
    core: &Core,
    watcher: &Watcher,
    (domain, project, consumer_id): (&str, &str, &str),
    sent: &Sent,
) -> Option<Read> {
    let reg = core.lock();
    let fresh = read(&reg, domain, project, consumer_id, sent)?;
    if let Some((_, providers)) = &fresh.resolved {
        watcher.follow(providers);
    }
    Some(fresh)
}

async fn run(
    core: Core,
    watcher: Watcher,
    domain: String,
    project: String,
    consumer_id: String,
    mut socket: WebSocket,
    list: bool,
) {
    let mut sent = Sent::default();
    let at = (domain.as_str(), project.as_str(), consumer_id.as_str());
    let Some(first) = read_and_follow(&core, &watcher, at, &sent) else {
        let _ = send(&mut socket, Message::Text("Service does not exist.".into())).await;
        let _ = send(&mut socket, Message::Close(None)).await;
        return;
    };
    tracing::debug!(consumer_id = %consumer_id, list, "watcher connected");
    let Some(first) = render(first).await else {
        return;
    };
    let init = apply(&mut sent, first, "INIT");
    if list && !send_all(&mut socket, init, TURNS.acquire().await.ok()).await {
        return;
    }
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        tokio::select! {
            () = watcher.woken() => {
                let turn = TURNS.acquire().await.ok();
                let Some(fresh) = read_and_follow(&core, &watcher, at, &sent) else {
                    let _ = send(&mut socket, Message::Text("Service does not exit.".into())).await;
                    let _ = send(&mut socket, Message::Close(None)).await;
                    break;
                };
                let Some(fresh) = render(fresh).await else {
                    break;
                };
                if !send_all(&mut socket, apply(&mut sent, fresh, "CREATE"), turn).await {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if !send(&mut socket, Message::Ping(Vec::new().into())).await {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;
    use crate::servicecenter::registry::changelog::ChangeLog;
    use crate::servicecenter::registry::{MicroService, MicroServiceInstance};

    const D: &str = "default";

    /// What a client that applied every frame holds: instance JSON by (serviceId, instanceId).
    type View = BTreeMap<(String, String), serde_json::Value>;

    fn heard(view: &mut View, events: &[Event]) {
        for e in events {
            let v: serde_json::Value = serde_json::from_str(&e.text()).unwrap();
            let inst = v["instance"].clone();
            let at = (
                inst["serviceId"].as_str().unwrap().to_owned(),
                inst["instanceId"].as_str().unwrap().to_owned(),
            );
            match v["action"].as_str().unwrap() {
                "DELETE" => assert!(view.remove(&at).is_some(), "DELETE of unknown {at:?}"),
                "UPDATE" => assert!(
                    view.insert(at.clone(), inst).is_some(),
                    "UPDATE of new {at:?}"
                ),
                _ => assert!(
                    view.insert(at.clone(), inst).is_none(),
                    "CREATE of known {at:?}"
                ),
            }
        }
    }

    /// What a new list-watcher is sent now.
    fn full(reg: &Registry, consumer: &str) -> View {
        let mut sent = Sent::default();
        let fresh = read(reg, D, D, consumer, &sent).unwrap().render();
        let mut view = View::new();
        heard(&mut view, &apply(&mut sent, fresh, "INIT"));
        view
    }

    fn service(name: &str, version: &str) -> MicroService {
        MicroService {
            app_id: "a".into(),
            service_name: name.into(),
            version: version.into(),
            ..MicroService::default()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register(usize, u8),
        Unregister(usize, u8),
        Status(usize, u8, bool),
        NewVersion(u8),
        Delete(usize),
        Depend(bool),
        Wake,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, 0..6u8).prop_map(|(s, i)| Op::Register(s, i)),
            2 => (0..4usize, 0..6u8).prop_map(|(s, i)| Op::Unregister(s, i)),
            2 => (0..4usize, 0..6u8, any::<bool>()).prop_map(|(s, i, up)| Op::Status(s, i, up)),
            1 => (0..9u8).prop_map(Op::NewVersion),
            1 => (0..4usize).prop_map(Op::Delete),
            1 => any::<bool>().prop_map(Op::Depend),
            3 => Just(Op::Wake),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// A watcher that follows the change log (and, behind a short log, reads everything
        /// again) holds, after each wake-up, what a new watcher would be sent.
        #[test]
        fn incremental_frames_add_up_to_a_full_read(
            ops in prop::collection::vec(op(), 1..60),
            log in prop_oneof![Just(65_536usize), 1..4usize],
        ) {
            let mut reg = Registry::default();
            reg.changelog = ChangeLog::with_capacity(log);
            let (consumer, _) = reg.create_service(D, D, service("c", "1.0.0"), 0).unwrap();
            // Services: provider p 1.0.0 (exact rule), q 1.0.0 (latest rule), other u.
            let mut ids: Vec<Option<String>> = ["p", "q", "u"]
                .iter()
                .map(|n| Some(reg.create_service(D, D, service(n, "1.0.0"), 0).unwrap().0))
                .collect();
            ids.push(None);
            reg.dependencies.add(&consumer, DependencyKey {
                app_id: "a".into(), service_name: "p".into(), version: "1.0.0".into(),
                ..DependencyKey::default()
            });
            let mut sent = Sent::default();
            let mut view = View::new();
            let first = read(&reg, D, D, &consumer, &sent).unwrap().render();
            heard(&mut view, &apply(&mut sent, first, "INIT"));
            for op in ops {
                let now = Instant::now();
                let iid = |i: u8| format!("i{i}");
                match op {
                    Op::Register(s, i) => if let Some(sid) = ids[s].clone() {
                        let inst = MicroServiceInstance {
                            instance_id: iid(i),
                            host_name: "h".into(),
                            endpoints: vec![format!("rest://10.0.0.{i}:1")],
                            ..MicroServiceInstance::default()
                        };
                        let _ = reg.register_instance(D, D, &sid, inst, now, 0);
                    },
                    Op::Unregister(s, i) => if let Some(sid) = ids[s].clone() {
                        let _ = reg.unregister(D, D, &sid, &iid(i));
                    },
                    Op::Status(s, i, up) => if let Some(sid) = ids[s].clone() {
                        let status = if up { "UP" } else { "DOWN" };
                        let _ = reg.set_instance_status(D, D, &sid, &iid(i), status, 0);
                    },
                    Op::NewVersion(v) => {
                        let made = reg.create_service(D, D, service("q", &format!("1.{v}.0")), 0);
                        if let Ok((id, true)) = made {
                            ids[3] = Some(id);
                        }
                    },
                    Op::Delete(s) => if let Some(sid) = ids[s].take() {
                        let _ = reg.delete_service(D, D, &sid, true);
                    },
                    Op::Depend(latest) => {
                        let (name, version) = if latest { ("q", "latest") } else { ("p", "1.0.0+") };
                        reg.dependencies.add(&consumer, DependencyKey {
                            app_id: "a".into(), service_name: name.into(), version: version.into(),
                            ..DependencyKey::default()
                        });
                        reg.bump();
                    },
                    Op::Wake => {
                        let fresh = read(&reg, D, D, &consumer, &sent).unwrap().render();
                        heard(&mut view, &apply(&mut sent, fresh, "CREATE"));
                        prop_assert_eq!(&view, &full(&reg, &consumer));
                    },
                }
            }
            let fresh = read(&reg, D, D, &consumer, &sent).unwrap().render();
            heard(&mut view, &apply(&mut sent, fresh, "CREATE"));
            prop_assert_eq!(&view, &full(&reg, &consumer));
        }
    }

    #[test]
    fn frames_are_what_serde_writes_for_the_event() {
        #[derive(Serialize)]
        struct Event<'a> {
            action: &'a str,
            key: &'a WatchKey,
            instance: &'a MicroServiceInstance,
        }
        let key = WatchKey {
            tenant: "d/p".into(),
            app_id: "a".into(),
            service_name: "s\"x".into(),
            version: "1".into(),
            environment: String::new(),
        };
        let instance = MicroServiceInstance {
            instance_id: "i".into(),
            endpoints: vec!["rest://h:1".into()],
            ..MicroServiceInstance::default()
        };
        let expected = serde_json::to_string(&Event {
            action: "UPDATE",
            key: &key,
            instance: &instance,
        })
        .unwrap();
        let made = frame("UPDATE", &json(&key).unwrap(), &json(&instance).unwrap());
        assert_eq!(made, expected);
    }

    #[test]
    fn equal_texts_are_shared() {
        let a = intern("{\"x\":1}".to_owned());
        let b = intern("{\"x\":1}".to_owned());
        assert!(Arc::ptr_eq(&a, &b));
        let c = intern("{\"x\":2}".to_owned());
        assert_eq!(&*c, "{\"x\":2}");
    }
}
