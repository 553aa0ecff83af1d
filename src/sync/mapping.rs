//! The mapping from an origin instance to its local copy (DESIGN.md decisions 2 and 3).
//!
//! The mapping is never stored as the only copy: every imported instance carries its origin in
//! its own metadata ([`ORIGIN_CLUSTER`], [`ORIGIN_SERVICE_ID`], [`ORIGIN_INSTANCE_ID`]), and
//! [`Mapping::from_snapshot`] rebuilds the whole mapping from one listing of the local registry.
//! Local ids are stable functions of the origin ([`local_instance_id`], [`local_service_id`]),
//! so two leaders, or a leader that crashed between writing and recording, produce the same
//! registration instead of a duplicate.

use std::collections::HashMap;

use sha1::{Digest, Sha1};
use syncer_plugin_api::{
    Instance, Service, Snapshot, ORIGIN_CLUSTER, ORIGIN_INSTANCE_ID, ORIGIN_SERVICE_ID,
};

/// Identifies an instance at its origin: (origin cluster, origin service id, origin instance id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginKey {
    /// The cluster the instance was first registered in.
    pub cluster: String,
    /// Its service id in the origin registry.
    pub service_id: String,
    /// Its instance id in the origin registry.
    pub instance_id: String,
}

impl OriginKey {
    /// The origin recorded in an imported instance's metadata; `None` for an instance that
    /// was not imported by a syncer (a local, origin instance).
    pub fn of_imported(instance: &Instance) -> Option<OriginKey> {
        let p = &instance.properties;
        Some(OriginKey {
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
pub fn local_instance_id(origin: &OriginKey) -> String {
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

/// A local copy of an origin instance, as found in the local registry.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    /// The local service the copy is registered under.
    pub service: Service,
    /// The copy as the local registry reports it.
    pub instance: Instance,
}

/// Origin → local copy, rebuilt from one listing of the local registry.
#[derive(Debug, Default)]
pub struct Mapping {
    /// Indexed by origin, so the importer's diff is one lookup per instance.
    pub copies: HashMap<OriginKey, LocalCopy>,
}

impl Mapping {
    /// Rebuilds the mapping from a listing of the local registry: every instance carrying an
    /// origin marker is a copy. Copies whose service is missing from the listing are ignored
    /// (the registry lists them only transiently, while a service is being deleted).
    /// If the registry holds two copies of one origin (left by a registry that ignored the
    /// chosen id), the one whose id is the deterministic one wins; the other is returned in
    /// `duplicates` for the importer to remove.
    pub fn from_snapshot(local: &Snapshot) -> (Mapping, Vec<LocalCopy>) {
        Mapping::from_listing(local.clone())
    }

    /// [`Mapping::from_snapshot`], taking the listing: its instances move into the mapping
    /// (no copy of a 100,000-instance listing).
    pub fn from_listing(local: Snapshot) -> (Mapping, Vec<LocalCopy>) {
        let services: HashMap<&str, &Service> = local
            .services
            .iter()
            .map(|s| (s.service_id.as_str(), s))
            .collect();
        let mut copies: HashMap<OriginKey, LocalCopy> = HashMap::new();
        let mut duplicates = Vec::new();
        for instance in local.instances {
            let Some(origin) = OriginKey::of_imported(&instance) else {
                continue;
            };
            let Some(service) = services.get(instance.service_id.as_str()) else {
                continue;
            };
            let deterministic = instance.instance_id == local_instance_id(&origin);
            let copy = LocalCopy {
                service: (*service).clone(),
                instance,
            };
            match copies.get(&origin) {
                None => {
                    copies.insert(origin, copy);
                }
                Some(_) if deterministic => {
                    if let Some(old) = copies.insert(origin, copy) {
                        duplicates.push(old);
                    }
                }
                Some(_) => duplicates.push(copy),
            }
        }
        (Mapping { copies }, duplicates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> OriginKey {
        OriginKey {
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
        assert_eq!(
            mapping.copies[&origin()].instance.instance_id,
            copy.instance_id
        );
        assert_eq!(dups.len(), 1);
        assert_eq!(dups[0].instance.instance_id, "stray");
    }
}
