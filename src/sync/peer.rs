//! What one peer cluster exports, as followed through its watch stream (or pulled): the
//! export at a revision, updated by each change, with gaps detected (a new epoch or a
//! skipped revision means "start again from the whole export"). Records are kept packed
//! ([`crate::records::packed`]): at 100,000 instances this is the importer's largest structure.

use std::collections::HashMap;

use syncer_plugin_api::{Instance, Snapshot};
use tracing::debug;

use crate::records::packed::{
    instance_key, service_key, InstanceKey, PackedInstance, PackedService, ServiceKey,
};
use crate::records::{fingerprint, PeerEvent};

/// One exported instance as held: packed, with what planning compares without unpacking.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInstance {
    /// The instance.
    pub packed: PackedInstance,
    /// Its service.
    pub service: ServiceKey,
    /// [`fingerprint`] of its status and endpoints.
    pub fingerprint: u64,
}

impl PeerInstance {
    fn new(instance: &Instance) -> PeerInstance {
        PeerInstance {
            packed: PackedInstance::new(instance),
            service: service_key(&instance.service_id),
            fingerprint: fingerprint(instance.status, &instance.endpoints),
        }
    }
}

/// A peer's export as known here.
#[derive(Debug, Default)]
pub struct PeerExportState {
    /// The exporter run the state belongs to; 0 before the first whole export.
    pub epoch: u64,
    /// The revision the state is at.
    pub revision: u64,
    services: HashMap<ServiceKey, PackedService>,
    instances: HashMap<InstanceKey, PeerInstance>,
    /// A whole export arriving in parts: (epoch, revision, services, instances so far).
    incoming: Option<Incoming>,
}

#[derive(Debug)]
struct Incoming {
    epoch: u64,
    revision: u64,
    services: HashMap<ServiceKey, PackedService>,
    instances: HashMap<InstanceKey, PeerInstance>,
}

/// What an event changed, by key into the state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PeerDelta {
    /// Instances added or changed (they are in the state).
    pub upserted: Vec<InstanceKey>,
    /// Instances removed (no longer in the state).
    pub removed: Vec<InstanceKey>,
}

impl PeerDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// The event does not follow the state: the stream must restart from a whole export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("export stream gap: held epoch {held_epoch} revision {held_revision}, got epoch {epoch} revision {revision}")]
pub struct Gap {
    /// Epoch held.
    pub held_epoch: u64,
    /// Revision held.
    pub held_revision: u64,
    /// Epoch received.
    pub epoch: u64,
    /// Revision received.
    pub revision: u64,
}

impl PeerExportState {
    /// The state of a pulled export (epoch and revision unknown: 0).
    pub fn pulled(snapshot: &Snapshot) -> PeerExportState {
        let mut state = PeerExportState::default();
        add(&mut state.services, &mut state.instances, snapshot);
        state
    }

    /// Drops a whole export whose parts stopped coming (its stream went down); what was held
    /// before it stays.
    pub fn abandon_incoming(&mut self) {
        self.incoming = None;
    }

    /// Whether a whole export has been received.
    pub fn is_known(&self) -> bool {
        self.epoch != 0
    }

    /// A service by key.
    pub fn service(&self, key: &ServiceKey) -> Option<&PackedService> {
        self.services.get(key)
    }

    /// An instance by key.
    pub fn instance(&self, key: &InstanceKey) -> Option<&PeerInstance> {
        self.instances.get(key)
    }

    /// Every instance, by key.
    pub fn instances(&self) -> impl Iterator<Item = (&InstanceKey, &PeerInstance)> {
        self.instances.iter()
    }

    /// Whether the export holds the instance.
    pub fn contains(&self, key: &InstanceKey) -> bool {
        self.instances.contains_key(key)
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether the export holds no instance.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The whole export, unpacked.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.values().map(PackedService::unpack).collect(),
            instances: self.instances.values().map(|i| i.packed.unpack()).collect(),
        }
    }

    /// Applies one event and says what changed. A part of a whole export (`more`) is held
    /// until its last part, then the whole export replaces the state at once.
    ///
    /// # Errors
    /// [`Gap`] when a change does not continue the held revision of the held epoch (or
    /// comes in the middle of a whole export); the state is left as it was.
    pub fn apply(&mut self, event: PeerEvent) -> Result<PeerDelta, Gap> {
        match event {
            PeerEvent::Full {
                epoch,
                revision,
                snapshot,
                more,
            } => {
                let incoming = match self.incoming.take() {
                    Some(i) if i.epoch == epoch && i.revision == revision => i,
                    _ => Incoming {
                        epoch,
                        revision,
                        services: HashMap::new(),
                        instances: HashMap::new(),
                    },
                };
                let mut incoming = incoming;
                add(&mut incoming.services, &mut incoming.instances, &snapshot);
                drop(snapshot);
                if more {
                    self.incoming = Some(incoming);
                    return Ok(PeerDelta::default());
                }
                let Incoming {
                    services,
                    mut instances,
                    ..
                } = incoming;
                let before = instances.len();
                instances.retain(|_, i| services.contains_key(&i.service));
                if instances.len() < before {
                    debug!(
                        dropped = before - instances.len(),
                        "whole export named services it did not send; those instances are ignored"
                    );
                }
                let mut delta = PeerDelta::default();
                for (key, i) in &instances {
                    if self.instances.get(key) != Some(i) {
                        delta.upserted.push(*key);
                    }
                }
                for key in self.instances.keys() {
                    if !instances.contains_key(key) {
                        delta.removed.push(*key);
                    }
                }
                self.services = services;
                self.instances = instances;
                self.epoch = epoch;
                self.revision = revision;
                Ok(delta)
            }
            PeerEvent::Change {
                epoch,
                revision,
                upserted,
                removed,
                ..
            } => {
                if self.incoming.is_none() && epoch == self.epoch && revision <= self.revision {
                    // Already applied (a resumed stream repeating what the loop had
                    // queued from the connection before).
                    return Ok(PeerDelta::default());
                }
                if self.incoming.is_some() || epoch != self.epoch || revision != self.revision + 1 {
                    return Err(Gap {
                        held_epoch: self.epoch,
                        held_revision: self.revision,
                        epoch,
                        revision,
                    });
                }
                for s in &upserted.services {
                    self.services
                        .insert(service_key(&s.service_id), PackedService::new(s));
                }
                let mut delta = PeerDelta::default();
                for i in upserted.instances.iter().filter(|i| exported(i)) {
                    let key = instance_key(&i.service_id, &i.instance_id);
                    self.instances.insert(key, PeerInstance::new(i));
                    delta.upserted.push(key);
                }
                for (service_id, instance_id) in removed {
                    let key = instance_key(&service_id, &instance_id);
                    if self.instances.remove(&key).is_some() {
                        delta.removed.push(key);
                    }
                }
                self.revision = revision;
                Ok(delta)
            }
        }
    }
}

/// Packs `snapshot`'s services and exported instances into the maps of an export.
fn add(
    services: &mut HashMap<ServiceKey, PackedService>,
    instances: &mut HashMap<InstanceKey, PeerInstance>,
    snapshot: &Snapshot,
) {
    for s in &snapshot.services {
        services.insert(service_key(&s.service_id), PackedService::new(s));
    }
    for i in snapshot.instances.iter().filter(|i| exported(i)) {
        instances.insert(
            instance_key(&i.service_id, &i.instance_id),
            PeerInstance::new(i),
        );
    }
}

/// Whether a peer may export `instance`: not a copy it imported itself (a peer's exporter
/// already leaves those out; checking again keeps a misbehaving peer from making us import
/// our own copies back).
fn exported(instance: &Instance) -> bool {
    instance.origin_cluster().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncer_plugin_api::Service;

    fn snapshot(ids: &[&str]) -> Snapshot {
        Snapshot {
            services: vec![Service {
                service_id: "s".into(),
                ..Default::default()
            }],
            instances: ids
                .iter()
                .map(|id| Instance {
                    instance_id: (*id).into(),
                    service_id: "s".into(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn full(epoch: u64, revision: u64, ids: &[&str], more: bool) -> PeerEvent {
        PeerEvent::Full {
            epoch,
            revision,
            snapshot: snapshot(ids),
            more,
        }
    }

    #[test]
    fn a_whole_export_replaces_the_state_and_reports_the_difference() {
        let mut state = PeerExportState::default();
        let d = state.apply(full(7, 3, &["a", "b"], false)).expect("full");
        assert_eq!(d.upserted.len(), 2);
        let d = state.apply(full(8, 1, &["b", "c"], false)).expect("full");
        assert_eq!(d.upserted, vec![instance_key("s", "c")]);
        assert_eq!(d.removed, vec![instance_key("s", "a")]);
        assert_eq!((state.epoch, state.revision), (8, 1));
    }

    #[test]
    fn a_whole_export_in_parts_applies_at_its_last_part() {
        let mut state = PeerExportState::default();
        state.apply(full(1, 1, &["a"], false)).expect("full");
        let d = state.apply(full(2, 5, &["b"], true)).expect("part");
        assert!(d.is_empty());
        assert!(
            state.contains(&instance_key("s", "a")),
            "held until the last part"
        );
        assert_eq!(state.epoch, 1);
        // A change in the middle of a whole export is a gap.
        let gap = state.apply(PeerEvent::Change {
            epoch: 1,
            changed_at_ms: 0,
            revision: 2,
            upserted: Snapshot::default(),
            removed: Vec::new(),
        });
        assert!(gap.is_err());
        state.apply(full(2, 5, &["b"], true)).expect("restart");
        let d = state.apply(full(2, 5, &["c"], false)).expect("last part");
        let mut up = d.upserted.clone();
        up.sort();
        let mut want = vec![instance_key("s", "b"), instance_key("s", "c")];
        want.sort();
        assert_eq!(up, want);
        assert_eq!(d.removed, vec![instance_key("s", "a")]);
        assert_eq!((state.epoch, state.revision, state.len()), (2, 5, 2));
    }

    #[test]
    fn changes_apply_in_order_and_a_gap_is_refused() {
        let mut state = PeerExportState::default();
        state.apply(full(1, 1, &["a"], false)).expect("full");
        let d = state
            .apply(PeerEvent::Change {
                epoch: 1,
                changed_at_ms: 0,
                revision: 2,
                upserted: snapshot(&["b"]),
                removed: vec![("s".into(), "a".into())],
            })
            .expect("next revision");
        assert_eq!(d.upserted.len(), 1);
        assert_eq!(d.removed.len(), 1);
        let again = state
            .apply(PeerEvent::Change {
                epoch: 1,
                changed_at_ms: 0,
                revision: 2,
                upserted: snapshot(&["x"]),
                removed: Vec::new(),
            })
            .expect("a repeated revision is no gap");
        assert!(again.is_empty() && !state.contains(&instance_key("s", "x")));
        let gap = state.apply(PeerEvent::Change {
            epoch: 1,
            changed_at_ms: 0,
            revision: 4,
            upserted: Snapshot::default(),
            removed: vec![("s".into(), "b".into())],
        });
        assert!(gap.is_err());
        assert_eq!(state.revision, 2, "state untouched by a gap");
        assert_eq!(state.snapshot().instances.len(), 1);
    }
}
