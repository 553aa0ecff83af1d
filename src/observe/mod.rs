//! Seeing the daemon work (DESIGN.md decision 13): metrics, the event log, the status the
//! reconcile loop publishes, and the HTTP listener that serves them with the dashboard.
//!
//! * [`metrics`]: the Prometheus families (`/metrics`) and [`metrics::MeteredPlugin`],
//!   which times and counts every registry call;
//! * [`events`]: every write the syncer makes, with its reason (`/v1/syncer/events`);
//! * [`status`]: what the reconcile loop publishes after each change ([`status::SyncStatus`])
//!   and the questions it answers on demand ([`status::Query`]: services, instances);
//! * [`http`]: the daemon's listener (`--http-addr`): `/metrics`, `/healthz`, `/readyz`,
//!   `/v1/syncer/*` and the dashboard at `/`.
//!
//! The syncing side only writes here (records, publishes, answers); nothing here reaches
//! into it.

pub mod events;
pub mod http;
pub mod metrics;
pub mod status;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use events::EventLog;
use metrics::Metrics;
use status::{Query, SyncStatus};

/// Questions to the reconcile loop waiting to be answered.
pub const QUERY_BUFFER: usize = 16;

/// The shared handle: metrics, events, the loop's status and its query channel. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Observer {
    /// The metric families.
    pub metrics: Arc<Metrics>,
    /// The event log.
    pub events: Arc<EventLog>,
    status: Arc<watch::Sender<SyncStatus>>,
    queries: mpsc::Sender<Query>,
}

impl Observer {
    /// A new observer, and the receiving end of its queries (for the reconcile loop).
    pub fn new() -> (Observer, mpsc::Receiver<Query>) {
        let (queries, rx) = mpsc::channel(QUERY_BUFFER);
        (
            Observer {
                metrics: Arc::new(Metrics::new()),
                events: Arc::new(EventLog::new()),
                status: Arc::new(watch::channel(SyncStatus::default()).0),
                queries,
            },
            rx,
        )
    }

    /// Publishes the loop's status (replacing the last one).
    pub fn publish(&self, status: SyncStatus) {
        self.status.send_replace(status);
    }

    /// Changes the published status in place.
    pub fn update(&self, change: impl FnOnce(&mut SyncStatus)) {
        self.status.send_modify(change);
    }

    /// The loop's status as last published.
    pub fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    /// Follows the loop's status.
    pub fn follow_status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// Where questions to the loop are sent.
    pub fn queries(&self) -> mpsc::Sender<Query> {
        self.queries.clone()
    }
}
