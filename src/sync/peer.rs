//! What one peer cluster exports, as followed through its watch stream: the export at a
//! revision, updated by each change, with gaps detected (a new epoch or a skipped revision
//! means "start again from the whole export").

use std::collections::HashMap;

use syncer_plugin_api::{Instance, Service, Snapshot};

use crate::exchange::convert::PeerEvent;

/// A peer's export as known here.
#[derive(Debug, Default, Clone)]
pub struct PeerExportState {
    /// The exporter run the state belongs to; 0 before the first whole export.
    pub epoch: u64,
    /// The revision the state is at.
    pub revision: u64,
    services: HashMap<String, Service>,
    instances: HashMap<(String, String), Instance>,
}

/// What an event changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PeerDelta {
    /// Instances added or changed.
    pub upserted: Vec<Instance>,
    /// Instances removed, as (serviceId, instanceId).
    pub removed: Vec<(String, String)>,
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
    /// Whether a whole export has been received.
    pub fn is_known(&self) -> bool {
        self.epoch != 0
    }

    /// The peer's services by id.
    pub fn services(&self) -> &HashMap<String, Service> {
        &self.services
    }

    /// The peer's instances.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// The planner's view of the export, borrowed.
    pub fn view<'a>(&'a self, cluster: &'a str) -> super::importer::PeerView<'a> {
        super::importer::PeerView::new(cluster, self.services.values(), self.instances.values())
    }

    /// The whole export.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.values().cloned().collect(),
            instances: self.instances.values().cloned().collect(),
        }
    }

    /// Applies one event and says what changed.
    ///
    /// # Errors
    /// [`Gap`] when a change does not continue the held revision of the held epoch; the state
    /// is left as it was.
    pub fn apply(&mut self, event: PeerEvent) -> Result<PeerDelta, Gap> {
        match event {
            PeerEvent::Full {
                epoch,
                revision,
                snapshot,
            } => {
                let mut delta = PeerDelta::default();
                let mut instances = HashMap::with_capacity(snapshot.instances.len());
                for i in snapshot.instances {
                    let key = (i.service_id.clone(), i.instance_id.clone());
                    if self.instances.get(&key) != Some(&i) {
                        delta.upserted.push(i.clone());
                    }
                    instances.insert(key, i);
                }
                for key in self.instances.keys() {
                    if !instances.contains_key(key) {
                        delta.removed.push(key.clone());
                    }
                }
                self.services = snapshot
                    .services
                    .into_iter()
                    .map(|s| (s.service_id.clone(), s))
                    .collect();
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
            } => {
                if epoch != self.epoch || revision != self.revision + 1 {
                    return Err(Gap {
                        held_epoch: self.epoch,
                        held_revision: self.revision,
                        epoch,
                        revision,
                    });
                }
                for s in upserted.services {
                    self.services.insert(s.service_id.clone(), s);
                }
                let mut delta = PeerDelta::default();
                for i in upserted.instances {
                    self.instances
                        .insert((i.service_id.clone(), i.instance_id.clone()), i.clone());
                    delta.upserted.push(i);
                }
                for key in removed {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_whole_export_replaces_the_state_and_reports_the_difference() {
        let mut state = PeerExportState::default();
        let d = state
            .apply(PeerEvent::Full {
                epoch: 7,
                revision: 3,
                snapshot: snapshot(&["a", "b"]),
            })
            .expect("full");
        assert_eq!(d.upserted.len(), 2);
        let d = state
            .apply(PeerEvent::Full {
                epoch: 8,
                revision: 1,
                snapshot: snapshot(&["b", "c"]),
            })
            .expect("full");
        assert_eq!(d.upserted.len(), 1);
        assert_eq!(d.upserted[0].instance_id, "c");
        assert_eq!(d.removed, vec![("s".to_string(), "a".to_string())]);
        assert_eq!((state.epoch, state.revision), (8, 1));
    }

    #[test]
    fn changes_apply_in_order_and_a_gap_is_refused() {
        let mut state = PeerExportState::default();
        state
            .apply(PeerEvent::Full {
                epoch: 1,
                revision: 1,
                snapshot: snapshot(&["a"]),
            })
            .expect("full");
        let d = state
            .apply(PeerEvent::Change {
                epoch: 1,
                revision: 2,
                upserted: snapshot(&["b"]),
                removed: vec![("s".into(), "a".into())],
            })
            .expect("next revision");
        assert_eq!(d.upserted.len(), 1);
        assert_eq!(d.removed.len(), 1);
        let gap = state.apply(PeerEvent::Change {
            epoch: 1,
            revision: 4,
            upserted: Snapshot::default(),
            removed: vec![("s".into(), "b".into())],
        });
        assert!(gap.is_err());
        assert_eq!(state.revision, 2, "state untouched by a gap");
        assert_eq!(state.snapshot().instances.len(), 1);
    }
}
