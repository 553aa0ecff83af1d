//! The mapping from an origin instance to its local copy (DESIGN.md decisions 2 and 3).
//!
//! The mapping is never stored as the only copy: every imported instance carries its origin in
//! its own metadata ([`ORIGIN_CLUSTER`], [`ORIGIN_SERVICE_ID`], [`ORIGIN_INSTANCE_ID`]), and
//! [`Mapping::from_snapshot`] rebuilds the whole mapping from one listing of the local registry.
//! Local ids are stable functions of the origin ([`local_instance_id`], [`local_service_id`]),
//! so two leaders, or a leader that crashed between writing and recording, produce the same
//! registration instead of a duplicate.

use std::collections::HashMap;
use std::sync::Arc;

use sha1::{Digest, Sha1};
use syncer_plugin_api::{
    Instance, Service, Snapshot, ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID,
};

use super::exporter::Unexported;
use crate::records::fingerprint;
use crate::records::packed::{instance_key, service_key, InstanceKey, PackedService, ServiceKey};

/// Identifies an instance at its origin: (origin cluster, origin service id, origin instance id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The cluster the instance was first registered in.
    pub cluster: String,
    /// Its service id in the origin registry.
    pub service_id: String,
    /// Its instance id in the origin registry.
    pub instance_id: String,
}

impl Origin {
    /// The origin recorded in an imported instance's metadata; `None` for an instance that
    /// was not imported by a syncer (a local, origin instance).
    pub fn of_imported(instance: &Instance) -> Option<Origin> {
        let p = &instance.properties;
        Some(Origin {
            cluster: p.get(ORIGIN_CLUSTER)?.clone(),
            service_id: p.get(ORIGIN_SERVICE_ID)?.clone(),
            instance_id: p.get(ORIGIN_INSTANCE_ID)?.clone(),
        })
    }

    /// Writes this origin into an instance's metadata (the loop guard and the mapping's only
    /// durable copy).
    pub fn mark(&self, instance: &mut Instance) {
        let p = &mut instance.properties;
        p.insert(ORIGIN_CLUSTER.to_owned(), self.cluster.clone());
        p.insert(ORIGIN_SERVICE_ID.to_owned(), self.service_id.clone());
        p.insert(ORIGIN_INSTANCE_ID.to_owned(), self.instance_id.clone());
    }
}

/// The local id of an imported instance: the first 32 lower-case hex digits of
/// SHA-1(`cluster/serviceId/instanceId`). 32 hex characters is the shape of service-center's
/// own generated ids, and fits both registries' id rules (service-center: at most 64 of
/// `[A-Za-z0-9_.-]`; Eureka: any string).
pub fn local_instance_id(origin: &Origin) -> String {
    let mut h = Sha1::new();
    h.update(origin.cluster.as_bytes());
    h.update(b"/");
    h.update(origin.service_id.as_bytes());
    h.update(b"/");
    h.update(origin.instance_id.as_bytes());
    let mut id = hex::encode(h.finalize());
    id.truncate(32);
    id
}

/// The local id of a service: lower-case hex SHA-1 of
/// `/cse-sr/ms/indexes/{domain}/{project}/{env}/{appId}/{serviceName}/{version}`, exactly what
/// service-center's default `context` id plugin computes (servicecomb-notes c.7), so a service
/// created by the syncer gets the id service-center itself would have chosen.
pub fn local_service_id(service: &Service) -> String {
    let key = format!(
        "/cse-sr/ms/indexes/{}/{}/{}/{}/{}",
        service.domain_project,
        service.environment,
        service.app_id,
        service.service_name,
        service.version
    );
    hex::encode(Sha1::digest(key.as_bytes()))
}

/// An origin instance as the mapping keys it: its cluster, and the [`InstanceKey`] of
/// (serviceId, instanceId) there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginKey {
    /// The origin cluster (shared by all its copies).
    pub cluster: Arc<str>,
    /// The instance at its origin.
    pub instance: InstanceKey,
}

impl OriginKey {
    /// The key of `origin`, with `cluster` its cluster name shared.
    pub fn of(cluster: &Arc<str>, origin: &Origin) -> OriginKey {
        OriginKey {
            cluster: cluster.clone(),
            instance: instance_key(&origin.service_id, &origin.instance_id),
        }
    }
}

/// A local copy of an origin instance, as much of it as the importer needs: where it is
/// registered (to heartbeat and remove it) and a [`fingerprint`] of what consumers use (to
/// see that its origin changed). About 100 bytes, where the copy itself is a kilobyte.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalCopy {
    /// The local service the copy is registered under.
    pub service: PackedService,
    /// The copy's local instance id.
    pub instance_id: String,
    /// [`fingerprint`] of the copy's status and endpoints.
    pub fingerprint: u64,
}

impl LocalCopy {
    /// The record of `instance`, registered under `service`.
    pub fn of(service: PackedService, instance: &Instance) -> LocalCopy {
        LocalCopy {
            service,
            instance_id: instance.instance_id.clone(),
            fingerprint: fingerprint(instance.status, &instance.endpoints),
        }
    }
}

/// Origin → local copy, rebuilt from one listing of the local registry.
#[derive(Debug, Default)]
pub struct Mapping {
    /// Indexed by origin, so the importer's diff is one lookup per instance.
    pub copies: HashMap<OriginKey, LocalCopy>,
}

/// Builds a [`Mapping`] from a listing read record by record (services and instances in any
/// order): copies are kept compact as they come, so no whole listing is ever held.
#[derive(Debug, Default)]
pub struct MappingBuilder {
    services: HashMap<ServiceKey, PackedService>,
    clusters: Vec<Arc<str>>,
    copies: HashMap<OriginKey, (LocalCopy, bool)>,
    /// Copies read before their service.
    waiting: Vec<(OriginKey, Instance)>,
    duplicates: Vec<(OriginKey, LocalCopy)>,
}

/// The importer's part of a listing made by the exporter.
impl Unexported for MappingBuilder {
    fn service(&mut self, service: &Service, packed: &PackedService) {
        self.services
            .insert(service_key(&service.service_id), packed.clone());
    }

    fn copy(&mut self, instance: &Instance) {
        self.instance(instance);
    }
}

impl MappingBuilder {
    /// Notes a local service (its copies may have come already, or come later).
    pub fn service(&mut self, service: &Service) -> PackedService {
        let packed = PackedService::new(service);
        self.services
            .insert(service_key(&service.service_id), packed.clone());
        packed
    }

    /// Notes a local instance; only copies (instances carrying an origin) are kept.
    pub fn instance(&mut self, instance: &Instance) {
        let Some(origin) = Origin::of_imported(instance) else {
            return;
        };
        let cluster = match self.clusters.iter().find(|c| ***c == *origin.cluster) {
            Some(c) => c.clone(),
            None => {
                let c: Arc<str> = Arc::from(origin.cluster.as_str());
                self.clusters.push(c.clone());
                c
            }
        };
        let key = OriginKey::of(&cluster, &origin);
        let deterministic = instance.instance_id == local_instance_id(&origin);
        let Some(service) = self.services.get(&service_key(&instance.service_id)) else {
            self.waiting.push((key, instance.clone()));
            return;
        };
        let copy = LocalCopy::of(service.clone(), instance);
        self.add(key, copy, deterministic);
    }

    fn add(&mut self, key: OriginKey, copy: LocalCopy, deterministic: bool) {
        match self.copies.get(&key) {
            None => {
                self.copies.insert(key, (copy, deterministic));
            }
            Some((_, held_deterministic)) if deterministic && !*held_deterministic => {
                if let Some((old, _)) = self.copies.insert(key.clone(), (copy, true)) {
                    self.duplicates.push((key, old));
                }
            }
            Some(_) => self.duplicates.push((key, copy)),
        }
    }

    /// The mapping, and the duplicate copies found (for the importer to remove). Copies
    /// whose service is missing from the listing are ignored (the registry lists them only
    /// transiently, while a service is being deleted). If the registry holds two copies of
    /// one origin (left by a registry that ignored the chosen id), the one whose id is the
    /// deterministic one wins.
    pub fn finish(mut self) -> (Mapping, Vec<(OriginKey, LocalCopy)>) {
        for (key, instance) in std::mem::take(&mut self.waiting) {
            let Some(service) = self.services.get(&service_key(&instance.service_id)) else {
                continue;
            };
            let copy = LocalCopy::of(service.clone(), &instance);
            let deterministic = Origin::of_imported(&instance)
                .is_some_and(|o| instance.instance_id == local_instance_id(&o));
            self.add(key, copy, deterministic);
        }
        let copies = self
            .copies
            .into_iter()
            .map(|(key, (copy, _))| (key, copy))
            .collect();
        (Mapping { copies }, self.duplicates)
    }
}

impl Mapping {
    /// Rebuilds the mapping from a listing of the local registry: every instance carrying an
    /// origin marker is a copy (see [`MappingBuilder::finish`]).
    pub fn from_snapshot(local: &Snapshot) -> (Mapping, Vec<(OriginKey, LocalCopy)>) {
        let mut builder = MappingBuilder::default();
        for s in &local.services {
            builder.service(s);
        }
        for i in &local.instances {
            builder.instance(i);
        }
        builder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            cluster: "eureka-site".into(),
            service_id: "account-server".into(),
            instance_id: "127.0.0.1:account-server:8090".into(),
        }
    }

    #[test]
    fn service_id_matches_what_service_center_computes() {
        // From the 1.3.0 demo log (servicecomb-notes b.2): account-server copied into SC got
        // serviceId 80784229255ec96d90353e3c041bdf3586fdbbae.
        let s = Service {
            domain_project: "default/default".into(),
            app_id: "eureka".into(),
            service_name: "account-server".into(),
            version: "0.0.1".into(),
            ..Default::default()
        };
        assert_eq!(
            local_service_id(&s),
            "80784229255ec96d90353e3c041bdf3586fdbbae"
        );
    }

    #[test]
    fn instance_id_is_stable_valid_and_origin_specific() {
        let a = local_instance_id(&origin());
        assert_eq!(a, local_instance_id(&origin()));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let mut other = origin();
        other.cluster = "other-site".into();
        assert_ne!(a, local_instance_id(&other));
    }

    #[test]
    fn mapping_is_rebuilt_from_metadata_and_skips_origin_instances() {
        let service = Service {
            service_id: "s1".into(),
            ..Default::default()
        };
        let mut copy = Instance {
            instance_id: local_instance_id(&origin()),
            service_id: "s1".into(),
            ..Default::default()
        };
        origin().mark(&mut copy);
        let native = Instance {
            instance_id: "native".into(),
            service_id: "s1".into(),
            ..Default::default()
        };
        let mut stray = copy.clone();
        stray.instance_id = "stray".into();
        let snapshot = Snapshot {
            services: vec![service],
            instances: vec![stray, native, copy.clone()],
        };
        let (mapping, dups) = Mapping::from_snapshot(&snapshot);
        assert_eq!(mapping.copies.len(), 1);
        let key = OriginKey::of(&Arc::from("eureka-site"), &origin());
        assert_eq!(mapping.copies[&key].instance_id, copy.instance_id);
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].1.instance_id, "stray");
    }
}
