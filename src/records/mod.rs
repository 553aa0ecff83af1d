//! The records that cross the wire between clusters, in the form both sides hold them.
//!
//! The exporter ([`crate::sync::exporter`]) numbers its export by revision and publishes an
//! [`ExportChange`] per revision; the exchange ([`crate::exchange`]) turns those into wire
//! events, and back into a validated [`PeerEvent`] (or a pulled [`PeerExport`]) at the
//! other end; the importer ([`crate::sync`]) follows a peer's export from them and compares
//! instances by [`fingerprint`]. Records are kept [`packed`] where they are held at scale.
//!
//! This module holds data only and imports nothing of the daemon's: sync and exchange both
//! import it, never the other way round, so neither has to import the other for a type.

pub mod packed;

use syncer_plugin_api::{InstanceStatus, Snapshot};

use packed::{PackedInstance, PackedService};

/// The change from one revision of the export to the next (records shared with the
/// exporter's feed, not copied).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportChange {
    /// The revision this change brings the export to.
    pub revision: u64,
    /// Services added or changed.
    pub services: Vec<PackedService>,
    /// Instances added or changed.
    pub instances: Vec<PackedInstance>,
    /// Instances removed, as (serviceId, instanceId).
    pub removed: Vec<(String, String)>,
    /// When the exporter saw the change, in ms since the Unix epoch (0: unknown).
    pub changed_at_ms: u64,
}

/// A validated event of a peer's export stream.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    /// The whole export (or a part of it), replacing what was known.
    Full {
        /// The exporter's run.
        epoch: u64,
        /// The revision of this export.
        revision: u64,
        /// The export, or this part of it.
        snapshot: Snapshot,
        /// Other parts follow.
        more: bool,
    },
    /// A change on top of revision - 1.
    Change {
        /// The exporter's run.
        epoch: u64,
        /// The revision after the change.
        revision: u64,
        /// Services and instances added or changed. Instances may name services sent
        /// earlier, so they are not checked against this message's services.
        upserted: Snapshot,
        /// Instances removed, as (serviceId, instanceId).
        removed: Vec<(String, String)>,
        /// When the origin's exporter saw the change, in ms since the Unix epoch (0:
        /// unknown, e.g. a 1.3.0 peer).
        changed_at_ms: u64,
    },
}

/// What one peer cluster exported, as pulled from its leader.
#[derive(Debug, Clone)]
pub struct PeerExport {
    /// The peer's cluster name (the origin of everything in `snapshot`).
    pub cluster: String,
    /// Its exported services and instances.
    pub snapshot: Snapshot,
}

/// What consumers of a copy use from an instance, hashed: its status and its set of
/// endpoints (order and repeats ignored). A copy whose fingerprint differs from its origin's
/// is registered again.
pub fn fingerprint(status: InstanceStatus, endpoints: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut sorted: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    // A fixed hasher: fingerprints of copies are compared with fingerprints of origins.
    let mut h = std::hash::DefaultHasher::new();
    (status as u8).hash(&mut h);
    sorted.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_endpoint_order_but_not_status() {
        let a = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        let b = vec!["http://b:2".to_string(), "http://a:1".to_string()];
        assert_eq!(
            fingerprint(InstanceStatus::Up, &a),
            fingerprint(InstanceStatus::Up, &b)
        );
        assert_ne!(
            fingerprint(InstanceStatus::Up, &a),
            fingerprint(InstanceStatus::Down, &a)
        );
        assert_ne!(
            fingerprint(InstanceStatus::Up, &a),
            fingerprint(InstanceStatus::Up, &a[..1])
        );
    }
}
