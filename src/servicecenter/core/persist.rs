//! Keeping the registry in its store: the seam between the core and the storage adaptors
//! ([`crate::servicecenter::store`]), so that a store only ever sees records (keys and bytes) and never the
//! registry or [`Core`].
//!
//! - [`restore`]: at open, the store's snapshot is applied to the empty registry.
//! - [`run_writer`]: as soon as the registry's journal notes a change, it is turned into a
//!   batch of [`Write`]s for the adaptor ([`flush`]); renewals every [`LEASE_WRITE_INTERVAL`].
//!   [`Commits`] tells the requests waiting for their change when its batch is committed
//!   (group commit, DESIGN.md decision 12).
//! - [`follow_etcd`]: the etcd store's watch hands other cores' records here, where they
//!   are applied to the registry (a key with a local change not yet written is skipped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CommitError, Core, COMMIT_WAIT};
use crate::servicecenter::registry::now_ms;
use crate::servicecenter::store::etcd::{EtcdStore, Followed};
use crate::servicecenter::store::{
    keys, Backend, Noted, StoreError, Write, LEASE_WRITE_INTERVAL, RETRY_PAUSE,
};

/// What the writer has committed, as the requests waiting for a commit see it.
#[derive(Debug, Clone, Default)]
struct CommitState {
    /// Every change noted up to this count ([`Noted::seq`]) is in the store.
    committed: u64,
    /// Failed batches so far.
    failures: u64,
    /// The count the last failed batch covered (its changes stay in memory and are retried).
    failed_upto: u64,
    /// The last failed batch's error.
    error: Option<Arc<StoreError>>,
    /// The writer has stopped: nothing noted after `committed` will be written.
    stopped: bool,
}

/// Group commit's bookkeeping: the journal's count of noted changes and the count the
/// writer has committed, which requests wait on ([`Commits::wait`]).
#[derive(Debug)]
pub(crate) struct Commits {
    /// The journal's count of noted changes (and the writer's wake-up).
    noted: Arc<Noted>,
    /// Sent after every batch; one receiver per waiting request.
    state: watch::Sender<CommitState>,
    /// One batch at a time (the writer, and [`Core::flush`]): an empty journal then means
    /// that everything noted so far is committed.
    writing: tokio::sync::Mutex<()>,
}

impl Commits {
    pub(crate) fn new(noted: Arc<Noted>) -> Commits {
        Commits {
            noted,
            state: watch::Sender::new(CommitState::default()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The count of changes noted so far: the ticket of a request whose change is made.
    pub(crate) fn ticket(&self) -> u64 {
        self.noted.seq()
    }

    /// Waits until every change noted up to `ticket` is committed, at most [`COMMIT_WAIT`].
    ///
    /// # Errors
    /// [`CommitError::Store`] when a batch holding a change up to `ticket` fails after the
    /// wait began; [`CommitError::Timeout`]; [`CommitError::Stopped`] when the writer has
    /// stopped without writing it.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<(), CommitError> {
        if self.state.borrow().committed >= ticket {
            return Ok(());
        }
        let mut rx = self.state.subscribe();
        let failures = {
            let s = rx.borrow_and_update();
            if s.committed >= ticket {
                return Ok(());
            }
            if s.stopped {
                return Err(CommitError::Stopped);
            }
            s.failures
        };
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(CommitError::Timeout(COMMIT_WAIT)),
                Ok(Err(_)) => return Err(CommitError::Stopped),
                Ok(Ok(())) => {}
            }
            let s = rx.borrow_and_update();
            if s.committed >= ticket {
                return Ok(());
            }
            if s.failures > failures && s.failed_upto >= ticket {
                if let Some(e) = &s.error {
                    return Err(CommitError::Store(e.clone()));
                }
            }
            if s.stopped {
                return Err(CommitError::Stopped);
            }
        }
    }

    fn committed(&self, upto: u64) {
        self.state.send_if_modified(|s| {
            let moved = upto > s.committed;
            s.committed = s.committed.max(upto);
            moved
        });
    }

    fn failed(&self, upto: u64, error: Arc<StoreError>) {
        self.state.send_modify(|s| {
            s.failures += 1;
            s.failed_upto = s.failed_upto.max(upto);
            s.error = Some(error);
        });
    }

    fn stop(&self) {
        self.state.send_modify(|s| s.stopped = true);
    }
}

/// Loads the store's snapshot into `core`'s empty registry. Instances whose lease ended (embedded
/// store: by the stored wall-clock deadline) are left out and their keys deleted.
pub(crate) async fn restore(core: &Core, backend: &Backend) -> Result<(), StoreError> {
    let snapshot = backend.load().await?;
    let local_leases = backend.expires_leases_locally();
    let now = Instant::now();
    let now_ms = now_ms();
    let leases: HashMap<&str, &[u8]> = snapshot
        .records
        .iter()
        .filter(|(k, _)| matches!(keys::parse(k), keys::Parsed::Lease { .. }))
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut stale = Vec::new();
    let (mut services, mut instances, mut expired) = (0usize, 0usize, 0usize);
    // Records the registry could not take (unreadable, of an unknown service, or a key of
    // no known layout): counted and named in a warning, never silently gone.
    let mut dropped: Vec<&str> = Vec::new();
    {
        let mut reg = core.lock();
        // Services first: instance keys sort before service keys.
        for (key, value) in &snapshot.records {
            if let keys::Parsed::Service { .. } = keys::parse(key) {
                if reg.apply_stored(key, Some(value), now, now_ms) {
                    services += 1;
                } else {
                    dropped.push(key);
                }
            }
        }
        for (key, value) in &snapshot.records {
            match keys::parse(key) {
                keys::Parsed::Instance {
                    domain,
                    project,
                    service_id,
                    instance_id,
                } => {
                    let lease_key = keys::lease(&domain, &project, &service_id, &instance_id);
                    // Embedded: the stored deadline; etcd: etcd expires it, a full lease here.
                    let remaining = if local_leases {
                        leases
                            .get(lease_key.as_str())
                            .and_then(|v| serde_json::from_slice::<keys::LeaseRecord>(v).ok())
                            .and_then(|l| u64::try_from(l.deadline_ms.saturating_sub(now_ms)).ok())
                            .filter(|ms| *ms > 0)
                            .map(|ms| Some(Duration::from_millis(ms)))
                    } else {
                        Some(None)
                    };
                    let restored = match remaining {
                        Some(left) => reg.restore_instance(
                            &domain,
                            &project,
                            &service_id,
                            &instance_id,
                            value,
                            left,
                            now,
                        ),
                        None => false,
                    };
                    if restored {
                        instances += 1;
                    } else {
                        if remaining.is_some() {
                            dropped.push(key);
                        } else {
                            expired += 1;
                        }
                        stale.push(Write::Delete { key: key.clone() });
                        stale.push(Write::Delete { key: lease_key });
                    }
                }
                keys::Parsed::Service { .. } | keys::Parsed::Index | keys::Parsed::Lease { .. } => {
                }
                keys::Parsed::Other => {
                    if !reg.apply_stored(key, Some(value), now, now_ms) {
                        dropped.push(key);
                    }
                }
            }
        }
        reg.journal.enable();
    }
    tracing::info!(
        services,
        instances,
        expired,
        dropped = dropped.len(),
        "registry loaded from the store"
    );
    if !dropped.is_empty() {
        tracing::warn!(
            dropped = dropped.len(),
            first = ?dropped.iter().take(10).collect::<Vec<_>>(),
            "stored records not loaded (unreadable, of an unknown service, or of an unknown key layout)"
        );
    }
    if !stale.is_empty() {
        backend.write(stale).await?;
    }
    Ok(())
}

/// Writes the journal's changes (and renewals when `leases`) as one batch, then tells the
/// waiting requests ([`Commits`]); on failure the marks go back into the journal. Returns
/// the number of writes.
pub(crate) async fn flush(
    core: &Core,
    backend: &Backend,
    commits: &Commits,
    leases: bool,
) -> Result<usize, Arc<StoreError>> {
    let _one_batch = commits.writing.lock().await;
    let (batch, taken, upto) = {
        let mut reg = core.lock();
        // Read under the lock: every change counted so far is in this batch (or written).
        let upto = commits.noted.seq();
        if reg.journal.is_empty(leases) {
            drop(reg);
            commits.committed(upto);
            return Ok(0);
        }
        let (batch, taken) = reg.take_writes(leases);
        if let Backend::Etcd(s) = backend {
            s.begin(&batch);
        }
        (batch, taken, upto)
    };
    let n = batch.len();
    if n == 0 {
        commits.committed(upto);
        return Ok(0);
    }
    tracing::trace!(writes = n, leases, "writing a batch to the store");
    match backend.write(batch).await {
        Ok(()) => {
            commits.committed(upto);
            Ok(n)
        }
        Err(e) => {
            core.lock().journal.restore(taken);
            let e = Arc::new(e);
            commits.failed(upto, e.clone());
            Err(e)
        }
    }
}

/// The writer task: writes a batch as soon as a change is noted (what is noted meanwhile
/// goes into the next batch), renewals every [`LEASE_WRITE_INTERVAL`], until `shutdown`;
/// then writes what is left. A failed batch is retried after [`RETRY_PAUSE`].
pub(crate) async fn run_writer(
    core: Core,
    backend: Arc<Backend>,
    commits: Arc<Commits>,
    shutdown: CancellationToken,
) {
    let mut leases_due = tokio::time::Instant::now() + LEASE_WRITE_INTERVAL;
    let mut retry = false;
    loop {
        if !retry {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = commits.noted.changed() => {}
                _ = tokio::time::sleep_until(leases_due) => {}
            }
        }
        let leases = tokio::time::Instant::now() >= leases_due;
        if leases {
            leases_due = tokio::time::Instant::now() + LEASE_WRITE_INTERVAL;
        }
        match flush(&core, &backend, &commits, leases).await {
            Ok(_) => retry = false,
            Err(e) => {
                tracing::warn!(error = %e, "store write failed; retrying");
                retry = true;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
    for _ in 0..3 {
        match flush(&core, &backend, &commits, true).await {
            Ok(_) => {
                commits.stop();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "final store write failed"),
        }
    }
    commits.stop();
    tracing::error!("changes since the last store write are lost");
}

/// Applies other cores' writes, as the etcd store's watch brings them, until `shutdown`.
pub(crate) async fn follow_etcd(core: Core, store: EtcdStore, shutdown: CancellationToken) {
    store
        .run_watch(shutdown, |followed| {
            let now = Instant::now();
            let now_ms = now_ms();
            let mut reg = core.lock();
            match followed {
                Followed::Events(events) => {
                    for (key, value) in events {
                        // A local change not written yet is newer than anything the watch
                        // brings.
                        if reg.journal.pending(key) {
                            tracing::trace!(key, "event of a key with an unwritten change skipped");
                            continue;
                        }
                        reg.apply_stored(key, *value, now, now_ms);
                    }
                }
                Followed::Reload(snapshot) => reg.retain_stored(&snapshot.records, now, now_ms),
            }
        })
        .await;
}
