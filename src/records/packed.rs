//! Compact storage for the records a syncer keeps at scale.
//!
//! At 100,000 instances, an [`Instance`] or [`Service`] held as a struct of `String`s costs
//! several hundred bytes in a dozen small allocations, and a map keyed by copies of its ids
//! costs as much again. The export feed, the peers' exports and the copies' mapping keep
//! their records [`Packed`] instead (one shared allocation of postcard bytes, a third of the
//! size) and key them by a 128-bit hash of their ids ([`InstanceKey`], [`ServiceKey`]).
//! Records are unpacked where they are used, a batch at a time.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use syncer_plugin_api::{Instance, Service};

/// A record stored as postcard bytes; cloning shares them. Two packed records are equal
/// when their records are (postcard writes a value one way only: maps in key order).
pub struct Packed<T> {
    bytes: Arc<[u8]>,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Packed {
            bytes: self.bytes.clone(),
            _record: PhantomData,
        }
    }
}

impl<T> PartialEq for Packed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<T> Eq for Packed<T> {}

impl<T> fmt::Debug for Packed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packed({} bytes)", self.bytes.len())
    }
}

impl<T: Serialize + DeserializeOwned> Packed<T> {
    /// Packs `record`.
    pub fn new(record: &T) -> Packed<T> {
        // Serializing these plain structs into memory cannot fail; an empty record would
        // fail to unpack, which `unpack` turns into the default.
        let bytes = postcard::to_allocvec(record).unwrap_or_default();
        Packed {
            bytes: bytes.into(),
            _record: PhantomData,
        }
    }

    /// The record. Packed bytes come from [`Packed::new`] only, so they always decode; were
    /// they ever not to, the default record stands in (an instance without ids, which
    /// nothing registers).
    pub fn unpack(&self) -> T
    where
        T: Default,
    {
        postcard::from_bytes(&self.bytes).unwrap_or_default()
    }

    /// Bytes held (for figures).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the packed form is empty (never, for a packed record).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A packed [`Instance`].
pub type PackedInstance = Packed<Instance>;
/// A packed [`Service`].
pub type PackedService = Packed<Service>;

/// A 128-bit hash of ids, used as a map key instead of copies of the ids. The hasher's keys
/// are random per process, so ids chosen by a peer cannot be made to collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdHash(u64, u64);

fn hashers() -> &'static (
    std::collections::hash_map::RandomState,
    std::collections::hash_map::RandomState,
) {
    static HASHERS: OnceLock<(
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    )> = OnceLock::new();
    HASHERS.get_or_init(Default::default)
}

impl IdHash {
    /// The hash of `parts` (each part is length-delimited, so `("ab", "c")` and `("a", "bc")`
    /// differ).
    pub fn of(parts: &[&str]) -> IdHash {
        let (a, b) = hashers();
        let (mut ha, mut hb) = (a.build_hasher(), b.build_hasher());
        for part in parts {
            part.hash(&mut ha);
            part.hash(&mut hb);
        }
        IdHash(ha.finish(), hb.finish())
    }
}

/// An instance by (serviceId, instanceId) in its registry.
pub type InstanceKey = IdHash;

/// The key of an instance.
pub fn instance_key(service_id: &str, instance_id: &str) -> InstanceKey {
    IdHash::of(&[service_id, instance_id])
}

/// A service by serviceId in its registry.
pub type ServiceKey = IdHash;

/// The key of a service.
pub fn service_key(service_id: &str) -> ServiceKey {
    IdHash::of(&[service_id])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_compare_by_value() {
        let mut instance = Instance {
            instance_id: "i1".into(),
            service_id: "s1".into(),
            endpoints: vec!["http://127.0.0.1:1".into()],
            ..Default::default()
        };
        instance.properties.insert("b".into(), "2".into());
        instance.properties.insert("a".into(), "1".into());
        let packed = Packed::new(&instance);
        assert_eq!(packed.unpack(), instance);
        assert_eq!(packed, Packed::new(&instance.clone()));
        instance.endpoints[0] = "http://127.0.0.1:2".into();
        assert_ne!(packed, Packed::new(&instance));
    }

    #[test]
    fn keys_are_stable_and_delimited() {
        assert_eq!(instance_key("s", "i"), instance_key("s", "i"));
        assert_ne!(instance_key("ab", "c"), instance_key("a", "bc"));
        assert_ne!(service_key("s"), instance_key("s", ""));
    }
}
