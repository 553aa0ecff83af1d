//! The Eureka v2 REST API of the built-in core, under `/eureka` and `/eureka/v2`
//! (the Spring Cloud and Netflix layouts; eureka-notes §1-§6).
//!
//! Register (`POST /apps/{APP}`, JSON or XML body, 204), renew (`PUT
//! /apps/{APP}/{id}`, 200 or 404 so the client re-registers), cancel
//! (`DELETE`, 200/404), and reads (`/apps`, `/apps/`, `/apps/delta`,
//! `/apps/{APP}`, `/apps/{APP}/{id}`, `/instances/{id}`). Reads answer XML
//! unless `Accept` contains `json` (py-eureka-client sends no `Accept` and
//! parses only XML).
//!
//! Mapping to the registry (see `registry.rs`): a registered app is the
//! microservice default/default, appId `eureka`, lower-case name, `0.0.1`; its
//! instances are SC instances with endpoints `rest://ip:port` (and
//! `rest://ip:securePort?sslEnabled=true`), the same `hostName`, status mapped
//! (`OUT_OF_SERVICE` ↔ `OUTOFSERVICE`), metadata = properties, lease =
//! `leaseInfo.durationInSecs` (> 0, else 90 s). Other Eureka fields are kept
//! in a side record so clients read back what they registered. The lease
//! expires `durationInSecs` after the last renewal (Netflix effectively
//! allows twice that after the first renewal; we do not copy that bug).
//!
//! `/apps/delta` answers an empty delta whose `versions__delta` is the
//! registry revision and whose `apps__hashcode` is the full registry's:
//! clients see the hash mismatch and fetch the full registry.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use quick_xml::events::Event;
use serde_json::{json, Map, Value};

use super::registry::{
    eureka_to_sc_status, now_ms, sc_to_eureka_status, EurekaRegistration, EurekaSide, HealthCheck,
    InstanceRecord, MicroService, MicroServiceInstance, Props,
};
use super::Core;

/// Lease duration when the register body has none, seconds.
const DEFAULT_LEASE_SECS: u64 = 90;
/// Renewal interval when the register body has none, seconds.
const DEFAULT_RENEWAL_SECS: i64 = 30;
const DEFAULT_DC_CLASS: &str = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";
const EMPTY_MAP_CLASS: &str = "java.util.Collections$EmptyMap";
/// Optional string fields kept as given, in Netflix's output order.
const STRING_FIELDS: &[&str] = &[
    "appGroupName",
    "homePageUrl",
    "statusPageUrl",
    "healthCheckUrl",
    "secureHealthCheckUrl",
    "vipAddress",
    "secureVipAddress",
    "asgName",
];

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
        .route("/instances/{id}", get(instance_by_id))
        .with_state(core);
    Router::new()
        .nest("/eureka/v2", api.clone())
        .nest("/eureka", api)
}

// ---- request decoding ----------------------------------------------------

/// One XML element: name, attributes, text and children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

fn parse_xml(body: &[u8]) -> Result<Node, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Node> = Vec::new();
    let start = |e: &quick_xml::events::BytesStart<'_>| -> Result<Node, String> {
        let mut n = Node {
            name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            ..Node::default()
        };
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let v = a.unescape_value().map_err(|e| e.to_string())?;
            n.attrs.push((
                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                v.into_owned(),
            ));
        }
        Ok(n)
    };
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => stack.push(start(&e)?),
            Event::Empty(e) => {
                let n = start(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => return Ok(n),
                }
            }
            Event::End(_) => {
                let n = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(n),
                    None => return Ok(n),
                }
            }
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.decode().map_err(|e| e.to_string())?);
                }
            }
            Event::CData(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(n) = stack.last_mut() {
                    let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c,
                        None => match r.as_ref() {
                            b"amp" => '&',
                            b"lt" => '<',
                            b"gt" => '>',
                            b"quot" => '"',
                            b"apos" => '\'',
                            other => {
                                return Err(format!(
                                    "unknown entity &{};",
                                    String::from_utf8_lossy(other)
                                ))
                            }
                        },
                    };
                    n.text.push(c);
                }
            }
            Event::Eof => return Err("no root element".into()),
            _ => {}
        }
    }
}

/// XStream element-name escaping: `__` ↔ `_`, `_-` ↔ `$`.
fn xml_unescape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut it = name.chars().peekable();
    while let Some(c) = it.next() {
        if c == '_' {
            match it.peek() {
                Some('_') => {
                    it.next();
                    out.push('_');
                    continue;
                }
                Some('-') => {
                    it.next();
                    out.push('$');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

fn xml_escape_name(name: &str) -> String {
    name.replace('_', "__").replace('$', "_-")
}

/// An element as the equivalent Eureka JSON: attributes as `@name`, text as `$`.
fn node_to_value(n: &Node) -> Value {
    if n.children.is_empty() && n.attrs.is_empty() {
        return Value::String(n.text.trim().to_string());
    }
    let mut m = Map::new();
    for (k, v) in &n.attrs {
        m.insert(format!("@{k}"), Value::String(v.clone()));
    }
    for c in &n.children {
        m.insert(xml_unescape_name(&c.name), node_to_value(c));
    }
    let text = n.text.trim();
    if !text.is_empty() {
        m.insert("$".into(), Value::String(text.to_string()));
    }
    Value::Object(m)
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn nonempty(v: Option<&Value>) -> Option<String> {
    text(v)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolish(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// `{"$": 8080, "@enabled": "true"}`, or a bare number.
fn port(v: Option<&Value>, default: i64, default_enabled: bool) -> (i64, bool) {
    match v {
        Some(Value::Object(m)) => (
            int(m.get("$")).unwrap_or(default),
            boolish(m.get("@enabled")).unwrap_or(default_enabled),
        ),
        Some(other) => (int(Some(other)).unwrap_or(default), default_enabled),
        None => (default, default_enabled),
    }
}

fn string_map(v: Option<&Value>) -> Props {
    let mut out = Props::new();
    if let Some(Value::Object(m)) = v {
        for (k, v) in m {
            if k == "@class" {
                continue;
            }
            if let Some(s) = text(Some(v)) {
                out.insert(k.clone(), s);
            }
        }
    }
    out
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
    let inst: Map<String, Value> = if is_xml {
        let root = parse_xml(body).map_err(|e| format!("Cannot parse XML body: {e}"))?;
        if root.name != "instance" {
            return Err(format!("Expected <instance>, got <{}>", root.name));
        }
        match node_to_value(&root) {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    } else {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("Cannot parse JSON body: {e}"))?;
        match v {
            Value::Object(mut m) => match m.remove("instance") {
                Some(Value::Object(i)) => i,
                _ => return Err("Missing instance".into()),
            },
            _ => return Err("Missing instance".into()),
        }
    };
    let host = nonempty(inst.get("hostName"));
    let dc = inst.get("dataCenterInfo").and_then(Value::as_object);
    let dc_metadata = string_map(dc.and_then(|d| d.get("metadata")));
    let id = nonempty(inst.get("instanceId"))
        .or_else(|| {
            dc_metadata
                .get("instance-id")
                .cloned()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| host.clone())
        .ok_or("Missing instanceId")?;
    let host = host.ok_or("Missing hostname")?;
    let ip = nonempty(inst.get("ipAddr")).ok_or("Missing ip address")?;
    let app = nonempty(inst.get("app"))
        .ok_or("Missing appName")?
        .to_ascii_uppercase();
    if app != path_app {
        return Err(format!(
            "Mismatched appName, expecting {path_app} but was {app}"
        ));
    }
    let dc = dc.ok_or("Missing dataCenterInfo")?;
    let dc_name = nonempty(dc.get("name")).ok_or("Missing dataCenterInfo Name")?;
    let status = match nonempty(inst.get("status")).map(|s| s.to_ascii_uppercase()) {
        None => "UP".to_string(),
        Some(s)
            if ["UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"].contains(&s.as_str()) =>
        {
            s
        }
        Some(_) => "UNKNOWN".to_string(),
    };
    let lease = inst.get("leaseInfo").and_then(Value::as_object);
    let duration = lease
        .and_then(|l| int(l.get("durationInSecs")))
        .filter(|d| *d > 0)
        .and_then(|d| u64::try_from(d).ok())
        .unwrap_or(DEFAULT_LEASE_SECS);
    let renewal = lease
        .and_then(|l| int(l.get("renewalIntervalInSecs")))
        .filter(|d| *d > 0)
        .unwrap_or(DEFAULT_RENEWAL_SECS);
    let port = port(inst.get("port"), 7001, true);
    let secure_port = port_secure(inst.get("securePort"));
    let mut strings = BTreeMap::new();
    for f in STRING_FIELDS {
        if let Some(s) = text(inst.get(*f)) {
            strings.insert(*f, s);
        }
    }
    let side = EurekaSide {
        app: app.clone(),
        ip_addr: ip.clone(),
        sid: nonempty(inst.get("sid")).filter(|s| s != "na" && s != "unknown"),
        status: status.clone(),
        overridden_status: nonempty(inst.get("overriddenStatus"))
            .or_else(|| nonempty(inst.get("overriddenstatus")))
            .unwrap_or_else(|| "UNKNOWN".into()),
        port,
        secure_port,
        country_id: int(inst.get("countryId")).unwrap_or(1),
        dc_class: nonempty(dc.get("@class")).unwrap_or_else(|| DEFAULT_DC_CLASS.into()),
        dc_name,
        dc_metadata,
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
    let duration_i = i64::try_from(duration).unwrap_or(i64::MAX);
    let times = ((duration_i + renewal - 1) / renewal - 1).max(0);
    let body = MicroServiceInstance {
        endpoints,
        host_name: host,
        status: eureka_to_sc_status(&status).to_string(),
        properties: string_map(inst.get("metadata")),
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

/// `securePort`: enabled only when the flag says so (XML reader rule).
fn port_secure(v: Option<&Value>) -> (i64, bool) {
    port(v, 7002, false)
}

// ---- the Eureka view of a stored instance --------------------------------

/// Every field a Eureka instance document carries, resolved from the SC record.
#[derive(Debug, Clone)]
struct View {
    instance_id: String,
    host_name: String,
    app: String,
    ip_addr: String,
    sid: Option<String>,
    status: String,
    overridden_status: String,
    port: (i64, bool),
    secure_port: (i64, bool),
    country_id: i64,
    dc_class: String,
    dc_name: String,
    dc_metadata: Props,
    renewal_secs: i64,
    duration_secs: u64,
    registration_ms: i64,
    last_renewal_ms: i64,
    metadata: Props,
    strings: BTreeMap<&'static str, String>,
    last_updated_ms: i64,
    last_dirty_ms: i64,
}

/// Host and port of the first `rest://` or `http(s)://` endpoint; (host, port, ssl).
fn endpoint_addr(endpoints: &[String]) -> Option<(String, i64, bool)> {
    endpoints.iter().find_map(|e| {
        let rest = e
            .strip_prefix("rest://")
            .or_else(|| e.strip_prefix("http://"))
            .or_else(|| e.strip_prefix("https://"))?;
        let ssl = e.starts_with("https://") || e.contains("sslEnabled=true");
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (h, p.parse().ok()?),
            _ => (authority, if ssl { 443 } else { 80 }),
        };
        Some((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            ssl,
        ))
    })
}

fn view(service: &MicroService, rec: &InstanceRecord) -> View {
    let b = &rec.body;
    let sc_status = b.status.as_str();
    let renewal_secs = b
        .health_check
        .as_ref()
        .map(|h| h.interval)
        .filter(|i| *i > 0)
        .unwrap_or(DEFAULT_RENEWAL_SECS);
    let mut v = View {
        instance_id: b.instance_id.clone(),
        host_name: b.host_name.clone(),
        app: service.service_name.to_ascii_uppercase(),
        ip_addr: String::new(),
        sid: None,
        status: sc_to_eureka_status(sc_status).to_string(),
        overridden_status: "UNKNOWN".into(),
        port: (80, true),
        secure_port: (443, false),
        country_id: 1,
        dc_class: DEFAULT_DC_CLASS.into(),
        dc_name: "MyOwn".into(),
        dc_metadata: Props::new(),
        renewal_secs,
        duration_secs: rec.ttl_secs,
        registration_ms: rec.registered_ms,
        last_renewal_ms: rec.renewed_ms,
        metadata: b.properties.clone(),
        strings: BTreeMap::new(),
        last_updated_ms: rec.updated_ms,
        last_dirty_ms: rec.updated_ms,
    };
    match &rec.eureka {
        Some(side) => {
            v.ip_addr = side.ip_addr.clone();
            v.sid = side.sid.clone();
            if eureka_to_sc_status(&side.status) == sc_status {
                v.status = side.status.clone();
            }
            v.overridden_status = side.overridden_status.clone();
            v.port = side.port;
            v.secure_port = side.secure_port;
            v.country_id = side.country_id;
            v.dc_class = side.dc_class.clone();
            v.dc_name = side.dc_name.clone();
            v.dc_metadata = side.dc_metadata.clone();
            v.renewal_secs = side.renewal_interval_secs;
            v.strings = side.strings.clone();
            v.last_dirty_ms = side.last_dirty_ms;
        }
        None => {
            let (host, port, ssl) =
                endpoint_addr(&b.endpoints).unwrap_or_else(|| (b.host_name.clone(), 80, false));
            if ssl {
                v.port = (port, false);
                v.secure_port = (port, true);
            } else {
                v.port = (port, true);
            }
            let scheme = if ssl { "https" } else { "http" };
            v.strings
                .insert("homePageUrl", format!("{scheme}://{host}:{port}/"));
            v.strings
                .insert("vipAddress", service.service_name.to_ascii_lowercase());
            v.ip_addr = host;
        }
    }
    v
}

fn views<'a>(list: impl IntoIterator<Item = (&'a MicroService, &'a InstanceRecord)>) -> Vec<View> {
    list.into_iter().map(|(s, r)| view(s, r)).collect()
}

/// `apps__hashcode` (eureka-notes §4.5): `STATUS_COUNT_` per status, statuses by name.
fn hashcode<'a>(views: impl IntoIterator<Item = &'a View>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in views {
        *counts.entry(v.status.as_str()).or_default() += 1;
    }
    counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
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
    m.insert("actionType".into(), json!("ADDED"));
    Value::Object(m)
}

fn app_json(name: &str, views: &[View]) -> Value {
    json!({"name": name, "instance": views.iter().map(instance_json).collect::<Vec<_>>()})
}

fn apps_json(apps: &[(String, Vec<View>)], delta: &str, hash: &str) -> Value {
    json!({"applications": {
        "versions__delta": delta,
        "apps__hashcode": hash,
        "application": apps.iter().map(|(n, v)| app_json(n, v)).collect::<Vec<_>>(),
    }})
}

// ---- XML rendering (XStream style, two-space indent, no declaration) -----

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Whether `name` can be an XML element name (after escaping).
fn xml_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn leaf(out: &mut String, indent: usize, name: &str, value: &str) {
    out.push_str(&format!("{:indent$}<{name}>{}</{name}>\n", "", esc(value)));
}

fn map_xml(out: &mut String, indent: usize, name: &str, map: &Props, empty_class: bool) {
    if map.is_empty() {
        if empty_class {
            out.push_str(&format!(
                "{:indent$}<{name} class=\"{EMPTY_MAP_CLASS}\"/>\n",
                ""
            ));
        }
        return;
    }
    out.push_str(&format!("{:indent$}<{name}>\n", ""));
    for (k, v) in map {
        let key = xml_escape_name(k);
        if xml_name_ok(&key) {
            leaf(out, indent + 2, &key, v);
        } else {
            tracing::warn!(key = %k, "metadata key cannot be an XML element name, left out");
        }
    }
    out.push_str(&format!("{:indent$}</{name}>\n", ""));
}

fn instance_xml(out: &mut String, indent: usize, v: &View) {
    let i = indent + 2;
    out.push_str(&format!("{:indent$}<instance>\n", ""));
    leaf(out, i, "instanceId", &v.instance_id);
    leaf(out, i, "hostName", &v.host_name);
    leaf(out, i, "app", &v.app);
    leaf(out, i, "ipAddr", &v.ip_addr);
    if let Some(sid) = &v.sid {
        leaf(out, i, "sid", sid);
    }
    leaf(out, i, "status", &v.status);
    leaf(out, i, "overriddenstatus", &v.overridden_status);
    out.push_str(&format!(
        "{:i$}<port enabled=\"{}\">{}</port>\n",
        "", v.port.1, v.port.0
    ));
    out.push_str(&format!(
        "{:i$}<securePort enabled=\"{}\">{}</securePort>\n",
        "", v.secure_port.1, v.secure_port.0
    ));
    leaf(out, i, "countryId", &v.country_id.to_string());
    out.push_str(&format!(
        "{:i$}<dataCenterInfo class=\"{}\">\n",
        "",
        esc(&v.dc_class)
    ));
    leaf(out, i + 2, "name", &v.dc_name);
    map_xml(out, i + 2, "metadata", &v.dc_metadata, false);
    out.push_str(&format!("{:i$}</dataCenterInfo>\n", ""));
    out.push_str(&format!("{:i$}<leaseInfo>\n", ""));
    for (k, n) in [
        ("renewalIntervalInSecs", v.renewal_secs),
        (
            "durationInSecs",
            i64::try_from(v.duration_secs).unwrap_or(i64::MAX),
        ),
        ("registrationTimestamp", v.registration_ms),
        ("lastRenewalTimestamp", v.last_renewal_ms),
        ("evictionTimestamp", 0),
        ("serviceUpTimestamp", v.registration_ms),
    ] {
        leaf(out, i + 2, k, &n.to_string());
    }
    out.push_str(&format!("{:i$}</leaseInfo>\n", ""));
    map_xml(out, i, "metadata", &v.metadata, true);
    for (k, s) in &v.strings {
        leaf(out, i, k, s);
    }
    leaf(out, i, "isCoordinatingDiscoveryServer", "false");
    leaf(
        out,
        i,
        "lastUpdatedTimestamp",
        &v.last_updated_ms.to_string(),
    );
    leaf(out, i, "lastDirtyTimestamp", &v.last_dirty_ms.to_string());
    leaf(out, i, "actionType", "ADDED");
    out.push_str(&format!("{:indent$}</instance>\n", ""));
}

fn app_xml(out: &mut String, indent: usize, name: &str, views: &[View]) {
    out.push_str(&format!("{:indent$}<application>\n", ""));
    leaf(out, indent + 2, "name", name);
    for v in views {
        instance_xml(out, indent + 2, v);
    }
    out.push_str(&format!("{:indent$}</application>\n", ""));
}

fn apps_xml(apps: &[(String, Vec<View>)], delta: &str, hash: &str) -> String {
    let mut out = String::from("<applications>\n");
    leaf(&mut out, 2, "versions__delta", delta);
    leaf(&mut out, 2, "apps__hashcode", hash);
    for (n, v) in apps {
        app_xml(&mut out, 2, n, v);
    }
    out.push_str("</applications>\n");
    out
}

// ---- handlers --------------------------------------------------------------

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("json")))
}

/// A 200 document in the negotiated format, gzip-compressed when `gzip` is set.
fn document(json_body: bool, body: String, gzip: bool) -> Response {
    let ctype = if json_body {
        "application/json"
    } else {
        "application/xml"
    };
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if enc.write_all(body.as_bytes()).is_ok() {
            if let Ok(bytes) = enc.finish() {
                return (
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
                        (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                    ],
                    bytes,
                )
                    .into_response();
            }
        }
    }
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(ctype))],
        body,
    )
        .into_response()
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("gzip")))
}

/// Snapshot of every app (views built under the lock, rendered outside it).
fn snapshot(core: &Core) -> (Vec<(String, Vec<View>)>, u64) {
    let reg = core.lock();
    let apps = reg
        .eureka_apps()
        .into_iter()
        .map(|(name, list)| (name, views(list)))
        .collect();
    (apps, reg.revision())
}

fn apps_document(headers: &HeaderMap, apps: &[(String, Vec<View>)], delta: &str) -> Response {
    let hash = hashcode(apps.iter().flat_map(|(_, v)| v.iter()));
    let j = wants_json(headers);
    let body = if j {
        apps_json(apps, delta, &hash).to_string()
    } else {
        apps_xml(apps, delta, &hash)
    };
    document(j, body, accepts_gzip(headers))
}

async fn all_apps(State(core): State<Core>, headers: HeaderMap) -> Response {
    let (apps, _) = snapshot(&core);
    apps_document(&headers, &apps, "1")
}

async fn delta(State(core): State<Core>, headers: HeaderMap) -> Response {
    let (apps, rev) = snapshot(&core);
    let hash = hashcode(apps.iter().flat_map(|(_, v)| v.iter()));
    let j = wants_json(&headers);
    let delta = rev.to_string();
    let body = if j {
        apps_json(&[], &delta, &hash).to_string()
    } else {
        apps_xml(&[], &delta, &hash)
    };
    document(j, body, accepts_gzip(&headers))
}

async fn one_app(
    State(core): State<Core>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    let app = app.to_ascii_uppercase();
    let list = views(core.lock().eureka_app(&app));
    if list.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let j = wants_json(&headers);
    let body = if j {
        json!({"application": app_json(&app, &list)}).to_string()
    } else {
        let mut out = String::new();
        app_xml(&mut out, 0, &app, &list);
        out
    };
    document(j, body, false)
}

fn instance_document(headers: &HeaderMap, v: Option<View>) -> Response {
    let Some(v) = v else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let j = wants_json(headers);
    let body = if j {
        json!({"instance": instance_json(&v)}).to_string()
    } else {
        let mut out = String::new();
        instance_xml(&mut out, 0, &v);
        out
    };
    document(j, body, false)
}

async fn one_instance(
    State(core): State<Core>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let v = core
        .lock()
        .eureka_instance(&app.to_ascii_uppercase(), &id)
        .map(|(s, r)| view(s, r));
    instance_document(&headers, v)
}

async fn instance_by_id(
    State(core): State<Core>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let v = core
        .lock()
        .eureka_instance_any(&id)
        .map(|(s, r)| view(s, r));
    instance_document(&headers, v)
}

async fn register(
    State(core): State<Core>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = app.to_ascii_uppercase();
    match registration(&app, &body, &headers) {
        Ok(reg) => {
            core.lock()
                .eureka_register(&app, reg, Instant::now(), now_ms());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(reason) => {
            tracing::debug!(%app, %reason, "eureka register refused");
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
                reason,
            )
                .into_response()
        }
    }
}

async fn renew(State(core): State<Core>, Path((app, id)): Path<(String, String)>) -> StatusCode {
    if core
        .lock()
        .eureka_renew(&app.to_ascii_uppercase(), &id, Instant::now(), now_ms())
    {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn cancel(State(core): State<Core>, Path((app, id)): Path<(String, String)>) -> StatusCode {
    if core.lock().eureka_cancel(&app.to_ascii_uppercase(), &id) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
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
        let resp = super::super::router(core.clone())
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
