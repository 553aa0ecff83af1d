//! The WebSocket watchers' places and wake-ups ([`Core::watcher`](super::Core::watcher)):
//! at most [`MAX_WATCHERS`] (or the configured number) at once, and one task per core that
//! reads the change log once per revision and wakes only the watchers of the services that
//! changed, so a change costs O(changes + watchers woken), not O(watchers).
//!
//! A watcher says which services it follows ([`Watcher::follow`]) under the registry lock,
//! in the same critical section as its read, and the wake-up task looks at who follows what
//! after reading the log under that lock: a change after a watcher's read is seen by the task
//! later and finds the watcher following. Every watcher is woken when the task cannot tell
//! what changed: a service changed (providers resolve again), a revision without a log entry
//! (dependency rules, tags, ...), or the log no longer reaching back to the task's revision.
//! A wake-up is a permit ([`Notify`]), so one sent while the watcher is busy is not lost.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::servicecenter::registry::changelog::Changed;
use crate::servicecenter::registry::Registry;

/// WebSocket watchers (`.../watcher`, `.../listwatcher`) open at once by default
/// (`syncer servicecenter --max-watchers`, `syncer daemon --builtin-max-watchers`).
pub const MAX_WATCHERS: usize = 1_000;

/// The watchers of one core: their places and who follows which service.
pub(super) struct Watchers {
    slots: Arc<Semaphore>,
    max: usize,
    hub: Arc<Hub>,
}

impl Watchers {
    pub(super) fn new(max: usize) -> Watchers {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Watchers {
            slots: Arc::new(Semaphore::new(max)),
            max,
            hub: Arc::default(),
        }
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// A new watcher of `registry`, `None` when all places are taken. Starts the wake-up
    /// task on first use (it ends with the registry).
    pub(super) fn join(&self, registry: &Arc<Mutex<Registry>>) -> Option<Watcher> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        if !self.hub.running.swap(true, Ordering::AcqRel) {
            // Subscribed here, before this watcher's first read: the task sees every later
            // change (subscribed in the task, a change before its first poll would wake no one).
            let (revisions, seen) = {
                let reg = registry.lock().unwrap_or_else(|e| e.into_inner());
                (reg.changes.subscribe(), reg.revision())
            };
            tokio::spawn(wake_ups(
                self.hub.clone(),
                Arc::downgrade(registry),
                revisions,
                seen,
            ));
        }
        let wake = Arc::new(Notify::new());
        let mut state = self.hub.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.watchers.insert(
            id,
            Follower {
                wake: wake.clone(),
                services: BTreeSet::new(),
            },
        );
        drop(state);
        Some(Watcher {
            id,
            wake,
            hub: self.hub.clone(),
            _slot: slot,
        })
    }
}

impl Default for Watchers {
    fn default() -> Watchers {
        Watchers::new(MAX_WATCHERS)
    }
}

/// One open watcher: its place, and its wake-ups; it leaves when dropped.
pub struct Watcher {
    id: u64,
    wake: Arc<Notify>,
    hub: Arc<Hub>,
    _slot: OwnedSemaphorePermit,
}

impl Watcher {
    /// Follows exactly `services` from now on. Call it under the registry lock, in the
    /// section that read the registry for these services (see the module docs).
    pub fn follow<'a>(&self, services: impl IntoIterator<Item = &'a String>) {
        let services: BTreeSet<String> = services.into_iter().cloned().collect();
        let mut state = self.hub.lock();
        let HubState {
            watchers,
            by_service,
            ..
        } = &mut *state;
        let Some(me) = watchers.get_mut(&self.id) else {
            return;
        };
        for gone in me.services.difference(&services) {
            if let Some(ids) = by_service.get_mut(gone) {
                ids.remove(&self.id);
                if ids.is_empty() {
                    by_service.remove(gone);
                }
            }
        }
        for new in services.difference(&me.services) {
            by_service.entry(new.clone()).or_default().insert(self.id);
        }
        me.services = services;
    }

    /// Waits for a wake-up: something this watcher follows may have changed.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(me) = state.watchers.remove(&self.id) {
            for s in &me.services {
                if let Some(ids) = state.by_service.get_mut(s) {
                    ids.remove(&self.id);
                    if ids.is_empty() {
                        state.by_service.remove(s);
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Hub {
    running: AtomicBool,
    state: Mutex<HubState>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct HubState {
    next_id: u64,
    watchers: HashMap<u64, Follower>,
    /// serviceId → the watchers that follow it.
    by_service: HashMap<String, HashSet<u64>>,
}

struct Follower {
    wake: Arc<Notify>,
    services: BTreeSet<String>,
}

/// Which watchers a change from revision `since` to now wakes: `None` for all of them.
fn changed_services(reg: &Registry, since: u64) -> Option<HashSet<String>> {
    let now = reg.revision();
    let entries = reg.changelog.entries_since(since)?;
    let mut revisions = HashSet::new();
    let mut services = HashSet::new();
    for (revision, what) in entries {
        revisions.insert(revision);
        match what {
            Changed::Service { .. } => return None,
            Changed::Instance { service_id, .. } => {
                services.insert(service_id.clone());
            }
        }
    }
    // A revision without an entry changed something the log does not name.
    let logged = revisions
        .iter()
        .filter(|r| **r > since && **r <= now)
        .count();
    (u64::try_from(logged).ok()? >= now.saturating_sub(since)).then_some(services)
}

/// The wake-up task: after each revision bump after `seen`, wakes the watchers of what
/// changed.
async fn wake_ups(
    hub: Arc<Hub>,
    registry: Weak<Mutex<Registry>>,
    mut revisions: tokio::sync::watch::Receiver<u64>,
    mut seen: u64,
) {
    // Ends when the registry (and with it the change feed) is dropped.
    while revisions.changed().await.is_ok() {
        let Some(reg) = registry.upgrade() else {
            return;
        };
        let changed = {
            let reg = reg.lock().unwrap_or_else(|e| e.into_inner());
            let changed = changed_services(&reg, seen);
            seen = reg.revision();
            changed
        };
        drop(reg);
        let state = hub.lock();
        match changed {
            None => state.watchers.values().for_each(|w| w.wake.notify_one()),
            Some(services) => {
                let mut woken = HashSet::new();
                for s in &services {
                    for id in state.by_service.get(s).into_iter().flatten() {
                        if woken.insert(*id) {
                            if let Some(w) = state.watchers.get(id) {
                                w.wake.notify_one();
                            }
                        }
                    }
                }
            }
        }
    }
}
