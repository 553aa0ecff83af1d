//! The records of the registry: microservices and instances as they travel in service-center
//! v4 JSON, the Eureka side record, and an instance with its lease.

use super::*;

/// The Eureka-only fields of an instance registered through `/eureka`, kept
/// beside the SC record so a Eureka client reads back what it registered.
///
/// Status, host name and metadata are *not* here: they live in the SC record
/// (`status`, `hostName`, `properties`) so both APIs see the same values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EurekaSide {
    /// Upper-cased app name.
    pub app: String,
    /// `ipAddr`.
    pub ip_addr: String,
    /// `sid`, when not `na`.
    pub sid: Option<String>,
    /// The Eureka status as given (e.g. `UNKNOWN`, which SC cannot express).
    pub status: String,
    /// `overriddenStatus`, default `UNKNOWN`.
    pub overridden_status: String,
    /// `port.$` and `port.@enabled`.
    pub port: (i64, bool),
    /// `securePort.$` and `securePort.@enabled`.
    pub secure_port: (i64, bool),
    /// `countryId`, default 1.
    pub country_id: i64,
    /// `dataCenterInfo.@class`.
    pub dc_class: String,
    /// `dataCenterInfo.name`.
    pub dc_name: String,
    /// `dataCenterInfo.metadata` (Amazon).
    pub dc_metadata: Props,
    /// `leaseInfo.renewalIntervalInSecs`, default 30.
    pub renewal_interval_secs: i64,
    /// Optional string fields by their JSON name (`homePageUrl`, `vipAddress`, `appGroupName`, ...).
    pub strings: BTreeMap<&'static str, String>,
    /// `lastDirtyTimestamp`, ms since the epoch.
    pub last_dirty_ms: i64,
}

/// A stored instance with its lease.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    /// The SC body as stored and returned.
    pub body: MicroServiceInstance,
    /// Eureka-only fields when registered through `/eureka` (boxed: most records have none).
    pub eureka: Option<Box<EurekaSide>>,
    /// Lease duration in seconds.
    pub ttl_secs: u64,
    /// When the lease ends unless renewed.
    pub deadline: Instant,
    /// Registration time, ms since the epoch.
    pub registered_ms: i64,
    /// Last renewal time, ms since the epoch.
    pub renewed_ms: i64,
    /// Last change to the record, ms since the epoch.
    pub updated_ms: i64,
}

/// A domain or project name of a stored service: the text behind a shared pointer, so that
/// the services of one tenant share its name instead of each holding two `String`s (24
/// bytes and a heap block each). `default`, the tenant of nearly every service, is one
/// allocation for the whole process; any other name is one per service. Reads like a `str`
/// (`Deref`), compares with `str`, `&str` and `String`, and orders and hashes as its text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(Arc<str>);

impl TenantName {
    /// The name `text`.
    pub fn new(text: &str) -> TenantName {
        static DEFAULT: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from(DEFAULT_TENANT));
        if text == DEFAULT_TENANT {
            TenantName(Arc::clone(&DEFAULT))
        } else {
            TenantName(Arc::from(text))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TenantName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TenantName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for TenantName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for TenantName {
    fn from(text: &str) -> TenantName {
        TenantName::new(text)
    }
}

impl PartialEq<str> for TenantName {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for TenantName {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for TenantName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<&String> for TenantName {
    fn eq(&self, other: &&String) -> bool {
        *self.0 == ***other
    }
}

impl PartialEq<TenantName> for str {
    fn eq(&self, other: &TenantName) -> bool {
        *self == *other.0
    }
}

impl PartialEq<TenantName> for &str {
    fn eq(&self, other: &TenantName) -> bool {
        **self == *other.0
    }
}

impl PartialEq<TenantName> for String {
    fn eq(&self, other: &TenantName) -> bool {
        **self == *other.0
    }
}

/// A microservice with its tenant and instances.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Domain (tenant) from `X-Domain-Name`.
    pub domain: TenantName,
    /// Project from the path.
    pub project: TenantName,
    /// The stored body, behind its own `Arc`: an entry copied because a snapshot shares it
    /// (an instance registered while a dump is read) copies a pointer, not the body.
    pub service: Arc<MicroService>,
    /// Instances by instanceId.
    pub instances: Instances,
}

/// The instances of one service, by instanceId: a `Vec` of (id prefix, record) sorted by
/// instanceId, of exact capacity while small. Most services have one instance, for which a
/// `BTreeMap` would spend a node of eleven slots.
///
/// Beside each record sit the first 8 bytes of its `instanceId` ([`IdPrefix`]): a lookup
/// compares those and reaches into a record only where they are equal (usually the record
/// it looks for), instead of following two pointers per step of the search (the record,
/// then its id) — a heartbeat's lookup was 4 % of its CPU that way. A whole copy of each
/// id would cost about 70 bytes an instance; the prefix costs 8 (and nothing for a service
/// of one instance: its list's allocation has room for it).
///
/// Each record is behind an `Arc`, so a snapshot ([`Registry::snapshot`]) shares records
/// instead of copying them (a write after a snapshot copies one record, `Arc::make_mut`).
#[derive(Debug, Clone, Default)]
pub struct Instances(Vec<(IdPrefix, Arc<InstanceRecord>)>);

/// The first 8 bytes of an instanceId, zero-padded, read big-endian: where two prefixes
/// differ, they order as their ids do (a shorter id pads with 0, below any byte it lacks),
/// so the list sorts by (prefix, id) and by id alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdPrefix(u64);

impl IdPrefix {
    fn of(id: &str) -> IdPrefix {
        let mut b = [0u8; 8];
        let n = id.len().min(8);
        b[..n].copy_from_slice(&id.as_bytes()[..n]);
        IdPrefix(u64::from_be_bytes(b))
    }
}

/// Up to this many instances a service's list grows one slot at a time.
const EXACT_UP_TO: usize = 8;

impl Instances {
    fn find(&self, id: &str) -> Result<usize, usize> {
        let p = IdPrefix::of(id);
        self.0
            .binary_search_by(|(q, r)| q.cmp(&p).then_with(|| r.body.instance_id.as_str().cmp(id)))
    }

    /// The record of `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<InstanceRecord>> {
        self.find(id).ok().map(|at| &self.0[at].1)
    }

    /// The record of `id`, to change (not its `instanceId`: the list is sorted by it).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Arc<InstanceRecord>> {
        self.find(id).ok().map(|at| &mut self.0[at].1)
    }

    /// Whether `id` is here.
    pub fn contains_key(&self, id: &str) -> bool {
        self.find(id).is_ok()
    }

    /// Adds `rec` under its `instanceId`; returns the record it replaced.
    pub fn insert(&mut self, rec: Arc<InstanceRecord>) -> Option<Arc<InstanceRecord>> {
        match self.find(&rec.body.instance_id) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, rec)),
            Err(at) => {
                if self.0.len() < EXACT_UP_TO {
                    self.0.reserve_exact(1);
                }
                self.0
                    .insert(at, (IdPrefix::of(&rec.body.instance_id), rec));
                None
            }
        }
    }

    /// Removes `id`; returns its record.
    pub fn remove(&mut self, id: &str) -> Option<Arc<InstanceRecord>> {
        let at = self.find(id).ok()?;
        let (_, rec) = self.0.remove(at);
        if self.0.len() < EXACT_UP_TO {
            self.0.shrink_to_fit();
        }
        Some(rec)
    }

    /// How many instances.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (instanceId, record) in instanceId order.
    pub fn iter(&self) -> InstancesIter<'_> {
        InstancesIter(self.0.iter())
    }

    /// The instanceIds in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(_, r)| &r.body.instance_id)
    }

    /// The records in instanceId order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<InstanceRecord>> {
        self.0.iter().map(|(_, r)| r)
    }

    /// The records in instanceId order, owned.
    pub fn into_values(self) -> impl Iterator<Item = Arc<InstanceRecord>> {
        self.0.into_iter().map(|(_, r)| r)
    }
}

/// (instanceId, record) of [`Instances`], in instanceId order.
pub struct InstancesIter<'a>(std::slice::Iter<'a, (IdPrefix, Arc<InstanceRecord>)>);

impl<'a> Iterator for InstancesIter<'a> {
    type Item = (&'a String, &'a Arc<InstanceRecord>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(_, r)| (&r.body.instance_id, r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = (&'a String, &'a Arc<InstanceRecord>);
    type IntoIter = InstancesIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// (domain, project, env, appId, serviceName).
pub(super) type NameKey = (String, String, String, String, String);
/// (domain, project, env, appId, serviceName, version).
pub(super) type ServiceKey = (NameKey, String);

/// A small ordered set of serviceIds (the versions of a name, the services of an app): a
/// sorted `Vec` of exact capacity, since most sets hold one id and a `BTreeSet` node has
/// room for eleven. The ids are the registry's shared ones (the keys of its services
/// table), not copies.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdSet(Vec<Arc<str>>);

impl IdSet {
    /// Adds `id`; false when it was there.
    pub(crate) fn insert(&mut self, id: Arc<str>) -> bool {
        match self.0.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                // Exact: `Vec` would make room for four ids at the first insert.
                self.0.reserve_exact(1);
                self.0.insert(at, id);
                true
            }
        }
    }

    /// Removes `id`; false when it was not there.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        match self.0.binary_search_by(|x| (**x).cmp(id)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Arc<str>> {
        self.0.iter()
    }
}

/// The lease queue: every instance's lease by deadline, for expiry (see `Registry::expire`).
/// An entry is (deadline, serviceId and instanceId packed in one allocation: the serviceId,
/// the instanceId, then the serviceId's length as 4 bytes little endian), so that a lease costs
/// one small allocation instead of two `String`s. Entries of one deadline are in byte order
/// of serviceId then instanceId run together (service-center promises no order among them).
#[derive(Debug, Default)]
pub(crate) struct Leases(BTreeSet<(Instant, Box<[u8]>)>);

impl Leases {
    fn pack(service_id: &str, instance_id: &str) -> Box<[u8]> {
        let mut out = Vec::with_capacity(service_id.len() + instance_id.len() + 4);
        out.extend_from_slice(service_id.as_bytes());
        out.extend_from_slice(instance_id.as_bytes());
        let len = u32::try_from(service_id.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.into_boxed_slice()
    }

    /// (serviceId, instanceId) of a packed entry (`None` only for bytes not made by `pack`).
    fn unpack(packed: &[u8]) -> Option<(&str, &str)> {
        let (ids, len) = packed.split_at_checked(packed.len().checked_sub(4)?)?;
        let sid_len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
        let (sid, iid) = ids.split_at_checked(sid_len)?;
        Some((
            std::str::from_utf8(sid).ok()?,
            std::str::from_utf8(iid).ok()?,
        ))
    }

    /// Queues the lease of `instance_id` of `service_id` ending at `deadline`.
    pub(crate) fn insert(&mut self, deadline: Instant, service_id: &str, instance_id: &str) {
        self.0
            .insert((deadline, Leases::pack(service_id, instance_id)));
    }

    /// Drops the queued lease of `instance_id` of `service_id` at `deadline`, if queued.
    pub(crate) fn remove(&mut self, deadline: Instant, service_id: &str, instance_id: &str) {
        self.0
            .remove(&(deadline, Leases::pack(service_id, instance_id)));
    }

    /// Takes the earliest lease if it ends at or before `now`: (deadline, serviceId,
    /// instanceId).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, String, String)> {
        loop {
            if self.0.first()?.0 > now {
                return None;
            }
            let (deadline, packed) = self.0.pop_first()?;
            if let Some((sid, iid)) = Leases::unpack(&packed) {
                return Some((deadline, sid.to_owned(), iid.to_owned()));
            }
        }
    }
}

/// What a Eureka register asks for, already validated and mapped (see `eureka.rs`).
#[derive(Debug, Clone)]
pub struct EurekaRegistration {
    /// Instance id (instanceId, else hostName).
    pub instance_id: String,
    /// SC view of the instance (endpoints, hostName, status, properties).
    pub body: MicroServiceInstance,
    /// The Eureka-only fields.
    pub side: EurekaSide,
    /// `leaseInfo.durationInSecs` if > 0, else 90.
    pub lease_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::{IdSet, InstanceRecord, Instances, Leases, MicroServiceInstance};
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn record(id: &str) -> Arc<InstanceRecord> {
        Arc::new(InstanceRecord {
            body: MicroServiceInstance {
                instance_id: id.to_owned(),
                ..MicroServiceInstance::default()
            },
            eureka: None,
            ttl_secs: 30,
            deadline: Instant::now(),
            registered_ms: 0,
            renewed_ms: 0,
            updated_ms: 0,
        })
    }

    proptest! {
        /// The list searched by (8-byte prefix, id) keeps instanceId order and finds every
        /// id, whatever the ids: shorter and longer than the prefix, sharing it, with NUL
        /// and non-ASCII bytes.
        #[test]
        fn instances_search_by_prefix_in_instance_id_order(
            ids in proptest::collection::vec("[a\\x00\\x01\\xffé-]{0,12}", 0..40),
            gone in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let mut list = Instances::default();
            for id in &ids {
                list.insert(record(id));
            }
            let mut want: Vec<&String> = ids.iter().collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(list.keys().collect::<Vec<_>>(), want.clone());
            for id in &want {
                prop_assert_eq!(list.get(id).map(|r| &r.body.instance_id), Some(*id));
            }
            let absent = "absent\u{0}id";
            prop_assert!(list.get(absent).is_none());
            for (id, gone) in want.iter().zip(&gone) {
                if *gone {
                    prop_assert!(list.remove(id).is_some());
                    prop_assert!(!list.contains_key(id));
                }
            }
            let left: Vec<&String> = want.iter().zip(&gone).filter(|(_, g)| !**g).map(|(id, _)| *id).collect();
            prop_assert_eq!(list.keys().collect::<Vec<_>>(), left);
        }
    }

    #[test]
    fn leases_come_due_in_deadline_order_with_their_ids() {
        let t0 = Instant::now();
        let mut l = Leases::default();
        l.insert(t0 + Duration::from_secs(2), "s1", "i/1");
        l.insert(t0 + Duration::from_secs(1), "s", "1i");
        l.insert(t0 + Duration::from_secs(1), "", "");
        l.insert(t0 + Duration::from_secs(3), "s2", "i2");
        l.remove(t0 + Duration::from_secs(3), "s2", "i2");
        l.remove(t0 + Duration::from_secs(2), "s1", "other");
        assert_eq!(l.pop_due(t0), None);
        let due = |l: &mut Leases| {
            l.pop_due(t0 + Duration::from_secs(5))
                .map(|(_, s, i)| (s, i))
        };
        assert_eq!(due(&mut l), Some((String::new(), String::new())));
        assert_eq!(due(&mut l), Some(("s".into(), "1i".into())));
        assert_eq!(due(&mut l), Some(("s1".into(), "i/1".into())));
        assert_eq!(due(&mut l), None);
    }

    #[test]
    fn id_sets_stay_sorted_without_duplicates() {
        let mut s = IdSet::default();
        assert!(s.is_empty());
        assert!(s.insert("b".into()));
        assert!(s.insert("a".into()));
        assert!(s.insert("c".into()));
        assert!(!s.insert("b".into()));
        assert_eq!(s.iter().map(|x| &**x).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(s.remove("b"));
        assert!(!s.remove("b"));
        assert_eq!(s.iter().map(|x| &**x).collect::<Vec<_>>(), ["a", "c"]);
        assert!(s.remove("a") && s.remove("c"));
        assert!(s.is_empty());
    }
}
