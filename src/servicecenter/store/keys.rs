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
//! Segments are taken as they are; a `/` inside a domain or project name is not escaped
//! (service-center does not escape either).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

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
            f.write_str(s)?;
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
    format!("{LEASES}{domain}/{project}/{service_id}/{instance_id}")
}

/// The prefix of every instance key of one service (ends with `/`).
pub fn instances_of(domain: &str, project: &str, service_id: &str) -> String {
    format!("{INSTANCES}{domain}/{project}/{service_id}/")
}

/// The prefix of every lease key of one service (ends with `/`).
pub fn leases_of(domain: &str, project: &str, service_id: &str) -> String {
    format!("{LEASES}{domain}/{project}/{service_id}/")
}

/// What a key names, borrowed from the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A microservice record.
    Service {
        /// Domain.
        domain: &'a str,
        /// Project.
        project: &'a str,
        /// serviceId.
        service_id: &'a str,
    },
    /// A service index (derived from the service record; read back only for completeness).
    Index,
    /// An instance record.
    Instance {
        /// Domain.
        domain: &'a str,
        /// Project.
        project: &'a str,
        /// serviceId.
        service_id: &'a str,
        /// instanceId.
        instance_id: &'a str,
    },
    /// An instance's lease.
    Lease {
        /// Domain.
        domain: &'a str,
        /// Project.
        project: &'a str,
        /// serviceId.
        service_id: &'a str,
        /// instanceId.
        instance_id: &'a str,
    },
    /// Any other key (record kinds without their own arm here, or foreign keys).
    Other,
}

/// Splits `rest` into exactly `N` non-empty `/`-separated segments.
fn segments<const N: usize>(rest: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut it = rest.split('/');
    for slot in out.iter_mut() {
        *slot = it.next().filter(|s| !s.is_empty())?;
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
                domain: "d",
                project: "p",
                service_id: "s1"
            }
        );
        let k = instance("d", "p", "s1", "i1");
        assert_eq!(k, "/cse-sr/inst/files/d/p/s1/i1");
        assert!(matches!(
            parse(&k),
            Parsed::Instance {
                instance_id: "i1",
                ..
            }
        ));
        assert!(matches!(
            parse(&lease("d", "p", "s1", "i1")),
            Parsed::Lease {
                service_id: "s1",
                ..
            }
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
}
