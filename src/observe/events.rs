//! The event log: every write the syncer makes to its registry, with its reason.
//!
//! Each register, unregister, expiry and failed write of the importer becomes one [`Event`]:
//! logged as one line (INFO, WARN for a failure), kept in a ring of the last
//! [`EVENTS_KEPT`] (`GET /v1/syncer/events`), and sent to live followers (the dashboard's
//! server-sent events). Per service, the time of the last change and the last error are
//! kept too, for `GET /v1/syncer/services` (at most [`SERVICES_KEPT`] services).
//!
//! Reasons answer "why did it write that": the origin changed, the origin is gone, its
//! cluster's grace period is over, the registry lost (expired) the copy, a duplicate copy
//! was found, or a filter stopped matching (DESIGN.md decision 13).
//!
//! A daemon in dry run (`--dry-run`) records the writes it would make, marked
//! [`Event::dry_run`] and logged as "would register"/"would unregister"; they are not
//! counted as a service's last change.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// Events kept for `GET /v1/syncer/events`; older ones are dropped.
pub const EVENTS_KEPT: usize = 1000;

/// Services whose last change and last error are kept; beyond, new services are not
/// tracked until the daemon restarts (their copies still count in the status).
pub const SERVICES_KEPT: usize = 100_000;

/// Events buffered for each live follower; a follower further behind misses events (and is
/// told how many).
pub const FOLLOWER_BUFFER: usize = 256;

/// What the syncer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A copy was registered.
    Register,
    /// A copy was removed.
    Unregister,
    /// The registry had lost (expired) a copy; it is registered again when its origin is
    /// known (a `register` event with reason `expired` follows).
    Expired,
    /// A write failed; the next reconcile tries again.
    Failed,
}

impl EventKind {
    /// The kind as written in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Register => "register",
            EventKind::Unregister => "unregister",
            EventKind::Expired => "expired",
            EventKind::Failed => "failed",
        }
    }
}

/// Why the syncer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The instance is new or changed (endpoints, status) at its origin.
    OriginChange,
    /// The instance is gone at its origin.
    OriginGone,
    /// Its origin cluster was not heard from for longer than the grace period.
    GraceOver,
    /// The registry lost the copy (its lease expired) and it is registered again.
    Expired,
    /// A second copy of one origin instance was found; the extra one is removed.
    Duplicate,
    /// A filter stopped matching the service.
    Filter,
    /// Imports were suspended with `copies=drop` (`POST /v1/syncer/suspend`).
    Suspend,
}

impl Reason {
    /// The reason as written in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OriginChange => "origin_change",
            Reason::OriginGone => "origin_gone",
            Reason::GraceOver => "grace_over",
            Reason::Expired => "expired",
            Reason::Duplicate => "duplicate",
            Reason::Filter => "filter",
            Reason::Suspend => "suspend",
        }
    }
}

/// One write of the syncer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Sequence number, from 1 in this process, without gaps.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What was done.
    pub kind: EventKind,
    /// Why.
    pub reason: Reason,
    /// The registry operation: `register`, `unregister` or `heartbeat`.
    pub op: &'static str,
    /// The cluster the instance comes from.
    pub origin_cluster: String,
    /// The service, as `domain/project/appId/serviceName/version`.
    pub service: String,
    /// The copy's instance id in this registry.
    pub instance_id: String,
    /// The instance's id at its origin, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_instance_id: Option<String>,
    /// The error of a failed write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A write a dry run (`--dry-run`) would make and did not.
    pub dry_run: bool,
}

/// What is known of one service's writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceActivity {
    /// The last successful write, in ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change_ms: Option<u64>,
    /// The last failed write's error and when it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last failure happened, in ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<u64>,
}

/// The event log. Shared by reference (it lives in [`super::Observer`]).
#[derive(Debug)]
pub struct EventLog {
    next: AtomicU64,
    kept: Mutex<Kept>,
    live: broadcast::Sender<std::sync::Arc<Event>>,
}

#[derive(Debug, Default)]
struct Kept {
    ring: VecDeque<std::sync::Arc<Event>>,
    services: HashMap<(String, String), ServiceActivity>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        EventLog {
            next: AtomicU64::new(1),
            kept: Mutex::new(Kept::default()),
            live: broadcast::channel(FOLLOWER_BUFFER).0,
        }
    }

    /// Records one write: logs it, keeps it, sends it to followers. `seq` and `at_ms` of
    /// `event` are set here.
    pub fn record(&self, mut event: Event) {
        event.seq = self.next.fetch_add(1, Ordering::Relaxed);
        event.at_ms = now_ms();
        match &event.error {
            None if event.dry_run => info!(
                event = event.kind.as_str(),
                reason = event.reason.as_str(),
                origin_cluster = %event.origin_cluster,
                service = %event.service,
                instance = %event.instance_id,
                origin_instance = event.origin_instance_id.as_deref().unwrap_or("-"),
                dry_run = true,
                "would {} {}",
                event.kind.as_str(),
                event.reason.as_str()
            ),
            None => info!(
                event = event.kind.as_str(),
                reason = event.reason.as_str(),
                origin_cluster = %event.origin_cluster,
                service = %event.service,
                instance = %event.instance_id,
                origin_instance = event.origin_instance_id.as_deref().unwrap_or("-"),
                "{} {}",
                event.kind.as_str(),
                event.reason.as_str()
            ),
            Some(error) => warn!(
                event = event.kind.as_str(),
                op = event.op,
                reason = event.reason.as_str(),
                origin_cluster = %event.origin_cluster,
                service = %event.service,
                instance = %event.instance_id,
                error = %error,
                "{} failed",
                event.op
            ),
        }
        let event = std::sync::Arc::new(event);
        {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.ring.len() == EVENTS_KEPT {
                kept.ring.pop_front();
            }
            kept.ring.push_back(event.clone());
            let key = (event.origin_cluster.clone(), event.service.clone());
            let full = kept.services.len() >= SERVICES_KEPT;
            let activity = match kept.services.get_mut(&key) {
                Some(a) => Some(a),
                None if full => None,
                None => Some(kept.services.entry(key).or_default()),
            };
            if let Some(activity) = activity {
                match &event.error {
                    None if event.dry_run => {}
                    None if event.kind != EventKind::Expired => {
                        activity.last_change_ms = Some(event.at_ms)
                    }
                    None => {}
                    Some(error) => {
                        activity.last_error = Some(error.clone());
                        activity.last_error_ms = Some(event.at_ms);
                    }
                }
            }
        }
        // No follower is not an error.
        let _ = self.live.send(event);
    }

    /// The events kept with `seq` greater than `after`, oldest first, at most `limit`
    /// (the newest ones when more are kept).
    pub fn since(&self, after: u64, limit: usize) -> Vec<std::sync::Arc<Event>> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let newer: Vec<_> = kept
            .ring
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).collect()
    }

    /// Follows new events as they are recorded.
    pub fn follow(&self) -> broadcast::Receiver<std::sync::Arc<Event>> {
        self.live.subscribe()
    }

    /// The last change and error of `service` (as in [`Event::service`]) of `origin_cluster`.
    pub fn activity(&self, origin_cluster: &str, service: &str) -> Option<ServiceActivity> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.services
            .get(&(origin_cluster.to_owned(), service.to_owned()))
            .cloned()
    }

    /// The sequence number of the last event recorded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next.load(Ordering::Relaxed).saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, service: &str, error: Option<&str>) -> Event {
        Event {
            seq: 0,
            at_ms: 0,
            kind,
            reason: Reason::OriginChange,
            op: "register",
            origin_cluster: "a".into(),
            service: service.into(),
            instance_id: "i".into(),
            origin_instance_id: None,
            error: error.map(str::to_owned),
            dry_run: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_last_thousand_in_order_without_gaps() {
        let log = EventLog::new();
        for _ in 0..EVENTS_KEPT + 5 {
            log.record(event(EventKind::Register, "s", None));
        }
        let all = log.since(0, usize::MAX);
        assert_eq!(all.len(), EVENTS_KEPT);
        assert_eq!(all[0].seq, 6);
        assert_eq!(all.last().map(|e| e.seq), Some(EVENTS_KEPT as u64 + 5));
        let newest = log.since(0, 3);
        assert_eq!(
            newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1003, 1004, 1005]
        );
        assert_eq!(log.since(1004, 10).len(), 1);
    }

    #[test]
    fn a_service_keeps_its_last_change_and_last_error() {
        let log = EventLog::new();
        log.record(event(EventKind::Register, "s", None));
        log.record(event(EventKind::Failed, "s", Some("refused")));
        let a = log.activity("a", "s").expect("tracked");
        assert!(a.last_change_ms.is_some());
        assert_eq!(a.last_error.as_deref(), Some("refused"));
        assert!(log.activity("a", "other").is_none());
    }
}
