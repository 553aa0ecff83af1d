//! The Eureka v2 REST API of the built-in core, under `/eureka` and `/eureka/v2`
//! (the Spring Cloud and Netflix layouts; eureka-notes §1-§6).
//!
//! Operations (eureka-notes §3): register (`POST /apps/{APP}`, JSON or XML body, 204),
//! renew (`PUT /apps/{APP}/{id}`, 200, or 404 so the client re-registers), cancel
//! (`DELETE`, 200/404), status override (`PUT .../status?value=`) and its removal
//! (`DELETE .../status`), metadata update (`PUT .../metadata?k=v`), and reads (`/apps`,
//! `/apps/`, `/apps/delta`, `/apps/{APP}`, `/apps/{APP}/{id}`, `/instances/{id}`,
//! `/vips/{vip}`, `/svips/{svip}`). Reads answer XML unless `Accept` contains `json`
//! (py-eureka-client sends no `Accept` and parses only XML); `/apps` and `/apps/delta` are
//! gzip-compressed when `Accept-Encoding` has `gzip`.
//!
//! Mapping to the registry (see `registry.rs`): a registered app is the
//! microservice default/default, appId `eureka`, lower-case name, `0.0.1`; its
//! instances are SC instances with endpoints `rest://ip:port` (and
//! `rest://ip:securePort?sslEnabled=true`), the same `hostName`, status mapped
//! (`OUT_OF_SERVICE` ↔ `OUTOFSERVICE`), metadata = properties, lease =
//! `leaseInfo.durationInSecs` (> 0, else 90). Other Eureka fields are kept
//! in a side record so clients read back what they registered. An instance registered
//! through `/v4` shows the Eureka fields kept in its reserved `eureka.*` properties (the
//! eureka plugin's `keys`: what an instance imported from a Eureka site carries), and those
//! keys are not shown as metadata. The lease expires `durationInSecs` after the last renewal
//! (Netflix effectively allows twice that after the first renewal; we do not copy that bug);
//! expired leases are evicted every second, or not at all while self-preservation (an
//! option) holds them back.
//!
//! Registry semantics (eureka-notes §5, §6): the status override rules
//! (`effective_status`) on every register and renew; `versions__delta` and the 180 s
//! recently-changed queue in `eureka_registry.rs`; `apps__hashcode` over the whole registry
//! for `/apps` and `/apps/delta` (cut under the same lock as the delta), over the matches
//! for VIP reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Map, Value};
use syncer_wire_eureka::field::{self, int, metadata, scalar, text};
use syncer_wire_eureka::{
    xml, DEFAULT_DC_CLASS, DEFAULT_LEASE_DURATION_SECS, DEFAULT_RENEWAL_INTERVAL_SECS,
    EMPTY_MAP_CLASS, STATUSES, STRING_FIELDS, UNKNOWN,
};

use crate::servicecenter::core::Core;
use crate::servicecenter::error::ScError;
use crate::servicecenter::registry::eureka::{
    current_views, find_view, hashcode, sync_delta, View,
};
use crate::servicecenter::registry::{
    eureka_to_sc_status, now_ms, EurekaRegistration, EurekaSide, HealthCheck, MicroServiceInstance,
    DEFAULT_TENANT,
};

/// The Eureka routes under `/eureka` and `/eureka/v2`.
pub fn router(core: Core) -> Router {
    let api = Router::new()
        .route("/apps", get(all_apps))
        .route("/apps/", get(all_apps))
        .route("/apps/delta", get(delta))
        .route("/apps/{app}", get(one_app).post(register))
        .route(
            "/apps/{app}/{id}",
            get(one_instance).put(renew).delete(cancel),
        )
        .route(
            "/apps/{app}/{id}/status",
            put(put_status).delete(delete_status),
        )
        .route("/apps/{app}/{id}/metadata", put(put_metadata))
        .route("/instances/{id}", get(instance_by_id))
        .route("/vips/{vip}", get(by_vip))
        .route("/svips/{svip}", get(by_svip))
        .with_state(core)
        // gzip for clients that accept it (Eureka clients ask for it on registry fetches).
        .layer(tower_http::compression::CompressionLayer::new());
    Router::new()
        .nest("/eureka/v2", api.clone())
        .nest("/eureka", api)
}

// ---- request decoding ----------------------------------------------------

/// The longest `leaseInfo` duration or renewal interval a registration may give, seconds:
/// Java's `int` range, which Netflix Eureka's `LeaseInfo` fields have (Jackson refuses a
/// larger number with 400). About 68 years.
pub const MAX_LEASE_SECS: u32 = i32::MAX as u32;

/// `leaseInfo.{field}` in seconds: `default` when missing, unreadable or not above 0
/// (Netflix Eureka's `LeaseInfo` builder does the same for a duration or interval ≤ 0).
///
/// # Errors
/// A whole number outside Java's `int` range (Eureka: 400, "out of range of int").
fn lease_secs(lease: Option<&Value>, name: &str, default: u32) -> Result<u32, String> {
    match lease.and_then(|l| int(l.get(name))) {
        Some(n) if n > i64::from(MAX_LEASE_SECS) || n < i64::from(i32::MIN) => Err(format!(
            "leaseInfo.{name} {n} is out of range: at most {MAX_LEASE_SECS} seconds"
        )),
        Some(n) if n > 0 => Ok(u32::try_from(n).unwrap_or(default)),
        _ => Ok(default),
    }
}

/// Decodes and validates a register body for app `path_app` (upper-cased).
///
/// # Errors
/// The plain-text reason Netflix answers with 400 (`Missing hostname`, ...).
fn registration(
    path_app: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<EurekaRegistration, String> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let is_xml = ctype.contains("xml") || (!ctype.contains("json") && first == Some(b'<'));
    let inst: Value = if is_xml {
        let doc = xml::parse(body).map_err(|e| format!("Cannot parse XML body: {e}"))?;
        match doc {
            Value::Object(mut m) => match m.remove("instance") {
                Some(i @ Value::Object(_)) => i,
                Some(_) => Value::Object(Map::new()),
                None => {
                    let root = m.keys().next().cloned().unwrap_or_default();
                    return Err(format!("Expected <instance>, got <{root}>"));
                }
            },
            _ => return Err("Missing instance".into()),
        }
    } else {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("Cannot parse JSON body: {e}"))?;
        match v {
            Value::Object(mut m) => match m.remove("instance") {
                Some(i @ Value::Object(_)) => i,
                _ => return Err("Missing instance".into()),
            },
            _ => return Err("Missing instance".into()),
        }
    };
    let id = field::instance_id(&inst).ok_or("Missing instanceId")?;
    let host = text(&inst, "hostName").ok_or("Missing hostname")?;
    let ip = text(&inst, "ipAddr").ok_or("Missing ip address")?;
    let app = text(&inst, "app")
        .ok_or("Missing appName")?
        .to_ascii_uppercase();
    if app != path_app {
        return Err(format!(
            "Mismatched appName, expecting {path_app} but was {app}"
        ));
    }
    let dc = inst
        .get("dataCenterInfo")
        .filter(|d| d.is_object())
        .ok_or("Missing dataCenterInfo")?;
    let dc_name = text(dc, "name").ok_or("Missing dataCenterInfo Name")?;
    let status = text(&inst, "status").map_or("UP", |s| field::status(&s));
    let lease = inst.get("leaseInfo").filter(|l| l.is_object());
    let duration = lease_secs(lease, "durationInSecs", DEFAULT_LEASE_DURATION_SECS)?;
    let renewal = lease_secs(
        lease,
        "renewalIntervalInSecs",
        DEFAULT_RENEWAL_INTERVAL_SECS,
    )?;
    let duration = u64::from(duration);
    let renewal = i64::from(renewal);
    let port = side_port(inst.get("port"), DEFAULT_PORT);
    let secure_port = side_port(inst.get("securePort"), DEFAULT_SECURE_PORT);
    let mut strings = BTreeMap::new();
    for f in STRING_FIELDS {
        if let Some(s) = scalar(inst.get(*f)) {
            strings.insert(*f, s);
        }
    }
    let side = EurekaSide {
        app: app.clone(),
        ip_addr: ip.clone(),
        sid: text(&inst, "sid").filter(|s| s != "na" && s != "unknown"),
        status: status.to_owned(),
        overridden_status: text(&inst, "overriddenStatus")
            .or_else(|| text(&inst, "overriddenstatus"))
            .unwrap_or_else(|| UNKNOWN.into()),
        port,
        secure_port,
        country_id: int(inst.get("countryId")).unwrap_or(1),
        dc_class: text(dc, "@class").unwrap_or_else(|| DEFAULT_DC_CLASS.into()),
        dc_name,
        dc_metadata: metadata(dc.get("metadata")).into(),
        renewal_interval_secs: renewal,
        strings,
        last_dirty_ms: int(inst.get("lastDirtyTimestamp")).unwrap_or_else(now_ms),
    };
    let mut endpoints = Vec::new();
    if port.1 {
        endpoints.push(format!("rest://{ip}:{}", port.0));
    }
    if secure_port.1 {
        endpoints.push(format!("rest://{ip}:{}?sslEnabled=true", secure_port.0));
    }
    // Both are at most `i32::MAX` (`lease_secs`), so this cannot overflow.
    let duration_i = i64::try_from(duration).unwrap_or(i64::MAX);
    let times = (duration_i.saturating_add(renewal - 1) / renewal - 1).max(0);
    let body = MicroServiceInstance {
        endpoints,
        host_name: host,
        status: eureka_to_sc_status(status).to_string(),
        properties: metadata(inst.get("metadata")).into(),
        health_check: Some(HealthCheck {
            mode: "push".into(),
            interval: renewal,
            times,
            ..HealthCheck::default()
        }),
        ..MicroServiceInstance::default()
    };
    Ok(EurekaRegistration {
        instance_id: id,
        body,
        side,
        lease_secs: duration,
    })
}

/// Netflix's `port` when a register body has none: 7001, enabled (eureka-notes §4.1).
const DEFAULT_PORT: (i64, bool) = (7001, true);
/// Netflix's `securePort` when a register body has none: 7002, disabled.
const DEFAULT_SECURE_PORT: (i64, bool) = (7002, false);

/// A `port` or `securePort` field as the side record keeps it, (number, enabled): the
/// number of `default` when the field has none, its flag when `@enabled` is missing.
fn side_port(v: Option<&Value>, default: (i64, bool)) -> (i64, bool) {
    let p = field::port(v, default.1);
    (p.number.unwrap_or(default.0), p.enabled)
}

// ---- JSON rendering ------------------------------------------------------

fn port_json((port, enabled): (i64, bool)) -> Value {
    json!({"$": port, "@enabled": enabled.to_string()})
}

fn instance_json(v: &View) -> Value {
    let mut m = Map::new();
    m.insert("instanceId".into(), json!(v.instance_id));
    m.insert("hostName".into(), json!(v.host_name));
    m.insert("app".into(), json!(v.app));
    m.insert("ipAddr".into(), json!(v.ip_addr));
    if let Some(sid) = &v.sid {
        m.insert("sid".into(), json!(sid));
    }
    m.insert("status".into(), json!(v.status));
    m.insert("overriddenStatus".into(), json!(v.overridden_status));
    m.insert("port".into(), port_json(v.port));
    m.insert("securePort".into(), port_json(v.secure_port));
    m.insert("countryId".into(), json!(v.country_id));
    let mut dc = Map::new();
    dc.insert("@class".into(), json!(v.dc_class));
    dc.insert("name".into(), json!(v.dc_name));
    if !v.dc_metadata.is_empty() {
        dc.insert("metadata".into(), json!(v.dc_metadata));
    }
    m.insert("dataCenterInfo".into(), Value::Object(dc));
    m.insert(
        "leaseInfo".into(),
        json!({
            "renewalIntervalInSecs": v.renewal_secs,
            "durationInSecs": v.duration_secs,
            "registrationTimestamp": v.registration_ms,
            "lastRenewalTimestamp": v.last_renewal_ms,
            "evictionTimestamp": 0,
            "serviceUpTimestamp": v.registration_ms,
        }),
    );
    m.insert(
        "metadata".into(),
        if v.metadata.is_empty() {
            json!({"@class": EMPTY_MAP_CLASS})
        } else {
            json!(v.metadata)
        },
    );
    for (k, s) in &v.strings {
        m.insert((*k).to_string(), json!(s));
    }
    m.insert("isCoordinatingDiscoveryServer".into(), json!("false"));
    m.insert(
        "lastUpdatedTimestamp".into(),
        json!(v.last_updated_ms.to_string()),
    );
    m.insert(
        "lastDirtyTimestamp".into(),
        json!(v.last_dirty_ms.to_string()),
    );
    m.insert("actionType".into(), json!(v.action));
    Value::Object(m)
}

fn app_json(name: &str, views: &[View]) -> Value {
    json!({"name": name, "instance": views.iter().map(instance_json).collect::<Vec<_>>()})
}

/// The `applications` document as a [`Value`] (the reference for [`apps_json_text`]).
#[cfg(test)]
fn apps_json(apps: &[(String, Vec<View>)], delta: &str, hash: &str) -> Value {
    json!({"applications": {
        "versions__delta": delta,
        "apps__hashcode": hash,
        "application": apps.iter().map(|(n, v)| app_json(n, v)).collect::<Vec<_>>(),
    }})
}

/// The `applications` document as compact JSON text, written one instance at a time so that
/// a large registry never exists as one [`Value`] tree (which costs many times the text).
/// Byte for byte what `apps_json(..).to_string()` gives (keys in sorted order, as
/// `serde_json`'s map has them).
fn apps_json_text(apps: &[(String, Vec<View>)], delta: &str, hash: &str) -> String {
    let quoted = |s: &str| Value::String(s.to_owned()).to_string();
    let mut out = String::from(r#"{"applications":{"application":["#);
    for (i, (name, views)) in apps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"instance":["#);
        for (j, v) in views.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&instance_json(v).to_string());
        }
        out.push_str(r#"],"name":"#);
        out.push_str(&quoted(name));
        out.push('}');
    }
    out.push_str(r#"],"apps__hashcode":"#);
    out.push_str(&quoted(hash));
    out.push_str(r#","versions__delta":"#);
    out.push_str(&quoted(delta));
    out.push_str("}}");
    out
}

// ---- XML rendering -------------------------------------------------------
//
// The JSON documents above, written by syncer-wire-eureka's XML writer (XStream style:
// Netflix's element order, `overriddenstatus`, metadata names escaped, two-space indent, no
// declaration).

/// The `applications` document as XML, written one instance at a time, as
/// [`apps_json_text`] writes the JSON.
fn apps_xml(apps: &[(String, Vec<View>)], delta: &str, hash: &str) -> Vec<u8> {
    let mut w = xml::Writer::new();
    w.open("applications");
    w.element("versions__delta", &Value::from(delta));
    w.element("apps__hashcode", &Value::from(hash));
    for (name, views) in apps {
        w.open("application");
        w.element("name", &Value::from(name.as_str()));
        for v in views {
            w.element("instance", &instance_json(v));
        }
        w.close();
    }
    w.finish()
}

/// A one-element document `<root>..</root>` as XML.
fn xml_document(root: &str, v: &Value) -> Vec<u8> {
    let mut w = xml::Writer::new();
    w.element(root, v);
    w.finish()
}

// ---- handlers --------------------------------------------------------------

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("json")))
}

/// A 200 document in the negotiated format (gzip, when the client accepts it, is the
/// router's `CompressionLayer`).
fn document(json_body: bool, body: Vec<u8>) -> Response {
    let ctype = if json_body {
        "application/json"
    } else {
        "application/xml"
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
        body,
    )
        .into_response()
}

/// Every app's views, with the delta queue brought up to date first (under one lock).
fn snapshot(core: &Core) -> Vec<(String, Vec<View>)> {
    let mut reg = core.lock();
    sync_delta(&mut reg, Instant::now());
    current_views(&reg)
}

fn apps_document(headers: &HeaderMap, apps: &[(String, Vec<View>)], delta: &str) -> Response {
    let hash = hashcode(apps.iter().flat_map(|(_, v)| v.iter()));
    let j = wants_json(headers);
    let body = if j {
        apps_json_text(apps, delta, &hash).into_bytes()
    } else {
        apps_xml(apps, delta, &hash)
    };
    document(j, body)
}

async fn all_apps(State(core): State<Core>, headers: HeaderMap) -> Response {
    let apps = snapshot(&core);
    apps_document(&headers, &apps, "1")
}

/// `GET /apps/delta`: the recently-changed queue (180 s), one entry per instance with its
/// latest action, `versions__delta` from the queue, and `apps__hashcode` of the whole
/// registry, both cut under the same lock as the queue.
async fn delta(State(core): State<Core>, headers: HeaderMap) -> Response {
    let (apps, version, hash) = {
        let mut reg = core.lock();
        sync_delta(&mut reg, Instant::now());
        // Views are built here for the queued instances only; removed ones keep theirs.
        let mut apps: Vec<(String, Vec<View>)> = Vec::new();
        for (app, id, action, kept) in reg.eureka.delta() {
            let v = match kept {
                Some(v) => Some(v.clone()),
                None => find_view(&reg, Some(app), id),
            };
            let Some(mut v) = v else {
                continue;
            };
            v.action = action.as_str();
            match apps.last_mut() {
                Some((name, list)) if name == app => list.push(v),
                _ => apps.push((app.to_owned(), vec![v])),
            }
        }
        (apps, reg.eureka.version(), reg.eureka.hashcode())
    };
    tracing::debug!(version, apps = apps.len(), %hash, "eureka delta served");
    let j = wants_json(&headers);
    let version = version.to_string();
    let body = if j {
        apps_json_text(&apps, &version, &hash).into_bytes()
    } else {
        apps_xml(&apps, &version, &hash)
    };
    document(j, body)
}

/// `GET /vips/{vip}` and `/svips/{svip}`: the instances whose (secure) VIP address, split on
/// `,`, names `vip` exactly; `versions__delta` `-1`, the hash over the matches only; an empty
/// document (not 404) when nothing matches (Netflix `AbstractVIPResource`).
fn vip_document(core: &Core, headers: &HeaderMap, field: &str, vip: &str) -> Response {
    let apps: Vec<(String, Vec<View>)> = snapshot(core)
        .into_iter()
        .map(|(name, list)| {
            let list: Vec<View> = list
                .into_iter()
                .filter(|v| {
                    v.strings
                        .get(field)
                        .is_some_and(|s| s.split(',').any(|p| p.trim() == vip))
                })
                .collect();
            (name, list)
        })
        .filter(|(_, list)| !list.is_empty())
        .collect();
    apps_document(headers, &apps, "-1")
}

async fn by_vip(State(core): State<Core>, Path(vip): Path<String>, headers: HeaderMap) -> Response {
    vip_document(&core, &headers, "vipAddress", &vip)
}

async fn by_svip(
    State(core): State<Core>,
    Path(vip): Path<String>,
    headers: HeaderMap,
) -> Response {
    vip_document(&core, &headers, "secureVipAddress", &vip)
}

async fn one_app(
    State(core): State<Core>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    let app = app.to_ascii_uppercase();
    let list = snapshot(&core)
        .into_iter()
        .find(|(name, _)| *name == app)
        .map(|(_, list)| list)
        .unwrap_or_default();
    if list.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let j = wants_json(&headers);
    let body = if j {
        json!({"application": app_json(&app, &list)})
            .to_string()
            .into_bytes()
    } else {
        xml_document("application", &app_json(&app, &list))
    };
    document(j, body)
}

fn instance_document(headers: &HeaderMap, v: Option<View>) -> Response {
    let Some(v) = v else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let j = wants_json(headers);
    let body = if j {
        json!({"instance": instance_json(&v)})
            .to_string()
            .into_bytes()
    } else {
        xml_document("instance", &instance_json(&v))
    };
    document(j, body)
}

async fn one_instance(
    State(core): State<Core>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let v = find_view(&core.lock(), Some(&app.to_ascii_uppercase()), &id);
    instance_document(&headers, v)
}

async fn instance_by_id(
    State(core): State<Core>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let v = find_view(&core.lock(), None, &id);
    instance_document(&headers, v)
}

/// The status a register or renew ends with (eureka-notes §6.4, Netflix
/// `FirstMatchWinsCompositeRule`): a reported status other than `UP`/`OUT_OF_SERVICE` as is;
/// else the override, if any; else an existing lease's `UP`/`OUT_OF_SERVICE`; else the
/// reported status.
pub(crate) fn effective_status(
    reported: &str,
    override_status: Option<&str>,
    existing: Option<&str>,
) -> String {
    if reported != "UP" && reported != "OUT_OF_SERVICE" {
        return reported.to_owned();
    }
    if let Some(o) = override_status {
        return o.to_owned();
    }
    match existing {
        Some(e @ ("UP" | "OUT_OF_SERVICE")) => e.to_owned(),
        _ => reported.to_owned(),
    }
}

/// `POST /apps/{APP}`: 204, or 400 with Netflix's reason. Applies the override rules; a
/// stored copy with a newer `lastDirtyTimestamp` is kept and only its lease renewed.
async fn register(
    State(core): State<Core>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = app.to_ascii_uppercase();
    let mut reg = match registration(&app, &body, &headers) {
        Ok(reg) => reg,
        Err(reason) => {
            tracing::debug!(%app, %reason, "eureka register refused");
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
                reason,
            )
                .into_response();
        }
    };
    let now = Instant::now();
    let now_ms = now_ms();
    let mut registry = core.lock();
    if let Err(e) = registry.eureka_admit(&app, &reg) {
        drop(registry);
        return refuse_registration(&app, &e);
    }
    let id = reg.instance_id.clone();
    let existing = find_view(&registry, Some(&app), &id);
    if let Some(old) = &existing {
        if old.last_dirty_ms > reg.side.last_dirty_ms {
            registry.eureka_renew(&app, &id, now, now_ms);
            return StatusCode::NO_CONTENT.into_response();
        }
    }
    let incoming = reg.side.overridden_status.clone();
    if incoming != UNKNOWN && registry.eureka.override_of(&id, now).is_none() {
        registry.eureka.set_override(&id, &incoming, now);
    }
    let override_status = registry.eureka.override_of(&id, now);
    if let Some(o) = &override_status {
        reg.side.overridden_status = o.clone();
    }
    let status = effective_status(
        &reg.side.status,
        override_status.as_deref(),
        existing.as_ref().map(|v| v.status.as_str()),
    );
    reg.body.status = eureka_to_sc_status(&status).to_string();
    reg.side.status = status;
    registry
        .eureka
        .note_registered(&app, &id, existing.is_none());
    match registry.eureka_register(&app, reg, now, now_ms) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            drop(registry);
            refuse_registration(&app, &e)
        }
    }
}

/// A registration refused by a quota or the size limit ([`Limits`](crate::servicecenter::registry::Limits)):
/// 400 with service-center's detail as text, like Netflix's other refusals of a register
/// (`ApplicationResource.addInstance` answers 400 with a reason); the client logs it and
/// registers again at its next heartbeat (404).
fn refuse_registration(app: &str, e: &ScError) -> Response {
    tracing::debug!(%app, code = e.code, detail = %e.detail, "eureka register refused");
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        e.detail.clone(),
    )
        .into_response()
}

/// `PUT /apps/{APP}/{id}[?status=&lastDirtyTimestamp=]`: 200, or 404 (unknown; evaluated
/// status `UNKNOWN`; the client's `lastDirtyTimestamp` newer than ours) so the client
/// re-registers. The `status` parameter is ignored, as Netflix does. A heartbeat: written
/// lazily ([`super::commit::lazy`]), so it does not wait for a commit.
async fn renew(
    State(core): State<Core>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let status = renew_status(&core, &app, &id, &query);
    let renewed = u64::from(status.is_success());
    core.metrics()
        .heartbeats(std::time::Instant::now(), renewed, 1 - renewed);
    super::commit::lazy(status.into_response())
}

fn renew_status(core: &Core, app: &str, id: &str, query: &HashMap<String, String>) -> StatusCode {
    let app = app.to_ascii_uppercase();
    let now = Instant::now();
    let now_ms = now_ms();
    let mut reg = core.lock();
    let Some(v) = find_view(&reg, Some(&app), id) else {
        return StatusCode::NOT_FOUND;
    };
    let override_status = reg.eureka.override_of(id, now);
    let status = effective_status(&v.status, override_status.as_deref(), Some(&v.status));
    if status == UNKNOWN {
        return StatusCode::NOT_FOUND;
    }
    if status != v.status {
        let overridden = override_status.unwrap_or_else(|| v.overridden_status.clone());
        reg.eureka_set_status(&app, id, &status, &overridden, None, now_ms);
    }
    if !reg.eureka_renew(&app, id, now, now_ms) {
        return StatusCode::NOT_FOUND;
    }
    reg.eureka.note_renewed(now);
    let client_dirty = query
        .get("lastDirtyTimestamp")
        .and_then(|t| t.trim().parse::<i64>().ok());
    if client_dirty.is_some_and(|t| t > v.last_dirty_ms) {
        return StatusCode::NOT_FOUND;
    }
    StatusCode::OK
}

async fn cancel(State(core): State<Core>, Path((app, id)): Path<(String, String)>) -> StatusCode {
    let mut reg = core.lock();
    if reg.eureka_cancel(&app.to_ascii_uppercase(), &id) {
        reg.eureka.note_cancelled(&id);
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// `PUT /apps/{APP}/{id}/status?value=S[&lastDirtyTimestamp=T]`: an operator override. 200
/// (a no-op when the instance already has that status); 404 unknown; 500 when `value` is
/// missing or not an exact status name (Netflix `InstanceResource.statusUpdate`).
async fn put_status(
    State(core): State<Core>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> StatusCode {
    let app = app.to_ascii_uppercase();
    let Some(value) = query
        .get("value")
        .filter(|v| STATUSES.contains(&v.as_str()))
    else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let now = Instant::now();
    let now_ms = now_ms();
    let mut reg = core.lock();
    let Some(v) = find_view(&reg, Some(&app), &id) else {
        return StatusCode::NOT_FOUND;
    };
    if v.status != *value {
        let dirty = query
            .get("lastDirtyTimestamp")
            .and_then(|t| t.trim().parse::<i64>().ok());
        reg.eureka_renew(&app, &id, now, now_ms);
        reg.eureka.set_override(&id, value, now);
        reg.eureka_set_status(&app, &id, value, value, dirty, now_ms);
    }
    StatusCode::OK
}

/// `DELETE /apps/{APP}/{id}/status[?value=S]`: removes the override; the status becomes
/// `value`, else `UNKNOWN` (the client's next heartbeat then answers 404 and it registers
/// its own status again). 200 also when there was no override; 404 unknown; 500 bad value.
async fn delete_status(
    State(core): State<Core>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> StatusCode {
    let app = app.to_ascii_uppercase();
    let value = match query.get("value") {
        Some(v) if STATUSES.contains(&v.as_str()) => v.clone(),
        Some(_) => return StatusCode::INTERNAL_SERVER_ERROR,
        None => UNKNOWN.to_owned(),
    };
    let mut reg = core.lock();
    if find_view(&reg, Some(&app), &id).is_none() {
        return StatusCode::NOT_FOUND;
    }
    if reg.eureka.remove_override(&id).is_some() {
        let dirty = query
            .get("lastDirtyTimestamp")
            .and_then(|t| t.trim().parse::<i64>().ok());
        reg.eureka_set_status(&app, &id, &value, UNKNOWN, dirty, now_ms());
    }
    StatusCode::OK
}

/// `PUT /apps/{APP}/{id}/metadata?k=v...`: puts each parameter into the instance's metadata
/// (other keys kept) and counts as a new registration (`ADDED` in the delta, lease renewed).
async fn put_metadata(
    State(core): State<Core>,
    Path((app, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> StatusCode {
    let app = app.to_ascii_uppercase();
    let now = Instant::now();
    let now_ms = now_ms();
    let mut reg = core.lock();
    let Some((service_id, mut properties)) = reg
        .eureka_instance(&app, &id)
        .map(|(s, r)| (s.service_id.clone(), r.body.properties.clone()))
    else {
        return StatusCode::NOT_FOUND;
    };
    let mut given = HashSet::new();
    for (k, v) in form_pairs(query.as_deref().unwrap_or("")) {
        // First value wins per key, as Netflix reads the parameters.
        if given.insert(k.clone()) {
            properties.insert(k, v);
        }
    }
    if reg
        .set_instance_properties(
            DEFAULT_TENANT,
            DEFAULT_TENANT,
            &service_id,
            &id,
            properties,
            now_ms,
        )
        .is_err()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    reg.eureka_renew(&app, &id, now, now_ms);
    reg.eureka.note_registered(&app, &id, false);
    StatusCode::OK
}

/// `a=1&b=x%20y` → [("a", "1"), ("b", "x y")] (`+` is a space; invalid escapes kept).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::servicecenter::registry::eureka::*;
    use crate::servicecenter::registry::{InstanceRecord, MicroService, Props, Registry};
    use axum::body::Body;
    use axum::http::Request;
    use syncer_plugin_eureka::keys;
    use syncer_wire_eureka::AMAZON_DC_CLASS;
    use tower::ServiceExt;

    async fn call(
        core: &Core,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let resp = crate::servicecenter::router(core.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    const JSON_REG: &str = r#"{"instance":{"instanceId":"10.0.0.1:acc:9090","hostName":"h1","app":"ACC","ipAddr":"10.0.0.1","port":{"$":9090,"@enabled":true},"dataCenterInfo":{"name":"MyOwn"},"metadata":{"syncerOriginCluster":"c1","zone_id":"z"},"leaseInfo":{"durationInSecs":9}}}"#;

    #[tokio::test]
    async fn register_then_read_back_in_json_and_xml() {
        let core = Core::new();
        let (s, _) = call(
            &core,
            "POST",
            "/eureka/apps/acc",
            &[("content-type", "application/json")],
            JSON_REG,
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let (s, body) = call(
            &core,
            "GET",
            "/eureka/v2/apps/",
            &[("accept", "application/json")],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).unwrap();
        let apps = &v["applications"];
        assert_eq!(apps["apps__hashcode"], "UP_1_");
        assert_eq!(apps["versions__delta"], "1");
        let inst = &apps["application"][0]["instance"][0];
        assert_eq!(inst["port"], json!({"$": 9090, "@enabled": "true"}));
        assert_eq!(inst["metadata"]["syncerOriginCluster"], "c1");
        assert_eq!(inst["leaseInfo"]["durationInSecs"], 9);
        assert_eq!(inst["dataCenterInfo"]["@class"], DEFAULT_DC_CLASS);
        let (_, xml) = call(&core, "GET", "/eureka/apps", &[], "").await;
        assert!(xml.starts_with("<applications>"), "{xml}");
        assert!(xml.contains("<port enabled=\"true\">9090</port>"));
        assert!(xml.contains("<zone__id>z</zone__id>"));
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/10.0.0.1%3Aacc%3A9090?status=UP",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(&core, "PUT", "/eureka/apps/ACC/nope", &[], "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            &core,
            "DELETE",
            "/eureka/apps/ACC/10.0.0.1:acc:9090",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(&core, "GET", "/eureka/apps/ACC", &[], "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, xml) = call(&core, "GET", "/eureka/apps/", &[], "").await;
        assert!(xml.contains("<apps__hashcode></apps__hashcode>"), "{xml}");
    }

    #[tokio::test]
    async fn xml_reads_are_the_json_documents_in_netflix_order_with_xstream_markers() {
        let core = Core::new();
        post(&core, &reg_body("i1", "UP", "acc")).await;
        let (_, xml) = call(&core, "GET", "/eureka/apps/ACC/i1", &[], "").await;
        // XStream's spelling, the empty map's class, and the port flag as an attribute.
        assert!(
            xml.contains("<overriddenstatus>UNKNOWN</overriddenstatus>"),
            "{xml}"
        );
        assert!(xml.contains(&format!("<metadata class=\"{EMPTY_MAP_CLASS}\"/>")));
        assert!(xml.contains("<securePort enabled=\"false\">7002</securePort>"));
        let names: Vec<&str> = xml
            .lines()
            .filter_map(|l| l.strip_prefix("  <"))
            .filter(|l| !l.starts_with([' ', '/']))
            .filter_map(|l| l.split(['>', ' ', '/']).next())
            .collect();
        // Netflix's order: the names are a subsequence of the instance fields.
        let netflix: Vec<&str> = syncer_wire_eureka::INSTANCE_FIELDS
            .iter()
            .map(|f| {
                if *f == "overriddenStatus" {
                    "overriddenstatus"
                } else {
                    f
                }
            })
            .filter(|f| names.contains(f))
            .collect();
        assert_eq!(names, netflix);
        assert_eq!(names.len(), 18, "{names:?}");
        // Read back, the XML says what the JSON says.
        let from_xml = xml::parse(xml.as_bytes()).unwrap();
        let from_json = json_get(&core, "/eureka/apps/ACC/i1").await;
        let (x, j) = (&from_xml["instance"], &from_json["instance"]);
        assert_eq!(field::instance_id(x), field::instance_id(j));
        assert_eq!(x["overriddenstatus"], j["overriddenStatus"]);
        for f in ["port", "securePort"] {
            assert_eq!(field::port(x.get(f), false), field::port(j.get(f), false));
        }
        assert_eq!(x["dataCenterInfo"]["@class"], j["dataCenterInfo"]["@class"]);
        assert_eq!(x["lastDirtyTimestamp"], j["lastDirtyTimestamp"]);
    }

    #[tokio::test]
    async fn register_rejects_missing_fields_with_text() {
        let core = Core::new();
        let body = r#"{"instance":{"hostName":"h","app":"A","dataCenterInfo":{"name":"MyOwn"}}}"#;
        let (s, text) = call(&core, "POST", "/eureka/apps/A", &[], body).await;
        assert_eq!(
            (s, text.as_str()),
            (StatusCode::BAD_REQUEST, "Missing ip address")
        );
        let (s, text) = call(&core, "POST", "/eureka/apps/B", &[], JSON_REG).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(text.starts_with("Mismatched appName"));
    }

    #[tokio::test]
    async fn issue_10_register_refuses_xml_nested_ten_thousand_deep_with_400() {
        let core = Core::new();
        let body = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        for headers in [&[][..], &[("content-type", "application/xml")][..]] {
            let (s, text) = call(&core, "POST", "/eureka/apps/X", headers, &body).await;
            assert_eq!(
                (s, text.as_str()),
                (
                    StatusCode::BAD_REQUEST,
                    "Cannot parse XML body: XML nested deeper than 64 elements"
                )
            );
        }
        let (s, _) = call(&core, "GET", "/eureka/apps", &[], "").await;
        assert_eq!(s, StatusCode::OK);
    }

    async fn json_get(core: &Core, uri: &str) -> Value {
        let (s, body) = call(core, "GET", uri, &[("accept", "application/json")], "").await;
        assert_eq!(s, StatusCode::OK, "{uri}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn reg_body(id: &str, status: &str, vip: &str) -> String {
        json!({"instance": {"instanceId": id, "hostName": "h", "app": "ACC", "ipAddr": "10.0.0.1",
            "status": status, "port": {"$": 9090, "@enabled": "true"},
            "dataCenterInfo": {"name": "MyOwn"}, "vipAddress": vip, "secureVipAddress": "acc-s",
            "lastDirtyTimestamp": "1000"}})
        .to_string()
    }

    async fn post(core: &Core, body: &str) {
        let (s, text) = call(
            core,
            "POST",
            "/eureka/apps/ACC",
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{text}");
    }

    fn status_of(doc: &Value) -> String {
        doc["instance"]["status"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn the_delta_lists_added_modified_and_deleted_with_a_moving_version() {
        let core = Core::new();
        let empty = json_get(&core, "/eureka/apps/delta").await;
        assert_eq!(empty["applications"]["application"], json!([]));
        let v0 = empty["applications"]["versions__delta"].clone();
        post(&core, &reg_body("i1", "UP", "acc")).await;
        post(&core, &reg_body("i2", "UP", "acc")).await;
        let d = json_get(&core, "/eureka/apps/delta").await;
        assert_ne!(d["applications"]["versions__delta"], v0);
        assert_eq!(d["applications"]["apps__hashcode"], "UP_2_");
        let inst = d["applications"]["application"][0]["instance"]
            .as_array()
            .unwrap();
        assert_eq!(inst.len(), 2);
        assert!(inst.iter().all(|i| i["actionType"] == "ADDED"));
        // Renewals add nothing: the version stays.
        let v1 = d["applications"]["versions__delta"].clone();
        let (s, _) = call(&core, "PUT", "/eureka/apps/ACC/i1", &[], "").await;
        assert_eq!(s, StatusCode::OK);
        let d = json_get(&core, "/eureka/apps/delta").await;
        assert_eq!(d["applications"]["versions__delta"], v1);
        // An override is MODIFIED, a cancel DELETED (with its last status).
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/i1/status?value=OUT_OF_SERVICE",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(&core, "DELETE", "/eureka/apps/ACC/i2", &[], "").await;
        assert_eq!(s, StatusCode::OK);
        let d = json_get(&core, "/eureka/apps/delta").await;
        assert_ne!(d["applications"]["versions__delta"], v1);
        assert_eq!(d["applications"]["apps__hashcode"], "OUT_OF_SERVICE_1_");
        let inst = &d["applications"]["application"][0]["instance"];
        assert_eq!(inst[0]["actionType"], "MODIFIED");
        assert_eq!(inst[0]["status"], "OUT_OF_SERVICE");
        assert_eq!(inst[0]["overriddenStatus"], "OUT_OF_SERVICE");
        assert_eq!(inst[1]["actionType"], "DELETED");
        // XML: the same, with the root py-eureka-client needs.
        let (_, xml) = call(&core, "GET", "/eureka/apps/delta", &[], "").await;
        assert!(xml.starts_with("<applications>"), "{xml}");
        assert!(xml.contains("<actionType>DELETED</actionType>"), "{xml}");
    }

    #[tokio::test]
    async fn an_override_sticks_until_removed_and_removal_makes_the_client_register_again() {
        let core = Core::new();
        post(&core, &reg_body("i1", "UP", "acc")).await;
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/i1/status?value=bogus",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/nope/status?value=UP",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/i1/status?value=OUT_OF_SERVICE",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        // Heartbeats and a re-registration with UP keep the override.
        let (s, _) = call(&core, "PUT", "/eureka/apps/ACC/i1?status=UP", &[], "").await;
        assert_eq!(s, StatusCode::OK);
        post(&core, &reg_body("i1", "UP", "acc")).await;
        let doc = json_get(&core, "/eureka/apps/ACC/i1").await;
        assert_eq!(status_of(&doc), "OUT_OF_SERVICE");
        assert_eq!(doc["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
        // A client reporting DOWN wins over the override.
        post(&core, &reg_body("i1", "DOWN", "acc")).await;
        assert_eq!(
            status_of(&json_get(&core, "/eureka/apps/ACC/i1").await),
            "DOWN"
        );
        post(&core, &reg_body("i1", "UP", "acc")).await;
        assert_eq!(
            status_of(&json_get(&core, "/eureka/apps/ACC/i1").await),
            "OUT_OF_SERVICE"
        );
        // Removal without a value: UNKNOWN, the next heartbeat is 404, the client registers
        // again and its own UP comes back.
        let (s, _) = call(&core, "DELETE", "/eureka/apps/ACC/i1/status", &[], "").await;
        assert_eq!(s, StatusCode::OK);
        let doc = json_get(&core, "/eureka/apps/ACC/i1").await;
        assert_eq!(status_of(&doc), "UNKNOWN");
        assert_eq!(doc["instance"]["overriddenStatus"], "UNKNOWN");
        let (s, _) = call(&core, "PUT", "/eureka/apps/ACC/i1", &[], "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        post(&core, &reg_body("i1", "UP", "acc")).await;
        assert_eq!(
            status_of(&json_get(&core, "/eureka/apps/ACC/i1").await),
            "UP"
        );
        let (s, _) = call(&core, "PUT", "/eureka/apps/ACC/i1", &[], "").await;
        assert_eq!(s, StatusCode::OK);
        // Removal with a value sets it at once; removal without an override is a 200 no-op.
        let (s, _) = call(
            &core,
            "DELETE",
            "/eureka/apps/ACC/i1/status?value=UP",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            status_of(&json_get(&core, "/eureka/apps/ACC/i1").await),
            "UP"
        );
    }

    #[tokio::test]
    async fn a_newer_client_dirty_timestamp_makes_the_renew_404() {
        let core = Core::new();
        post(&core, &reg_body("i1", "UP", "acc")).await;
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/i1?lastDirtyTimestamp=1000",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/i1?lastDirtyTimestamp=2000",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metadata_updates_vips_and_gzip() {
        let core = Core::new();
        post(&core, &reg_body("i1", "UP", "acc,acc-alias")).await;
        post(&core, &reg_body("i2", "UP", "other")).await;
        let (s, _) = call(
            &core,
            "PUT",
            "/eureka/apps/ACC/i1/metadata?zone=z%201&zone=ignored&k2=v",
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let doc = json_get(&core, "/eureka/v2/apps/ACC/i1").await;
        assert_eq!(
            doc["instance"]["metadata"],
            json!({"zone": "z 1", "k2": "v"})
        );
        let (s, _) = call(&core, "PUT", "/eureka/apps/ACC/nope/metadata?a=b", &[], "").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let vip = json_get(&core, "/eureka/vips/acc-alias").await;
        assert_eq!(vip["applications"]["versions__delta"], "-1");
        assert_eq!(vip["applications"]["apps__hashcode"], "UP_1_");
        assert_eq!(
            vip["applications"]["application"][0]["instance"][0]["instanceId"],
            "i1"
        );
        let svip = json_get(&core, "/eureka/svips/acc-s").await;
        assert_eq!(svip["applications"]["apps__hashcode"], "UP_2_");
        let none = json_get(&core, "/eureka/vips/acc-").await;
        assert_eq!(none["applications"]["application"], json!([]));
        let (_, xml) = call(&core, "GET", "/eureka/vips/other", &[], "").await;
        assert!(xml.contains("<instanceId>i2</instanceId>"), "{xml}");
        // gzip on /apps when asked.
        let req = Request::builder()
            .uri("/eureka/apps/")
            .header("accept-encoding", "gzip, deflate")
            .body(Body::empty())
            .unwrap();
        let resp = crate::servicecenter::router(core.clone())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], "gzip");
    }

    #[tokio::test]
    async fn a_v4_instance_with_reserved_eureka_properties_shows_its_eureka_fields() {
        let core = Core::new();
        let (sid, _) = core
            .lock()
            .create_service(
                "default",
                "default",
                MicroService {
                    app_id: "eureka".into(),
                    service_name: "svc".into(),
                    version: "0.0.1".into(),
                    ..MicroService::default()
                },
                now_ms(),
            )
            .unwrap();
        let props: Props = [
            (keys::VIP_ADDRESS, "svc-vip"),
            (keys::STATUS_PAGE_URL, "http://10.0.0.9:80/info"),
            (keys::HOST_NAME, "node9.example"),
            (keys::DATA_CENTER_NAME, "Amazon"),
            ("eureka.dataCenterInfo.metadata.instance-id", "i-9"),
            (keys::OVERRIDDEN_STATUS, "OUT_OF_SERVICE"),
            (keys::SECURE_PORT, "8443"),
            ("zone", "z9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        core.lock()
            .register_instance(
                "default",
                "default",
                &sid,
                MicroServiceInstance {
                    instance_id: "x9".into(),
                    host_name: "node9".into(),
                    endpoints: vec!["rest://10.0.0.9:80".into()],
                    properties: props,
                    ..MicroServiceInstance::default()
                },
                Instant::now(),
                now_ms(),
            )
            .unwrap();
        let doc = json_get(&core, "/eureka/apps/SVC/x9").await;
        let i = &doc["instance"];
        assert_eq!(i["vipAddress"], "svc-vip");
        assert!(i.get("secureVipAddress").is_none());
        assert_eq!(i["statusPageUrl"], "http://10.0.0.9:80/info");
        assert_eq!(i["hostName"], "node9.example");
        assert_eq!(i["dataCenterInfo"]["@class"], AMAZON_DC_CLASS);
        assert_eq!(i["dataCenterInfo"]["metadata"]["instance-id"], "i-9");
        assert_eq!(i["overriddenStatus"], "OUT_OF_SERVICE");
        assert_eq!(i["securePort"], json!({"$": 8443, "@enabled": "false"}));
        assert_eq!(i["metadata"], json!({"zone": "z9"}));
    }

    fn v4_service(core: &Core, project: &str, name: &str) -> String {
        core.lock()
            .create_service(
                "default",
                project,
                MicroService {
                    app_id: "a".into(),
                    service_name: name.into(),
                    version: "1.0.0".into(),
                    ..MicroService::default()
                },
                now_ms(),
            )
            .unwrap()
            .0
    }

    fn v4_instance(core: &Core, project: &str, sid: &str, id: &str) {
        core.lock()
            .register_instance(
                "default",
                project,
                sid,
                MicroServiceInstance {
                    instance_id: id.into(),
                    host_name: "h".into(),
                    endpoints: vec!["rest://10.0.0.1:80".into()],
                    ..MicroServiceInstance::default()
                },
                Instant::now(),
                now_ms(),
            )
            .unwrap();
    }

    /// Regression: each change used to rebuild the Eureka view of every instance (and scan
    /// the delta queue per instance), O(registry) under the lock per change.
    #[test]
    fn a_change_builds_the_views_of_the_changed_instances_only() {
        let core = Core::new();
        let sid = v4_service(&core, "default", "big");
        for i in 0..2000 {
            v4_instance(&core, "default", &sid, &format!("i{i}"));
        }
        tick(&mut core.lock(), Instant::now());
        VIEWS_BUILT.with(|n| n.set(0));
        v4_instance(&core, "default", &sid, "new");
        core.lock()
            .set_instance_status("default", "default", &sid, "i7", "DOWN", now_ms() + 5)
            .unwrap();
        core.lock()
            .unregister("default", "default", &sid, "i8")
            .unwrap();
        tick(&mut core.lock(), Instant::now());
        let built = VIEWS_BUILT.with(|n| n.get());
        // The removed instance's last view (for its DELETED entry); no other.
        assert!(built <= 1, "one sync of 3 changes built {built} views");
        let reg = core.lock();
        assert_eq!(reg.eureka.hashcode(), "DOWN_1_UP_1999_");
        let actions: Vec<(&str, Action)> = reg
            .eureka
            .delta()
            .filter(|(_, id, _, _)| ["new", "i7", "i8", "i9"].contains(id))
            .map(|(_, id, a, _)| (id, a))
            .collect();
        assert_eq!(
            actions,
            [
                ("i7", Action::Modified),
                ("i8", Action::Deleted),
                ("i9", Action::Added),
                ("new", Action::Added)
            ]
        );
    }

    #[tokio::test]
    async fn v4_changes_show_in_the_delta_and_other_projects_do_not() {
        let core = Core::new();
        let sid = v4_service(&core, "default", "svc");
        let other = v4_service(&core, "p2", "svc");
        v4_instance(&core, "default", &sid, "x1");
        v4_instance(&core, "default", &sid, "x2");
        v4_instance(&core, "p2", &other, "y1");
        let d = json_get(&core, "/eureka/apps/delta").await;
        let inst = &d["applications"]["application"][0]["instance"];
        assert_eq!(inst.as_array().unwrap().len(), 2, "{d}");
        assert_eq!(inst[0]["actionType"], "ADDED");
        assert_eq!(d["applications"]["apps__hashcode"], "UP_2_");
        let v1 = d["applications"]["versions__delta"].clone();
        core.lock()
            .set_instance_status(
                "default",
                "default",
                &sid,
                "x1",
                "OUTOFSERVICE",
                now_ms() + 5,
            )
            .unwrap();
        core.lock()
            .delete_service("default", "p2", &other, true)
            .unwrap();
        let d = json_get(&core, "/eureka/apps/delta").await;
        assert_ne!(d["applications"]["versions__delta"], v1);
        assert_eq!(
            d["applications"]["apps__hashcode"],
            "OUT_OF_SERVICE_1_UP_1_"
        );
        let inst = &d["applications"]["application"][0]["instance"];
        assert_eq!(inst[0]["actionType"], "MODIFIED");
        assert_eq!(inst[0]["status"], "OUT_OF_SERVICE");
        // Deleting the service deletes its instances: the last view stays in the delta.
        core.lock()
            .delete_service("default", "default", &sid, true)
            .unwrap();
        let d = json_get(&core, "/eureka/apps/delta").await;
        assert_eq!(d["applications"]["apps__hashcode"], "");
        let inst = &d["applications"]["application"][0]["instance"];
        assert_eq!(inst[0]["actionType"], "DELETED");
        assert_eq!(inst[0]["status"], "OUT_OF_SERVICE");
        assert_eq!(inst[1]["actionType"], "DELETED");
        assert_eq!(inst[1]["hostName"], "h");
        // A full fetch shows nothing left.
        let all = json_get(&core, "/eureka/apps").await;
        assert_eq!(all["applications"]["application"], json!([]));
    }

    fn fingerprint(v: &View) -> Fingerprint {
        (
            v.last_updated_ms,
            v.registration_ms,
            v.status.clone().into(),
            v.overridden_status.clone().into(),
        )
    }

    /// Records applied from the store (load, etcd watch) are tracked like API changes.
    #[test]
    fn stored_records_applied_to_the_cache_show_in_the_delta() {
        use crate::servicecenter::store::keys as store_keys;
        let core = Core::new();
        let now = Instant::now();
        let mut reg = core.lock();
        let service = br#"{"appId":"a","serviceName":"svc","version":"1.0.0"}"#;
        let instance = br#"{"hostName":"h","status":"UP","endpoints":["rest://10.0.0.1:80"]}"#;
        let ikey = store_keys::instance("default", "default", "s1", "i1");
        assert!(reg.apply_stored(
            &store_keys::service("default", "default", "s1"),
            Some(service),
            now,
            0
        ));
        assert!(reg.apply_stored(&ikey, Some(instance), now, 0));
        tick(&mut reg, now);
        let actions = |reg: &Registry| -> Vec<(String, Action)> {
            reg.eureka
                .delta()
                .map(|(app, id, a, _)| (format!("{app}/{id}"), a))
                .collect()
        };
        assert_eq!(actions(&reg), [("SVC/i1".to_owned(), Action::Added)]);
        assert_eq!(reg.eureka.hashcode(), "UP_1_");
        assert!(reg.apply_stored(&ikey, None, now, 0));
        tick(&mut reg, now);
        assert_eq!(actions(&reg), [("SVC/i1".to_owned(), Action::Deleted)]);
        assert_eq!(reg.eureka.hashcode(), "");
    }

    #[test]
    fn the_streamed_json_document_is_the_value_document() {
        let mut a = view(
            &MicroService {
                service_name: "a\"b".into(),
                ..MicroService::default()
            },
            &InstanceRecord {
                body: MicroServiceInstance {
                    instance_id: "i1".into(),
                    properties: [("k".to_owned(), "v\u{e9}".to_owned())].into(),
                    ..MicroServiceInstance::default()
                },
                eureka: None,
                ttl_secs: 1,
                deadline: Instant::now(),
                registered_ms: 1,
                renewed_ms: 2,
                updated_ms: 3,
            },
        );
        let mut b = a.clone();
        b.instance_id = "i2".into();
        a.action = "DELETED";
        let apps = [
            ("A\"B".to_owned(), vec![a.clone(), b]),
            ("C".to_owned(), vec![a]),
        ];
        for apps in [&apps[..], &apps[..1], &[]] {
            assert_eq!(
                apps_json_text(apps, "7", "UP_3_"),
                apps_json(apps, "7", "UP_3_").to_string()
            );
        }
    }

    #[test]
    fn record_fingerprints_match_the_views() {
        let rec = |status: &str, side: Option<EurekaSide>, props: &[(&str, &str)]| InstanceRecord {
            body: MicroServiceInstance {
                status: status.into(),
                properties: props
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..MicroServiceInstance::default()
            },
            eureka: side.map(Box::new),
            ttl_secs: 1,
            deadline: Instant::now(),
            registered_ms: 1,
            renewed_ms: 2,
            updated_ms: 3,
        };
        let side = |status: &str, overridden: &str| EurekaSide {
            status: status.into(),
            overridden_status: overridden.into(),
            ..EurekaSide::default()
        };
        let cases = [
            rec("UP", None, &[]),
            rec("OUTOFSERVICE", None, &[(keys::OVERRIDDEN_STATUS, "DOWN")]),
            rec("TESTING", None, &[]),
            rec("DOWN", Some(side("UNKNOWN", "UNKNOWN")), &[]),
            rec("UP", Some(side("DOWN", "OUT_OF_SERVICE")), &[]),
            rec(
                "OUTOFSERVICE",
                Some(side("OUT_OF_SERVICE", "OUT_OF_SERVICE")),
                &[],
            ),
        ];
        let service = MicroService::default();
        for r in &cases {
            assert_eq!(record_fingerprint(r, None), fingerprint(&view(&service, r)));
        }
        let mut v = view(&service, &cases[1]);
        v.overridden_status = "UP".into();
        assert_eq!(record_fingerprint(&cases[1], Some("UP")), fingerprint(&v));
    }

    #[test]
    fn override_rules_match_netflix() {
        assert_eq!(
            effective_status("DOWN", Some("OUT_OF_SERVICE"), Some("UP")),
            "DOWN"
        );
        assert_eq!(
            effective_status("UP", Some("OUT_OF_SERVICE"), None),
            "OUT_OF_SERVICE"
        );
        assert_eq!(
            effective_status("UP", None, Some("OUT_OF_SERVICE")),
            "OUT_OF_SERVICE"
        );
        assert_eq!(effective_status("UP", None, Some("STARTING")), "UP");
        assert_eq!(effective_status("UNKNOWN", None, Some("UP")), "UNKNOWN");
    }

    #[test]
    fn hashcode_orders_statuses_by_name() {
        let mk = |s: &str| View {
            status: s.into(),
            ..view(
                &MicroService::default(),
                &InstanceRecord {
                    body: MicroServiceInstance::default(),
                    eureka: None,
                    ttl_secs: 1,
                    deadline: Instant::now(),
                    registered_ms: 0,
                    renewed_ms: 0,
                    updated_ms: 0,
                },
            )
        };
        let vs = [mk("UP"), mk("DOWN"), mk("UP"), mk("OUT_OF_SERVICE")];
        assert_eq!(hashcode(vs.iter()), "DOWN_1_OUT_OF_SERVICE_1_UP_2_");
        assert_eq!(hashcode([].iter()), "");
    }

    #[test]
    fn endpoints_parse_to_host_and_port() {
        let e = vec![
            "grpc://x:1".to_string(),
            "rest://10.1.2.3:8080?sslEnabled=false".into(),
        ];
        assert_eq!(endpoint_addr(&e), Some(("10.1.2.3".into(), 8080, false)));
        let e = vec!["rest://[::1]:8443/p?sslEnabled=true".to_string()];
        assert_eq!(endpoint_addr(&e), Some(("::1".into(), 8443, true)));
    }
}
