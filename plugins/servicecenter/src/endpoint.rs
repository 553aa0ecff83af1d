//! Endpoint URLs: service-center's `rest://host:port[?sslEnabled=true]` form and the neutral
//! `http(s)://host:port` form of [`syncer_plugin_api::Instance::endpoints`].
//!
//! The translation is the one the service-center syncer 1.3.0 did (`rest` → `http`, `rest` with
//! `sslEnabled=true` → `https`, and back), with two fixes: other query parameters survive both
//! ways, and schemes other than `rest`/`http`/`https` (e.g. `highway://`) are passed through
//! unchanged instead of being turned into `http://` (1.3.0) or dropped.

/// The parts of a `scheme://[user@]host[:port][/path][?query]` URL this crate cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint<'a> {
    /// Scheme, as written (`rest`, `http`, ...).
    pub scheme: &'a str,
    /// Host without IPv6 brackets.
    pub host: &'a str,
    /// Port, if the URL has one.
    pub port: Option<u16>,
    /// Query string without the `?`, possibly empty.
    pub query: &'a str,
}

impl<'a> Endpoint<'a> {
    /// Splits `url`; `None` when it has no `scheme://`, no host, or a port that is not a number.
    pub(crate) fn parse(url: &'a str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let after = &rest[authority_end..];
        let query = match after.find('?') {
            Some(q) => {
                let query = &after[q + 1..];
                query.split('#').next().unwrap_or_default()
            }
            None => "",
        };
        // Userinfo is not ours to keep.
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, tail) = bracketed.split_once(']')?;
            match tail.strip_prefix(':') {
                Some(port) => (host, Some(port.parse().ok()?)),
                None if tail.is_empty() => (host, None),
                None => return None,
            }
        } else {
            match host_port.rsplit_once(':') {
                // A bare IPv6 address without brackets has no port we could tell apart.
                Some((host, _)) if host.contains(':') => (host_port, None),
                Some((host, port)) => (host, Some(port.parse().ok()?)),
                None => (host_port, None),
            }
        };
        if scheme.is_empty() || host.is_empty() {
            return None;
        }
        Some(Endpoint {
            scheme,
            host,
            port,
            query,
        })
    }
}

/// Formats `scheme://host:port[?query]`, bracketing IPv6 hosts.
fn format(scheme: &str, host: &str, port: u16, query: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if query.is_empty() {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}?{query}")
    }
}

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
    fn parse_splits_host_port_and_query() {
        let e = Endpoint::parse("rest://10.0.0.1:8080/path?sslEnabled=true#x").expect("parses");
        assert_eq!(e.scheme, "rest");
        assert_eq!(e.host, "10.0.0.1");
        assert_eq!(e.port, Some(8080));
        assert_eq!(e.query, "sslEnabled=true");
    }

    #[test]
    fn parse_handles_ipv6_userinfo_and_missing_port() {
        let e = Endpoint::parse("http://u:p@[::1]:9090").expect("parses");
        assert_eq!((e.host, e.port), ("::1", Some(9090)));
        let e = Endpoint::parse("http://[fe80::1]").expect("parses");
        assert_eq!((e.host, e.port), ("fe80::1", None));
        let e = Endpoint::parse("http://example.com").expect("parses");
        assert_eq!((e.host, e.port), ("example.com", None));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(Endpoint::parse("10.0.0.1:8080"), None);
        assert_eq!(Endpoint::parse("http://h:notaport"), None);
        assert_eq!(Endpoint::parse("http://:80"), None);
        assert_eq!(Endpoint::parse("http://[::1"), None);
    }

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
