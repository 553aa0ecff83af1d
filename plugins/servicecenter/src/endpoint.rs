//! Endpoint URLs: service-center's `rest://host:port[?sslEnabled=true]` form and the neutral
//! `http(s)://host:port` form of [`syncer_plugin_api::Instance::endpoints`].
//!
//! The translation is the one the service-center syncer 1.3.0 did (`rest` → `http`, `rest` with
//! `sslEnabled=true` → `https`, and back), with two fixes: other query parameters survive both
//! ways, and schemes other than `rest`/`http`/`https` (e.g. `highway://`) are passed through
//! unchanged instead of being turned into `http://` (1.3.0) or dropped.

use syncer_plugin_http::endpoint::{format, Endpoint};

/// Whether a query parameter is `sslEnabled=true` (the value case-insensitively, as the Java
/// SDK's `Boolean.parseBoolean` reads it).
fn is_ssl_enabled(param: &str) -> bool {
    param
        .split_once('=')
        .is_some_and(|(k, v)| k == "sslEnabled" && v.eq_ignore_ascii_case("true"))
}

/// service-center endpoint → neutral endpoint: `rest://h:p` → `http://h:p`,
/// `rest://h:p?sslEnabled=true` → `https://h:p` (other query parameters kept), a missing port
/// becomes 80/443. Anything else (already `http(s)://`, `highway://`, unparseable) is returned
/// unchanged.
pub(crate) fn to_neutral(endpoint: &str) -> String {
    let Some(e) = Endpoint::parse(endpoint) else {
        return endpoint.to_owned();
    };
    if !e.scheme.eq_ignore_ascii_case("rest") {
        return endpoint.to_owned();
    }
    let ssl = e.query.split('&').any(is_ssl_enabled);
    let rest: Vec<&str> = e
        .query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslEnabled="))
        .collect();
    let (scheme, default_port) = if ssl { ("https", 443) } else { ("http", 80) };
    format(
        scheme,
        e.host,
        e.port.unwrap_or(default_port),
        &rest.join("&"),
    )
}

/// Neutral endpoint → service-center endpoint: `http://h:p` → `rest://h:p`,
/// `https://h:p` → `rest://h:p?sslEnabled=true` (other query parameters appended), a missing
/// port becomes 80/443. Anything else (`rest://`, `highway://`, unparseable) is returned unchanged.
pub(crate) fn to_servicecenter(endpoint: &str) -> String {
    let Some(e) = Endpoint::parse(endpoint) else {
        return endpoint.to_owned();
    };
    let (ssl, default_port) = if e.scheme.eq_ignore_ascii_case("http") {
        (false, 80)
    } else if e.scheme.eq_ignore_ascii_case("https") {
        (true, 443)
    } else {
        return endpoint.to_owned();
    };
    let mut params: Vec<&str> = Vec::new();
    if ssl {
        params.push("sslEnabled=true");
    }
    params.extend(
        e.query
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("sslEnabled=")),
    );
    format(
        "rest",
        e.host,
        e.port.unwrap_or(default_port),
        &params.join("&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_endpoints_become_http_or_https() {
        assert_eq!(to_neutral("rest://1.2.3.4:8080"), "http://1.2.3.4:8080");
        assert_eq!(
            to_neutral("rest://1.2.3.4:8443?sslEnabled=true"),
            "https://1.2.3.4:8443"
        );
        assert_eq!(
            to_neutral("rest://1.2.3.4:8443?sslEnabled=TRUE&protocol=http2"),
            "https://1.2.3.4:8443?protocol=http2"
        );
        assert_eq!(
            to_neutral("rest://1.2.3.4:80?sslEnabled=false"),
            "http://1.2.3.4:80"
        );
        assert_eq!(to_neutral("rest://[::1]:80"), "http://[::1]:80");
        assert_eq!(to_neutral("rest://host"), "http://host:80");
    }

    #[test]
    fn other_endpoints_pass_through_to_neutral() {
        assert_eq!(to_neutral("http://h:1"), "http://h:1");
        assert_eq!(to_neutral("https://h:2"), "https://h:2");
        assert_eq!(to_neutral("highway://h:3"), "highway://h:3");
        assert_eq!(to_neutral("not a url"), "not a url");
    }

    #[test]
    fn neutral_endpoints_become_rest() {
        assert_eq!(
            to_servicecenter("http://1.2.3.4:8080"),
            "rest://1.2.3.4:8080"
        );
        assert_eq!(
            to_servicecenter("https://1.2.3.4:8443"),
            "rest://1.2.3.4:8443?sslEnabled=true"
        );
        assert_eq!(
            to_servicecenter("https://h:1?protocol=http2"),
            "rest://h:1?sslEnabled=true&protocol=http2"
        );
        assert_eq!(to_servicecenter("http://h"), "rest://h:80");
        assert_eq!(
            to_servicecenter("https://[::1]"),
            "rest://[::1]:443?sslEnabled=true"
        );
        assert_eq!(to_servicecenter("rest://h:1"), "rest://h:1");
        assert_eq!(to_servicecenter("highway://h:3"), "highway://h:3");
    }

    #[test]
    fn endpoints_round_trip() {
        for sc in [
            "rest://1.2.3.4:8080",
            "rest://1.2.3.4:8443?sslEnabled=true",
            "rest://[::1]:9?sslEnabled=true&x=1",
            "highway://h:7",
        ] {
            assert_eq!(to_servicecenter(&to_neutral(sc)), sc);
        }
    }
}
