//! The metadata service of the built-in core: business rules, validation,
//! leases and the in-memory indexes behind both HTTP surfaces.
//!
//! One [`Registry`] holds every microservice and instance. The SC v4 API
//! (`api/v4.rs`) and the Eureka v2 API (`api/eureka.rs`) are two views of the same
//! records: an Eureka application is the set of microservices in tenant
//! `default/default` whose upper-cased `serviceName` is the app name, and an
//! app registered through `/eureka` becomes the microservice
//! (`default`, `default`, env "", appId `eureka`, lower-case name, `0.0.1`).
//!
//! Indexes, so that no request loops over services × instances:
//! - `services`: serviceId → service and its instances (instances by id);
//! - `by_name`: (domain, project, env, appId, serviceName), packed into one allocation
//!   (`name_index`), → the serviceIds of every version (a key with its version is
//!   looked up among them: `Registry::id_of_key`);
//! - `by_app`: Eureka app name → serviceIds in default/default;
//! - `leases`: (deadline, serviceId, instanceId), ordered, for expiry; lazily kept (an
//!   entry may predate a renewal: `expire` requeues it at the record's deadline).
//!
//! Every function here is synchronous and takes `now` from the caller; the
//! caller holds the lock only for the call (never across `.await`).
//!
//! Files: `model` (the records), `validate` (body and query checks), `services`,
//! `instances` (and leases), `eureka_apps` (Eureka operations) and [`eureka`] (the Eureka
//! view: delta, hashcode, self-preservation), `persist` (the journal for the store),
//! [`changelog`] (change log and feed), [`discovery`], [`rules`], [`tags`], [`schemas`],
//! [`dependencies`], [`rbac`] (accounts and roles), [`records`] (other stored records),
//! [`limits`] (quotas and size limits).

pub mod changelog;
pub mod dependencies;
pub mod discovery;
pub mod eureka;
mod eureka_apps;
mod instances;
pub mod limits;
mod model;
mod persist;
pub mod rbac;
pub mod records;
pub mod rules;
pub mod schemas;
mod services;
pub mod tags;
mod validate;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::servicecenter::error::{
    ScError, DEPLOYED_INSTANCE, INSTANCE_NOT_EXISTS, SERVICE_ALREADY_EXISTS, SERVICE_NOT_EXISTS,
    SERVICE_VERSION_NOT_EXISTS,
};
use crate::servicecenter::store::{keys, Journal, Mark, Taken, Write};

pub use limits::Limits;
pub use model::*;
pub(crate) use persist::*;
pub use syncer_wire_servicecenter::model::{
    DataCenterInfo, Framework, HealthCheck, MicroService, MicroServiceInstance, Props, Stamp,
};
pub use validate::*;

/// The domain and project that Eureka apps live in.
pub const DEFAULT_TENANT: &str = "default";
/// The appId of microservices created through the Eureka API (the old syncer's mapping).
pub const EUREKA_APP_ID: &str = "eureka";
/// The version of microservices created through the Eureka API.
pub const EUREKA_VERSION: &str = "0.0.1";

/// The in-memory registry. See the module docs for its indexes.
#[derive(Debug, Default)]
pub struct Registry {
    /// Behind an `Arc`: the table keeps spare slots, each the size of its value, and a
    /// snapshot ([`Registry::snapshot`]) shares the entries; a write after a snapshot copies
    /// the entry it changes (`Arc::make_mut`; instances are shared too).
    /// Keyed by the serviceId, one allocation shared with `by_name` and `by_app`.
    services: HashMap<Arc<str>, Arc<ServiceEntry>>,
    by_name: HashMap<Box<[u8]>, IdSet>,
    by_app: HashMap<String, IdSet>,
    leases: Leases,
    revision: u64,
    /// Changes not yet written to the store (see `store/mod.rs`); inert without a store.
    pub(crate) journal: Journal,
    /// Schemas and their summaries per service (`schemas.rs`).
    pub(crate) schemas: schemas::Schemas,
    /// Tags per service (`tags.rs`).
    pub(crate) tags: tags::Tags,
    /// Black and white list rules per service (`rules.rs`).
    pub(crate) rules: rules::Rules,
    /// Consumer → provider dependency rules (`dependencies.rs`).
    pub(crate) dependencies: dependencies::Dependencies,
    /// Wakes the watchers on every revision bump (`watch.rs`).
    pub(crate) changes: changelog::ChangeFeed,
    /// Eureka-only state: delta queue, status overrides, self-preservation (`eureka_registry.rs`).
    pub(crate) eureka: eureka::EurekaState,
    /// Finds' JSON of each service's instances at the current revision (`discovery.rs`).
    pub(crate) found: discovery::FoundCache,
    /// What changed at which revision, for readers of `admin/changes` (`changelog.rs`).
    pub(crate) changelog: changelog::ChangeLog,
    /// Accounts, roles and the token key (`rbac/`; empty while RBAC is off).
    pub(crate) rbac: rbac::RbacState,
    /// Quotas and size limits ([`limits`]).
    limits: Limits,
    /// Instances in all services, kept by every path that adds or removes one (O(1) quota
    /// checks, [`limits`]).
    instance_count: usize,
}

/// The longest lease the registry keeps, seconds: Java's `int` range, the largest lease a
/// Eureka registration (`leaseInfo.durationInSecs`) or a service-center healthCheck
/// (`interval × (times + 1)`, int32) can ask for. About 68 years.
pub const MAX_LEASE_SECS: u64 = i32::MAX as u64;

/// When a lease of `ttl_secs` taken at `now` ends: `ttl_secs` is cut to
/// [`MAX_LEASE_SECS`] and the sum is checked, so no request or stored value can make
/// `Instant + Duration` overflow (a panic under the registry lock).
pub fn lease_deadline(now: Instant, ttl_secs: u64) -> Instant {
    let ttl = Duration::from_secs(ttl_secs.min(MAX_LEASE_SECS));
    now.checked_add(ttl).unwrap_or(now)
}

/// Wall-clock now in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The default serviceId: lowercase hex SHA-1 of
/// `/cse-sr/ms/indexes/<domain>/<project>/<env>/<appId>/<serviceName>/<version>`
/// (service-center's `context` uuid plugin).
pub fn default_service_id(
    domain: &str,
    project: &str,
    env: &str,
    app_id: &str,
    service_name: &str,
    version: &str,
) -> String {
    let key =
        format!("/cse-sr/ms/indexes/{domain}/{project}/{env}/{app_id}/{service_name}/{version}");
    hex::encode(Sha1::digest(key.as_bytes()))
}

fn mapped_eureka_app(domain: &str, project: &str, service_name: &str) -> Option<String> {
    (domain == DEFAULT_TENANT && project == DEFAULT_TENANT)
        .then(|| service_name.to_ascii_uppercase())
}

/// `by_name`'s key for `k`: each part after its length (4 bytes, little endian), in one
/// allocation instead of five strings.
fn name_index(k: &NameKey) -> Box<[u8]> {
    pack_name([&k.0, &k.1, &k.2, &k.3, &k.4])
}

/// [`name_index`] of a stored service, without building its [`NameKey`].
fn entry_name_index(e: &ServiceEntry) -> Box<[u8]> {
    let s = &e.service;
    pack_name([
        &e.domain,
        &e.project,
        &s.environment,
        &s.app_id,
        &s.service_name,
    ])
}

/// (domain, project, env, appId, serviceName), each after its length, in one allocation.
fn pack_name(parts: [&str; 5]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum());
    for p in parts {
        out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out.into_boxed_slice()
}

/// `now_ms` as a record's `timestamp`: whole seconds since the epoch.
fn secs(now_ms: i64) -> Stamp {
    let secs = now_ms / 1000;
    match u64::try_from(secs) {
        Ok(secs) => Stamp::from_secs(secs),
        Err(_) => Stamp::parse(&secs.to_string()),
    }
}

impl Registry {
    /// The serviceId of the service with this key (name and version), if any.
    pub(super) fn id_of_key(&self, key: &ServiceKey) -> Option<&str> {
        self.by_name
            .get(&name_index(&key.0))?
            .iter()
            .find(|id| {
                self.services
                    .get(&***id)
                    .is_some_and(|e| e.service.version == key.1)
            })
            .map(|id| &**id)
    }

    /// Bumped on every change of a service or instance (not on heartbeats).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn bump(&mut self) {
        self.revision += 1;
        self.changes.notify(self.revision);
    }

    /// Notes in the change log that instance `iid` of service `sid` changes at the coming
    /// revision bump (every instance change passes here through `eureka_touch`/`eureka_gone`).
    fn log_instance(&mut self, sid: &str, iid: &str) {
        let tenant = self.services.get(sid).map(|e| (&*e.domain, &*e.project));
        self.changelog.note(
            self.revision + 1,
            tenant,
            changelog::Changed::Instance {
                service_id: sid.to_owned(),
                instance_id: iid.to_owned(),
            },
        );
    }

    /// Notes in the change log that service `sid` changes at the coming revision bump.
    fn log_service(&mut self, sid: &str) {
        let tenant = self.services.get(sid).map(|e| (&*e.domain, &*e.project));
        self.changelog.note(
            self.revision + 1,
            tenant,
            changelog::Changed::Service {
                service_id: sid.to_owned(),
            },
        );
    }

    /// [`Registry::log_service`] of a service of tenant `domain/project` that may not be in
    /// the registry (being restored, or just removed).
    fn log_service_in(&mut self, domain: &str, project: &str, sid: &str) {
        self.changelog.note(
            self.revision + 1,
            Some((domain, project)),
            changelog::Changed::Service {
                service_id: sid.to_owned(),
            },
        );
    }

    /// Notes for the Eureka delta (`eureka_registry.rs`) that instance `iid` of service
    /// `sid` changed; nothing outside default/default. O(1). Every path that changes an
    /// instance must call this (or [`Registry::eureka_gone`] when it removes one): the
    /// delta sees nothing else.
    fn eureka_touch(&mut self, sid: &str, iid: &str) {
        self.log_instance(sid, iid);
        if let Some(e) = self.services.get(sid) {
            if let Some(app) = mapped_eureka_app(&e.domain, &e.project, &e.service.service_name) {
                self.eureka.touch(&app, iid);
            }
        }
    }

    /// Notes for the Eureka delta that instance `rec` of service `sid` (still known) was
    /// removed; the record is kept until the next delta sync for its `DELETED` entry.
    fn eureka_gone(&mut self, sid: &str, rec: Arc<InstanceRecord>) {
        self.log_instance(sid, &rec.body.instance_id);
        if let Some(e) = self.services.get(sid) {
            if let Some(app) = mapped_eureka_app(&e.domain, &e.project, &e.service.service_name) {
                self.eureka
                    .removed(&app, &e.service.service_name, Arc::unwrap_or_clone(rec));
            }
        }
    }

    /// [`Registry::eureka_gone`] for every instance of a removed service.
    fn eureka_gone_service(&mut self, entry: ServiceEntry) {
        let (sid, tenant) = (&entry.service.service_id, (&*entry.domain, &*entry.project));
        self.log_service_in(tenant.0, tenant.1, sid);
        for iid in entry.instances.keys() {
            self.changelog.note(
                self.revision + 1,
                Some(tenant),
                changelog::Changed::Instance {
                    service_id: sid.clone(),
                    instance_id: iid.clone(),
                },
            );
        }
        let name = &entry.service.service_name;
        if let Some(app) = mapped_eureka_app(&entry.domain, &entry.project, name) {
            for rec in entry.instances.into_values() {
                self.eureka.removed(&app, name, Arc::unwrap_or_clone(rec));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn svc(name: &str, version: &str) -> MicroService {
        MicroService {
            service_name: name.into(),
            version: version.into(),
            ..MicroService::default()
        }
    }

    fn inst(id: &str) -> MicroServiceInstance {
        MicroServiceInstance {
            instance_id: id.into(),
            host_name: "h".into(),
            endpoints: vec!["rest://127.0.0.1:8080".into()],
            ..MicroServiceInstance::default()
        }
    }

    #[test]
    fn default_service_id_is_sha1_of_the_index_key() {
        let id = default_service_id("default", "default", "", "default", "hello", "0.0.1");
        let expect = hex::encode(Sha1::digest(
            b"/cse-sr/ms/indexes/default/default//default/hello/0.0.1",
        ));
        assert_eq!(id, expect);
        assert_eq!(id.len(), 40);
    }

    #[test]
    fn version_rules_pick_latest_range_and_exact() {
        let mut r = Registry::default();
        for v in ["1.9", "1.10", "0.0.1"] {
            r.create_service("d", "p", svc("s", v), 0).unwrap();
        }
        let key = (
            "d".into(),
            "p".into(),
            String::new(),
            "default".into(),
            "s".into(),
        );
        let latest = r.resolve(&key, "latest").unwrap();
        assert_eq!(r.services[latest[0].as_str()].service.version, "1.10");
        assert_eq!(r.resolve(&key, "1.0+").unwrap().len(), 2);
        assert_eq!(r.resolve(&key, "0.0.1-1.10").unwrap().len(), 2);
        assert_eq!(r.resolve(&key, "1.9").unwrap().len(), 1);
        assert_eq!(r.resolve(&key, "2.0").unwrap_err().code, SERVICE_NOT_EXISTS);
    }

    #[test]
    fn leases_expire_in_deadline_order_and_keep_the_service() {
        let mut r = Registry::default();
        let (sid, _) = r.create_service("d", "p", svc("s", "1"), 0).unwrap();
        let t0 = Instant::now();
        let mut a = inst("a");
        a.health_check = Some(HealthCheck {
            mode: "push".into(),
            interval: 1,
            times: 1,
            ..HealthCheck::default()
        });
        r.register_instance("d", "p", &sid, a, t0, 0).unwrap();
        r.register_instance("d", "p", &sid, inst("b"), t0, 0)
            .unwrap();
        assert_eq!(r.expire(t0 + Duration::from_secs(1)), 0);
        assert_eq!(r.expire(t0 + Duration::from_secs(2)), 1);
        assert_eq!(r.list_instances("d", "p", &sid).unwrap().len(), 1);
        r.heartbeat("d", "p", &sid, "b", t0 + Duration::from_secs(100), 0)
            .unwrap();
        assert_eq!(r.expire(t0 + Duration::from_secs(121)), 0);
        assert_eq!(r.expire(t0 + Duration::from_secs(220)), 1);
        assert!(r.service("d", "p", &sid).is_ok());
    }

    #[test]
    fn names_follow_the_service_center_pattern() {
        assert!(name_ok("a", false));
        assert!(name_ok("hello-server.v2", false));
        assert!(!name_ok("-x", false));
        assert!(!name_ok("x:y", false));
        assert!(name_ok("x:y", true));
        assert!(env_ok("") && env_ok("production") && !env_ok("prod"));
    }
}
