//! Fuzzing of the query strings the built-in core reads (issue 13): the change log's
//! `GET /v4/default/admin/changes?since=&wait=&exceptProperty=` and the v4 find
//! `GET /v4/{project}/registry/instances?appId=&serviceName=&version=&tags=&env=&rev=` (with
//! and without `X-ConsumerId`), from junk and from mutated real queries, are answered (2xx or
//! 4xx with service-center's error body), never a panic or a 5xx.
//!
//! Stable Rust, with proptest: `SYNCER_FUZZ_CASES` inputs per target (default 500 in the
//! suite). The long run, at least 10^6 inputs per target:
//! `SYNCER_FUZZ_CASES=1000000 cargo test --release --test fuzz_core_queries`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use syncer::servicecenter::{router, Core};
use tower::ServiceExt;

use support::fuzz::config;

/// One runtime for every case, and a core with a provider (two versions, instances, tags)
/// and a consumer: its router and the consumer's id.
fn setup() -> (tokio::runtime::Runtime, axum::Router, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, consumer) = rt.block_on(async {
        let app = router(Core::new());
        let mut consumer = String::new();
        for (name, version) in [("prov", "1.0.0"), ("prov", "2.0.0"), ("cons", "1.0.0")] {
            let body = json!({"service": {"appId": "a", "serviceName": name, "version": version},
                "tags": {"zone": "z1"},
                "instances": [{"hostName": "h", "endpoints": ["rest://10.0.0.1:1"],
                    "properties": {"imported": "x"}}]});
            let (status, v) = call(
                &app,
                "POST",
                "/v4/default/registry/microservices",
                Some(body),
                None,
            )
            .await
            .unwrap();
            assert_eq!(status, StatusCode::OK, "{v}");
            consumer = v["serviceId"].as_str().unwrap().to_owned();
        }
        (app, consumer)
    });
    (rt, app, consumer)
}

/// One request: its status and JSON body (`Null` when not JSON); `None` when it is still
/// waiting after 200 ms (a change read with `wait` long-polls).
async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    consumer: Option<&str>,
) -> Option<(StatusCode, Value)> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = consumer {
        req = req.header("X-ConsumerId", c);
    }
    let req = req
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_millis(200), app.clone().oneshot(req))
        .await
        .ok()?
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// A query value: plain, numeric edge cases, percent escapes (some broken), any text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._+*-]{0,12}",
        Just("latest".to_owned()),
        Just("1.0.0+".to_owned()),
        Just("0.0.1-9.9.9".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        "[0-9]{1,25}",
        "(%[0-9a-fA-F]{0,2}|%|[a-z,=&;+ ]){0,10}",
        "\\PC{0,16}",
    ]
}

/// A query string of `keys` (and unknown ones), each with a [`value`], percent-encoded
/// or raw.
fn query(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![
        8 => proptest::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-zA-Z%]{0,6}",
    ];
    proptest::collection::vec((key, value(), any::<bool>()), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v, raw)| {
                let v = if raw { v } else { url_escape(&v) };
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A URI of `path?query`, when the query is one a client can send.
fn uri(path: &str, query: &str) -> Option<String> {
    let uri = format!("{path}?{query}");
    uri.parse::<axum::http::Uri>().ok().map(|_| uri)
}

/// Answered, and a 4xx is service-center's error body.
fn check(answer: Option<(StatusCode, Value)>, uri: &str) -> Result<(), TestCaseError> {
    let Some((status, body)) = answer else {
        return Ok(());
    };
    prop_assert!(!status.is_server_error(), "{uri}: {status} {body}");
    if status.is_client_error() {
        let code = body["errorCode"].as_str().unwrap_or_default();
        prop_assert!(
            code.len() == 6 && code.starts_with(&status.as_u16().to_string()),
            "{uri}: {status} {body}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn change_reads_never_panic_or_fail(q in query(&["since", "wait", "exceptProperty"])) {
        let (rt, app, _) = setup();
        for path in ["/v4/default/admin/changes", "/v4/other/admin/changes"] {
            let Some(uri) = uri(path, &q) else { continue };
            let answer = rt.block_on(call(&app, "GET", &uri, None, None));
            check(answer, &uri)?;
        }
    }

    #[test]
    fn finds_never_panic_or_fail(
        q in query(&["appId", "serviceName", "version", "tags", "env", "rev", "noCache", "global"]),
        with_consumer in any::<bool>(),
        consumer_junk in "\\PC{0,8}",
    ) {
        let (rt, app, consumer) = setup();
        let consumer = if with_consumer { Some(consumer.as_str()) } else {
            Some(consumer_junk.as_str()).filter(|c| !c.is_empty() && c.is_ascii())
        };
        for path in ["/v4/default/registry/instances", "/v4/p2/registry/instances"] {
            let Some(uri) = uri(path, &q) else { continue };
            let answer = rt.block_on(call(&app, "GET", &uri, None, consumer));
            check(answer, &uri)?;
        }
    }

    #[test]
    fn real_finds_with_one_value_changed_are_answered(
        which in 0usize..4,
        v in value(),
    ) {
        let (rt, app, consumer) = setup();
        let mut pairs = [("appId", "a".to_owned()), ("serviceName", "prov".to_owned()),
            ("version", "latest".to_owned()), ("tags", "zone".to_owned())];
        pairs[which].1 = url_escape(&v);
        let q = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let uri = uri("/v4/default/registry/instances", &q).unwrap();
        let answer = rt.block_on(call(&app, "GET", &uri, None, Some(&consumer)));
        check(answer, &uri)?;
    }
}
