//! Conversions between the wire types of `proto/syncer.proto` and the plugin API's model.
//!
//! Incoming data is validated here ([`snapshot_from_wire`]): an instance must name a service
//! present in the same message and carry non-empty ids; anything else is rejected whole,
//! so a misbehaving peer cannot put half-formed records into the local registry.

use std::collections::HashSet;

use syncer_plugin_api::{HealthCheck, Instance, InstanceStatus, Service, Snapshot};

use super::proto::{self, sync_instance, sync_service};
use crate::records::packed::{PackedInstance, PackedService};
use crate::records::{ExportChange, PeerEvent};

/// Why a peer's data was refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidData {
    /// A service without an id.
    #[error("service {index} has an empty serviceId")]
    ServiceWithoutId {
        /// Position in `services`.
        index: usize,
    },
    /// An instance without an id.
    #[error("instance {index} has an empty instanceId")]
    InstanceWithoutId {
        /// Position in `Instances`.
        index: usize,
    },
    /// An instance whose service is not in the message.
    #[error("instance {instance_id} names serviceId {service_id}, which is not in the data")]
    UnknownService {
        /// The instance.
        instance_id: String,
        /// The service it names.
        service_id: String,
    },
}

/// The wire form of an export of cluster `cluster`.
pub fn snapshot_to_wire(cluster: &str, plugin_name: &str, snapshot: &Snapshot) -> proto::SyncData {
    to_wire(
        cluster,
        plugin_name,
        snapshot.services.iter().cloned(),
        snapshot.instances.iter().cloned(),
    )
}

/// [`snapshot_to_wire`] of services and instances taken one at a time (unpacked from the
/// export feed as they are converted), their fields moved, not copied: a whole export is
/// held once, on the wire side.
pub fn to_wire(
    cluster: &str,
    plugin_name: &str,
    services: impl IntoIterator<Item = Service>,
    instances: impl IntoIterator<Item = Instance>,
) -> proto::SyncData {
    proto::SyncData {
        cluster: cluster.to_owned(),
        services: services
            .into_iter()
            .map(|s| proto::SyncService {
                service_id: s.service_id,
                app: s.app_id,
                name: s.service_name,
                version: s.version,
                status: sync_service::Status::Up as i32,
                domain_project: s.domain_project,
                environment: s.environment,
                plugin_name: plugin_name.to_owned(),
                expansion: Vec::new(),
                properties: s.properties.into_iter().collect(),
            })
            .collect(),
        instances: instances
            .into_iter()
            .map(|i| proto::SyncInstance {
                instance_id: i.instance_id,
                service_id: i.service_id,
                endpoints: i.endpoints,
                host_name: i.host_name,
                status: status_to_wire(i.status) as i32,
                health_check: i.health_check.map(|h| proto::HealthCheck {
                    mode: proto::health_check::Modes::Push as i32,
                    port: 0,
                    interval: i32::try_from(h.interval_secs).unwrap_or(i32::MAX),
                    times: i32::try_from(h.times).unwrap_or(i32::MAX),
                    url: h.url,
                }),
                version: String::new(),
                plugin_name: plugin_name.to_owned(),
                expansion: Vec::new(),
                properties: i.properties.into_iter().collect(),
            })
            .collect(),
    }
}

/// Validates and converts a peer's `SyncData`.
///
/// # Errors
/// [`InvalidData`] naming the first offending record.
pub fn snapshot_from_wire(data: proto::SyncData) -> Result<Snapshot, InvalidData> {
    let mut ids = HashSet::new();
    let mut services = Vec::with_capacity(data.services.len());
    for (index, s) in data.services.into_iter().enumerate() {
        if s.service_id.is_empty() {
            return Err(InvalidData::ServiceWithoutId { index });
        }
        ids.insert(s.service_id.clone());
        services.push(Service {
            domain_project: if s.domain_project.is_empty() {
                syncer_plugin_api::DEFAULT_DOMAIN_PROJECT.to_owned()
            } else {
                s.domain_project
            },
            service_id: s.service_id,
            app_id: s.app,
            service_name: s.name,
            version: s.version,
            environment: s.environment,
            properties: s.properties.into_iter().collect(),
        });
    }
    let mut instances = Vec::with_capacity(data.instances.len());
    for (index, i) in data.instances.into_iter().enumerate() {
        if i.instance_id.is_empty() {
            return Err(InvalidData::InstanceWithoutId { index });
        }
        if !ids.contains(&i.service_id) {
            return Err(InvalidData::UnknownService {
                instance_id: i.instance_id,
                service_id: i.service_id,
            });
        }
        let status = status_from_wire(i.status());
        instances.push(Instance {
            instance_id: i.instance_id,
            service_id: i.service_id,
            host_name: i.host_name,
            endpoints: i.endpoints,
            status,
            health_check: i.health_check.map(|h| HealthCheck {
                interval_secs: u32::try_from(h.interval).unwrap_or(0),
                times: u32::try_from(h.times).unwrap_or(0),
                url: h.url,
            }),
            properties: i.properties.into_iter().collect(),
        });
    }
    Ok(Snapshot {
        services,
        instances,
    })
}

/// The wire form of (a part of) the whole export at `revision`; `more`: other parts follow.
pub fn full_event(
    cluster: &str,
    epoch: u64,
    revision: u64,
    data: proto::SyncData,
    more: bool,
) -> proto::ExportEvent {
    proto::ExportEvent {
        cluster: cluster.to_owned(),
        epoch,
        revision,
        full: true,
        data: Some(data),
        removed: Vec::new(),
        more,
        changed_at_ms: 0,
    }
}

/// Records per part of a whole export sent on a watch stream: a part is a few hundred KB on the wire
/// whatever the export's size.
pub const FULL_PART: usize = 1_000;

/// The whole export at `revision` as watch events of at most [`FULL_PART`] records each
/// (services first, so every instance's service comes in its part or an earlier one),
/// converted one part at a time as the returned iterator is read.
pub fn full_events<'a>(
    cluster: &'a str,
    plugin_name: &'a str,
    epoch: u64,
    revision: u64,
    services: Vec<PackedService>,
    instances: Vec<PackedInstance>,
) -> impl Iterator<Item = proto::ExportEvent> + Send + 'a {
    let parts = (services.len() + instances.len())
        .div_ceil(FULL_PART)
        .max(1);
    let mut services = services.into_iter();
    let mut instances = instances.into_iter();
    (0..parts).map(move |n| {
        let part_services: Vec<Service> = services
            .by_ref()
            .take(FULL_PART)
            .map(|s| s.unpack())
            .collect();
        let part_instances = instances
            .by_ref()
            .take(FULL_PART - part_services.len())
            .map(|i| i.unpack());
        let data = to_wire(cluster, plugin_name, part_services, part_instances);
        full_event(cluster, epoch, revision, data, n + 1 < parts)
    })
}

/// The wire form of one change of the export.
pub fn change_event(
    cluster: &str,
    plugin_name: &str,
    epoch: u64,
    change: &ExportChange,
) -> proto::ExportEvent {
    proto::ExportEvent {
        cluster: cluster.to_owned(),
        epoch,
        revision: change.revision,
        full: false,
        data: Some(to_wire(
            cluster,
            plugin_name,
            change.services.iter().map(PackedService::unpack),
            change.instances.iter().map(PackedInstance::unpack),
        )),
        removed: change
            .removed
            .iter()
            .map(|(service_id, instance_id)| proto::InstanceRef {
                service_id: service_id.clone(),
                instance_id: instance_id.clone(),
            })
            .collect(),
        more: false,
        changed_at_ms: change.changed_at_ms,
    }
}

/// Validates and converts one event of a peer's export stream.
///
/// # Errors
/// [`InvalidData`] naming the first offending record.
pub fn event_from_wire(event: proto::ExportEvent) -> Result<PeerEvent, InvalidData> {
    let mut data = event.data.unwrap_or_default();
    // A change, or a part of a whole export, may carry instances of services sent in
    // earlier events: validate ids only (a whole export's instances without a service are
    // dropped when its last part arrives).
    let sent: HashSet<String> = data.services.iter().map(|s| s.service_id.clone()).collect();
    let missing: HashSet<String> = data
        .instances
        .iter()
        .filter(|i| !sent.contains(&i.service_id))
        .map(|i| i.service_id.clone())
        .collect();
    data.services
        .extend(missing.into_iter().map(|service_id| proto::SyncService {
            service_id,
            ..Default::default()
        }));
    let mut upserted = snapshot_from_wire(data)?;
    upserted.services.retain(|s| sent.contains(&s.service_id));
    if event.full {
        return Ok(PeerEvent::Full {
            epoch: event.epoch,
            revision: event.revision,
            snapshot: upserted,
            more: event.more,
        });
    }
    Ok(PeerEvent::Change {
        epoch: event.epoch,
        revision: event.revision,
        changed_at_ms: event.changed_at_ms,
        upserted,
        removed: event
            .removed
            .into_iter()
            .map(|r| (r.service_id, r.instance_id))
            .collect(),
    })
}

fn status_to_wire(status: InstanceStatus) -> sync_instance::Status {
    match status {
        InstanceStatus::Up => sync_instance::Status::Up,
        InstanceStatus::Down => sync_instance::Status::Down,
        InstanceStatus::Starting => sync_instance::Status::Starting,
        InstanceStatus::OutOfService => sync_instance::Status::Outofservice,
        InstanceStatus::Testing => sync_instance::Status::Testing,
        InstanceStatus::Unknown => sync_instance::Status::Unknown,
    }
}

fn status_from_wire(status: sync_instance::Status) -> InstanceStatus {
    match status {
        sync_instance::Status::Up => InstanceStatus::Up,
        sync_instance::Status::Down => InstanceStatus::Down,
        sync_instance::Status::Starting => InstanceStatus::Starting,
        sync_instance::Status::Outofservice => InstanceStatus::OutOfService,
        sync_instance::Status::Testing => InstanceStatus::Testing,
        sync_instance::Status::Unknown => InstanceStatus::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            services: vec![Service {
                domain_project: "default/default".into(),
                service_id: "s1".into(),
                app_id: "eureka".into(),
                service_name: "hello-server".into(),
                version: "0.0.1".into(),
                environment: String::new(),
                properties: [("k".to_string(), "v".to_string())].into(),
            }],
            instances: vec![Instance {
                instance_id: "i1".into(),
                service_id: "s1".into(),
                host_name: "host".into(),
                endpoints: vec!["http://127.0.0.1:8091".into()],
                status: InstanceStatus::OutOfService,
                health_check: Some(HealthCheck {
                    interval_secs: 30,
                    times: 3,
                    url: String::new(),
                }),
                properties: [("a".to_string(), "b".to_string())].into(),
            }],
        }
    }

    #[test]
    fn a_whole_export_goes_in_parts_and_is_reassembled() {
        use crate::sync::peer::PeerExportState;
        let services: Vec<Service> = (0..3)
            .map(|n| Service {
                service_id: format!("s{n}"),
                service_name: format!("svc{n}"),
                ..Default::default()
            })
            .collect();
        let instances: Vec<Instance> = (0..2500)
            .map(|n| Instance {
                instance_id: format!("i{n}"),
                service_id: format!("s{}", n % 3),
                endpoints: vec![format!("http://10.0.0.1:{n}")],
                ..Default::default()
            })
            .collect();
        let events: Vec<proto::ExportEvent> = full_events(
            "east",
            "servicecenter",
            5,
            9,
            services.iter().map(PackedService::new).collect(),
            instances.iter().map(PackedInstance::new).collect(),
        )
        .collect();
        assert_eq!(events.len(), 2503usize.div_ceil(FULL_PART));
        assert!(events
            .iter()
            .all(|e| e.full && e.epoch == 5 && e.revision == 9));
        let more: Vec<bool> = events.iter().map(|e| e.more).collect();
        assert_eq!(more, vec![true, true, false]);
        let mut state = PeerExportState::default();
        let mut upserted = 0;
        for event in events {
            let event = event_from_wire(event).expect("valid part");
            upserted += state.apply(event).expect("in step").upserted.len();
        }
        assert_eq!(upserted, 2500);
        assert_eq!((state.epoch, state.revision, state.len()), (5, 9, 2500));
        let mut back = state.snapshot();
        back.instances
            .sort_by_key(|i| i.instance_id[1..].parse::<u32>().unwrap_or(0));
        assert_eq!(back.instances, instances);
        assert_eq!(back.services.len(), 3);
    }

    #[test]
    fn a_snapshot_survives_the_wire() {
        let wire = snapshot_to_wire("sc-site", "servicecenter", &sample());
        assert_eq!(wire.cluster, "sc-site");
        let back = snapshot_from_wire(wire).expect("valid");
        assert_eq!(back, sample());
    }

    #[test]
    fn an_instance_of_a_missing_service_is_refused() {
        let mut wire = snapshot_to_wire("c", "servicecenter", &sample());
        wire.services.clear();
        let err = snapshot_from_wire(wire).expect_err("must be refused");
        assert!(matches!(err, InvalidData::UnknownService { .. }), "{err}");
    }

    #[test]
    fn empty_ids_are_refused() {
        let mut wire = snapshot_to_wire("c", "servicecenter", &sample());
        wire.instances[0].instance_id.clear();
        assert!(matches!(
            snapshot_from_wire(wire),
            Err(InvalidData::InstanceWithoutId { index: 0 })
        ));
    }
}
