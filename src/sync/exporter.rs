//! The exporter: what this cluster offers its peers.
//!
//! A cluster exports its own (origin) instances and the services they belong to, never an
//! instance it imported (one carrying an origin marker): that is the loop guard of DESIGN.md
//! decision 2. [`exported`] is the pure filter; [`Exporter`] adds a short-lived cache so that
//! several peers pulling at once cost one registry listing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncer_plugin_api::{Plugin, Snapshot};

use super::mapping::OriginKey;

/// The part of a local listing that is exported: instances without an origin marker, and the
/// services that have at least one of them (a service with no instance is of no use to a
/// peer, and would only create empty services there).
pub fn exported(local: &Snapshot) -> Snapshot {
    let instances: Vec<_> = local
        .instances
        .iter()
        .filter(|i| OriginKey::of_imported(i).is_none())
        .cloned()
        .collect();
    let used: HashSet<&str> = instances.iter().map(|i| i.service_id.as_str()).collect();
    let services = local
        .services
        .iter()
        .filter(|s| used.contains(s.service_id.as_str()))
        .cloned()
        .collect();
    Snapshot {
        services,
        instances,
    }
}

/// Lists the local registry on behalf of the importer and of peers' `Pull` calls.
#[derive(Debug)]
pub struct Exporter {
    plugin: Arc<dyn Plugin>,
    /// How long a listing may be served again; bounds the staleness a peer can see.
    max_age: Duration,
    /// The last listing and when it was taken. A tokio mutex, held across the listing on
    /// purpose: concurrent pulls wait for the one listing in flight instead of each starting
    /// their own.
    cache: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>,
}

impl Exporter {
    /// An exporter over `plugin`, re-listing when the cached listing is older than `max_age`.
    pub fn new(plugin: Arc<dyn Plugin>, max_age: Duration) -> Exporter {
        Exporter {
            plugin,
            max_age,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The whole local registry, freshly listed (the importer's view of "actual").
    ///
    /// # Errors
    /// The plugin's listing error.
    pub async fn refresh(&self) -> syncer_plugin_api::Result<Arc<Snapshot>> {
        let mut cache = self.cache.lock().await;
        let listing = Arc::new(self.plugin.list().await?);
        *cache = Some((Instant::now(), listing.clone()));
        Ok(listing)
    }

    /// The exported part of the local registry, from a listing at most `max_age` old.
    ///
    /// # Errors
    /// The plugin's listing error.
    pub async fn export(&self) -> syncer_plugin_api::Result<Snapshot> {
        let mut cache = self.cache.lock().await;
        let listing = match cache.as_ref() {
            Some((at, listing)) if at.elapsed() <= self.max_age => listing.clone(),
            _ => {
                let listing = Arc::new(self.plugin.list().await?);
                *cache = Some((Instant::now(), listing.clone()));
                listing
            }
        };
        drop(cache);
        Ok(exported(&listing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::{Instance, Service};

    #[test]
    fn imported_instances_and_their_empty_services_are_not_exported() {
        let mut imported = Instance {
            instance_id: "copy".into(),
            service_id: "s2".into(),
            ..Default::default()
        };
        OriginKey {
            cluster: "c".into(),
            service_id: "o".into(),
            instance_id: "i".into(),
        }
        .mark(&mut imported);
        let local = Snapshot {
            services: vec![
                Service {
                    service_id: "s1".into(),
                    ..Default::default()
                },
                Service {
                    service_id: "s2".into(),
                    ..Default::default()
                },
                Service {
                    service_id: "s3".into(),
                    ..Default::default()
                },
            ],
            instances: vec![
                Instance {
                    instance_id: "own".into(),
                    service_id: "s1".into(),
                    ..Default::default()
                },
                imported,
            ],
        };
        let out = exported(&local);
        assert_eq!(out.instances.len(), 1);
        assert_eq!(out.instances[0].instance_id, "own");
        let ids: Vec<_> = out.services.iter().map(|s| s.service_id.as_str()).collect();
        assert_eq!(ids, vec!["s1"]);
    }
}
