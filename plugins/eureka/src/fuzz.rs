//! Fuzzing of the Eureka readers (issue 13): the XML reader, the JSON/XML reply decoder and
//! the conversion of an `applications` document into a snapshot never panic or hang, on
//! Eureka-shaped documents and on junk.
//!
//! Stable Rust, with proptest: `SYNCER_FUZZ_CASES` inputs per target (default 500 in the
//! suite). The long run, at least 10^6 inputs per target:
//! `SYNCER_FUZZ_CASES=1000000 cargo test --release -p syncer-plugin-eureka fuzz`.

use proptest::prelude::*;
use serde_json::{Map, Value};

use syncer_wire_eureka::xml;

use crate::wire;

/// Inputs per target: `SYNCER_FUZZ_CASES`, else 500.
pub(crate) fn cases() -> u32 {
    std::env::var("SYNCER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Element names a Eureka document uses, and a few others.
const NAMES: &[&str] = &[
    "applications",
    "application",
    "instance",
    "name",
    "instanceId",
    "hostName",
    "app",
    "ipAddr",
    "status",
    "port",
    "securePort",
    "metadata",
    "leaseInfo",
    "durationInSecs",
    "apps__hashcode",
    "versions__delta",
    "actionType",
    "dataCenterInfo",
    "x",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(NAMES).prop_map(str::to_owned),
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,6}",
    ]
}

/// Token soup that often makes well-formed XML and often does not.
fn xml_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        name().prop_map(|n| format!("<{n}>")),
        name().prop_map(|n| format!("</{n}>")),
        (name(), name(), "[^\"<&]{0,8}").prop_map(|(n, a, v)| format!("<{n} {a}=\"{v}\">")),
        name().prop_map(|n| format!("<{n}/>")),
        "[^<&]{0,12}",
        proptest::sample::select(&["&amp;", "&lt;", "&#65;", "&#x41;", "&bogus;", "&"][..])
            .prop_map(str::to_owned),
        "<!\\[CDATA\\[[a-z<>]{0,6}\\]\\]>",
        Just("<?xml version=\"1.0\"?>".to_owned()),
        Just("<!-- c -->".to_owned()),
        Just("<".to_owned()),
    ];
    proptest::collection::vec(token, 0..120).prop_map(|t| t.concat())
}

/// JSON values shaped like Eureka documents: known keys, `$`/`@` fields, nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,12}".prop_map(Value::String),
        proptest::sample::select(&["UP", "DOWN", "ADDED", "DELETED", "MODIFIED", "80", "true"][..])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(6, 256, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![name(), Just("$".to_owned()), Just("@enabled".to_owned())],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_xml_reader_never_panics_on_token_soup(doc in xml_like()) {
        if let Ok(value) = xml::parse(doc.as_bytes()) {
            // What it reads, it writes back, and reads again.
            let again = xml::write(&value);
            let _ = xml::parse(&again);
        }
    }

    #[test]
    fn the_xml_reader_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = xml::parse(&bytes);
    }

    #[test]
    fn reading_applications_never_panics(doc in json_value()) {
        let wrapped = serde_json::json!({"applications": {"application": [doc.clone()]}});
        let _ = wire::apps_to_snapshot(&wrapped);
        let _ = wire::apps_to_snapshot(&doc);
        let _ = wire::to_instance(&doc, "sid");
        let _ = wire::apps_of(&doc);
    }

    #[test]
    fn decoding_replies_never_panics(
        body in prop_oneof![
            xml_like().prop_map(String::into_bytes),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..512),
        ],
        ctype in proptest::sample::select(&["application/json", "application/xml", "text/plain", ""][..]),
    ) {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(ctype) {
            headers.insert(reqwest::header::CONTENT_TYPE, value);
        }
        let reply = syncer_plugin_http::client::Reply {
            status: reqwest::StatusCode::OK,
            body,
            headers,
        };
        if let Ok(doc) = crate::decode(&reply, "fuzz") {
            let _ = wire::apps_to_snapshot(&doc);
        }
    }
}
