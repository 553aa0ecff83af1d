//! The etcd store: service-center's key layout ([`super::keys`]) in an etcd cluster, so
//! several built-in cores (and `etcdctl`) share one registry.
//!
//! - Instances are leased as service-center leases them: registering grants an etcd lease
//!   of the instance's TTL (`interval × (times + 1)` seconds) and puts the instance key and
//!   its lease key (the lease id as decimal text) with it; a heartbeat becomes one
//!   keep-alive of that lease (renewals of one instance are merged per
//!   [`super::LEASE_WRITE_INTERVAL`]); unregistering revokes it. etcd's expiry deletes both
//!   keys, which every core sees through its watch.
//! - `EtcdStore::run_watch` follows `/cse-sr/` from the revision of the initial load and
//!   hands each batch of events to the core (`persist.rs` applies them with
//!   `Registry::apply_stored`), so a write at one core is visible at the others within
//!   milliseconds. A broken or compacted watch reloads
//!   everything and starts again.
//! - The core does not expire leases itself on this store (etcd does).
//! - The watch also brings back this core's own writes. Those echoes are not applied when
//!   they are stale (`OwnWrites`): a key with a local change not yet written, or being
//!   written, or whose own last write is newer than the event. Without this, an instance
//!   registered and unregistered within one write interval came back for a moment when the
//!   echo of its registration arrived after the local unregister.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, WatchOptions,
};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::keys::{self, Parsed};
use super::{Adaptor, Snapshot, StoreError, Write};

/// Requests in flight per batch.
const CONCURRENCY: usize = 64;
/// Pause before re-opening a broken watch.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// A connected etcd store (cheap to clone).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Lease key → etcd lease id, for every instance known to this core (its own and,
    /// through the watch, the others'), so any core can keep any instance alive.
    leases: Arc<Mutex<HashMap<String, i64>>>,
    /// The etcd revision of the last load; the watch starts after it.
    loaded_revision: Arc<AtomicI64>,
    /// This core's writes in flight and their revisions, to drop stale echoes.
    own: Arc<Mutex<OwnWrites>>,
}

/// This core's writes whose watch echo has not arrived yet, by key.
#[derive(Debug, Default)]
pub(crate) struct OwnWrites {
    /// Key → number of writes of it in flight.
    in_flight: HashMap<String, usize>,
    /// Key → etcd revision of this core's last completed write of it.
    written: HashMap<String, i64>,
}

impl OwnWrites {
    /// Whether an event of `key` at `mod_revision` is older than this core's own write of
    /// it (in flight, or done at a later revision), so applying it would step back.
    fn superseded(&self, key: &str, mod_revision: i64) -> bool {
        self.in_flight.contains_key(key) || self.written.get(key).is_some_and(|r| *r > mod_revision)
    }

    /// Forgets completed writes whose echo must have arrived (revision ≤ `seen`).
    fn seen(&mut self, seen: i64) {
        if !self.written.is_empty() {
            self.written.retain(|_, r| *r > seen);
        }
    }
}

/// The keys a write changes (a prefix delete's echoes are deletes: nothing to guard).
fn written_keys(w: &Write) -> Vec<&str> {
    match w {
        Write::Put { key, .. } | Write::Delete { key } => vec![key.as_str()],
        Write::PutInstance { key, lease_key, .. } => vec![key.as_str(), lease_key.as_str()],
        Write::Renew { .. } | Write::DeletePrefix { .. } => Vec::new(),
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

fn is_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::NotFound)
}

impl EtcdStore {
    /// Connects to the endpoints of `config`, with its TLS and user.
    ///
    /// # Errors
    /// [`StoreError::NoEndpoints`]; [`StoreError::Connect`] when no endpoint answers, a PEM
    /// file cannot be read, or etcd refuses the user, password or certificate.
    pub async fn connect(config: &crate::etcd::ClientConfig) -> Result<EtcdStore, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::NoEndpoints);
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        // Fail now, not at the first write, when etcd is not there or refuses this client.
        let client: Client = config
            .connect(options, keys::ROOT)
            .await
            .map_err(StoreError::Connect)?;
        tracing::info!(endpoints = %crate::credentials::Redacted(&config.endpoints),
            user = ?config.user(), tls = config.tls.is_some(), "etcd store connected");
        Ok(EtcdStore {
            client,
            leases: Arc::new(Mutex::new(HashMap::new())),
            loaded_revision: Arc::new(AtomicI64::new(0)),
            own: Arc::new(Mutex::new(OwnWrites::default())),
        })
    }

    fn own(&self) -> std::sync::MutexGuard<'_, OwnWrites> {
        self.own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes `batch`'s keys as in flight. Called under the registry lock, right after the
    /// journal was taken, so no echo slips in between.
    pub(crate) fn begin(&self, batch: &[Write]) {
        let mut own = self.own();
        for key in batch.iter().flat_map(written_keys) {
            *own.in_flight.entry(key.to_owned()).or_default() += 1;
        }
    }

    /// Ends one write of `keys`: no longer in flight; done at `revision` when it succeeded.
    fn finish(&self, keys: &[String], revision: Option<i64>) {
        let mut own = self.own();
        for key in keys {
            if let Some(n) = own.in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    own.in_flight.remove(key);
                }
            }
            if let Some(rev) = revision {
                let at = own.written.entry(key.clone()).or_default();
                *at = (*at).max(rev);
            }
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_lease(&self, key: &str, value: Option<&[u8]>) {
        let id = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        match id {
            Some(id) => self.leases().insert(key.to_owned(), id),
            None => self.leases().remove(key),
        };
    }

    /// Returns the etcd revision of the instance key's put.
    async fn put_instance(
        &self,
        key: String,
        value: Vec<u8>,
        lease_key: String,
        ttl_secs: u64,
    ) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let known = self.leases().get(&lease_key).copied();
        if let Some(id) = known {
            match kv
                .put(
                    key.as_str(),
                    value.as_slice(),
                    Some(PutOptions::new().with_lease(id)),
                )
                .await
            {
                Ok(r) => return Ok(revision_of(r.header())),
                // The lease ran out meanwhile: grant a new one below.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let id = self.client.lease_client().grant(ttl, None).await?.id();
        let opts = PutOptions::new().with_lease(id);
        kv.put(lease_key.as_str(), id.to_string(), Some(opts.clone()))
            .await?;
        let put = kv.put(key, value, Some(opts)).await?;
        self.leases().insert(lease_key, id);
        Ok(revision_of(put.header()))
    }

    async fn renew(&self, lease_key: &str) -> Result<(), StoreError> {
        let Some(id) = self.leases().get(lease_key).copied() else {
            tracing::debug!(
                key = lease_key,
                "no etcd lease known for a renewed instance"
            );
            return Ok(());
        };
        // `keep_alive` sends one keep-alive and reads its answer; the stream is then dropped.
        match self.client.lease_client().keep_alive(id).await {
            Ok(_) => tracing::trace!(lease = id, "lease kept alive"),
            // The lease is gone (expired): etcd deletes the instance, every core follows.
            Err(etcd_client::Error::LeaseKeepAliveError(e)) => {
                tracing::debug!(lease = id, key = lease_key, error = %e, "lease not kept alive");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Returns the etcd revision of the delete.
    async fn delete(&self, key: String) -> Result<i64, StoreError> {
        let lease = self.leases().remove(&key);
        if let Some(id) = lease {
            match self.client.lease_client().revoke(id).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let deleted = self.client.kv_client().delete(key, None).await?;
        Ok(revision_of(deleted.header()))
    }

    async fn delete_prefix(&self, prefix: String) -> Result<(), StoreError> {
        let ids: Vec<i64> = {
            let mut leases = self.leases();
            let doomed: Vec<String> = leases
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            doomed.iter().filter_map(|k| leases.remove(k)).collect()
        };
        for id in ids {
            match self.client.lease_client().revoke(id).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.client
            .kv_client()
            .delete(prefix, Some(DeleteOptions::new().with_prefix()))
            .await?;
        Ok(())
    }

    /// Runs one write; returns the etcd revision it was done at (0: not known).
    async fn apply_one(&self, w: Write) -> Result<i64, StoreError> {
        Ok(match w {
            Write::Put { key, value } => revision_of(
                self.client
                    .kv_client()
                    .put(key, value, None)
                    .await?
                    .header(),
            ),
            Write::PutInstance {
                key,
                value,
                lease_key,
                ttl_secs,
                ..
            } => self.put_instance(key, value, lease_key, ttl_secs).await?,
            Write::Renew { lease_key, .. } => {
                self.renew(&lease_key).await?;
                0
            }
            Write::Delete { key } => self.delete(key).await?,
            Write::DeletePrefix { prefix } => {
                self.delete_prefix(prefix).await?;
                0
            }
        })
    }

    /// [`Self::apply_one`], then the write's keys are no longer in flight ([`Self::begin`]).
    async fn apply_tracked(&self, w: Write) -> Result<(), StoreError> {
        let keys: Vec<String> = written_keys(&w).into_iter().map(str::to_owned).collect();
        let done = self.apply_one(w).await;
        self.finish(&keys, done.as_ref().ok().copied());
        done.map(|_| ())
    }
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

impl Adaptor for EtcdStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let resp = self
            .client
            .kv_client()
            .get(keys::ROOT, Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut records = Vec::with_capacity(resp.kvs().len());
        let mut leases = HashMap::new();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            if let Parsed::Lease { .. } = keys::parse(key) {
                if let Some(id) = kv.value_str().ok().and_then(|v| v.trim().parse().ok()) {
                    leases.insert(key.to_owned(), id);
                }
            }
            records.push((key.to_owned(), kv.value().to_vec()));
        }
        *self.leases() = leases;
        self.loaded_revision.store(revision, Ordering::SeqCst);
        Ok(Snapshot { records })
    }

    /// Puts and deletes of one batch name distinct keys (the journal merged them), so they
    /// run concurrently; deletes of whole services go last.
    async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        let (prefixes, rest): (Vec<Write>, Vec<Write>) = batch
            .into_iter()
            .partition(|w| matches!(w, Write::DeletePrefix { .. }));
        // Every write runs (none is dropped half-way), so each key leaves "in flight".
        let done: Vec<Result<(), StoreError>> =
            stream::iter(rest.into_iter().map(|w| self.apply_tracked(w)))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        done.into_iter().collect::<Result<Vec<()>, StoreError>>()?;
        for w in prefixes {
            self.apply_tracked(w).await?;
        }
        Ok(())
    }
}

/// What the watch hands to the core ([`EtcdStore::run_watch`]).
pub(crate) enum Followed<'a> {
    /// Other cores' writes, in order: (key, value; `None` = deleted). This core's stale
    /// echoes and lease keys are already handled here.
    Events(&'a [(&'a str, Option<&'a [u8]>)]),
    /// Everything, after a compacted watch: apply it and drop what is not in it.
    Reload(&'a Snapshot),
}

impl EtcdStore {
    /// Follows `/cse-sr/` from the revision of the initial load and hands every batch of
    /// events to `apply` until `shutdown`. A broken watch is opened again after
    /// [`WATCH_RETRY`]; a compacted one reloads everything first.
    pub(crate) async fn run_watch(
        &self,
        shutdown: CancellationToken,
        mut apply: impl FnMut(Followed<'_>) + Send,
    ) {
        let mut next = self.loaded_revision.load(Ordering::SeqCst) + 1;
        loop {
            let opened = self
                .client
                .watch_client()
                .watch(
                    keys::ROOT,
                    Some(WatchOptions::new().with_prefix().with_start_revision(next)),
                )
                .await;
            let mut reload = false;
            match opened {
                Err(e) => tracing::warn!(error = %e, "etcd watch failed to open"),
                Ok(mut watch) => loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = watch.message() => m,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.canceled() {
                                tracing::warn!(
                                    compact_revision = resp.compact_revision(),
                                    reason = resp.cancel_reason(),
                                    "etcd watch cancelled; reloading"
                                );
                                reload = resp.compact_revision() > 0;
                                break;
                            }
                            next = next.max(self.events(resp.events(), &mut apply) + 1);
                        }
                        Ok(None) => {
                            tracing::warn!("etcd watch ended");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "etcd watch failed");
                            break;
                        }
                    }
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(WATCH_RETRY) => {}
            }
            if reload {
                match self.load().await {
                    Ok(snapshot) => {
                        apply(Followed::Reload(&snapshot));
                        next = self.loaded_revision.load(Ordering::SeqCst) + 1;
                    }
                    Err(e) => tracing::warn!(error = %e, "etcd reload failed"),
                }
            }
        }
    }

    /// Hands one response's events to `apply` (without stale echoes; lease keys noted
    /// here); returns the highest revision seen.
    fn events(&self, events: &[etcd_client::Event], apply: &mut impl FnMut(Followed<'_>)) -> i64 {
        let mut top = 0;
        let mut batch: Vec<(&str, Option<&[u8]>)> = Vec::with_capacity(events.len());
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            top = top.max(kv.mod_revision());
            let Ok(key) = kv.key_str() else { continue };
            let value = match ev.event_type() {
                EventType::Put => Some(kv.value()),
                EventType::Delete => None,
            };
            if self.own().superseded(key, kv.mod_revision()) {
                tracing::trace!(key, revision = kv.mod_revision(), "stale echo skipped");
                continue;
            }
            if let Parsed::Lease { .. } = keys::parse(key) {
                self.note_lease(key, value);
                continue;
            }
            batch.push((key, value));
        }
        if !batch.is_empty() {
            apply(Followed::Events(&batch));
        }
        self.own().seen(top);
        top
    }
}
