//! Eureka-only registry state of the built-in core, kept beside the shared [`Registry`]
//! (`registry.rs`) as one of its fields so that it changes under the same lock: the
//! recently-changed queue behind `GET /apps/delta`, the status overrides of
//! `PUT .../status`, and the self-preservation counters.
//!
//! Where it sits: `eureka.rs` (the HTTP surface) renders the registry's instances as Eureka
//! views and feeds them here ([`EurekaState::track`]); every change of an instance's view since
//! the last call, whichever API made it (Eureka, service-center v4, lease expiry), becomes a
//! delta entry. This is level-triggered, like the rest of the daemon: nothing has to remember to
//! call a hook on each mutation path.
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
//! [`Registry`]: super::registry::Registry

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::eureka::View;

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

/// One app of the delta document: its name and (latest action, view) per instance.
pub(crate) type DeltaApp = (String, Vec<(Action, View)>);

/// One entry of the recently-changed queue: the instance's view right after the change.
#[derive(Debug, Clone)]
struct Change {
    at: Instant,
    action: Action,
    view: View,
}

/// What changes of a view are noticed: the record's last update time (moved by every
/// write, not by renewals) and the Eureka statuses.
type Fingerprint = (i64, i64, String, String);

fn fingerprint(v: &View) -> Fingerprint {
    (
        v.last_updated_ms,
        v.registration_ms,
        v.status.clone(),
        v.overridden_status.clone(),
    )
}

/// The Eureka-only state. See the module docs.
#[derive(Debug)]
pub struct EurekaState {
    /// Status overrides by instance id: (status, last use).
    overrides: HashMap<String, (String, Instant)>,
    /// The recently-changed queue, oldest first.
    recent: VecDeque<Change>,
    /// The views seen at the last [`EurekaState::track`], by (app, instance id).
    seen: HashMap<(String, String), (Fingerprint, View)>,
    /// The registry revision of the last [`EurekaState::track`] (nothing to do if unchanged).
    seen_revision: Option<u64>,
    /// Instances (app, id) registered through `/eureka` since the last track: their change
    /// is `ADDED`, not `MODIFIED`.
    registered: HashSet<(String, String)>,
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
            seen: HashMap::new(),
            seen_revision: None,
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
        self.registered.insert((app.to_owned(), id.to_owned()));
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

    /// Periodic upkeep: forgets stale overrides and old delta entries, and resets the
    /// self-preservation expectation to `registry_size` every 15 min.
    pub fn sweep(&mut self, now: Instant, registry_size: usize) {
        self.overrides
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < OVERRIDE_MEMORY);
        let before = self.recent.len();
        while self
            .recent
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.at) >= DELTA_RETENTION)
        {
            self.recent.pop_front();
        }
        if self.recent.len() != before {
            self.version += 1;
        }
        if now.saturating_duration_since(self.expectation_reset_at) >= EXPECTATION_RESET {
            self.expectation_reset_at = now;
            let size = registry_size as u64;
            if !self.self_preservation
                || size as f64 > RENEWAL_PERCENT_THRESHOLD * self.expected_clients as f64
            {
                self.expected_clients = size;
            }
        }
    }

    /// Whether [`EurekaState::track`] has already seen registry revision `revision`.
    pub fn is_tracked(&self, revision: u64) -> bool {
        self.seen_revision == Some(revision)
    }

    /// Compares the current views (`apps`: app name → views) with the ones seen last time
    /// and queues a delta entry per difference; `revision` is the registry revision they were
    /// taken at.
    pub(crate) fn track(&mut self, now: Instant, revision: u64, apps: &[(String, Vec<View>)]) {
        let mut current: HashMap<(String, String), (Fingerprint, View)> = HashMap::new();
        let mut changed = false;
        for (app, views) in apps {
            for v in views {
                let key = (app.clone(), v.instance_id.clone());
                let fp = fingerprint(v);
                let action = match self.seen.get(&key) {
                    None => Some(Action::Added),
                    Some((old, _)) if *old != fp => Some(if self.registered.contains(&key) {
                        Action::Added
                    } else {
                        Action::Modified
                    }),
                    Some(_) => None,
                };
                if let Some(action) = action {
                    self.recent.push_back(Change {
                        at: now,
                        action,
                        view: v.clone(),
                    });
                    changed = true;
                }
                current.insert(key, (fp, v.clone()));
            }
        }
        for (key, (_, view)) in &self.seen {
            if !current.contains_key(key) {
                self.recent.push_back(Change {
                    at: now,
                    action: Action::Deleted,
                    view: view.clone(),
                });
                changed = true;
            }
        }
        if changed {
            self.version += 1;
        }
        self.seen = current;
        self.registered.clear();
        self.seen_revision = Some(revision);
    }

    /// The last action recorded for (app, id), `ADDED` when none is queued (what a full
    /// fetch shows as `actionType`).
    pub fn last_action(&self, app: &str, id: &str) -> Action {
        self.recent
            .iter()
            .rev()
            .find(|c| c.view.app == app && c.view.instance_id == id)
            .map_or(Action::Added, |c| c.action)
    }

    /// The delta: per app (by name), one view per instance id with its latest action, and
    /// `versions__delta`.
    pub(crate) fn delta(&self) -> (Vec<DeltaApp>, u64) {
        let mut latest: BTreeMap<(&str, &str), (Action, &View)> = BTreeMap::new();
        for c in &self.recent {
            latest.insert(
                (c.view.app.as_str(), c.view.instance_id.as_str()),
                (c.action, &c.view),
            );
        }
        let mut apps: Vec<DeltaApp> = Vec::new();
        for ((app, _), (action, view)) in latest {
            match apps.last_mut() {
                Some((name, list)) if name == app => list.push((action, view.clone())),
                _ => apps.push((app.to_owned(), vec![(action, view.clone())])),
            }
        }
        (apps, self.version)
    }
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
        state.sweep(start + Duration::from_secs(10), 0);
        assert_eq!(
            state.override_of("i", start + Duration::from_secs(10)),
            Some("OUT_OF_SERVICE".into())
        );
        state.sweep(start + OVERRIDE_MEMORY + Duration::from_secs(10), 0);
        assert_eq!(state.override_of("i", start), None);
    }
}
