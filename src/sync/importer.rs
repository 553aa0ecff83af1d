//! The importer: makes the local registry hold a copy of every instance the peer clusters
//! export, and nothing else that a syncer put there (DESIGN.md decision 1).
//!
//! Level-triggered: [`plan`] is a pure function of what the peers export (desired) and what
//! the local registry holds (actual, as a [`Mapping`] rebuilt from the registry's own
//! metadata); [`apply`] carries the plan out through the plugin with bounded concurrency.
//! Everything is indexed by origin id; nothing loops over peers x locals.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::stream::{self, StreamExt};
use syncer_plugin_api::{Error as PluginError, HealthCheck, Instance, Plugin, Service, Snapshot};
use tracing::{debug, warn};

use super::mapping::{local_instance_id, local_service_id, LocalCopy, Mapping, OriginKey};
use super::peer::PeerDelta;

/// What one peer cluster exported, as pulled from its leader.
#[derive(Debug, Clone)]
pub struct PeerExport {
    /// The peer's cluster name (the origin of everything in `snapshot`).
    pub cluster: String,
    /// Its exported services and instances.
    pub snapshot: Snapshot,
}

impl PeerExport {
    /// The planner's view of this export.
    pub fn view(&self) -> PeerView<'_> {
        PeerView::new(
            &self.cluster,
            self.snapshot.services.iter(),
            self.snapshot.instances.iter(),
        )
    }
}

/// A peer's export as [`plan`] reads it, borrowed (from a pulled [`PeerExport`] or a
/// followed stream's state), so a reconcile copies no export.
#[derive(Debug)]
pub struct PeerView<'a> {
    /// The peer's cluster name.
    pub cluster: &'a str,
    /// Its exported services by serviceId.
    pub services: HashMap<&'a str, &'a Service>,
    /// Its exported instances.
    pub instances: Vec<&'a Instance>,
}

impl<'a> PeerView<'a> {
    /// A view of `cluster`'s `services` and `instances`.
    pub fn new(
        cluster: &'a str,
        services: impl Iterator<Item = &'a Service>,
        instances: impl Iterator<Item = &'a Instance>,
    ) -> PeerView<'a> {
        PeerView {
            cluster,
            services: services.map(|s| (s.service_id.as_str(), s)).collect(),
            instances: instances.collect(),
        }
    }
}

/// One local registration to make: the local service and the marked local instance.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The origin this copy stands for.
    pub origin: OriginKey,
    /// The local service to register under; `service_id` is the deterministic id to propose.
    pub service: Service,
    /// The local instance, with its deterministic id and origin marker.
    pub instance: Instance,
}

/// A copy to keep alive, and how to register it again if the registry lost it.
#[derive(Debug, Clone)]
pub struct Keep {
    /// The origin the copy stands for.
    pub origin: OriginKey,
    /// The copy as the registry holds it; registered again as it is if the heartbeat says
    /// the registry lost it (it matches its origin, or it would be replaced, not kept).
    pub copy: LocalCopy,
}

/// The difference between desired and actual, as operations.
#[derive(Debug, Default)]
pub struct Plan {
    /// Copies that are missing.
    pub register: Vec<Registration>,
    /// Copies whose origin changed (endpoints or status): removed, then registered again,
    /// since re-registering an existing id at service-center only renews its lease.
    pub replace: Vec<(LocalCopy, Registration)>,
    /// Copies that are current: heartbeat them.
    pub heartbeat: Vec<Keep>,
    /// Copies whose origin is gone: remove them.
    pub unregister: Vec<LocalCopy>,
}

/// Settings [`plan`] needs about the local side.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// This cluster's name; its own instances are never imported.
    pub local_cluster: String,
    /// Heartbeat interval of imported copies, in seconds (the syncer's tick).
    pub heartbeat_interval_secs: u32,
    /// Missed heartbeats a copy tolerates; its lease is `interval x (times + 1)` seconds.
    pub heartbeat_times: u32,
}

/// Computes the plan.
///
/// * `peers`: the exports pulled successfully this round. A copy whose origin cluster is
///   among them but whose origin instance is not is unregistered at once.
/// * `retained`: clusters not pulled this round whose copies are kept (heartbeated) anyway:
///   their pull failed, or they vanished less than the grace period ago (decision 6).
///   Copies of any other cluster are unregistered.
/// * `actual`: the mapping rebuilt from the local registry, and the duplicate copies found
///   while rebuilding it (always unregistered).
pub fn plan(
    config: &PlanConfig,
    peers: &[PeerView<'_>],
    retained: &HashSet<String>,
    actual: (Mapping, Vec<LocalCopy>),
) -> Plan {
    let (mut mapping, duplicates) = actual;
    let mut out = Plan {
        unregister: duplicates,
        ..Plan::default()
    };
    let mut pulled: HashSet<&str> = HashSet::new();
    for peer in peers {
        if peer.cluster == config.local_cluster {
            continue;
        }
        pulled.insert(peer.cluster);
        let services = &peer.services;
        for &instance in &peer.instances {
            // The peer's exporter already skips copies; checking again keeps a misbehaving
            // peer from making us import our own copies back.
            if OriginKey::of_imported(instance).is_some() {
                continue;
            }
            let Some(origin_service) = services.get(instance.service_id.as_str()) else {
                debug!(cluster = %peer.cluster, instance = %instance.instance_id, "exported instance without its service, skipped");
                continue;
            };
            let origin = OriginKey {
                cluster: peer.cluster.to_owned(),
                service_id: instance.service_id.clone(),
                instance_id: instance.instance_id.clone(),
            };
            let registration = registration(config, origin, origin_service, instance);
            match mapping.copies.remove(&registration.origin) {
                None => out.register.push(registration),
                Some(copy) if differs(&copy.instance, &registration.instance) => {
                    out.replace.push((copy, registration))
                }
                Some(copy) => out.heartbeat.push(Keep {
                    origin: registration.origin,
                    copy,
                }),
            }
        }
    }
    for (origin, copy) in mapping.copies {
        if origin.cluster == config.local_cluster {
            // Marked with our own name: written by an earlier configuration; not ours to judge.
            continue;
        }
        if !pulled.contains(origin.cluster.as_str()) && retained.contains(&origin.cluster) {
            out.heartbeat.push(Keep { origin, copy });
        } else {
            out.unregister.push(copy);
        }
    }
    out
}

/// Plans one change of one peer's export against the importer's cached mapping (`copies`):
/// registers what is new, replaces what changed, unregisters what was removed. Copies that
/// are current are left alone (the periodic reconcile heartbeats them).
pub fn plan_changes(
    config: &PlanConfig,
    cluster: &str,
    services: &HashMap<String, Service>,
    delta: &PeerDelta,
    copies: &HashMap<OriginKey, LocalCopy>,
) -> Plan {
    let mut out = Plan::default();
    if cluster == config.local_cluster {
        return out;
    }
    for instance in &delta.upserted {
        if OriginKey::of_imported(instance).is_some() {
            continue;
        }
        let Some(origin_service) = services.get(&instance.service_id) else {
            debug!(cluster = %cluster, instance = %instance.instance_id, "changed instance without its service, skipped");
            continue;
        };
        let origin = OriginKey {
            cluster: cluster.to_owned(),
            service_id: instance.service_id.clone(),
            instance_id: instance.instance_id.clone(),
        };
        let registration = registration(config, origin, origin_service, instance);
        match copies.get(&registration.origin) {
            None => out.register.push(registration),
            Some(copy) if differs(&copy.instance, &registration.instance) => {
                out.replace.push((copy.clone(), registration))
            }
            Some(_) => {}
        }
    }
    for (service_id, instance_id) in &delta.removed {
        let origin = OriginKey {
            cluster: cluster.to_owned(),
            service_id: service_id.clone(),
            instance_id: instance_id.clone(),
        };
        if let Some(copy) = copies.get(&origin) {
            out.unregister.push(copy.clone());
        }
    }
    out
}

/// The local registration standing for `instance` of `origin_service` at its origin.
fn registration(
    config: &PlanConfig,
    origin: OriginKey,
    origin_service: &Service,
    instance: &Instance,
) -> Registration {
    let mut service = Service {
        domain_project: origin_service.domain_project.clone(),
        service_id: String::new(),
        app_id: origin_service.app_id.clone(),
        service_name: origin_service.service_name.clone(),
        version: origin_service.version.clone(),
        environment: origin_service.environment.clone(),
        properties: origin_service.properties.clone(),
    };
    service.service_id = local_service_id(&service);
    let mut local = Instance {
        instance_id: local_instance_id(&origin),
        service_id: service.service_id.clone(),
        host_name: instance.host_name.clone(),
        endpoints: instance.endpoints.clone(),
        status: instance.status,
        health_check: Some(HealthCheck {
            interval_secs: config.heartbeat_interval_secs,
            times: config.heartbeat_times,
            url: instance
                .health_check
                .as_ref()
                .map(|h| h.url.clone())
                .unwrap_or_default(),
        }),
        properties: instance.properties.clone(),
    };
    origin.mark(&mut local);
    Registration {
        origin,
        service,
        instance: local,
    }
}

/// Whether a copy no longer matches its origin in what consumers use: endpoints and status.
fn differs(copy: &Instance, desired: &Instance) -> bool {
    copy.status != desired.status
        || copy.endpoints.iter().collect::<BTreeSet<_>>()
            != desired.endpoints.iter().collect::<BTreeSet<_>>()
}

/// What [`apply`] did.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// Copies registered (new, replaced, or re-registered after a lost heartbeat).
    pub registered: usize,
    /// Copies heartbeated.
    pub heartbeated: usize,
    /// Copies removed.
    pub unregistered: usize,
    /// Operations that failed; they are retried by the next reconcile.
    pub failed: usize,
    /// Every copy the plan touched that exists after it (registered, heartbeated, or left in
    /// place by a failed call), with the local ids the registry gave: the importer's cache
    /// of the mapping is updated from this, without listing the registry again.
    pub copies: Vec<(OriginKey, LocalCopy)>,
    /// Origins whose copy was removed (before any re-registration listed in `copies`).
    pub removed: Vec<OriginKey>,
}

enum Outcome {
    Registered(OriginKey, LocalCopy),
    Heartbeated(OriginKey, LocalCopy),
    Unregistered(Option<OriginKey>),
    /// Failed; the copy, if one is known to remain.
    Failed(Option<(OriginKey, LocalCopy)>),
}

impl Applied {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Registered(origin, copy) => {
                self.registered += 1;
                self.copies.push((origin, copy));
            }
            Outcome::Heartbeated(origin, copy) => {
                self.heartbeated += 1;
                self.copies.push((origin, copy));
            }
            Outcome::Unregistered(origin) => {
                self.unregistered += 1;
                self.removed.extend(origin);
            }
            Outcome::Failed(remaining) => {
                self.failed += 1;
                self.copies.extend(remaining);
            }
        }
    }
}

/// Carries out `plan` through `plugin`, at most `concurrency` calls at a time. Failures are
/// logged and counted, never fatal: the next reconcile computes them again.
pub async fn apply(plugin: &dyn Plugin, plan: Plan, concurrency: usize) -> Applied {
    let concurrency = concurrency.max(1);
    let mut applied = Applied::default();

    let unregisters = stream::iter(plan.unregister)
        .map(|copy| async move { unregister(plugin, copy).await })
        .buffer_unordered(concurrency);
    for outcome in unregisters.collect::<Vec<_>>().await {
        applied.count(outcome);
    }

    // In batches where the registry takes them, cut as they are sent; a refused batch goes
    // one by one.
    let mut keeps = plan.heartbeat.into_iter();
    let chunks = std::iter::from_fn(|| {
        let chunk: Vec<Keep> = keeps.by_ref().take(HEARTBEAT_BATCH).collect();
        (!chunk.is_empty()).then_some(chunk)
    });
    let mut batched = stream::iter(chunks)
        .map(|chunk| async move { heartbeat_batch(plugin, chunk).await })
        .buffer_unordered(BATCHES_IN_FLIGHT);
    let mut one_by_one = Vec::new();
    let mut lost = Vec::new();
    while let Some((outcomes, gone, left)) = batched.next().await {
        for outcome in outcomes {
            applied.count(outcome);
        }
        lost.extend(gone);
        one_by_one.extend(left);
    }
    drop(batched);
    let singles = one_by_one
        .into_iter()
        .map(|keep| (keep, false))
        .chain(lost.into_iter().map(|keep| (keep, true)));
    let heartbeats = stream::iter(singles)
        .map(|(keep, lost)| async move {
            if lost {
                return register_lost(plugin, keep).await;
            }
            let local = &keep.copy;
            match plugin
                .heartbeat(&local.service, &local.instance.instance_id)
                .await
            {
                Ok(()) => Outcome::Heartbeated(keep.origin, keep.copy),
                Err(PluginError::NotFound(_)) => register_lost(plugin, keep).await,
                Err(e) => {
                    warn!(instance = %local.instance.instance_id, error = %e, "heartbeat failed");
                    Outcome::Failed(Some((keep.origin, keep.copy)))
                }
            }
        })
        .buffer_unordered(concurrency);
    for outcome in heartbeats.collect::<Vec<_>>().await {
        applied.count(outcome);
    }

    // Resolve each distinct service once, then register its instances.
    let mut registrations = plan.register;
    let replaced = stream::iter(plan.replace)
        .map(|(copy, registration)| async move {
            match unregister(plugin, copy).await {
                Outcome::Unregistered(origin) => {
                    (Outcome::Unregistered(origin), Some(registration))
                }
                failed => (failed, None),
            }
        })
        .buffer_unordered(concurrency);
    for (outcome, registration) in replaced.collect::<Vec<_>>().await {
        applied.count(outcome);
        registrations.extend(registration);
    }
    let mut seen = HashSet::new();
    let distinct: Vec<Service> = registrations
        .iter()
        .filter(|r| seen.insert(r.service.service_id.clone()))
        .map(|r| r.service.clone())
        .collect();
    // In batches where the registry takes them; what a batch leaves over goes one by one.
    let mut batched_ids: Vec<(String, String)> = Vec::new();
    let mut left: Vec<Service> = Vec::new();
    for chunk in distinct.chunks(REGISTER_BATCH) {
        let refs: Vec<&Service> = chunk.iter().collect();
        match plugin.ensure_services(&refs).await {
            Ok(Some(results)) if results.len() == chunk.len() => {
                for (service, result) in chunk.iter().zip(results) {
                    match result {
                        Ok(id) => batched_ids.push((service.service_id.clone(), id)),
                        Err(e) => {
                            debug!(service = %service.service_name, error = %e, "batch item refused; ensuring it alone");
                            left.push(service.clone());
                        }
                    }
                }
            }
            Ok(_) => left.extend(chunk.iter().cloned()),
            Err(e) => {
                debug!(error = %e, services = chunk.len(), "batch service creation failed; one by one");
                left.extend(chunk.iter().cloned());
            }
        }
    }
    let resolved = stream::iter(left)
        .map(|service| async move {
            match plugin.ensure_service(&service).await {
                Ok(id) => Some((service.service_id, id)),
                Err(e) => {
                    warn!(service = %service.service_name, error = %e, "ensure service failed");
                    None
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let service_ids: HashMap<String, String> =
        resolved.into_iter().flatten().chain(batched_ids).collect();
    if !service_ids.is_empty() {
        debug!(services = service_ids.len(), "services resolved");
    }
    let service_ids = &service_ids;
    // In batches where the registry takes them; what a batch leaves over goes one by one.
    // Batches are cut as they are sent (a few in flight), not all at once: at 100,000
    // registrations a second copy of the list would be tens of MB.
    let mut one_by_one: Vec<Registration> = registrations
        .extract_if(.., |r| !service_ids.contains_key(&r.service.service_id))
        .collect();
    let mut pending = registrations.into_iter();
    let chunks = std::iter::from_fn(|| {
        let chunk: Vec<Registration> = pending
            .by_ref()
            .take(REGISTER_BATCH)
            .map(|mut r| {
                if let Some(id) = service_ids.get(&r.service.service_id) {
                    r.service.service_id = id.clone();
                    r.instance.service_id = id.clone();
                }
                r
            })
            .collect();
        (!chunk.is_empty()).then_some(chunk)
    });
    let mut batched = stream::iter(chunks)
        .map(|chunk| async move { register_batch(plugin, chunk).await })
        .buffer_unordered(BATCHES_IN_FLIGHT);
    while let Some((outcomes, left)) = batched.next().await {
        for outcome in outcomes {
            applied.count(outcome);
        }
        one_by_one.extend(left);
    }
    drop(batched);
    let registers = stream::iter(one_by_one)
        .map(|r| async move { register(plugin, r, service_ids).await })
        .buffer_unordered(concurrency);
    for outcome in registers.collect::<Vec<_>>().await {
        applied.count(outcome);
    }
    applied
}

/// Heartbeats per [`Plugin::heartbeat_batch`] call.
pub const HEARTBEAT_BATCH: usize = 1000;

/// Registers again a kept copy the registry lost (its heartbeat said not found).
async fn register_lost(plugin: &dyn Plugin, keep: Keep) -> Outcome {
    debug!(instance = %keep.copy.instance.instance_id, "copy lost at the registry, registering again");
    let again = Registration {
        origin: keep.origin,
        service: keep.copy.service,
        instance: keep.copy.instance,
    };
    register(plugin, again, &Default::default()).await
}

/// Heartbeats `chunk` with one [`Plugin::heartbeat_batch`]; returns the outcomes, the
/// copies the registry lost (register them again) and those left to heartbeat one by one
/// (all of them when the registry has no batch heartbeat or the call failed).
async fn heartbeat_batch(
    plugin: &dyn Plugin,
    chunk: Vec<Keep>,
) -> (Vec<Outcome>, Vec<Keep>, Vec<Keep>) {
    let items: Vec<(&Service, &str)> = chunk
        .iter()
        .map(|k| (&k.copy.service, k.copy.instance.instance_id.as_str()))
        .collect();
    let results = match plugin.heartbeat_batch(&items).await {
        Ok(Some(results)) if results.len() == chunk.len() => results,
        Ok(_) => return (Vec::new(), Vec::new(), chunk),
        Err(e) => {
            debug!(error = %e, heartbeats = chunk.len(), "batch heartbeat failed; heartbeating one by one");
            return (Vec::new(), Vec::new(), chunk);
        }
    };
    drop(items);
    let (mut outcomes, mut lost, mut left) =
        (Vec::with_capacity(chunk.len()), Vec::new(), Vec::new());
    for (keep, result) in chunk.into_iter().zip(results) {
        match result {
            Ok(()) => outcomes.push(Outcome::Heartbeated(keep.origin, keep.copy)),
            Err(PluginError::NotFound(_)) => lost.push(keep),
            Err(_) => left.push(keep),
        }
    }
    (outcomes, lost, left)
}

/// Registrations per [`Plugin::register_batch`] call.
pub const REGISTER_BATCH: usize = 500;

/// Batch registrations in flight at once.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// Registers `chunk` (service ids resolved) with one [`Plugin::register_batch`]; returns
/// the outcomes and what is left to register one by one (all of it when the registry has
/// no batch registration or the call failed; the items it refused).
async fn register_batch(
    plugin: &dyn Plugin,
    chunk: Vec<Registration>,
) -> (Vec<Outcome>, Vec<Registration>) {
    let items: Vec<(&Service, &Instance)> =
        chunk.iter().map(|r| (&r.service, &r.instance)).collect();
    let results = match plugin.register_batch(&items).await {
        Ok(Some(results)) if results.len() == chunk.len() => results,
        Ok(_) => return (Vec::new(), chunk),
        Err(e) => {
            debug!(error = %e, registrations = chunk.len(), "batch registration failed; registering one by one");
            return (Vec::new(), chunk);
        }
    };
    drop(items);
    let mut outcomes = Vec::with_capacity(chunk.len());
    let mut left = Vec::new();
    for (mut r, result) in chunk.into_iter().zip(results) {
        match result {
            Ok(id) => {
                r.instance.instance_id = id;
                outcomes.push(Outcome::Registered(
                    r.origin,
                    LocalCopy {
                        service: r.service,
                        instance: r.instance,
                    },
                ));
            }
            Err(e) => {
                debug!(instance = %r.instance.instance_id, error = %e, "batch item refused; registering it alone");
                left.push(r);
            }
        }
    }
    (outcomes, left)
}

/// Registers one copy. `service_ids` maps proposed service ids to ids already resolved this
/// round; a service not in it is ensured first.
async fn register(
    plugin: &dyn Plugin,
    mut r: Registration,
    service_ids: &HashMap<String, String>,
) -> Outcome {
    let resolved = match service_ids.get(&r.service.service_id) {
        Some(id) => Ok(id.clone()),
        None => plugin.ensure_service(&r.service).await,
    };
    let service_id = match resolved {
        Ok(id) => id,
        Err(e) => {
            warn!(service = %r.service.service_name, error = %e, "ensure service failed");
            return Outcome::Failed(None);
        }
    };
    r.service.service_id = service_id.clone();
    r.instance.service_id = service_id;
    match plugin.register(&r.service, &r.instance).await {
        Ok(id) => {
            debug!(service = %r.service.service_name, instance = %id, origin_cluster = %r.origin.cluster, origin_instance = %r.origin.instance_id, "imported instance registered");
            r.instance.instance_id = id;
            Outcome::Registered(
                r.origin,
                LocalCopy {
                    service: r.service,
                    instance: r.instance,
                },
            )
        }
        Err(e) => {
            warn!(service = %r.service.service_name, origin_cluster = %r.origin.cluster, origin_instance = %r.origin.instance_id, error = %e, "register failed");
            Outcome::Failed(None)
        }
    }
}

async fn unregister(plugin: &dyn Plugin, copy: LocalCopy) -> Outcome {
    let origin = OriginKey::of_imported(&copy.instance);
    match plugin
        .unregister(&copy.service, &copy.instance.instance_id)
        .await
    {
        Ok(()) => {
            debug!(service = %copy.service.service_name, instance = %copy.instance.instance_id, "imported instance unregistered");
            Outcome::Unregistered(origin)
        }
        Err(e) => {
            warn!(instance = %copy.instance.instance_id, error = %e, "unregister failed");
            Outcome::Failed(origin.map(|o| (o, copy)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::InstanceStatus;

    fn config() -> PlanConfig {
        PlanConfig {
            local_cluster: "sc-site".into(),
            heartbeat_interval_secs: 5,
            heartbeat_times: 3,
        }
    }

    fn views(peers: &[PeerExport]) -> Vec<PeerView<'_>> {
        peers.iter().map(PeerExport::view).collect()
    }

    fn peer(cluster: &str, instances: &[(&str, &str)]) -> PeerExport {
        PeerExport {
            cluster: cluster.into(),
            snapshot: Snapshot {
                services: vec![Service {
                    domain_project: "default/default".into(),
                    service_id: "account-server".into(),
                    app_id: "eureka".into(),
                    service_name: "account-server".into(),
                    version: "0.0.1".into(),
                    ..Default::default()
                }],
                instances: instances
                    .iter()
                    .map(|(id, ep)| Instance {
                        instance_id: (*id).into(),
                        service_id: "account-server".into(),
                        host_name: "h".into(),
                        endpoints: vec![(*ep).into()],
                        ..Default::default()
                    })
                    .collect(),
            },
        }
    }

    /// The local registry after applying `registrations` faithfully.
    fn local_after(registrations: &[Registration]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for r in registrations {
            if !snapshot
                .services
                .iter()
                .any(|s| s.service_id == r.service.service_id)
            {
                snapshot.services.push(r.service.clone());
            }
            snapshot.instances.push(r.instance.clone());
        }
        snapshot
    }

    #[test]
    fn new_instances_are_registered_with_marker_and_deterministic_ids() {
        let peers = [peer("eureka-site", &[("a:1", "http://127.0.0.1:1")])];
        let p = plan(
            &config(),
            &views(&peers),
            &HashSet::new(),
            Mapping::from_snapshot(&Snapshot::default()),
        );
        assert_eq!(p.register.len(), 1);
        let r = &p.register[0];
        assert_eq!(r.instance.origin_cluster(), Some("eureka-site"));
        assert_eq!(r.instance.instance_id, local_instance_id(&r.origin));
        assert_eq!(
            r.service.service_id,
            "80784229255ec96d90353e3c041bdf3586fdbbae"
        );
        assert_eq!(
            r.instance.health_check.as_ref().map(|h| h.interval_secs),
            Some(5)
        );
    }

    #[test]
    fn a_second_round_only_heartbeats_and_a_vanished_origin_is_unregistered() {
        let peers = [peer(
            "eureka-site",
            &[("a:1", "http://127.0.0.1:1"), ("a:2", "http://127.0.0.1:2")],
        )];
        let first = plan(
            &config(),
            &views(&peers),
            &HashSet::new(),
            Mapping::from_snapshot(&Snapshot::default()),
        );
        let local = local_after(&first.register);

        let second = plan(
            &config(),
            &views(&peers),
            &HashSet::new(),
            Mapping::from_snapshot(&local),
        );
        assert!(second.register.is_empty() && second.unregister.is_empty());
        assert_eq!(second.heartbeat.len(), 2);

        let shrunk = [peer("eureka-site", &[("a:1", "http://127.0.0.1:1")])];
        let third = plan(
            &config(),
            &views(&shrunk),
            &HashSet::new(),
            Mapping::from_snapshot(&local),
        );
        assert_eq!(third.heartbeat.len(), 1);
        assert_eq!(third.unregister.len(), 1);
        assert_eq!(
            third.unregister[0].instance.properties[syncer_plugin_api::ORIGIN_INSTANCE_ID],
            "a:2"
        );
    }

    #[test]
    fn changed_endpoints_or_status_replace_the_copy() {
        let peers = [peer("eureka-site", &[("a:1", "http://127.0.0.1:1")])];
        let first = plan(
            &config(),
            &views(&peers),
            &HashSet::new(),
            Mapping::from_snapshot(&Snapshot::default()),
        );
        let local = local_after(&first.register);
        let mut moved = peer("eureka-site", &[("a:1", "http://127.0.0.1:9")]);
        moved.snapshot.instances[0].status = InstanceStatus::Down;
        let p = plan(
            &config(),
            &views(&[moved]),
            &HashSet::new(),
            Mapping::from_snapshot(&local),
        );
        assert_eq!(p.replace.len(), 1);
        assert_eq!(p.replace[0].1.instance.status, InstanceStatus::Down);
    }

    #[test]
    fn copies_of_an_unpulled_cluster_are_kept_only_while_retained() {
        let peers = [peer("eureka-site", &[("a:1", "http://127.0.0.1:1")])];
        let first = plan(
            &config(),
            &views(&peers),
            &HashSet::new(),
            Mapping::from_snapshot(&Snapshot::default()),
        );
        let local = local_after(&first.register);
        let retained: HashSet<String> = ["eureka-site".to_string()].into();
        let kept = plan(&config(), &[], &retained, Mapping::from_snapshot(&local));
        assert_eq!(kept.heartbeat.len(), 1);
        assert!(kept.unregister.is_empty());
        let dropped = plan(
            &config(),
            &[],
            &HashSet::new(),
            Mapping::from_snapshot(&local),
        );
        assert_eq!(dropped.unregister.len(), 1);
    }

    #[test]
    fn own_cluster_and_already_imported_instances_are_never_imported() {
        let mut own = peer("sc-site", &[("x", "http://127.0.0.1:1")]);
        own.cluster = "sc-site".into();
        let mut relayed = peer("eureka-site", &[("copy", "http://127.0.0.1:1")]);
        OriginKey {
            cluster: "sc-site".into(),
            service_id: "s".into(),
            instance_id: "i".into(),
        }
        .mark(&mut relayed.snapshot.instances[0]);
        let p = plan(
            &config(),
            &views(&[own, relayed]),
            &HashSet::new(),
            Mapping::from_snapshot(&Snapshot::default()),
        );
        assert!(p.register.is_empty());
    }
}
