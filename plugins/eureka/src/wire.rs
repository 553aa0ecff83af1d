//! Eureka v2 JSON documents and their conversion to and from the neutral model.
//!
//! Reading is deliberately lenient (eureka-notes §4, §8), because real servers differ:
//! `application` and `instance` may be an array or a single object (XStream/Jettison era
//! servers), `port.$` a number or a string, `@enabled` a string or a boolean, any field `null`,
//! and `metadata` carries a `@class` marker that is not metadata. So documents are walked as
//! [`serde_json::Value`] rather than decoded into strict structs.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use syncer_plugin_api::{
    HealthCheck, Instance, InstanceStatus, Service, Snapshot, DEFAULT_DOMAIN_PROJECT,
};

use syncer_plugin_http::endpoint::{self, Endpoint};

/// appId of every service read from Eureka (the 1.3.0 mapping).
pub(crate) const EUREKA_APP_ID: &str = "eureka";
/// Version of every service read from Eureka (the 1.3.0 mapping).
pub(crate) const EUREKA_VERSION: &str = "0.0.1";
/// Eureka's default renewal interval, seconds (`LeaseInfo.DEFAULT_LEASE_RENEWAL_INTERVAL`).
pub(crate) const DEFAULT_RENEWAL_SECS: u32 = 30;
/// Eureka's default lease duration, seconds (`LeaseInfo.DEFAULT_LEASE_DURATION`).
pub(crate) const DEFAULT_DURATION_SECS: u32 = 90;

/// The elements of a field that is an array, or a single object standing for a one-element
/// array; nothing for `null` or a missing field.
fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// A scalar as a string (numbers and booleans written out); `None` for null, missing,
/// arrays and objects.
fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-empty string field.
fn text(v: &Value, key: &str) -> Option<String> {
    scalar(v.get(key)).filter(|s| !s.is_empty())
}

/// A positive integer field, from a number or a numeric string.
fn positive(v: Option<&Value>) -> Option<u32> {
    scalar(v)?.trim().parse::<u32>().ok().filter(|n| *n > 0)
}

/// `{"$": 8080, "@enabled": "true"}` → the port if enabled. `enabled_by_default` is what a
/// missing `@enabled` means (Eureka: `true` for `port`, `false` for `securePort`).
fn port(v: Option<&Value>, enabled_by_default: bool) -> Option<u16> {
    let v = v?;
    let enabled = match scalar(v.get("@enabled")) {
        Some(s) => s.trim().eq_ignore_ascii_case("true"),
        None => enabled_by_default,
    };
    if !enabled {
        return None;
    }
    scalar(v.get("$"))?.trim().parse().ok()
}

/// `metadata` without the `@class` marker; non-string values are written out, nulls dropped.
fn metadata(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Object(map)) = v else {
        return BTreeMap::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "@class")
        .filter_map(|(k, v)| scalar(Some(v)).map(|v| (k.clone(), v)))
        .collect()
}

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
    let instance_id = text(v, "instanceId").or_else(|| text(v, "hostName"))?;
    let host_name = text(v, "hostName").unwrap_or_default();
    let ip = text(v, "ipAddr").unwrap_or_else(|| host_name.clone());
    let mut endpoints = Vec::new();
    if !ip.is_empty() {
        if let Some(p) = port(v.get("port"), true) {
            endpoints.push(endpoint::format("http", &ip, p, ""));
        }
        if let Some(p) = port(v.get("securePort"), false) {
            endpoints.push(endpoint::format("https", &ip, p, ""));
        }
    }
    let url = text(v, "healthCheckUrl").unwrap_or_default();
    let lease = v.get("leaseInfo").filter(|l| l.is_object());
    let health_check = if lease.is_some() || !url.is_empty() {
        let interval = lease
            .and_then(|l| positive(l.get("renewalIntervalInSecs")))
            .unwrap_or(DEFAULT_RENEWAL_SECS);
        let duration = lease
            .and_then(|l| positive(l.get("durationInSecs")))
            .unwrap_or(DEFAULT_DURATION_SECS);
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
        properties: metadata(v.get("metadata")),
    })
}

/// A `GET /apps` (or `/apps/delta`) document → snapshot. Every app becomes a service (see
/// [`app_to_service`]), every instance of every status an instance.
///
/// # Errors
/// A message when the document has no `applications` object.
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
/// `https` endpoint's (else `443`, disabled); `leaseInfo` is the health check's interval and
/// interval × (times + 1) (else Eureka's 30 s / 90 s); `metadata` is the properties unchanged.
/// `lastDirtyTimestamp` is left out so the server stamps "now" and a re-registration replaces
/// the stored copy (eureka-notes §3.1).
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
    let ip = parsed
        .first()
        .map(|e| e.host.to_owned())
        .unwrap_or_else(|| instance.host_name.clone());
    let port = match first_of("http") {
        Some(p) => json!({"$": p, "@enabled": "true"}),
        None => json!({"$": 80, "@enabled": "false"}),
    };
    let secure_port = match first_of("https") {
        Some(p) => json!({"$": p, "@enabled": "true"}),
        None => json!({"$": 443, "@enabled": "false"}),
    };
    let (interval, duration) = match &instance.health_check {
        Some(h) => {
            let interval = h.interval_secs.max(1);
            (interval, interval.saturating_mul(h.times.saturating_add(1)))
        }
        None => (DEFAULT_RENEWAL_SECS, DEFAULT_DURATION_SECS),
    };
    let mut body = json!({
        "instanceId": instance.instance_id,
        "hostName": ip,
        "app": name.to_uppercase(),
        "ipAddr": ip,
        "status": instance.status.as_eureka(),
        "overriddenStatus": "UNKNOWN",
        "port": port,
        "securePort": secure_port,
        "countryId": 1,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn"
        },
        "leaseInfo": {"renewalIntervalInSecs": interval, "durationInSecs": duration},
        "metadata": instance.properties,
        "vipAddress": name,
        "secureVipAddress": name,
        "isCoordinatingDiscoveryServer": "false"
    });
    if let Some(h) = instance.health_check.as_ref().filter(|h| !h.url.is_empty()) {
        body["healthCheckUrl"] = Value::String(h.url.clone());
    }
    json!({ "instance": body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::{ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID};

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
                // Only the `@class` marker was there.
                properties: BTreeMap::new(),
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
        assert_eq!(first.properties.len(), 3);
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
        assert!(i.properties.is_empty());

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
        assert_eq!(back.properties, instance.properties);
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
}
