//! Keeping the registry in its store: the seam between the core and the storage adaptors
//! ([`crate::servicecenter::store`]), so that a store only ever sees records (keys and bytes) and never the
//! registry or [`Core`].
//!
//! - [`restore`]: at open, the store's snapshot is applied to the empty registry.
//! - [`run_writer`]: every [`WRITE_INTERVAL`] the registry's journal is turned into a batch
//!   of [`Write`]s for the adaptor ([`flush`]); renewals every [`LEASE_WRITE_INTERVAL`].
//! - [`follow_etcd`]: the etcd store's watch hands other cores' records here, where they
//!   are applied to the registry (a key with a local change not yet written is skipped).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Core;
use crate::servicecenter::registry::now_ms;
use crate::servicecenter::store::etcd::{EtcdStore, Followed};
use crate::servicecenter::store::{
    keys, Backend, StoreError, Write, LEASE_WRITE_INTERVAL, RETRY_PAUSE, WRITE_INTERVAL,
};

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

/// Writes the journal's changes (and renewals when `leases`) as one batch; on failure the
/// marks go back into the journal. Returns the number of writes.
pub(crate) async fn flush(
    core: &Core,
    backend: &Backend,
    leases: bool,
) -> Result<usize, StoreError> {
    let (batch, taken) = {
        let mut reg = core.lock();
        if reg.journal.is_empty(leases) {
            return Ok(0);
        }
        let (batch, taken) = reg.take_writes(leases);
        if let Backend::Etcd(s) = backend {
            s.begin(&batch);
        }
        (batch, taken)
    };
    let n = batch.len();
    if n == 0 {
        return Ok(0);
    }
    tracing::trace!(writes = n, leases, "writing a batch to the store");
    match backend.write(batch).await {
        Ok(()) => Ok(n),
        Err(e) => {
            core.lock().journal.restore(taken);
            Err(e)
        }
    }
}

/// The writer task: flushes every [`WRITE_INTERVAL`] (renewals every
/// [`LEASE_WRITE_INTERVAL`]) until `shutdown`, then writes what is left.
pub(crate) async fn run_writer(core: Core, backend: Arc<Backend>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(WRITE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_leases = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let leases = last_leases.elapsed() >= LEASE_WRITE_INTERVAL;
        if leases {
            last_leases = Instant::now();
        }
        if let Err(e) = flush(&core, &backend, leases).await {
            tracing::warn!(error = %e, "store write failed; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }
    for _ in 0..3 {
        match flush(&core, &backend, true).await {
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "final store write failed"),
        }
    }
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
