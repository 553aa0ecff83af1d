//! Request and reply bodies of the v4 API as service-center writes and reads them: JSON
//! replies with a trailing newline, empty replies, and request decoding with
//! case-insensitive field names (`decode`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::servicecenter::error::ScError;

/// A 200 JSON reply written like service-center (trailing newline).
pub(crate) fn json<T: Serialize>(value: &T) -> Response {
    json_reply(to_json(value, 256))
}

/// `value` as JSON with service-center's trailing newline, written into one buffer of
/// `capacity` bytes to start with.
pub(crate) fn to_json<T: Serialize>(value: &T, capacity: usize) -> Result<Vec<u8>, ScError> {
    let mut buf = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut buf, value)
        .map_err(|e| ScError::new(500003, format!("encoding the reply: {e}")))?;
    buf.push(b'\n');
    Ok(buf)
}

/// A 200 reply of JSON text made by [`to_json`] (or its error).
pub(crate) fn json_reply(body: Result<Vec<u8>, ScError>) -> Response {
    match body {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// A 200 reply with an empty body.
pub(crate) fn empty() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        )],
        "",
    )
        .into_response()
}

/// JSON object keys whose values are free maps: their keys are user data.
const FREE_MAPS: &[&str] = &["properties", "tags", "LBStrategy", "property"];
/// Canonical field names of request bodies; other spellings are matched case-insensitively.
const FIELDS: &[&str] = &[
    "service",
    "services",
    "serviceIds",
    "force",
    "instance",
    "instances",
    "rules",
    "ruleType",
    "attribute",
    "pattern",
    "tags",
    "serviceId",
    "appId",
    "serviceName",
    "version",
    "description",
    "level",
    "schemas",
    "schemaId",
    "schema",
    "summary",
    "dependencies",
    "consumer",
    "providers",
    "paths",
    "path",
    "property",
    "status",
    "properties",
    "timestamp",
    "alias",
    "LBStrategy",
    "modTimestamp",
    "environment",
    "registerBy",
    "framework",
    "name",
    "instanceId",
    "endpoints",
    "hostName",
    "healthCheck",
    "dataCenterInfo",
    "mode",
    "port",
    "interval",
    "times",
    "url",
    "region",
    "availableZone",
    "rev",
];

/// Renames keys to their canonical spelling and drops `null`s (Go leaves the zero value).
fn canonicalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                if val.is_null() {
                    continue;
                }
                let key = FIELDS
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(&k))
                    .map_or(k, |f| (*f).to_string());
                if !FREE_MAPS.contains(&key.as_str()) {
                    canonicalize(&mut val);
                }
                map.insert(key, val);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonicalize),
        _ => {}
    }
}

/// Decodes a request body; any failure is 400001 naming the field.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ScError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ScError::invalid(format!("Invalid JSON body: {e}")))?;
    canonicalize(&mut value);
    serde_path_to_error::deserialize(value)
        .map_err(|e| ScError::invalid(format!("Invalid field '{}': {}", e.path(), e.inner())))
}
