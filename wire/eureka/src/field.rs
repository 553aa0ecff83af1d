//! Lenient readers of the fields of a Eureka document, JSON or [`crate::xml::parse`]d XML.
//!
//! Reading is deliberately lenient (eureka-notes §4, §8), because real servers and clients
//! differ: `application` and `instance` may be an array or a single object (XStream/Jettison
//! era servers), `port.$` a number or a string, `@enabled` a string or a boolean, any field
//! `null`, and `metadata` carries a `@class` marker that is not metadata. So documents are
//! walked as [`serde_json::Value`] with these readers rather than decoded into strict
//! structs; none of them fails, a field that does not fit reads as absent.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{STATUSES, UNKNOWN};

/// The elements of a field that is an array, or a single object standing for a one-element
/// array; nothing for `null` or a missing field.
pub fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// A scalar as a string (numbers and booleans written out), as it is; `None` for null,
/// missing, arrays and objects.
pub fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Field `key` of object `v` as a trimmed, non-empty string (a [`scalar`]); `None` when it is
/// missing, blank or not a scalar. XML text reads trimmed already, so both encodings agree.
pub fn text(v: &Value, key: &str) -> Option<String> {
    let s = scalar(v.get(key))?;
    let trimmed = s.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// An integer from a number (a fraction cut off) or a numeric string (`"8080"`, as old
/// Jettison JSON and XML write numbers).
pub fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A positive [`int`] that fits a `u32` (`leaseInfo` seconds).
pub fn positive(v: Option<&Value>) -> Option<u32> {
    int(v)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// A flag from a boolean or a string (`"true"`, any case, is true; any other string false),
/// as `@enabled` comes: a string from Netflix, a boolean from eureka-js-client and Steeltoe.
pub fn boolish(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s.trim().eq_ignore_ascii_case("true")),
        _ => None,
    }
}

/// A `port` or `securePort` field as read by [`port`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// `$`, when it is an integer.
    pub number: Option<i64>,
    /// `@enabled`, else the default the reader was given.
    pub enabled: bool,
}

impl Port {
    /// The number, when it is a TCP port (0 to 65535).
    pub fn tcp(&self) -> Option<u16> {
        self.number.and_then(|n| u16::try_from(n).ok())
    }

    /// The TCP port, when the port is enabled.
    pub fn enabled_tcp(&self) -> Option<u16> {
        self.tcp().filter(|_| self.enabled)
    }
}

/// `{"$": 8080, "@enabled": "true"}` (or a bare number) as a [`Port`]. `enabled_by_default`
/// is what a missing `@enabled` means: `true` for `port`, `false` for `securePort`
/// (Netflix's XML reader: `port` is enabled unless the attribute is `false`, `securePort`
/// only when it is `true`; eureka-notes §4.1).
pub fn port(v: Option<&Value>, enabled_by_default: bool) -> Port {
    match v {
        Some(Value::Object(m)) => Port {
            number: int(m.get("$")),
            enabled: boolish(m.get("@enabled")).unwrap_or(enabled_by_default),
        },
        other => Port {
            number: int(other),
            enabled: enabled_by_default,
        },
    }
}

/// `metadata` (of an instance or of an Amazon `dataCenterInfo`) without the `@class`
/// marker; non-string values are written out, nulls, arrays and objects dropped.
pub fn metadata(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Object(map)) = v else {
        return BTreeMap::new();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "@class")
        .filter_map(|(k, v)| scalar(Some(v)).map(|v| (k.clone(), v)))
        .collect()
}

/// The id Eureka gives instance document `v` (`InstanceInfo.getId`): `instanceId`, else the
/// Amazon `instance-id`, else `hostName`.
pub fn instance_id(v: &Value) -> Option<String> {
    text(v, "instanceId")
        .or_else(|| {
            v.get("dataCenterInfo")
                .and_then(|d| d.get("metadata"))
                .and_then(|m| text(m, "instance-id"))
        })
        .or_else(|| text(v, "hostName"))
}

/// The status named `s`, any case, else [`UNKNOWN`], as Netflix's body decoders read
/// `status` and `overriddenStatus` (`InstanceStatus.toEnum`; eureka-notes §4.4).
pub fn status(s: &str) -> &'static str {
    let s = s.trim();
    STATUSES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(s))
        .copied()
        .unwrap_or(UNKNOWN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_objects_and_nulls_read_as_lists() {
        let v = json!({"a": [1, 2], "b": {"x": 1}, "c": null});
        assert_eq!(one_or_many(v.get("a")).len(), 2);
        assert_eq!(one_or_many(v.get("b")), [&json!({"x": 1})]);
        assert!(one_or_many(v.get("c")).is_empty());
        assert!(one_or_many(v.get("d")).is_empty());
    }

    #[test]
    fn text_is_trimmed_and_never_blank() {
        let v = json!({"a": " h ", "b": "  ", "c": 7, "d": true, "e": [1], "f": null});
        assert_eq!(text(&v, "a").as_deref(), Some("h"));
        assert_eq!(text(&v, "b"), None);
        assert_eq!(text(&v, "c").as_deref(), Some("7"));
        assert_eq!(text(&v, "d").as_deref(), Some("true"));
        assert_eq!(text(&v, "e"), None);
        assert_eq!(text(&v, "f"), None);
    }

    #[test]
    fn numbers_read_from_numbers_and_strings() {
        assert_eq!(int(Some(&json!(" 42 "))), Some(42));
        assert_eq!(int(Some(&json!(42.9))), Some(42));
        assert_eq!(int(Some(&json!("x"))), None);
        assert_eq!(positive(Some(&json!("30"))), Some(30));
        assert_eq!(positive(Some(&json!(0))), None);
        assert_eq!(positive(Some(&json!(-5))), None);
    }

    #[test]
    fn ports_read_in_every_shape_clients_send() {
        let p = |v: Value, on| port(Some(&v), on);
        // Netflix: strings; eureka-js-client and Steeltoe: a boolean.
        assert_eq!(
            p(json!({"$": 8080, "@enabled": "true"}), false).enabled_tcp(),
            Some(8080)
        );
        assert_eq!(
            p(json!({"$": "8080", "@enabled": true}), false).enabled_tcp(),
            Some(8080)
        );
        assert_eq!(
            p(json!({"$": 443, "@enabled": "false"}), true).enabled_tcp(),
            None
        );
        assert_eq!(
            p(json!({"$": 443, "@enabled": "false"}), true).tcp(),
            Some(443)
        );
        // Without `@enabled`, the default; a bare number is the port.
        assert_eq!(p(json!({"$": "8443"}), false).enabled_tcp(), None);
        assert_eq!(p(json!(9090), true).enabled_tcp(), Some(9090));
        assert_eq!(p(json!({"$": 70000}), true).enabled_tcp(), None);
        assert_eq!(
            port(None, true),
            Port {
                number: None,
                enabled: true
            }
        );
    }

    #[test]
    fn metadata_drops_the_class_marker_and_nulls() {
        let v = json!({"@class": "java.util.Collections$EmptyMap", "a": "x", "n": 1, "z": null});
        assert_eq!(
            metadata(Some(&v)),
            BTreeMap::from([("a".into(), "x".into()), ("n".into(), "1".into())])
        );
        assert!(metadata(Some(&json!("x"))).is_empty());
    }

    #[test]
    fn the_instance_id_falls_back_to_the_amazon_id_then_the_host_name() {
        assert_eq!(
            instance_id(&json!({"instanceId": "i", "hostName": "h"})).as_deref(),
            Some("i")
        );
        let amazon =
            json!({"hostName": "h", "dataCenterInfo": {"metadata": {"instance-id": "i-1"}}});
        assert_eq!(instance_id(&amazon).as_deref(), Some("i-1"));
        assert_eq!(instance_id(&json!({"hostName": "h"})).as_deref(), Some("h"));
        assert_eq!(instance_id(&json!({"ipAddr": "1.2.3.4"})), None);
    }

    #[test]
    fn statuses_read_in_any_case_and_unknown_otherwise() {
        assert_eq!(status("out_of_service"), "OUT_OF_SERVICE");
        assert_eq!(status(" UP "), "UP");
        assert_eq!(status("OUTOFSERVICE"), "UNKNOWN");
        assert_eq!(status(""), "UNKNOWN");
    }
}
