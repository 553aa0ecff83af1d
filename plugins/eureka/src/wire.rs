//! Eureka v2 documents (JSON, and XML through `syncer_wire_eureka::xml`) and their
//! conversion to and from the neutral model.
//!
//! Documents are walked as [`serde_json::Value`] with the lenient readers of
//! `syncer_wire_eureka::field` (eureka-notes §4, §8), which take every shape real servers
//! write; this module is the mapping between those documents and the model.
//!
//! Eureka-only fields travel in reserved instance properties (see [`crate::keys`]): reading
//! adds them, writing a register body takes them back out of the metadata into their fields.

use std::collections::BTreeMap;

use serde_json::{json, Value};
#[cfg(test)]
use syncer_plugin_api::Snapshot;
use syncer_plugin_api::{HealthCheck, Instance, InstanceStatus, Service, DEFAULT_DOMAIN_PROJECT};

use syncer_plugin_http::endpoint::{self, Endpoint};

use syncer_wire_eureka::field::{self, metadata, one_or_many, port, positive, scalar, text};
use syncer_wire_eureka::{
    AMAZON_DC_CLASS, AMAZON_DC_NAME, DEFAULT_DC_CLASS, DEFAULT_LEASE_DURATION_SECS,
    DEFAULT_RENEWAL_INTERVAL_SECS, MY_OWN_DC_NAME, UNKNOWN,
};

use crate::keys;

/// appId of every service read from Eureka (the 1.3.0 mapping).
pub(crate) const EUREKA_APP_ID: &str = "eureka";
/// Version of every service read from Eureka (the 1.3.0 mapping).
pub(crate) const EUREKA_VERSION: &str = "0.0.1";
/// Lower-case service name of an Eureka app name (the 1.3.0 mapping).
pub(crate) fn service_name(app: &str) -> String {
    app.to_lowercase()
}

/// The neutral service an Eureka app maps to: tenant `default/default`, id and serviceName the
/// lower-case app name, appId `eureka`, version `0.0.1`.
pub(crate) fn app_to_service(app: &str) -> Service {
    let name = service_name(app);
    Service {
        domain_project: DEFAULT_DOMAIN_PROJECT.to_owned(),
        service_id: name.clone(),
        app_id: EUREKA_APP_ID.to_owned(),
        service_name: name,
        version: EUREKA_VERSION.to_owned(),
        environment: String::new(),
        properties: BTreeMap::new(),
    }
}

/// One Eureka `instance` object → a neutral instance of service `service_id`; `None` when it
/// has neither `instanceId` nor `hostName` (Eureka's `InstanceInfo.getId` fallback).
///
/// Endpoints: `http://ipAddr:port` if `port` is enabled, then `https://ipAddr:securePort` if
/// `securePort` is enabled (the 1.3.0 mapping). Health check: derived from `leaseInfo` when
/// present: interval = `renewalIntervalInSecs`, times such that interval × (times + 1) covers
/// `durationInSecs` (30 s / 90 s → 30 × 2); `url` = `healthCheckUrl`. Without `leaseInfo` but
/// with a `healthCheckUrl`, Eureka's defaults 30 s / 90 s; with neither, `None`.
pub(crate) fn to_instance(v: &Value, service_id: &str) -> Option<Instance> {
    let instance_id = field::instance_id(v)?;
    let host_name = text(v, "hostName").unwrap_or_default();
    let ip = text(v, "ipAddr").unwrap_or_else(|| host_name.clone());
    let mut endpoints = Vec::new();
    if !ip.is_empty() {
        if let Some(p) = port(v.get("port"), true).enabled_tcp() {
            endpoints.push(endpoint::format("http", &ip, p, ""));
        }
        if let Some(p) = port(v.get("securePort"), false).enabled_tcp() {
            endpoints.push(endpoint::format("https", &ip, p, ""));
        }
    }
    let url = text(v, "healthCheckUrl").unwrap_or_default();
    let lease = v.get("leaseInfo").filter(|l| l.is_object());
    let health_check = if lease.is_some() || !url.is_empty() {
        let interval = lease
            .and_then(|l| positive(l.get("renewalIntervalInSecs")))
            .unwrap_or(DEFAULT_RENEWAL_INTERVAL_SECS);
        let duration = lease
            .and_then(|l| positive(l.get("durationInSecs")))
            .unwrap_or(DEFAULT_LEASE_DURATION_SECS);
        Some(HealthCheck {
            interval_secs: interval,
            times: duration.div_ceil(interval).saturating_sub(1),
            url,
        })
    } else {
        None
    };
    Some(Instance {
        instance_id,
        service_id: service_id.to_owned(),
        host_name,
        endpoints,
        status: InstanceStatus::parse(&text(v, "status").unwrap_or_default()),
        health_check,
        properties: with_eureka_fields(v, metadata(v.get("metadata"))),
    })
}

/// `properties` plus the Eureka-only fields of instance document `v` under their reserved
/// keys ([`keys`]). Defaults (`overriddenStatus` `UNKNOWN`, `countryId` 1, data center `MyOwn`
/// with the default class) and enabled ports (already endpoints) add nothing.
fn with_eureka_fields(
    v: &Value,
    mut properties: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for (field, key) in keys::STRING_FIELDS {
        if let Some(s) = text(v, field) {
            properties.insert((*key).to_owned(), s);
        }
    }
    if let Some(s) = text(v, "overriddenStatus").or_else(|| text(v, "overriddenstatus")) {
        let s = InstanceStatus::parse(&s).as_eureka();
        if s != UNKNOWN {
            properties.insert(keys::OVERRIDDEN_STATUS.to_owned(), s.to_owned());
        }
    }
    // A disabled port's value, unless it is the one a register body writes anyway.
    for (field, key, enabled_by_default, written) in [
        ("port", keys::PORT, true, 80),
        ("securePort", keys::SECURE_PORT, false, 443),
    ] {
        let p = port(v.get(field), enabled_by_default);
        if p.enabled_tcp().is_none() {
            if let Some(n) = p.tcp().filter(|n| *n != written) {
                properties.insert(key.to_owned(), n.to_string());
            }
        }
    }
    if let Some(h) = text(v, "hostName").filter(|h| text(v, "ipAddr").as_ref() != Some(h)) {
        properties.insert(keys::HOST_NAME.to_owned(), h);
    }
    if let Some(c) = text(v, "countryId").filter(|c| c != "1") {
        properties.insert(keys::COUNTRY_ID.to_owned(), c);
    }
    if let Some(dc) = v.get("dataCenterInfo").filter(|d| d.is_object()) {
        let name = text(dc, "name").unwrap_or_else(|| MY_OWN_DC_NAME.to_owned());
        let class = text(dc, "@class").unwrap_or_else(|| DEFAULT_DC_CLASS.to_owned());
        let dc_metadata = metadata(dc.get("metadata"));
        if name != MY_OWN_DC_NAME || class != DEFAULT_DC_CLASS || !dc_metadata.is_empty() {
            properties.insert(keys::DATA_CENTER_NAME.to_owned(), name);
            properties.insert(keys::DATA_CENTER_CLASS.to_owned(), class);
            for (k, v) in dc_metadata {
                properties.insert(format!("{}{k}", keys::DATA_CENTER_METADATA_PREFIX), v);
            }
        }
    }
    properties
}

/// A `GET /apps` (or `/apps/delta`) document → snapshot. Every app becomes a service (see
/// [`app_to_service`]), every instance of every status an instance.
///
/// # Errors
/// A message when the document has no `applications` object.
#[cfg(test)]
pub(crate) fn apps_to_snapshot(doc: &Value) -> Result<Snapshot, String> {
    let apps = doc
        .get("applications")
        .filter(|a| a.is_object())
        .ok_or_else(|| "no \"applications\" object".to_owned())?;
    let mut snapshot = Snapshot::default();
    for app in one_or_many(apps.get("application")) {
        let Some(name) = text(app, "name") else {
            continue;
        };
        let service = app_to_service(&name);
        snapshot.instances.extend(
            one_or_many(app.get("instance"))
                .into_iter()
                .filter_map(|i| to_instance(i, &service.service_id)),
        );
        snapshot.services.push(service);
    }
    Ok(snapshot)
}

/// The `POST /apps/{APP}` body for `instance` of the service named `name` (lower case).
///
/// `ipAddr` and `hostName` are the host of the first http(s) endpoint (else
/// `instance.host_name`); `port` is the first `http` endpoint's, `securePort` the first
/// `https` endpoint's (else the disabled value kept under [`keys::PORT`] /
/// [`keys::SECURE_PORT`], else 80 / 443, disabled); `leaseInfo` is the health check's interval
/// and interval × (times + 1) (else Eureka's 30 s / 90 s). The Eureka-only fields come back
/// out of their reserved properties ([`keys`]): URLs, VIP addresses (default: the service
/// name, for an instance that has neither), `overriddenStatus`, `countryId`, `dataCenterInfo` (with Amazon metadata); the
/// remaining properties are the `metadata`. `lastDirtyTimestamp` is left out so the server
/// stamps "now" and a re-registration replaces the stored copy (eureka-notes §3.1).
pub(crate) fn register_body(name: &str, instance: &Instance) -> Value {
    let parsed: Vec<Endpoint<'_>> = instance
        .endpoints
        .iter()
        .filter_map(|e| Endpoint::parse(e))
        .filter(|e| e.scheme.eq_ignore_ascii_case("http") || e.scheme.eq_ignore_ascii_case("https"))
        .collect();
    let first_of = |scheme: &str| {
        parsed
            .iter()
            .find(|e| e.scheme.eq_ignore_ascii_case(scheme))
            .and_then(|e| e.port_or_default())
    };
    let props = &instance.properties;
    let kept_port = |key: &str, default: u16| {
        props
            .get(key)
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or(default)
    };
    let ip = parsed
        .first()
        .map(|e| e.host.to_owned())
        .unwrap_or_else(|| instance.host_name.clone());
    let port = match first_of("http") {
        Some(p) => json!({"$": p, "@enabled": "true"}),
        None => json!({"$": kept_port(keys::PORT, 80), "@enabled": "false"}),
    };
    let secure_port = match first_of("https") {
        Some(p) => json!({"$": p, "@enabled": "true"}),
        None => json!({"$": kept_port(keys::SECURE_PORT, 443), "@enabled": "false"}),
    };
    let (interval, duration) = match &instance.health_check {
        Some(h) => {
            let interval = h.interval_secs.max(1);
            (interval, interval.saturating_mul(h.times.saturating_add(1)))
        }
        None => (DEFAULT_RENEWAL_INTERVAL_SECS, DEFAULT_LEASE_DURATION_SECS),
    };
    let dc_name = props
        .get(keys::DATA_CENTER_NAME)
        .cloned()
        .unwrap_or_else(|| MY_OWN_DC_NAME.to_owned());
    let dc_class = props
        .get(keys::DATA_CENTER_CLASS)
        .cloned()
        .unwrap_or_else(|| {
            if dc_name == AMAZON_DC_NAME {
                AMAZON_DC_CLASS.to_owned()
            } else {
                DEFAULT_DC_CLASS.to_owned()
            }
        });
    let mut dc = json!({"@class": dc_class, "name": dc_name});
    let dc_metadata: BTreeMap<&str, &String> = props
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(keys::DATA_CENTER_METADATA_PREFIX)
                .map(|k| (k, v))
        })
        .collect();
    if !dc_metadata.is_empty() {
        dc["metadata"] = json!(dc_metadata);
    }
    let metadata: BTreeMap<&String, &String> = props
        .iter()
        .filter(|(k, _)| !k.starts_with(keys::PREFIX))
        .collect();
    let overridden = props
        .get(keys::OVERRIDDEN_STATUS)
        .map(|s| InstanceStatus::parse(s).as_eureka())
        .unwrap_or(UNKNOWN);
    let country: i64 = props
        .get(keys::COUNTRY_ID)
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(1);
    let host_name = props.get(keys::HOST_NAME).unwrap_or(&ip);
    let mut body = json!({
        "instanceId": instance.instance_id,
        "hostName": host_name,
        "app": name.to_uppercase(),
        "ipAddr": ip,
        "status": instance.status.as_eureka(),
        "overriddenStatus": overridden,
        "port": port,
        "securePort": secure_port,
        "countryId": country,
        "dataCenterInfo": dc,
        "leaseInfo": {"renewalIntervalInSecs": interval, "durationInSecs": duration},
        "metadata": metadata,
        "vipAddress": name,
        "secureVipAddress": name,
        "isCoordinatingDiscoveryServer": "false"
    });
    if let Some(h) = instance.health_check.as_ref().filter(|h| !h.url.is_empty()) {
        body["healthCheckUrl"] = Value::String(h.url.clone());
    }
    // An instance read from Eureka carries its own VIP addresses (or deliberately none).
    if props.contains_key(keys::VIP_ADDRESS) || props.contains_key(keys::SECURE_VIP_ADDRESS) {
        if let Some(b) = body.as_object_mut() {
            b.remove("vipAddress");
            b.remove("secureVipAddress");
        }
    }
    for (field, key) in keys::STRING_FIELDS {
        if let Some(v) = props.get(*key) {
            body[*field] = Value::String(v.clone());
        }
    }
    json!({ "instance": body })
}

/// The Eureka status string of instance document `v` as the Java client computes it for the
/// hash: the enum name, anything unrecognised `UNKNOWN`.
pub(crate) fn eureka_status(v: &Value) -> &'static str {
    InstanceStatus::parse(&text(v, "status").unwrap_or_default()).as_eureka()
}

/// The instances of an `applications` document by app name: (app, instance documents).
pub(crate) fn apps_of(doc: &Value) -> Result<Vec<(String, Vec<&Value>)>, String> {
    let apps = doc
        .get("applications")
        .filter(|a| a.is_object())
        .ok_or_else(|| "no \"applications\" object".to_owned())?;
    Ok(one_or_many(apps.get("application"))
        .into_iter()
        .filter_map(|app| {
            let name = text(app, "name")?.to_uppercase();
            Some((name, one_or_many(app.get("instance"))))
        })
        .collect())
}

/// A string field of the `applications` object (`apps__hashcode`, `versions__delta`).
pub(crate) fn apps_field(doc: &Value, key: &str) -> Option<String> {
    doc.get("applications").and_then(|a| scalar(a.get(key)))
}

/// `actionType` of a delta entry, upper case (`ADDED`, `MODIFIED`, `DELETED`).
pub(crate) fn action_type(v: &Value) -> String {
    text(v, "actionType").unwrap_or_default().to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::{ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID};

    /// The properties that are metadata (no reserved `eureka.*` key).
    fn user(p: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        p.iter()
            .filter(|(k, _)| !k.starts_with(keys::PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture exists");
        serde_json::from_str(&text).expect("fixture is json")
    }

    #[test]
    fn a_modern_apps_document_becomes_a_snapshot() {
        let snapshot = apps_to_snapshot(&fixture("apps-response-modern.json")).expect("parses");
        assert_eq!(snapshot.services, vec![app_to_service("FOO")]);
        assert_eq!(snapshot.services[0].service_id, "foo");
        assert_eq!(snapshot.services[0].app_id, "eureka");
        assert_eq!(snapshot.services[0].version, "0.0.1");
        assert_eq!(snapshot.services[0].domain_project, "default/default");
        assert_eq!(
            snapshot.instances,
            vec![Instance {
                instance_id: "localhost:foo".into(),
                service_id: "foo".into(),
                host_name: "localhost".into(),
                endpoints: vec!["http://192.168.56.1:8080".into()],
                status: InstanceStatus::Up,
                health_check: Some(HealthCheck {
                    interval_secs: 30,
                    times: 2,
                    url: "http://localhost:8080/health".into()
                }),
                // Only the `@class` marker was in `metadata`; the Eureka-only fields that are
                // not defaults are kept under their reserved keys.
                properties: BTreeMap::from(
                    [
                        (keys::HEALTH_CHECK_URL, "http://localhost:8080/health"),
                        (keys::HOME_PAGE_URL, "http://localhost:8080/"),
                        (keys::HOST_NAME, "localhost"),
                        (keys::STATUS_PAGE_URL, "http://localhost:8080/info"),
                        (keys::VIP_ADDRESS, "foo"),
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                ),
            }]
        );
    }

    #[test]
    fn a_legacy_document_with_single_objects_and_string_ports_parses() {
        let snapshot =
            apps_to_snapshot(&fixture("apps-response-legacy-eureka-1.1.json")).expect("parses");
        let names: Vec<&str> = snapshot
            .services
            .iter()
            .map(|s| s.service_name.as_str())
            .collect();
        assert_eq!(names, ["testeng.metricsd", "testeng.lsm"]);
        assert_eq!(snapshot.instances.len(), 3);
        let first = &snapshot.instances[0];
        // No instanceId in old servers: the id falls back to hostName.
        assert_eq!(first.instance_id, "192.168.40.94:7101");
        assert_eq!(first.service_id, "testeng.metricsd");
        assert_eq!(
            first.endpoints,
            ["http://192.168.40.94:7101", "https://192.168.40.94:7101"]
        );
        assert_eq!(first.properties["base-uri"], "https://192.168.40.94:7101");
        assert_eq!(user(&first.properties).len(), 3);
        assert!(snapshot
            .instances
            .iter()
            .skip(1)
            .all(|i| i.service_id == "testeng.lsm"));
    }

    #[test]
    fn a_single_instance_object_with_numeric_ports_parses() {
        let snapshot = apps_to_snapshot(&fixture("apps-response-single-instance-object.json"))
            .expect("parses");
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.instances.len(), 1);
        assert_eq!(
            snapshot.instances[0].endpoints,
            ["http://192.168.40.94:7101", "https://192.168.40.94:7101"]
        );
    }

    #[test]
    fn register_bodies_of_real_clients_parse_as_instances() {
        let steeltoe = fixture("register-request-steeltoe.json");
        let i = to_instance(&steeltoe["instance"], "foobar").expect("parses");
        assert_eq!(i.instance_id, "DESKTOP-GNQ5SUT");
        // `@enabled` as booleans; the secure port is disabled.
        assert_eq!(i.endpoints, ["http://192.168.0.147:80"]);
        // `@class` marker and a null value are not metadata.
        assert!(user(&i.properties).is_empty());

        let js = fixture("register-request-eureka-js-client.json");
        let i = to_instance(&js["instance"], "account-server").expect("parses");
        assert_eq!(i.endpoints, ["http://127.0.0.1:9091"]);
        assert_eq!(
            i.health_check,
            Some(HealthCheck {
                interval_secs: 30,
                times: 2,
                url: "http://127.0.0.1:9091/health".into()
            })
        );
        assert_eq!(i.properties["origin"], "eureka-js-client-demo");

        let py = fixture("register-request-py-eureka-client.json");
        let i = to_instance(&py["instance"], "account-server").expect("parses");
        // 3 s renewals, 9 s lease: 3 × (2 + 1).
        assert_eq!(
            i.health_check.as_ref().map(|h| (h.interval_secs, h.times)),
            Some((3, 2))
        );
        assert_eq!(i.properties["management.port"], "9090");
    }

    #[test]
    fn an_empty_registry_and_odd_shapes_parse() {
        let empty: Value = serde_json::from_str(
            r#"{"applications":{"versions__delta":"1","apps__hashcode":"","application":[]}}"#,
        )
        .expect("json");
        assert_eq!(
            apps_to_snapshot(&empty).expect("parses"),
            Snapshot::default()
        );
        let no_list: Value = serde_json::from_str(r#"{"applications":{}}"#).expect("json");
        assert_eq!(
            apps_to_snapshot(&no_list).expect("parses"),
            Snapshot::default()
        );
        let v: Value = serde_json::from_str(
            r#"{"instance":{"ipAddr":"::1","port":{"$":"8080"},"status":null}}"#,
        )
        .expect("json");
        // No instanceId and no hostName: not an instance.
        assert_eq!(to_instance(&v["instance"], "x"), None);
        let v: Value = serde_json::from_str(
            r#"{"hostName":"h","ipAddr":"::1","port":{"$":"8080"},"status":"OUT_OF_SERVICE"}"#,
        )
        .expect("json");
        let i = to_instance(&v, "x").expect("parses");
        assert_eq!(i.endpoints, ["http://[::1]:8080"]);
        assert_eq!(i.status, InstanceStatus::OutOfService);
        assert_eq!(i.health_check, None);
        assert!(apps_to_snapshot(&serde_json::json!({"foo": 1})).is_err());
    }

    #[test]
    fn a_neutral_instance_becomes_a_register_body() {
        let instance = Instance {
            instance_id: "dc1-abc".into(),
            service_id: "ignored".into(),
            host_name: "node-1".into(),
            endpoints: vec![
                "highway://10.0.0.1:7070".into(),
                "http://10.0.0.1:8080".into(),
                "https://10.0.0.1".into(),
            ],
            status: InstanceStatus::Testing,
            health_check: Some(HealthCheck {
                interval_secs: 10,
                times: 2,
                url: "http://10.0.0.1:8080/health".into(),
            }),
            properties: BTreeMap::from([
                (ORIGIN_CLUSTER.to_owned(), "dc1".to_owned()),
                (ORIGIN_SERVICE_ID.to_owned(), "s1".to_owned()),
                (ORIGIN_INSTANCE_ID.to_owned(), "i1".to_owned()),
            ]),
        };
        let body = register_body("account-server", &instance);
        assert_eq!(
            body,
            serde_json::json!({"instance": {
                "instanceId": "dc1-abc",
                "hostName": "10.0.0.1",
                "app": "ACCOUNT-SERVER",
                "ipAddr": "10.0.0.1",
                "status": "STARTING",
                "overriddenStatus": "UNKNOWN",
                "port": {"$": 8080, "@enabled": "true"},
                "securePort": {"$": 443, "@enabled": "true"},
                "countryId": 1,
                "dataCenterInfo": {
                    "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                    "name": "MyOwn"
                },
                "leaseInfo": {"renewalIntervalInSecs": 10, "durationInSecs": 30},
                "metadata": {"syncerOriginCluster": "dc1", "syncerOriginServiceId": "s1",
                             "syncerOriginInstanceId": "i1"},
                "vipAddress": "account-server",
                "secureVipAddress": "account-server",
                "isCoordinatingDiscoveryServer": "false",
                "healthCheckUrl": "http://10.0.0.1:8080/health"
            }})
        );
        // And back: the same endpoints (minus the non-http one), lease and metadata.
        let back = to_instance(&body["instance"], "account-server").expect("parses");
        assert_eq!(
            back.endpoints,
            ["http://10.0.0.1:8080", "https://10.0.0.1:443"]
        );
        assert_eq!(back.health_check, instance.health_check);
        assert_eq!(user(&back.properties), instance.properties);
        assert_eq!(back.properties[keys::VIP_ADDRESS], "account-server");
        assert_eq!(back.status, InstanceStatus::Starting);
    }

    #[test]
    fn a_register_body_without_endpoints_or_health_check_uses_defaults() {
        let instance = Instance {
            instance_id: "i".into(),
            host_name: "h".into(),
            endpoints: vec!["https://[::1]:9443".into()],
            ..Instance::default()
        };
        let body = register_body("svc", &instance);
        let i = &body["instance"];
        assert_eq!(i["ipAddr"], "::1");
        assert_eq!(i["port"], serde_json::json!({"$": 80, "@enabled": "false"}));
        assert_eq!(
            i["securePort"],
            serde_json::json!({"$": 9443, "@enabled": "true"})
        );
        assert_eq!(
            i["leaseInfo"],
            serde_json::json!({"renewalIntervalInSecs": 30, "durationInSecs": 90})
        );
        assert!(i.get("healthCheckUrl").is_none());
        let instance = Instance {
            instance_id: "i".into(),
            host_name: "h".into(),
            ..Instance::default()
        };
        assert_eq!(register_body("svc", &instance)["instance"]["ipAddr"], "h");
    }

    /// What a Eureka client reads from an instance document, normalised (defaults filled in,
    /// both spellings and encodings of a value made one). Server-owned fields (lease
    /// timestamps, `lastUpdatedTimestamp`, `lastDirtyTimestamp`, `actionType`) are not here:
    /// a registering client does not own them.
    fn client_fields(v: &Value) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |k: &str, val: Option<String>| {
            if let Some(val) = val.filter(|s| !s.is_empty()) {
                out.insert(k.to_owned(), val);
            }
        };
        put("id", field::instance_id(v));
        put("app", text(v, "app").map(|a| a.to_uppercase()));
        put("hostName", text(v, "hostName"));
        put("ipAddr", text(v, "ipAddr"));
        put("status", Some(eureka_status(v).to_owned()));
        let overridden = text(v, "overriddenStatus")
            .or_else(|| text(v, "overriddenstatus"))
            .unwrap_or_default();
        put(
            "overriddenStatus",
            Some(InstanceStatus::parse(&overridden).as_eureka().to_owned()),
        );
        for (field, on) in [("port", true), ("securePort", false)] {
            let p = port(v.get(field), on);
            let enabled = p.enabled_tcp().is_some();
            put(&format!("{field}.enabled"), Some(enabled.to_string()));
            put(&format!("{field}.$"), p.tcp().map(|p| p.to_string()));
        }
        put(
            "countryId",
            Some(text(v, "countryId").unwrap_or_else(|| "1".into())),
        );
        let dc = v.get("dataCenterInfo").cloned().unwrap_or(Value::Null);
        put(
            "dc.name",
            Some(text(&dc, "name").unwrap_or_else(|| MY_OWN_DC_NAME.into())),
        );
        put(
            "dc.class",
            Some(text(&dc, "@class").unwrap_or_else(|| DEFAULT_DC_CLASS.into())),
        );
        for (k, val) in metadata(dc.get("metadata")) {
            put(&format!("dc.metadata.{k}"), Some(val));
        }
        let lease = v.get("leaseInfo").cloned().unwrap_or(Value::Null);
        put(
            "renewal",
            Some(
                positive(lease.get("renewalIntervalInSecs"))
                    .unwrap_or(30)
                    .to_string(),
            ),
        );
        put(
            "duration",
            Some(
                positive(lease.get("durationInSecs"))
                    .unwrap_or(90)
                    .to_string(),
            ),
        );
        for (k, val) in metadata(v.get("metadata")) {
            put(&format!("metadata.{k}"), Some(val));
        }
        for (field, _) in keys::STRING_FIELDS {
            put(field, text(v, field));
        }
        out
    }

    /// Every instance document of a fixture (an `applications`, `instance` document).
    fn instance_docs(doc: &Value) -> Vec<Value> {
        if let Some(i) = doc.get("instance") {
            return vec![i.clone()];
        }
        apps_of(doc)
            .expect("applications document")
            .into_iter()
            .flat_map(|(_, list)| list.into_iter().cloned())
            .collect()
    }

    fn any_fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).expect("fixture exists");
        if name.ends_with(".xml") {
            syncer_wire_eureka::xml::parse(&bytes).expect("fixture is xml")
        } else {
            serde_json::from_slice(&bytes).expect("fixture is json")
        }
    }

    #[test]
    fn real_payloads_survive_the_model_and_both_encodings_without_losing_a_client_field() {
        let mut seen = 0;
        for name in [
            "apps-response.xml",
            "apps-response-empty.xml",
            "apps-response-modern.json",
            "apps-response-legacy-eureka-1.1.json",
            "apps-response-single-instance-object.json",
            "delta-response.json",
            "register-request.xml",
            "register-request-steeltoe.json",
            "register-request-py-eureka-client.json",
            "register-request-eureka-js-client.json",
        ] {
            let doc = any_fixture(name);
            for original in instance_docs(&doc) {
                let app = text(&original, "app").expect("app");
                let model = to_instance(&original, &service_name(&app)).expect("an instance");
                // JSON out (what the plugin registers), then XML out and in again.
                let json_body = register_body(&service_name(&app), &model);
                let xml_bytes = syncer_wire_eureka::xml::write(&json_body);
                let xml_text = String::from_utf8_lossy(&xml_bytes);
                let xml_body = syncer_wire_eureka::xml::parse(&xml_bytes).expect("our xml parses");
                for (encoding, body) in [("json", &json_body), ("xml", &xml_body)] {
                    let mut expected = client_fields(&original);
                    let mut got = client_fields(&body["instance"]);
                    // A port the client left out is disabled; its value is our default.
                    for k in ["port.$", "securePort.$"] {
                        if !expected.contains_key(k) {
                            got.remove(k);
                        }
                    }
                    // Old servers wrote no instanceId: the id is the hostName, and we write it.
                    expected.insert("id".into(), model.instance_id.clone());
                    assert_eq!(got, expected, "{name} ({encoding}):\n{xml_text}");
                    let back = to_instance(&body["instance"], &model.service_id).expect("parses");
                    assert_eq!(back, model, "{name} ({encoding}) back into the model");
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 4 + 1 + 3 + 1 + 1 + 4);
    }

    #[test]
    fn amazon_data_center_info_and_overrides_cross_the_model() {
        let v = serde_json::json!({
            "hostName": "ec2-1.compute.amazonaws.com", "app": "SVC", "ipAddr": "10.1.2.3",
            "status": "OUT_OF_SERVICE", "overriddenStatus": "OUT_OF_SERVICE",
            "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 8443, "@enabled": "true"},
            "dataCenterInfo": {"@class": AMAZON_DC_CLASS, "name": "Amazon",
                "metadata": {"instance-id": "i-0abc", "availability-zone": "us-east-1a"}},
            "vipAddress": "svc,svc-alias", "secureVipAddress": "svc-secure",
            "metadata": {"zone": "z1"}
        });
        let model = to_instance(&v, "svc").expect("parses");
        // No instanceId: the Amazon instance id is the id.
        assert_eq!(model.instance_id, "i-0abc");
        assert_eq!(model.status, InstanceStatus::OutOfService);
        assert_eq!(model.properties[keys::OVERRIDDEN_STATUS], "OUT_OF_SERVICE");
        assert_eq!(
            model.properties["eureka.dataCenterInfo.metadata.availability-zone"],
            "us-east-1a"
        );
        let body = register_body("svc", &model);
        let i = &body["instance"];
        assert_eq!(i["dataCenterInfo"]["@class"], AMAZON_DC_CLASS);
        assert_eq!(i["dataCenterInfo"]["metadata"]["instance-id"], "i-0abc");
        assert_eq!(i["overriddenStatus"], "OUT_OF_SERVICE");
        assert_eq!(i["vipAddress"], "svc,svc-alias");
        assert_eq!(i["hostName"], "ec2-1.compute.amazonaws.com");
        assert_eq!(i["metadata"], serde_json::json!({"zone": "z1"}));
    }
}
