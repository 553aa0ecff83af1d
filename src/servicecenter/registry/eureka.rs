//! Eureka-only registry state of the built-in core, kept beside the shared [`Registry`]
//! (`registry.rs`) as one of its fields so that it changes under the same lock: the
//! recently-changed queue behind `GET /apps/delta`, the status overrides of
//! `PUT .../status`, and the self-preservation counters.
//!
//! Where it sits: every instance mutation of the registry, whichever API made it (Eureka,
//! service-center v4, lease expiry, the store), notes the instance here
//! (`EurekaState::touch`, or `EurekaState::removed` with its last record); the registry
//! does so at its few mutation points (`registry.rs`, `eureka_touch`/`eureka_gone`). At the
//! next delta sync (`eureka.rs`: every second, and before each Eureka read) only those
//! instances are looked at: each whose fingerprint changed becomes a delta entry
//! (`EurekaState::track`). So a change costs O(1) under the registry lock and a sync
//! O(instances changed), whatever the registry size; `apps__hashcode` comes from per-status
//! counters kept with the fingerprints, and the delta's views are built when it is read, for
//! the queued instances only (a removed instance keeps the view it had when removed).
//!
//! Behaviour copied from Netflix Eureka (eureka-notes §5, §6; `AbstractInstanceRegistry`,
//! `PeerAwareInstanceRegistryImpl`):
//! - delta entries: `ADDED` on register and metadata update, `MODIFIED` on any other change
//!   (status override, its removal, a status set through `/v4`), `DELETED` on cancel and
//!   expiry; renewals add nothing. Entries stay [`DELTA_RETENTION`] (180 s); `versions__delta`
//!   moves whenever the queue's content changes.
//! - overrides are forgotten [`OVERRIDE_MEMORY`] (1 h) after their last use.
//! - self-preservation (an option here, off by default; on in Netflix): evictions happen only
//!   while the renewals of the last full minute exceed
//!   `floor(expected clients × 60 / 30 × 0.85)`; the expectation starts at 1 (Spring Cloud),
//!   goes up by one per new registration and down by one per cancel, and is reset to the
//!   registry size every 15 min when that size is above 85 % of it.
//!
//! [`Registry`]: super::Registry

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use syncer_plugin_eureka::keys;
use syncer_wire_eureka::{
    AMAZON_DC_CLASS, AMAZON_DC_NAME, DEFAULT_DC_CLASS, DEFAULT_RENEWAL_INTERVAL_SECS,
    MY_OWN_DC_NAME, STRING_FIELDS, UNKNOWN,
};

use super::{
    eureka_to_sc_status, sc_to_eureka_status, InstanceRecord, MicroService, Props, Registry,
};

/// How long a change stays in the delta (`retentionTimeInMSInDeltaQueue`, 180 s).
pub const DELTA_RETENTION: Duration = Duration::from_secs(180);
/// How long an unused status override is remembered (1 h).
pub const OVERRIDE_MEMORY: Duration = Duration::from_secs(3600);
/// Client renewal interval the self-preservation threshold assumes, seconds.
const EXPECTED_RENEWAL_SECS: u64 = 30;
/// Share of the expected renewals below which evictions stop (`renewalPercentThreshold`).
const RENEWAL_PERCENT_THRESHOLD: f64 = 0.85;
/// How often the expected client count is reset to the registry size.
const EXPECTATION_RESET: Duration = Duration::from_secs(15 * 60);
/// Width of one renewal-rate bucket.
const MINUTE: Duration = Duration::from_secs(60);

/// A delta action, as Eureka writes it in `actionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Registered (or re-registered, or its metadata updated).
    Added,
    /// Changed otherwise (status, override).
    Modified,
    /// Cancelled or expired.
    Deleted,
}

impl Action {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "ADDED",
            Action::Modified => "MODIFIED",
            Action::Deleted => "DELETED",
        }
    }
}

/// How the delta names an instance: (app name, instance id), one allocation shared by every
/// map that holds the instance (`seen`, `latest`, `recent`): a clone is a reference count.
/// Compares, hashes and orders as (app, id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key(Arc<(Box<str>, Box<str>)>);

impl Key {
    /// The key of instance `id` of app `app`.
    pub(crate) fn new(app: &str, id: &str) -> Key {
        Key(Arc::new((app.into(), id.into())))
    }

    /// The app name.
    pub(crate) fn app(&self) -> &str {
        &self.0 .0
    }

    /// The instance id.
    pub(crate) fn id(&self) -> &str {
        &self.0 .1
    }
}

/// A [`Key`] seen as (app, id) borrowed, so that a map keyed by [`Key`] is searched with
/// two `&str` and no key built.
pub(crate) trait KeyRef {
    /// (app name, instance id).
    fn parts(&self) -> (&str, &str);
}

impl KeyRef for Key {
    fn parts(&self) -> (&str, &str) {
        (self.app(), self.id())
    }
}

impl KeyRef for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn KeyRef + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyRef + 'a) {
        self
    }
}

impl PartialEq for dyn KeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyRef + '_ {}

impl PartialOrd for dyn KeyRef + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The order of [`Key`] itself (app, then id), as `Borrow` requires.
impl Ord for dyn KeyRef + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// What changes of a view are noticed: the record's last update time (moved by every
/// write, not by renewals), its registration time and the Eureka statuses
/// (`status`, `overriddenStatus`).
pub(crate) type Fingerprint = (i64, i64, Status, Status);

/// A Eureka status in a [`Fingerprint`]: Eureka's five (`InstanceInfo.InstanceStatus`) without
/// an allocation, any other text as given (a status set through the API is not checked
/// against the five everywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// One of [`KNOWN_STATUSES`], by its index there.
    Known(u8),
    /// Any other status text, behind a thin pointer: a `Status` is 16 bytes instead of 24,
    /// and the `seen` map holds one fingerprint (two statuses) per instance.
    #[allow(clippy::box_collection)]
    Other(Box<String>),
}

/// Eureka's instance statuses (`InstanceInfo.InstanceStatus`).
const KNOWN_STATUSES: [&str; 5] = ["UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"];

impl Status {
    /// The status `text`.
    pub(crate) fn of(text: &str) -> Status {
        match KNOWN_STATUSES.iter().position(|k| *k == text) {
            Some(at) => Status::Known(at as u8),
            None => Status::Other(Box::new(text.to_owned())),
        }
    }

    /// The status as text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Status::Known(at) => KNOWN_STATUSES
                .get(usize::from(*at))
                .copied()
                .unwrap_or(UNKNOWN),
            Status::Other(text) => text,
        }
    }
}

impl From<String> for Status {
    fn from(text: String) -> Status {
        Status::of(&text)
    }
}

/// The last record of a removed instance, kept until the next delta sync so that its
/// `DELETED` entry can show it.
#[derive(Debug)]
pub(crate) struct Removed {
    /// The `serviceName` of its microservice.
    pub(crate) service_name: String,
    /// The record as it was removed.
    pub(crate) record: InstanceRecord,
    /// Its status override at removal, if any.
    pub(crate) override_status: Option<String>,
}

/// The changes noted since the last delta sync ([`EurekaState::take_pending`]).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The instances touched, sorted.
    pub(crate) keys: Vec<Key>,
    /// Last records of the removed ones.
    pub(crate) removed: HashMap<Key, Removed>,
    /// Instance ids whose status override was forgotten (their `overriddenStatus` may
    /// change), app unknown.
    pub(crate) forgotten: Vec<String>,
}

/// One instance's change in a delta sync: its key, its fingerprint now (`None`: gone), and
/// when gone, its last view (boxed: a sync gathers one per instance touched, and most are
/// not removals, so an unboxed `View` of several hundred bytes would sit empty in each).
pub(crate) type Observed = (Key, Option<Fingerprint>, Option<Box<View>>);

/// The latest queued change of one instance.
#[derive(Debug)]
struct Latest {
    /// Sequence number of its queue entry.
    seq: u64,
    action: Action,
    /// The view at removal (`DELETED` only; the others are rendered when read). Boxed: most
    /// entries have none.
    view: Option<Box<View>>,
}

/// The Eureka-only state. See the module docs.
#[derive(Debug)]
pub struct EurekaState {
    /// Status overrides by instance id: (status, last use).
    overrides: HashMap<String, (String, Instant)>,
    /// The recently-changed queue, oldest first: (when, sequence number, instance).
    recent: VecDeque<(Instant, u64, Key)>,
    /// The latest queued change per (app, instance id) (what the delta shows). One flat
    /// map: a map per app would cost a B-tree node per app of one instance.
    latest: BTreeMap<Key, Latest>,
    /// Sequence number of the next queue entry.
    next_seq: u64,
    /// Fingerprints of the instances as of the last delta sync.
    seen: HashMap<Key, Fingerprint>,
    /// Number of instances per Eureka status as of the last delta sync (`apps__hashcode`).
    status_counts: BTreeMap<String, usize>,
    /// Instances touched since the last delta sync.
    dirty: HashSet<Key>,
    /// Instances removed since the last delta sync, with their last record.
    removed: HashMap<Key, Removed>,
    /// Instance ids whose override was forgotten since the last delta sync.
    forgotten: Vec<String>,
    /// Instances (app, id) registered through `/eureka` since the last sync: their change
    /// is `ADDED`, not `MODIFIED`.
    registered: HashSet<Key>,
    /// `versions__delta` of the delta document.
    version: u64,
    /// Whether self-preservation is on.
    self_preservation: bool,
    /// Expected number of renewing clients (the threshold's base).
    expected_clients: u64,
    /// When the expectation was last reset to the registry size.
    expectation_reset_at: Instant,
    /// Renewals counted in the current minute bucket, since `bucket_start`.
    renews_current: u64,
    /// Renewals of the last full minute.
    renews_last_minute: u64,
    bucket_start: Instant,
}

impl Default for EurekaState {
    fn default() -> Self {
        let now = Instant::now();
        EurekaState {
            overrides: HashMap::new(),
            recent: VecDeque::new(),
            latest: BTreeMap::new(),
            next_seq: 0,
            seen: HashMap::new(),
            status_counts: BTreeMap::new(),
            dirty: HashSet::new(),
            removed: HashMap::new(),
            forgotten: Vec::new(),
            registered: HashSet::new(),
            version: 1,
            self_preservation: false,
            expected_clients: 1,
            expectation_reset_at: now,
            renews_current: 0,
            renews_last_minute: 0,
            bucket_start: now,
        }
    }
}

impl EurekaState {
    /// Turns self-preservation on or off.
    pub fn set_self_preservation(&mut self, on: bool) {
        self.self_preservation = on;
    }

    /// Whether self-preservation is on.
    pub fn self_preservation(&self) -> bool {
        self.self_preservation
    }

    /// The status override of instance `id`, if any (and marks it used).
    pub fn override_of(&mut self, id: &str, now: Instant) -> Option<String> {
        self.overrides.get_mut(id).map(|(s, used)| {
            *used = now;
            s.clone()
        })
    }

    /// Remembers a status override for instance `id`.
    pub fn set_override(&mut self, id: &str, status: &str, now: Instant) {
        self.overrides
            .insert(id.to_owned(), (status.to_owned(), now));
    }

    /// The status override of instance `id`, if any (not marked used).
    pub fn override_status(&self, id: &str) -> Option<&str> {
        self.overrides.get(id).map(|(s, _)| s.as_str())
    }

    /// Forgets the status override of instance `id`; returns it.
    pub fn remove_override(&mut self, id: &str) -> Option<String> {
        self.overrides.remove(id).map(|(s, _)| s)
    }

    /// The overrides as a map, for rendering `overriddenStatus` of instances that have no
    /// Eureka side record (registered through `/v4`).
    pub fn overrides(&self) -> BTreeMap<&str, &str> {
        self.overrides
            .iter()
            .map(|(k, (s, _))| (k.as_str(), s.as_str()))
            .collect()
    }

    /// Notes a register through `/eureka` (its change shows as `ADDED`); `new` when the
    /// instance was not registered before (the self-preservation expectation grows).
    pub fn note_registered(&mut self, app: &str, id: &str, new: bool) {
        self.registered.insert(Key::new(app, id));
        if new {
            self.expected_clients += 1;
        }
    }

    /// Notes a cancel through `/eureka`: the expectation shrinks, the override goes.
    pub fn note_cancelled(&mut self, id: &str) {
        self.expected_clients = self.expected_clients.saturating_sub(1);
        self.overrides.remove(id);
    }

    /// Counts one renewal for the self-preservation rate.
    pub fn note_renewed(&mut self, now: Instant) {
        self.rotate(now);
        self.renews_current += 1;
    }

    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.bucket_start);
        if elapsed >= MINUTE {
            // A gap of more than one minute means the last full minute had no renewals.
            self.renews_last_minute = if elapsed >= 2 * MINUTE {
                0
            } else {
                self.renews_current
            };
            self.renews_current = 0;
            self.bucket_start = now;
        }
    }

    /// The renewals per minute below which evictions stop (Netflix
    /// `numberOfRenewsPerMinThreshold`).
    pub fn renewal_threshold(&self) -> u64 {
        let per_client = 60.0 / EXPECTED_RENEWAL_SECS as f64;
        (self.expected_clients as f64 * per_client * RENEWAL_PERCENT_THRESHOLD).floor() as u64
    }

    /// Whether leases may be evicted now: always without self-preservation; with it, only
    /// while the last minute's renewals exceed a positive threshold.
    pub fn evictions_allowed(&mut self, now: Instant) -> bool {
        if !self.self_preservation {
            return true;
        }
        self.rotate(now);
        let threshold = self.renewal_threshold();
        let allowed = threshold > 0 && self.renews_last_minute > threshold;
        if !allowed {
            tracing::debug!(
                renews_last_minute = self.renews_last_minute,
                threshold,
                "eureka self-preservation holds evictions back"
            );
        }
        allowed
    }

    /// Notes that instance `id` of Eureka app `app` may have changed (called by the
    /// registry at every mutation point; O(1)).
    pub(crate) fn touch(&mut self, app: &str, id: &str) {
        self.dirty.insert(Key::new(app, id));
    }

    /// Notes that instance `record` of Eureka app `app` (microservice `service_name`) was
    /// removed; its record is kept until the next delta sync for its `DELETED` entry.
    pub(crate) fn removed(&mut self, app: &str, service_name: &str, record: InstanceRecord) {
        let key = Key::new(app, &record.body.instance_id);
        let override_status = self
            .overrides
            .get(key.id())
            .map(|(status, _)| status.clone());
        self.dirty.insert(key.clone());
        self.removed.insert(
            key,
            Removed {
                service_name: service_name.to_owned(),
                record,
                override_status,
            },
        );
    }

    /// Whether anything was noted since the last delta sync.
    pub(crate) fn has_pending(&self) -> bool {
        !self.dirty.is_empty() || !self.forgotten.is_empty()
    }

    /// Takes what was noted since the last delta sync.
    pub(crate) fn take_pending(&mut self) -> Pending {
        let mut keys: Vec<Key> = self.dirty.drain().collect();
        keys.sort();
        Pending {
            keys,
            removed: std::mem::take(&mut self.removed),
            forgotten: std::mem::take(&mut self.forgotten),
        }
    }

    /// Whether instance `key` was present at the last delta sync.
    pub(crate) fn was_present(&self, key: &Key) -> bool {
        self.seen.contains_key(key)
    }

    /// Periodic upkeep: forgets stale overrides (their instances are re-checked at the next
    /// delta sync) and old delta entries, and resets the self-preservation expectation to
    /// the registry size every 15 min.
    pub fn sweep(&mut self, now: Instant) {
        let forgotten = &mut self.forgotten;
        self.overrides.retain(|id, (_, used)| {
            let keep = now.saturating_duration_since(*used) < OVERRIDE_MEMORY;
            if !keep {
                forgotten.push(id.clone());
            }
            keep
        });
        let mut popped = false;
        while self
            .recent
            .front()
            .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= DELTA_RETENTION)
        {
            let Some((_, seq, key)) = self.recent.pop_front() else {
                break;
            };
            popped = true;
            if self.latest.get(&key).is_some_and(|l| l.seq == seq) {
                self.latest.remove(&key);
            }
        }
        if popped {
            self.version += 1;
        }
        if now.saturating_duration_since(self.expectation_reset_at) >= EXPECTATION_RESET {
            self.expectation_reset_at = now;
            let size = self.seen.len() as u64;
            if !self.self_preservation
                || size as f64 > RENEWAL_PERCENT_THRESHOLD * self.expected_clients as f64
            {
                self.expected_clients = size;
            }
        }
    }

    /// Applies one delta sync: per touched instance, its fingerprint now (`None` when
    /// gone) and, when gone, its last view. Queues `ADDED` for a new instance (or a changed
    /// one registered through `/eureka` since), `MODIFIED` for another change, `DELETED` for
    /// a removal; nothing when the fingerprint is unchanged. `versions__delta` moves once
    /// if anything was queued. O(changes).
    pub(crate) fn track(&mut self, now: Instant, observed: Vec<Observed>) {
        let mut changed = false;
        for (key, current, gone) in observed {
            // One allocation per instance: reuse the key `seen` holds, if any.
            let key = match self.seen.get_key_value(&key) {
                Some((held, _)) => held.clone(),
                None => key,
            };
            let action = match (self.seen.get(&key), &current) {
                (None, None) => None,
                (None, Some(_)) => Some(Action::Added),
                (Some(old), Some(new)) if old != new => Some(if self.registered.contains(&key) {
                    Action::Added
                } else {
                    Action::Modified
                }),
                (Some(_), Some(_)) => None,
                (Some(_), None) => Some(Action::Deleted),
            };
            let Some(action) = action else {
                continue;
            };
            changed = true;
            let old = match current {
                Some(fp) => {
                    count(&mut self.status_counts, fp.2.as_str(), true);
                    self.seen.insert(key.clone(), fp)
                }
                None => self.seen.remove(&key),
            };
            if let Some(old) = old {
                count(&mut self.status_counts, old.2.as_str(), false);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.recent.push_back((now, seq, key.clone()));
            let view = if action == Action::Deleted {
                gone
            } else {
                None
            };
            self.latest.insert(key, Latest { seq, action, view });
        }
        if changed {
            self.version += 1;
        }
        self.registered.clear();
    }

    /// The last action queued for (app, id), `ADDED` when none is (what a full fetch shows
    /// as `actionType`).
    pub fn last_action(&self, app: &str, id: &str) -> Action {
        self.latest
            .get(&(app, id) as &dyn KeyRef)
            .map_or(Action::Added, |l| l.action)
    }

    /// The delta, by app name then instance id: (app, id, latest action, the view at
    /// removal for `DELETED`); the others are rendered by the caller from the registry.
    pub(crate) fn delta(&self) -> impl Iterator<Item = (&str, &str, Action, Option<&View>)> {
        self.latest
            .iter()
            .map(|(key, l)| (key.app(), key.id(), l.action, l.view.as_deref()))
    }

    /// `versions__delta`.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// `apps__hashcode` of the registry as of the last delta sync (eureka-notes §4.5):
    /// `STATUS_COUNT_` per status, statuses by name, from the maintained counters.
    pub(crate) fn hashcode(&self) -> String {
        syncer_wire_eureka::hashcode_of_counts(&self.status_counts)
    }
}

/// Adds (`up`) or removes one instance of `status` in `counts` (no zero entries kept).
fn count(counts: &mut BTreeMap<String, usize>, status: &str, up: bool) {
    if up {
        match counts.get_mut(status) {
            Some(n) => *n += 1,
            None => {
                counts.insert(status.to_owned(), 1);
            }
        }
    } else if let Some(n) = counts.get_mut(status) {
        *n -= 1;
        if *n == 0 {
            counts.remove(status);
        }
    }
}

// ---- the Eureka view of a stored instance (moved from the HTTP layer) ---------

/// Every field a Eureka instance document carries, resolved from the SC record.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) instance_id: String,
    pub(crate) host_name: String,
    pub(crate) app: String,
    pub(crate) ip_addr: String,
    pub(crate) sid: Option<String>,
    pub(crate) status: String,
    pub(crate) overridden_status: String,
    pub(crate) port: (i64, bool),
    pub(crate) secure_port: (i64, bool),
    pub(crate) country_id: i64,
    pub(crate) dc_class: String,
    pub(crate) dc_name: String,
    pub(crate) dc_metadata: Props,
    pub(crate) renewal_secs: i64,
    pub(crate) duration_secs: u64,
    pub(crate) registration_ms: i64,
    pub(crate) last_renewal_ms: i64,
    pub(crate) metadata: Props,
    pub(crate) strings: BTreeMap<&'static str, String>,
    pub(crate) last_updated_ms: i64,
    pub(crate) last_dirty_ms: i64,
    /// `actionType`.
    pub(crate) action: &'static str,
}

/// Host and port of the first `rest://` or `http(s)://` endpoint; (host, port, ssl).
pub(crate) fn endpoint_addr(endpoints: &[String]) -> Option<(String, i64, bool)> {
    endpoints.iter().find_map(|e| {
        let rest = e
            .strip_prefix("rest://")
            .or_else(|| e.strip_prefix("http://"))
            .or_else(|| e.strip_prefix("https://"))?;
        let ssl = e.starts_with("https://") || e.contains("sslEnabled=true");
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (h, p.parse().ok()?),
            _ => (authority, if ssl { 443 } else { 80 }),
        };
        Some((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            ssl,
        ))
    })
}

#[cfg(test)]
thread_local! {
    /// Instance views built on this thread (tests count them).
    pub(crate) static VIEWS_BUILT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(crate) fn view(service: &MicroService, rec: &InstanceRecord) -> View {
    #[cfg(test)]
    VIEWS_BUILT.with(|n| n.set(n.get() + 1));
    let b = &rec.body;
    let sc_status = b.status.as_str();
    let renewal_secs = b
        .health_check
        .as_ref()
        .map(|h| h.interval)
        .filter(|i| *i > 0)
        .unwrap_or(i64::from(DEFAULT_RENEWAL_INTERVAL_SECS));
    // Reserved `eureka.*` properties carry Eureka-only fields through service-center (the
    // eureka plugin's `keys`); they are fields here, not metadata.
    let (reserved, metadata): (Props, Props) = b
        .properties
        .clone()
        .into_iter()
        .partition(|(k, _)| k.starts_with(keys::PREFIX));
    let mut v = View {
        instance_id: b.instance_id.clone(),
        host_name: b.host_name.clone(),
        app: service.service_name.to_ascii_uppercase(),
        ip_addr: String::new(),
        sid: None,
        status: sc_to_eureka_status(sc_status).to_string(),
        overridden_status: UNKNOWN.into(),
        port: (80, true),
        secure_port: (443, false),
        country_id: 1,
        dc_class: DEFAULT_DC_CLASS.into(),
        dc_name: MY_OWN_DC_NAME.into(),
        dc_metadata: Props::new(),
        renewal_secs,
        duration_secs: rec.ttl_secs,
        registration_ms: rec.registered_ms,
        last_renewal_ms: rec.renewed_ms,
        metadata,
        strings: BTreeMap::new(),
        last_updated_ms: rec.updated_ms,
        last_dirty_ms: rec.updated_ms,
        action: "ADDED",
    };
    match &rec.eureka {
        Some(side) => {
            v.ip_addr = side.ip_addr.clone();
            v.sid = side.sid.clone();
            if eureka_to_sc_status(&side.status) == sc_status {
                v.status = side.status.clone();
            }
            v.overridden_status = side.overridden_status.clone();
            v.port = side.port;
            v.secure_port = side.secure_port;
            v.country_id = side.country_id;
            v.dc_class = side.dc_class.clone();
            v.dc_name = side.dc_name.clone();
            v.dc_metadata = side.dc_metadata.clone();
            v.renewal_secs = side.renewal_interval_secs;
            v.strings = side.strings.clone();
            v.last_dirty_ms = side.last_dirty_ms;
        }
        None => {
            let all: Vec<(String, i64, bool)> = all_endpoint_addrs(&b.endpoints);
            let http = all.iter().find(|e| !e.2);
            let https = all.iter().find(|e| e.2);
            let kept = |key: &str, default: i64| {
                reserved
                    .get(key)
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(default)
            };
            v.port = match http {
                Some(e) => (e.1, true),
                None => (kept(keys::PORT, 80), false),
            };
            v.secure_port = match https {
                Some(e) => (e.1, true),
                None => (kept(keys::SECURE_PORT, 443), false),
            };
            let host = http
                .or(https)
                .map(|e| e.0.clone())
                .unwrap_or_else(|| b.host_name.clone());
            if let Some(e) = http.or(https) {
                let scheme = if e.2 { "https" } else { "http" };
                let h = if e.0.contains(':') {
                    format!("[{}]", e.0)
                } else {
                    e.0.clone()
                };
                v.strings
                    .insert("homePageUrl", format!("{scheme}://{h}:{}/", e.1));
            }
            if let Some(url) = b
                .health_check
                .as_ref()
                .map(|h| h.url.clone())
                .filter(|u| !u.is_empty())
            {
                v.strings.insert("healthCheckUrl", url);
            }
            let name = service.service_name.to_ascii_lowercase();
            if !reserved.contains_key(keys::VIP_ADDRESS)
                && !reserved.contains_key(keys::SECURE_VIP_ADDRESS)
            {
                v.strings.insert("vipAddress", name.clone());
                v.strings.insert("secureVipAddress", name);
            }
            for (field, key) in keys::STRING_FIELDS {
                if let (Some(val), Some(f)) = (
                    reserved.get(key),
                    STRING_FIELDS.iter().find(|f| **f == *field),
                ) {
                    v.strings.insert(*f, val.to_owned());
                }
            }
            if let Some(s) = reserved.get(keys::OVERRIDDEN_STATUS) {
                v.overridden_status = s.to_owned();
            }
            if let Some(h) = reserved.get(keys::HOST_NAME) {
                v.host_name = h.to_owned();
            }
            v.country_id = kept(keys::COUNTRY_ID, 1);
            if let Some(n) = reserved.get(keys::DATA_CENTER_NAME) {
                v.dc_name = n.to_owned();
            }
            if let Some(c) = reserved.get(keys::DATA_CENTER_CLASS) {
                v.dc_class = c.to_owned();
            } else if v.dc_name == AMAZON_DC_NAME {
                v.dc_class = AMAZON_DC_CLASS.into();
            }
            v.dc_metadata = reserved
                .iter()
                .filter_map(|(k, val)| {
                    k.strip_prefix(keys::DATA_CENTER_METADATA_PREFIX)
                        .map(|k| (k.to_owned(), val.to_owned()))
                })
                .collect();
            v.ip_addr = host;
        }
    }
    v
}

/// The fingerprint of the view of `rec` (`override_status`: the instance's status
/// override, used when it has no Eureka side record, as in [`find_view`]), computed without
/// building the view: the same fields [`view`] resolves.
pub(crate) fn record_fingerprint(
    rec: &InstanceRecord,
    override_status: Option<&str>,
) -> Fingerprint {
    let sc = rec.body.status.as_str();
    let (status, overridden) = match &rec.eureka {
        Some(side) => (
            if eureka_to_sc_status(&side.status) == sc {
                side.status.as_str()
            } else {
                sc_to_eureka_status(sc)
            },
            side.overridden_status.as_str(),
        ),
        None => (
            sc_to_eureka_status(sc),
            override_status.unwrap_or_else(|| {
                rec.body
                    .properties
                    .get(keys::OVERRIDDEN_STATUS)
                    .unwrap_or(UNKNOWN)
            }),
        ),
    };
    (
        rec.updated_ms,
        rec.registered_ms,
        Status::of(status),
        Status::of(overridden),
    )
}

/// Host, port and ssl of every `rest://` or `http(s)://` endpoint, in order.
pub(crate) fn all_endpoint_addrs(endpoints: &[String]) -> Vec<(String, i64, bool)> {
    endpoints
        .iter()
        .filter_map(|e| endpoint_addr(std::slice::from_ref(e)))
        .collect()
}

/// The Eureka views of the registry's apps, by app name, with the status overrides of
/// instances that have no Eureka side record and each instance's last delta action.
pub(crate) fn current_views(reg: &Registry) -> Vec<(String, Vec<View>)> {
    let overrides = reg.eureka.overrides();
    reg.eureka_apps()
        .into_iter()
        .map(|(name, list)| {
            let list = list
                .into_iter()
                .map(|(s, r)| {
                    let mut v = view(s, r);
                    if r.eureka.is_none() {
                        if let Some(o) = overrides.get(v.instance_id.as_str()) {
                            v.overridden_status = (*o).to_string();
                        }
                    }
                    v.action = reg.eureka.last_action(&name, &v.instance_id).as_str();
                    v
                })
                .collect();
            (name, list)
        })
        .collect()
}

/// Brings the delta queue up to date with the registry: O(instances touched since the last
/// call), whichever API touched them (the registry notes every mutation in
/// `EurekaState::touch`/`removed`); a no-op when nothing was.
pub(crate) fn sync_delta(reg: &mut Registry, now: Instant) {
    if !reg.eureka.has_pending() {
        return;
    }
    let mut pending = reg.eureka.take_pending();
    let mut keys = std::mem::take(&mut pending.keys);
    for id in &pending.forgotten {
        if let Some((s, _)) = reg.eureka_instance_any(id) {
            keys.push(Key::new(&s.service_name.to_ascii_uppercase(), id));
        }
    }
    let observed = keys
        .into_iter()
        .map(|key| {
            let current = reg
                .eureka_instance(key.app(), key.id())
                .map(|(_, r)| record_fingerprint(r, reg.eureka.override_status(key.id())));
            let gone = match (&current, pending.removed.remove(&key)) {
                (None, Some(r)) if reg.eureka.was_present(&key) => Some(Box::new(removed_view(r))),
                _ => None,
            };
            (key, current, gone)
        })
        .collect();
    reg.eureka.track(now, observed);
}

/// The last view of a removed instance (for its `DELETED` entry).
pub(crate) fn removed_view(r: Removed) -> View {
    let service = MicroService {
        service_name: r.service_name,
        ..MicroService::default()
    };
    let mut v = view(&service, &r.record);
    if r.record.eureka.is_none() {
        if let Some(o) = r.override_status {
            v.overridden_status = o;
        }
    }
    v.action = Action::Deleted.as_str();
    v
}

/// Periodic upkeep (the core's expiry task, every second): the delta queue follows the
/// registry, old entries and stale overrides go.
pub(crate) fn tick(reg: &mut Registry, now: Instant) {
    sync_delta(reg, now);
    reg.eureka.sweep(now);
}

/// `apps__hashcode` (eureka-notes §4.5): `STATUS_COUNT_` per status, statuses by name.
pub(crate) fn hashcode<'a>(views: impl IntoIterator<Item = &'a View>) -> String {
    syncer_wire_eureka::hashcode(views.into_iter().map(|v| v.status.as_str()))
}

/// The current view of instance `id` of `app` (any app when `None`), read live.
pub(crate) fn find_view(reg: &Registry, app: Option<&str>, id: &str) -> Option<View> {
    let found = match app {
        Some(app) => reg.eureka_instance(app, id),
        None => reg.eureka_instance_any(id),
    };
    let (s, r) = found?;
    let mut v = view(s, r);
    if r.eureka.is_none() {
        if let Some(o) = reg.eureka.override_status(id) {
            v.overridden_status = o.to_owned();
        }
    }
    v.action = reg.eureka.last_action(&v.app, id).as_str();
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_preservation_holds_evictions_back_until_renewals_exceed_the_threshold() {
        let start = Instant::now();
        let mut state = EurekaState::default();
        // Off (the default): evictions always allowed.
        assert!(state.evictions_allowed(start));
        state.set_self_preservation(true);
        // Expected 1 (Spring Cloud's seed) + 2 registrations = 3 clients: threshold
        // floor(3 × 2 × 0.85) = 5 renewals a minute.
        state.note_registered("A", "a1", true);
        state.note_registered("A", "a2", true);
        assert_eq!(state.renewal_threshold(), 5);
        assert!(!state.evictions_allowed(start));
        for _ in 0..6 {
            state.note_renewed(start + Duration::from_secs(1));
        }
        // Counted in the current minute; the last full minute still had none.
        assert!(!state.evictions_allowed(start + Duration::from_secs(2)));
        assert!(state.evictions_allowed(start + Duration::from_secs(61)));
        // A silent minute after that: held back again.
        assert!(!state.evictions_allowed(start + Duration::from_secs(200)));
        state.note_cancelled("a1");
        assert_eq!(state.renewal_threshold(), 3);
    }

    #[test]
    fn overrides_and_delta_entries_are_forgotten_in_time() {
        let start = Instant::now();
        let mut state = EurekaState::default();
        state.set_override("i", "OUT_OF_SERVICE", start);
        state.sweep(start + Duration::from_secs(10));
        assert_eq!(
            state.override_of("i", start + Duration::from_secs(10)),
            Some("OUT_OF_SERVICE".into())
        );
        state.sweep(start + OVERRIDE_MEMORY + Duration::from_secs(10));
        assert_eq!(state.override_of("i", start), None);
    }

    #[test]
    fn delta_entries_are_kept_per_app_and_id_in_order_until_retention_ends() {
        let start = Instant::now();
        let mut state = EurekaState::default();
        let fp = |status: &str| Some((1, 1, Status::of(status), Status::of("UNKNOWN")));
        let key = Key::new;
        state.track(
            start,
            vec![
                (key("B", "1"), fp("UP"), None),
                (key("A", "2"), fp("UP"), None),
                (key("A", "1"), fp("UP"), None),
            ],
        );
        // The same id in another app is another entry.
        state.track(
            start + Duration::from_secs(1),
            vec![(key("A", "1"), fp("DOWN"), None)],
        );
        let delta: Vec<_> = state.delta().map(|(app, id, a, _)| (app, id, a)).collect();
        assert_eq!(
            delta,
            [
                ("A", "1", Action::Modified),
                ("A", "2", Action::Added),
                ("B", "1", Action::Added),
            ]
        );
        assert_eq!(state.last_action("A", "1"), Action::Modified);
        assert_eq!(state.last_action("B", "1"), Action::Added);
        assert_eq!(state.last_action("B", "2"), Action::Added);
        // The first sync's entries leave after the retention; A/1's later one stays.
        state.sweep(start + DELTA_RETENTION);
        let delta: Vec<_> = state.delta().map(|(app, id, a, _)| (app, id, a)).collect();
        assert_eq!(delta, [("A", "1", Action::Modified)]);
        state.sweep(start + DELTA_RETENTION + Duration::from_secs(1));
        assert_eq!(state.delta().count(), 0);
    }
}
