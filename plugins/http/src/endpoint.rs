//! Endpoint URLs (`scheme://[user@]host[:port][/path][?query]`) taken apart and put together
//! again: the neutral `http(s)://host:port` form of the model, service-center's `rest://`, and
//! Eureka's `ipAddr`/`port` pairs all go through [`Endpoint::parse`] and [`format()`].

/// The parts of a `scheme://[user@]host[:port][/path][?query]` URL that registries use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint<'a> {
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
    pub fn parse(url: &'a str) -> Option<Self> {
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

    /// The port, or the scheme's default (80 for `http`, 443 for `https`); `None` for
    /// another scheme without a port.
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or(if self.scheme.eq_ignore_ascii_case("http") {
            Some(80)
        } else if self.scheme.eq_ignore_ascii_case("https") {
            Some(443)
        } else {
            None
        })
    }
}

/// Formats `scheme://host:port[?query]`, bracketing IPv6 hosts.
pub fn format(scheme: &str, host: &str, port: u16, query: &str) -> String {
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
    fn format_brackets_ipv6_hosts() {
        assert_eq!(format("http", "::1", 80, ""), "http://[::1]:80");
        assert_eq!(format("https", "h", 443, "a=b"), "https://h:443?a=b");
    }

    #[test]
    fn http_and_https_endpoints_default_their_ports() {
        let e = Endpoint::parse("http://h").expect("parses");
        assert_eq!(e.port_or_default(), Some(80));
        let e = Endpoint::parse("HTTPS://h").expect("parses");
        assert_eq!(e.port_or_default(), Some(443));
        let e = Endpoint::parse("rest://h").expect("parses");
        assert_eq!(e.port_or_default(), None);
    }
}
