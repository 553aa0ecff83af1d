//! The reconcile loop's answers to the status API ([`crate::observe::status::Query`]):
//! per service and per instance of the peers, from the exports and copies it holds. Only
//! the leader holds them; another member answers with nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::importer::service_name;
use super::mapping::{local_instance_id, LocalCopy, Origin, OriginKey};
use super::peer::PeerExportState;
use crate::observe::events::EventLog;
use crate::observe::status::{InstanceView, InstancesReport, ServiceStatus, ServicesReport};
use crate::records::packed::ServiceKey;

/// Per service of every peer: instances exported against copies present, and the last
/// write and error from `events`. Sorted by origin cluster and service; at most `limit`.
pub fn services(
    exports: &HashMap<String, PeerExportState>,
    copies: Option<&HashMap<OriginKey, LocalCopy>>,
    events: &EventLog,
    limit: usize,
) -> ServicesReport {
    // (cluster, service key) → (expected, present)
    let mut counts: HashMap<(&str, ServiceKey), (usize, usize)> = HashMap::new();
    // Copies whose origin instance is no longer exported, by (cluster, local service name).
    let mut extra: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (cluster, state) in exports.iter().filter(|(_, s)| s.is_known()) {
        for (_, instance) in state.instances() {
            counts.entry((cluster, instance.service)).or_default().0 += 1;
        }
    }
    if let Some(copies) = copies {
        for (origin, copy) in copies {
            let exported = exports
                .get_key_value(&*origin.cluster)
                .and_then(|(c, s)| s.instance(&origin.instance).map(|i| (c, i)));
            match exported {
                Some((cluster, instance)) => {
                    counts
                        .entry((cluster.as_str(), instance.service))
                        .or_default()
                        .1 += 1;
                }
                None => {
                    *extra
                        .entry((
                            origin.cluster.to_string(),
                            service_name(&copy.service.unpack()),
                        ))
                        .or_default() += 1;
                }
            }
        }
    }
    let mut rows: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for ((cluster, key), (expected, present)) in counts {
        let Some(service) = exports.get(cluster).and_then(|s| s.service(&key)) else {
            continue;
        };
        let row = rows
            .entry((cluster.to_owned(), service_name(&service.unpack())))
            .or_default();
        row.0 += expected;
        row.1 += present;
    }
    for (key, n) in extra {
        rows.entry(key).or_default().1 += n;
    }
    let total = rows.len();
    let services = rows
        .into_iter()
        .take(limit)
        .map(|((origin_cluster, service), (expected, present))| {
            let activity = events
                .activity(&origin_cluster, &service)
                .unwrap_or_default();
            ServiceStatus {
                status: match present.cmp(&expected) {
                    std::cmp::Ordering::Equal => "synced",
                    std::cmp::Ordering::Less => "syncing",
                    std::cmp::Ordering::Greater => "extra",
                }
                .to_owned(),
                origin_cluster,
                service,
                expected,
                present,
                last_change_ms: activity.last_change_ms,
                last_error: activity.last_error,
            }
        })
        .collect();
    ServicesReport { total, services }
}

/// Per instance exported by the peers (of `cluster`, of services whose name contains
/// `service`): its origin ids, its copy's id and whether the copy is present. At most
/// `limit`, sorted by cluster, service and origin instance id; `total` counts all matches.
pub fn instances(
    exports: &HashMap<String, PeerExportState>,
    copies: Option<&HashMap<OriginKey, LocalCopy>>,
    cluster: Option<&str>,
    service: Option<&str>,
    lease_left_secs: Option<u64>,
    limit: usize,
) -> InstancesReport {
    let mut out = Vec::new();
    let mut total = 0;
    let mut clusters: Vec<(&String, &PeerExportState)> = exports
        .iter()
        .filter(|(c, s)| s.is_known() && cluster.is_none_or(|want| want == c.as_str()))
        .collect();
    clusters.sort_by(|a, b| a.0.cmp(b.0));
    for (name, state) in clusters {
        let shared: Arc<str> = Arc::from(name.as_str());
        let mut names: HashMap<ServiceKey, Option<String>> = HashMap::new();
        for (key, instance) in state.instances() {
            let service_name = names
                .entry(instance.service)
                .or_insert_with(|| {
                    state
                        .service(&instance.service)
                        .map(|s| service_name(&s.unpack()))
                })
                .clone();
            let Some(service_name) = service_name else {
                continue;
            };
            if service.is_some_and(|want| !service_name.contains(want)) {
                continue;
            }
            total += 1;
            if out.len() >= limit {
                continue;
            }
            let origin = instance.packed.unpack();
            let present = copies.is_some_and(|c| {
                c.contains_key(&OriginKey {
                    cluster: shared.clone(),
                    instance: *key,
                })
            });
            out.push(InstanceView {
                origin_cluster: name.clone(),
                service: service_name,
                instance_id: local_instance_id(&Origin {
                    cluster: name.clone(),
                    service_id: origin.service_id.clone(),
                    instance_id: origin.instance_id.clone(),
                }),
                origin_service_id: origin.service_id,
                origin_instance_id: origin.instance_id,
                status: origin.status.as_servicecenter().to_owned(),
                endpoints: origin.endpoints,
                present,
                lease_left_secs: if present { lease_left_secs } else { None },
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.origin_cluster, &a.service, &a.origin_instance_id).cmp(&(
            &b.origin_cluster,
            &b.service,
            &b.origin_instance_id,
        ))
    });
    InstancesReport {
        total,
        instances: out,
    }
}
