//! The key layout of the stores: service-center 1.3.0's etcd layout under `/cse-sr/`
//! (servicecomb-notes c.9), used by both adaptors, so `etcdctl get --prefix /cse-sr/`
//! (or a dump of the embedded store) shows what an operator of service-center expects.
//!
//! | key | value |
//! |---|---|
//! | `/cse-sr/ms/files/{domain}/{project}/{serviceId}` | microservice JSON |
//! | `/cse-sr/ms/indexes/{domain}/{project}/{env}/{appId}/{serviceName}/{version}` | serviceId text |
//! | `/cse-sr/inst/files/{domain}/{project}/{serviceId}/{instanceId}` | instance JSON |
//! | `/cse-sr/inst/leases/{domain}/{project}/{serviceId}/{instanceId}` | etcd: lease id as decimal text; embedded: [`LeaseRecord`] JSON |
//!
//! Each segment is written with `%` and `/` percent-encoded (`%25`, `%2F`) and decoded when
//! a key is parsed, so an id holding a `/` (a Eureka instanceId such as `host/a:b`) is one
//! segment and comes back after a restart. Every key of a segment without `%` or `/` is
//! unchanged, so stores written before read the same. service-center does not escape
//! (its keys of such ids cannot be read back); a segment written unescaped by an older
//! version is read as it is, unless it holds `%25` or `%2F`. Domains and projects with a `/` are
//! refused by the API (400001), so the tenant segments are always as sent.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// One key segment, escaped: `%` → `%25`, `/` → `%2F`, nothing else (borrowed when it has
/// neither). Not `percent_encoding`'s codec: it always encodes non-ASCII bytes and decodes
/// every `%XX`, which would change the keys of existing records with such names.
pub fn segment(s: &str) -> Cow<'_, str> {
    if s.contains(['%', '/']) {
        Cow::Owned(s.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A segment as it was before [`segment`]: `%25` → `%`, `%2F` (or `%2f`) → `/`; any other
/// `%` stays (a segment written unescaped before may hold one).
fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (text, used) = match tail.get(..3) {
            Some("%25") => ("%", 3),
            Some("%2F" | "%2f") => ("/", 3),
            _ => ("%", 1),
        };
        out.push_str(text);
        rest = &tail[used..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The root of every key.
pub const ROOT: &str = "/cse-sr/";
const SERVICES: &str = "/cse-sr/ms/files/";
const INDEXES: &str = "/cse-sr/ms/indexes/";
const INSTANCES: &str = "/cse-sr/inst/files/";
const LEASES: &str = "/cse-sr/inst/leases/";

/// A key not yet written: its prefix and segments, joined by `/` where it is displayed or
/// serialised (as a string), so that a writer of many keys (the admin dump) builds no
/// `String` per key. [`service`], [`service_index`] and [`instance`] are its `to_string()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a, const N: usize> {
    prefix: &'static str,
    segments: [&'a str; N],
}

impl<const N: usize> fmt::Display for Key<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix)?;
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(&segment(s))?;
        }
        Ok(())
    }
}

impl<const N: usize> Serialize for Key<'_, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// [`service`], unwritten.
pub(crate) fn service_key<'a>(
    domain: &'a str,
    project: &'a str,
    service_id: &'a str,
) -> Key<'a, 3> {
    Key {
        prefix: SERVICES,
        segments: [domain, project, service_id],
    }
}

/// [`service_index`], unwritten.
pub(crate) fn service_index_key<'a>(
    domain: &'a str,
    project: &'a str,
    env: &'a str,
    app_id: &'a str,
    service_name: &'a str,
    version: &'a str,
) -> Key<'a, 6> {
    Key {
        prefix: INDEXES,
        segments: [domain, project, env, app_id, service_name, version],
    }
}

/// [`instance`], unwritten.
pub(crate) fn instance_key<'a>(
    domain: &'a str,
    project: &'a str,
    service_id: &'a str,
    instance_id: &'a str,
) -> Key<'a, 4> {
    Key {
        prefix: INSTANCES,
        segments: [domain, project, service_id, instance_id],
    }
}

/// `/cse-sr/ms/files/{domain}/{project}/{serviceId}`.
pub fn service(domain: &str, project: &str, service_id: &str) -> String {
    service_key(domain, project, service_id).to_string()
}

/// `/cse-sr/ms/indexes/{domain}/{project}/{env}/{appId}/{serviceName}/{version}`.
pub fn service_index(
    domain: &str,
    project: &str,
    env: &str,
    app_id: &str,
    service_name: &str,
    version: &str,
) -> String {
    service_index_key(domain, project, env, app_id, service_name, version).to_string()
}

/// `/cse-sr/inst/files/{domain}/{project}/{serviceId}/{instanceId}`.
pub fn instance(domain: &str, project: &str, service_id: &str, instance_id: &str) -> String {
    instance_key(domain, project, service_id, instance_id).to_string()
}

/// `/cse-sr/inst/leases/{domain}/{project}/{serviceId}/{instanceId}`.
pub fn lease(domain: &str, project: &str, service_id: &str, instance_id: &str) -> String {
    Key {
        prefix: LEASES,
        segments: [domain, project, service_id, instance_id],
    }
    .to_string()
}

/// The prefix of every instance key of one service (ends with `/`).
pub fn instances_of(domain: &str, project: &str, service_id: &str) -> String {
    let (d, p, s) = (segment(domain), segment(project), segment(service_id));
    format!("{INSTANCES}{d}/{p}/{s}/")
}

/// The prefix of every lease key of one service (ends with `/`).
pub fn leases_of(domain: &str, project: &str, service_id: &str) -> String {
    let (d, p, s) = (segment(domain), segment(project), segment(service_id));
    format!("{LEASES}{d}/{p}/{s}/")
}

/// What a key names, its segments unescaped (borrowed from the key unless escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A microservice record.
    Service {
        /// Domain.
        domain: Cow<'a, str>,
        /// Project.
        project: Cow<'a, str>,
        /// serviceId.
        service_id: Cow<'a, str>,
    },
    /// A service index (derived from the service record; read back only for completeness).
    Index,
    /// An instance record.
    Instance {
        /// Domain.
        domain: Cow<'a, str>,
        /// Project.
        project: Cow<'a, str>,
        /// serviceId.
        service_id: Cow<'a, str>,
        /// instanceId.
        instance_id: Cow<'a, str>,
    },
    /// An instance's lease.
    Lease {
        /// Domain.
        domain: Cow<'a, str>,
        /// Project.
        project: Cow<'a, str>,
        /// serviceId.
        service_id: Cow<'a, str>,
        /// instanceId.
        instance_id: Cow<'a, str>,
    },
    /// Any other key (record kinds without their own arm here, or foreign keys).
    Other,
}

/// Splits `rest` into exactly `N` non-empty `/`-separated segments, unescaped.
fn segments<const N: usize>(rest: &str) -> Option<[Cow<'_, str>; N]> {
    let mut out: [Cow<'_, str>; N] = std::array::from_fn(|_| Cow::Borrowed(""));
    let mut it = rest.split('/');
    for slot in out.iter_mut() {
        *slot = unescape(it.next().filter(|s| !s.is_empty())?);
    }
    it.next().is_none().then_some(out)
}

/// Parses a key of this layout.
pub fn parse(key: &str) -> Parsed<'_> {
    if let Some(rest) = key.strip_prefix(SERVICES) {
        if let Some([domain, project, service_id]) = segments::<3>(rest) {
            return Parsed::Service {
                domain,
                project,
                service_id,
            };
        }
    } else if key.starts_with(INDEXES) {
        return Parsed::Index;
    } else if let Some(rest) = key.strip_prefix(INSTANCES) {
        if let Some([domain, project, service_id, instance_id]) = segments::<4>(rest) {
            return Parsed::Instance {
                domain,
                project,
                service_id,
                instance_id,
            };
        }
    } else if let Some(rest) = key.strip_prefix(LEASES) {
        if let Some([domain, project, service_id, instance_id]) = segments::<4>(rest) {
            return Parsed::Lease {
                domain,
                project,
                service_id,
                instance_id,
            };
        }
    }
    Parsed::Other
}

/// The embedded store's value under a lease key: what is needed to give the instance its
/// remaining time after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// Lease length, seconds.
    pub ttl_secs: u64,
    /// When the lease ends unless renewed, ms since the Unix epoch (wall clock, so time
    /// spent down counts).
    pub deadline_ms: i64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_parse() {
        let k = service("d", "p", "s1");
        assert_eq!(k, "/cse-sr/ms/files/d/p/s1");
        assert_eq!(
            parse(&k),
            Parsed::Service {
                domain: "d".into(),
                project: "p".into(),
                service_id: "s1".into()
            }
        );
        let k = instance("d", "p", "s1", "i1");
        assert_eq!(k, "/cse-sr/inst/files/d/p/s1/i1");
        assert!(matches!(
            parse(&k),
            Parsed::Instance { instance_id, .. } if instance_id == "i1"
        ));
        assert!(matches!(
            parse(&lease("d", "p", "s1", "i1")),
            Parsed::Lease { service_id, .. } if service_id == "s1"
        ));
        assert!(k.starts_with(&instances_of("d", "p", "s1")));
        assert_eq!(
            parse(&service_index("d", "p", "", "a", "n", "1")),
            Parsed::Index
        );
        assert_eq!(parse("/cse-sr/ms/files/d/p"), Parsed::Other);
        // Unwritten keys serialise as the strings, escaped as strings are.
        assert_eq!(
            serde_json::to_string(&instance_key("d\"", "p", "s1", "i1")).unwrap(),
            serde_json::to_string(&instance("d\"", "p", "s1", "i1")).unwrap()
        );
        assert_eq!(
            service_index_key("d", "p", "", "a", "n", "1").to_string(),
            "/cse-sr/ms/indexes/d/p//a/n/1"
        );
        assert_eq!(parse("/cse-sr/ms/tags/d/p/s"), Parsed::Other);
    }

    #[test]
    fn a_slash_or_percent_in_a_segment_is_escaped_and_read_back() {
        for id in ["host/a:b", "a%2Fb", "50%", "/", "%", "é/ü", "a\u{1}b"] {
            let k = instance("d", "p", "s1", id);
            assert_eq!(k.matches('/').count(), 7, "{k}");
            assert!(k.starts_with(&instances_of("d", "p", "s1")), "{k}");
            assert_eq!(
                parse(&k),
                Parsed::Instance {
                    domain: "d".into(),
                    project: "p".into(),
                    service_id: "s1".into(),
                    instance_id: id.into()
                },
                "{k}"
            );
            assert_eq!(instance_key("d", "p", "s1", id).to_string(), k);
            let l = lease("d", "p", "s/1", id);
            assert!(l.starts_with(&leases_of("d", "p", "s/1")), "{l}");
            assert!(
                matches!(parse(&l), Parsed::Lease { service_id, instance_id, .. }
                    if service_id == "s/1" && instance_id == id),
                "{l}"
            );
        }
        assert_eq!(
            instance("d", "p", "s", "host/a:b"),
            "/cse-sr/inst/files/d/p/s/host%2Fa:b"
        );
        // Keys without `%` or `/` in a segment are as before.
        assert_eq!(
            service("d", "p", "a:b.c-d_e"),
            "/cse-sr/ms/files/d/p/a:b.c-d_e"
        );
        assert_eq!(
            instance("d", "p", "s", "é\u{1} x"),
            "/cse-sr/inst/files/d/p/s/é\u{1} x"
        );
        // A segment written unescaped before reads as it is unless it holds `%25`/`%2F`.
        for (raw, read) in [
            ("a%41", "a%41"),
            ("50%", "50%"),
            ("%", "%"),
            ("x%2fy", "x/y"),
        ] {
            assert!(
                matches!(parse(&format!("/cse-sr/ms/files/d/p/{raw}")),
                    Parsed::Service { service_id, .. } if service_id == read),
                "{raw}"
            );
        }
    }
}
