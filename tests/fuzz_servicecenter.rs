//! Fuzzing of what the built-in core's HTTP API reads (issue 13): Eureka registrations (JSON,
//! from real clients' bodies mutated and from generated documents) and service-center v4
//! bodies and query strings, sent through the core's router to a registry that keeps what
//! it accepted. Nothing panics, nothing answers 5xx, and a v4 refusal carries
//! service-center's `errorCode`; after each input the registry still answers reads.
//!
//! Stable Rust, with proptest: `SYNCER_FUZZ_CASES` inputs per target (default 500 in the
//! suite). The long run, at least 10^6 inputs per target:
//! `SYNCER_FUZZ_CASES=1000000 cargo test --release --test fuzz_servicecenter`.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{LazyLock, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Value};
use syncer::servicecenter::{router, Core};
use tower::ServiceExt;

use support::fuzz::config;

/// One runtime for every case (a runtime per case would dominate the run).
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

/// The router of an in-memory core, one per target, kept across cases, so inputs meet what
/// earlier ones left (and the router is built once). Every [`CASES_PER_CORE`] cases the
/// target starts on a fresh core: what the cases leave only grows, and every case lists it
/// (`still_answers`), so one core for a long run would make the run quadratic.
type App = axum::Router;

/// Cases a core serves before its target moves to a fresh one.
const CASES_PER_CORE: u32 = 1_000;

/// One target's core and how many cases it has served.
type Cell = LazyLock<Mutex<(u32, App)>>;

fn new_app() -> App {
    let _guard = RT.enter();
    router(Core::new())
}

fn new_cell() -> Mutex<(u32, App)> {
    Mutex::new((0, new_app()))
}

fn core(cell: &'static Cell) -> App {
    let mut cell = cell
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cell.0 >= CASES_PER_CORE {
        *cell = (0, new_app());
    }
    cell.0 += 1;
    cell.1.clone()
}

static EUREKA_CORE: Cell = LazyLock::new(new_cell);
static V4_CORE: Cell = LazyLock::new(new_cell);
static QUERY_CORE: Cell = LazyLock::new(new_cell);

/// `method uri` with `body` (and `X-Domain-Name: domain`): status and body text.
fn call(
    core: &App,
    method: &str,
    uri: &str,
    domain: &str,
    ctype: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    RT.block_on(async {
        let Ok(req) = Request::builder()
            .method(method)
            .uri(uri)
            .header("X-Domain-Name", domain)
            .header("Content-Type", ctype)
            .header("Accept", "application/json")
            .body(Body::from(body))
        else {
            // Not an HTTP request at all (the URI or a header does not parse): nothing is
            // sent, and nothing is checked (`check` passes 418).
            return (StatusCode::IM_A_TEAPOT, String::new());
        };
        let resp = core.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// Not a server error (but Eureka's status override answers a bad `value` with 500, as
/// Netflix does: eureka-notes §3); a v4 4xx (other than a route or method the router does
/// not know) is service-center's `{"errorCode": "4xxxxx", ...}`.
fn check(what: &str, v4: bool, status: StatusCode, text: &str) -> Result<(), TestCaseError> {
    if status == StatusCode::IM_A_TEAPOT {
        return Ok(());
    }
    let netflix_500 = !v4 && what.contains("/status?");
    prop_assert!(
        !status.is_server_error() || netflix_500,
        "{what}: {status} {text}"
    );
    if v4
        && status.is_client_error()
        && status != StatusCode::NOT_FOUND
        && status != StatusCode::METHOD_NOT_ALLOWED
    {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let code = v["errorCode"].as_str().unwrap_or("");
        prop_assert!(
            code.len() == 6 && code.starts_with(&status.as_u16().to_string()),
            "{what}: {status} without service-center's errorCode: {text}"
        );
    }
    Ok(())
}

/// The registry still answers: the Eureka applications and a v4 listing.
fn still_answers(core: &App) -> Result<(), TestCaseError> {
    let (s, t) = call(core, "GET", "/eureka/apps", "default", "", Vec::new());
    prop_assert_eq!(s, StatusCode::OK, "{}", t);
    let (s, t) = call(
        core,
        "GET",
        "/v4/default/registry/microservices",
        "default",
        "",
        Vec::new(),
    );
    prop_assert_eq!(s, StatusCode::OK, "{}", t);
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9/_.:%-]{0,12}",
        "\\PC{0,8}",
        Just(String::new()),
        Just("a/b".to_owned()),
        Just("%2F".to_owned()),
    ]
}

/// Numbers at and past every edge a reader may add, multiply or convert.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-5i64..200).prop_map(Value::from),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(i32::MAX)),
        Just(json!(2_147_483_648_i64)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(0.5)),
        any::<i64>().prop_map(|n| Value::String(n.to_string())),
        Just(json!("9223372036854775808")),
    ]
}

/// A JSON value, shallow, biased to numbers and text.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => number(),
        4 => text().prop_map(Value::String),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `base` with some of `fields` set to generated values (and some removed).
fn with_fields(base: Value, fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        (
            0..fields.len(),
            prop_oneof![3 => value().prop_map(Some), 1 => Just(None)],
        ),
        0..6,
    )
    .prop_map(move |edits| {
        let mut v = base.clone();
        if let Value::Object(m) = &mut v {
            for (i, val) in edits {
                match val {
                    Some(val) => m.insert(fields[i].to_owned(), val),
                    None => m.remove(fields[i]),
                };
            }
        }
        v
    })
}

/// A real encoding with a few byte edits.
fn mutate(mut data: Vec<u8>, edits: Vec<(u8, usize, u8)>) -> Vec<u8> {
    for (kind, at, byte) in edits {
        let at = at % (data.len() + 1);
        match kind {
            0 if at < data.len() => data[at] = byte,
            1 => data.insert(at, byte),
            _ => data.truncate(at),
        }
    }
    data
}

fn edits() -> impl Strategy<Value = Vec<(u8, usize, u8)>> {
    proptest::collection::vec((0u8..3, any::<usize>(), any::<u8>()), 0..6)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    [
        "register-request-py-eureka-client.json",
        "register-request-eureka-js-client.json",
        "register-request-steeltoe.json",
        "register-request.xml",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect()
});

const INSTANCE_FIELDS: &[&str] = &[
    "instanceId",
    "hostName",
    "app",
    "ipAddr",
    "status",
    "overriddenStatus",
    "overriddenstatus",
    "port",
    "securePort",
    "countryId",
    "dataCenterInfo",
    "leaseInfo",
    "metadata",
    "homePageUrl",
    "statusPageUrl",
    "healthCheckUrl",
    "vipAddress",
    "secureVipAddress",
    "lastDirtyTimestamp",
    "lastUpdatedTimestamp",
    "sid",
];

const LEASE_FIELDS: &[&str] = &[
    "durationInSecs",
    "renewalIntervalInSecs",
    "registrationTimestamp",
    "lastRenewalTimestamp",
    "evictionTimestamp",
    "serviceUpTimestamp",
];

/// A Eureka registration: a valid one with generated fields, its lease too.
fn eureka_registration() -> impl Strategy<Value = Value> {
    let base = json!({
        "instanceId": "10.0.0.1:fuzz:8080", "hostName": "h", "app": "FUZZ",
        "ipAddr": "10.0.0.1", "status": "UP",
        "port": {"$": 8080, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.MyDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"k": "v"}
    });
    let lease = with_fields(
        json!({"renewalIntervalInSecs": 30, "durationInSecs": 90}),
        LEASE_FIELDS,
    );
    (with_fields(base, INSTANCE_FIELDS), lease, any::<bool>()).prop_map(|(mut inst, lease, put)| {
        if put {
            inst["leaseInfo"] = lease;
        }
        json!({ "instance": inst })
    })
}

/// Eureka requests after a registration: renew, status, metadata, reads.
fn eureka_follow_ups(id: &str, q: &str) -> Vec<(&'static str, String)> {
    let id = utf8_path(id);
    vec![
        ("PUT", format!("/eureka/apps/FUZZ/{id}?{q}")),
        ("PUT", format!("/eureka/apps/FUZZ/{id}/status?{q}")),
        ("DELETE", format!("/eureka/apps/FUZZ/{id}/status?{q}")),
        ("PUT", format!("/eureka/apps/FUZZ/{id}/metadata?{q}")),
        ("GET", format!("/eureka/apps/FUZZ/{id}")),
        ("GET", "/eureka/apps/delta".to_owned()),
        ("DELETE", format!("/eureka/apps/FUZZ/{id}")),
    ]
}

/// A path segment or query value, percent-encoded.
fn utf8_path(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A query string: generated names and values (some edge numbers), raw or encoded.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("since"),
        Just("wait"),
        Just("scope"),
        Just("appId"),
        Just("serviceName"),
        Just("version"),
        Just("env"),
        Just("rev"),
        Just("tags"),
        Just("type"),
        Just("value"),
        Just("status"),
        Just("lastDirtyTimestamp"),
        Just("overriddenstatus"),
        Just("options"),
        Just("noCache"),
        Just("withShared"),
        Just("exceptProperty"),
        Just("k"),
    ];
    let val = prop_oneof![
        text(),
        number().prop_map(|n| match n {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        Just("all".to_owned()),
        Just("latest".to_owned()),
        Just("1.0.0+".to_owned()),
        Just("0.0.1-2.0".to_owned()),
        Just("UP".to_owned()),
        Just("OUT_OF_SERVICE".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
    ];
    proptest::collection::vec((name, val, any::<bool>()), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v, encode)| {
                let v = if encode {
                    utf8_path(&v)
                } else {
                    v.replace(['&', '#', ' '], "")
                };
                format!("{n}={v}")
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

const SERVICE_FIELDS: &[&str] = &[
    "serviceId",
    "appId",
    "serviceName",
    "version",
    "environment",
    "level",
    "status",
    "schemas",
    "properties",
    "alias",
    "framework",
    "registerBy",
    "paths",
    "description",
];

const V4_INSTANCE_FIELDS: &[&str] = &[
    "instanceId",
    "hostName",
    "endpoints",
    "status",
    "healthCheck",
    "dataCenterInfo",
    "properties",
    "version",
];

fn v4_service() -> impl Strategy<Value = Value> {
    with_fields(
        json!({"appId": "fuzz", "serviceName": "svc", "version": "1.0.0"}),
        SERVICE_FIELDS,
    )
}

fn v4_instance() -> impl Strategy<Value = Value> {
    let hc = with_fields(
        json!({"mode": "push", "interval": 30, "times": 3}),
        &["mode", "interval", "times", "port", "url"],
    );
    (
        with_fields(
            json!({"hostName": "h", "endpoints": ["rest://127.0.0.1:80"]}),
            V4_INSTANCE_FIELDS,
        ),
        hc,
        any::<bool>(),
    )
        .prop_map(|(mut inst, hc, put)| {
            if put {
                inst["healthCheck"] = hc;
            }
            inst
        })
}

/// A v4 write: (method, path below the service `S` or the registry `P`, body).
fn v4_write() -> impl Strategy<Value = (&'static str, String, Value)> {
    prop_oneof![
        (v4_service(), value()).prop_map(|(s, extra)| (
            "POST",
            "P/microservices".to_owned(),
            json!({"service": s, "rules": extra, "tags": {}})
        )),
        v4_instance().prop_map(|i| ("POST", "S/instances".to_owned(), json!({"instance": i}))),
        (v4_service(), v4_instance()).prop_map(|(s, i)| (
            "POST",
            "P/instances/action?type=register".to_owned(),
            json!({"services": [s], "instances": [i]})
        )),
        value().prop_map(|p| ("PUT", "S/properties".to_owned(), json!({"properties": p}))),
        value().prop_map(|r| ("POST", "S/rules".to_owned(), json!({"rules": r}))),
        with_fields(
            json!({"ruleType": "BLACK", "attribute": "ServiceName", "pattern": "x"}),
            &["ruleType", "attribute", "pattern", "description"]
        )
        .prop_map(|r| ("POST", "S/rules".to_owned(), json!({"rules": [r]}))),
        value().prop_map(|t| ("POST", "S/tags".to_owned(), json!({"tags": t}))),
        value().prop_map(|s| ("POST", "S/schemas".to_owned(), json!({"schemas": s}))),
        value().prop_map(|d| (
            "PUT",
            "P/dependencies".to_owned(),
            json!({"dependencies": d})
        )),
        value().prop_map(|i| ("PUT", "P/heartbeats".to_owned(), json!({"instances": i}))),
        value().prop_map(|b| ("POST", "P/instances/action?type=query".to_owned(), b)),
        value().prop_map(|b| ("PUT", "S/instances/i1/properties".to_owned(), b)),
    ]
}

/// v4 reads with a query string.
const V4_READS: &[&str] = &[
    "P/instances",
    "P/existence",
    "P/microservices",
    "S/instances",
    "S/instances/i1",
    "S/providers",
    "S/consumers",
    "S/rules",
    "S/tags",
    "S/schemas",
    "/v4/default/admin/dump",
    "/v4/default/admin/changes",
    "/v4/default/govern/microservices",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn eureka_registrations_are_204_or_400_and_never_break_the_registry(
        reg in eureka_registration(),
        q in query(),
    ) {
        let core = core(&EUREKA_CORE);
        let body = serde_json::to_vec(&reg).unwrap();
        let (s, t) = call(&core, "POST", "/eureka/apps/FUZZ", "default", "application/json", body);
        prop_assert!(
            s == StatusCode::NO_CONTENT || s == StatusCode::BAD_REQUEST,
            "register: {} {}", s, t
        );
        let id = reg["instance"]["instanceId"].as_str().unwrap_or("x").to_owned();
        for (method, uri) in eureka_follow_ups(&id, &q) {
            let (s, t) = call(&core, method, &uri, "default", "", Vec::new());
            check(&format!("{method} {uri}"), false, s, &t)?;
        }
        still_answers(&core)?;
    }

    #[test]
    fn mutated_real_eureka_registrations_never_break_the_registry(
        which in 0usize..4,
        e in edits(),
    ) {
        let core = core(&EUREKA_CORE);
        let body = mutate(FIXTURES[which].clone(), e);
        let ctype = if which == 3 { "application/xml" } else { "application/json" };
        for app in ["FUZZ", "MYAPP", "HELLO"] {
            let (s, t) = call(&core, "POST", &format!("/eureka/apps/{app}"), "default", ctype, body.clone());
            prop_assert!(!s.is_server_error(), "register: {} {}", s, t);
        }
        still_answers(&core)?;
    }

    #[test]
    fn v4_bodies_are_answered_with_service_center_errors_never_5xx(
        writes in proptest::collection::vec(v4_write(), 1..4),
        domain in prop_oneof![Just("default".to_owned()), text()],
    ) {
        let core = core(&V4_CORE);
        // A service to write below.
        let (s, t) = call(
            &core, "POST", "/v4/default/registry/microservices", "default", "application/json",
            br#"{"service":{"serviceId":"fuzzsvc","appId":"fuzz","serviceName":"base","version":"1.0.0"}}"#.to_vec(),
        );
        prop_assert_eq!(s, StatusCode::OK, "{}", t);
        for (method, path, body) in writes {
            let uri = path
                .replacen("P/", "/v4/default/registry/", 1)
                .replacen("S/", "/v4/default/registry/microservices/fuzzsvc/", 1);
            let (s, t) = call(&core, method, &uri, &domain, "application/json", serde_json::to_vec(&body).unwrap());
            check(&format!("{method} {uri} {body}"), true, s, &t)?;
        }
        still_answers(&core)?;
    }

    #[test]
    fn v4_raw_bodies_never_break_the_registry(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        which in 0usize..4,
    ) {
        let core = core(&V4_CORE);
        let uri = [
            "/v4/default/registry/microservices",
            "/v4/default/registry/microservices/fuzzsvc/instances",
            "/v4/default/registry/instances/action?type=register",
            "/v4/default/registry/heartbeats",
        ][which];
        let method = if which == 3 { "PUT" } else { "POST" };
        let (s, t) = call(&core, method, uri, "default", "application/json", bytes);
        check(&format!("{method} {uri}"), true, s, &t)?;
        still_answers(&core)?;
    }

    #[test]
    fn v4_query_strings_and_path_ids_never_break_the_registry(
        q in query(),
        which in 0usize..V4_READS.len(),
        sid in prop_oneof![Just("fuzzsvc".to_owned()), text()],
        project in prop_oneof![Just("default".to_owned()), text()],
    ) {
        let core = core(&QUERY_CORE);
        let (s, _) = call(
            &core, "POST", "/v4/default/registry/microservices", "default", "application/json",
            br#"{"service":{"serviceId":"fuzzsvc","appId":"fuzz","serviceName":"base","version":"1.0.0"}}"#.to_vec(),
        );
        prop_assert_eq!(s, StatusCode::OK);
        let p = format!("/v4/{}/registry/", utf8_path(&project));
        let uri = format!(
            "{}?{q}",
            V4_READS[which]
                .replacen("P/", &p, 1)
                .replacen("S/", &format!("{p}microservices/{}/", utf8_path(&sid)), 1)
        );
        let (s, t) = call(&core, "GET", &uri, "default", "", Vec::new());
        check(&format!("GET {uri}"), true, s, &t)?;
        still_answers(&core)?;
    }
}

/// The reader's edges, once each (they must hold whatever the generators reach).
#[test]
fn the_eureka_lease_edges_are_400_not_a_panic() {
    let core = core(&EUREKA_CORE);
    for d in [
        json!(i64::MAX),
        json!(2_147_483_648_i64),
        json!(1e300),
        json!("-9223372036854775808"),
    ] {
        let body = json!({"instance": {"instanceId": "edge", "hostName": "h", "app": "EDGE",
            "ipAddr": "10.0.0.1", "dataCenterInfo": {"name": "MyOwn"},
            "leaseInfo": {"durationInSecs": d}}});
        let (s, t) = call(
            &core,
            "POST",
            "/eureka/apps/EDGE",
            "default",
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        );
        assert_eq!(s, StatusCode::BAD_REQUEST, "{d}: {t}");
    }
}
