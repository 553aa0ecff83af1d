//! Storage adaptors of the built-in core: the bottom layer of DESIGN.md decision 7
//! (HTTP API → metadata service → cache and indexes → **storage adaptor**).
//!
//! The registry ([`super::registry::Registry`]) stays the cache every request is served
//! from; a store only makes it durable (embedded) or shared (etcd):
//!
//! - [`StoreConfig::Memory`]: nothing is stored ([`super::Core::new`], unit tests).
//! - [`StoreConfig::Embedded`]: a [redb] file `registry.redb` under `--data-dir`. A restart
//!   reloads services, instances, and each lease's remaining time (wall clock: time spent
//!   down counts, an instance whose lease ran out while down is dropped at load).
//! - [`StoreConfig::Etcd`]: service-center's key layout ([`keys`]) in etcd; instance leases
//!   are etcd leases (heartbeats become keep-alives, etcd's expiry removes instances), and a
//!   watch on `/cse-sr/` applies the other cores' writes to this core's cache.
//!
//! # The journal and group commit
//!
//! Mutating registry operations do no I/O. They note *what* changed in the registry's
//! [`Journal`] (a set of [`Mark`]s, deduplicated) and bump its count of noted changes
//! ([`Noted`]), which wakes the writer task (`core/persist.rs`, run by `Core::run`). The
//! writer takes the marks as soon as there are any, reads the records' *current* values
//! under the lock (`Registry::take_writes`) and hands one batch of [`Write`]s to the adaptor
//! (one redb transaction with one fsync, or etcd requests that etcd acknowledges once
//! committed). A request that changed something answers only once a batch taken after its
//! change is committed (DESIGN.md decision 12): it waits for the committed count to reach
//! the noted count it saw (`Core::committed`). Whatever accumulates while a batch is being
//! written goes into the next one: that is group commit, one fsync for many requests.
//!
//! Heartbeats are the exception: they only note a renewal, and renewed deadlines are written
//! every [`LEASE_WRITE_INTERVAL`], so a heartbeat-heavy load is never fsync-bound. A renewal
//! lost in a crash costs lease time, never a record: the instance comes back with the
//! deadline last written (at most [`LEASE_WRITE_INTERVAL`] older).
//!
//! A failed batch puts its marks back and is retried after `RETRY_PAUSE`; the requests
//! waiting for it get an error (the change stays in memory and may still be written).
//! Shutdown (`Core::run` returning) writes what is left.
//!
//! # Adding a record kind
//!
//! A new kind of record (schemas, tags, rules, dependencies, ...) kept in the registry is
//! persisted in three steps:
//! 1. give it a key under `/cse-sr/` in [`keys`] (service-center's layout, c.9 of the notes);
//! 2. on every change, call `self.journal.key(the_key)` in the registry method;
//! 3. add an arm for the key to `Registry::stored_value` (key → its JSON bytes, `None` when
//!    gone) and to `Registry::apply_stored` (bytes → the in-memory record, at load and for
//!    etcd watch events).
//!
//! A store only sees records (keys and bytes): loading, writing a batch, and (etcd) handing
//! watched records over; applying them to the registry is `persist.rs`'s, one layer up.
//!
//! Main types: [`StoreConfig`], [`Adaptor`] (implemented by [`embedded::Embedded`] and
//! [`etcd::EtcdStore`]), [`Journal`], [`Write`].

pub mod embedded;
pub mod etcd;
pub mod keys;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often renewed lease deadlines are written.
pub const LEASE_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// Pause after a failed write before the next attempt.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Where the built-in core keeps its registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Memory only: lost on exit.
    Memory,
    /// The embedded store in this directory (created if missing).
    Embedded {
        /// `--data-dir`.
        data_dir: PathBuf,
    },
    /// etcd at these client URLs (`--etcd-endpoints`, e.g. `http://127.0.0.1:2379`), with
    /// TLS and a user when configured.
    Etcd(crate::etcd::ClientConfig),
}

/// The default `--data-dir`.
pub const DEFAULT_DATA_DIR: &str = "./data";

impl StoreConfig {
    /// etcd when `etcd` is given (`--etcd-endpoints` named an endpoint, see
    /// [`crate::etcd::ClientConfig::resolve`]), else the embedded store in `data_dir`
    /// (default [`DEFAULT_DATA_DIR`]).
    pub fn from_flags(
        data_dir: Option<PathBuf>,
        etcd: Option<crate::etcd::ClientConfig>,
    ) -> StoreConfig {
        match etcd {
            Some(etcd) => StoreConfig::Etcd(etcd),
            None => StoreConfig::Embedded {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            },
        }
    }
}

/// Errors of the storage adaptors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// `--data-dir`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The embedded store file could not be opened (e.g. another process has it open).
    #[error("cannot open the embedded store {path}: {source}")]
    Open {
        /// The redb file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::Error,
    },
    /// A read or write of the embedded store failed; nothing of the batch was written.
    #[error("embedded store: {0}")]
    Embedded(#[from] redb::Error),
    /// An etcd call failed; part of the batch may have been written (it is retried whole,
    /// and every write is idempotent).
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// `--etcd-endpoints` named no endpoint.
    #[error("no etcd endpoint given")]
    NoEndpoints,
    /// etcd could not be reached, or refused this client (TLS, user, password), at start.
    #[error("cannot connect to the etcd store")]
    Connect(#[source] crate::etcd::Error),
    /// The blocking task running an embedded-store transaction panicked or was cancelled.
    #[error("embedded store task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One write of a batch. Keys are [`keys`] paths; values are JSON as service-center writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace a plain record.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Create or replace an instance, tied to its lease.
    PutInstance {
        /// Instance key.
        key: String,
        /// Instance JSON.
        value: Vec<u8>,
        /// The lease key of the instance.
        lease_key: String,
        /// Lease length, seconds.
        ttl_secs: u64,
        /// Current deadline, ms since the Unix epoch.
        deadline_ms: i64,
    },
    /// An instance's lease was renewed (heartbeat).
    Renew {
        /// The lease key of the instance.
        lease_key: String,
        /// Lease length, seconds.
        ttl_secs: u64,
        /// New deadline, ms since the Unix epoch.
        deadline_ms: i64,
    },
    /// Delete one key (absent keys are fine).
    Delete {
        /// Key.
        key: String,
    },
    /// Delete every key starting with `prefix`.
    DeletePrefix {
        /// Prefix (ends with `/`).
        prefix: String,
    },
}

/// What changed, noted by the registry for the writer (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mark {
    /// A microservice was created, changed or deleted.
    Service {
        /// Domain.
        domain: String,
        /// Project.
        project: String,
        /// serviceId.
        service_id: String,
        /// Its index key ([`keys::service_index`]), deleted with it.
        index: String,
    },
    /// An instance was registered, changed, unregistered or expired.
    Instance {
        /// serviceId.
        service_id: String,
        /// instanceId.
        instance_id: String,
    },
    /// Any other record, by key (resolved by `Registry::stored_value`).
    Key(String),
}

/// The journal's count of noted changes, shared (without the registry lock) with the writer
/// and the requests that wait for their change to be committed (see the module docs).
#[derive(Debug, Default)]
pub struct Noted {
    /// Changes noted since the journal was enabled; bumped under the registry lock.
    seq: AtomicU64,
    /// Woken on every noted change: the writer's signal that there is work.
    wake: tokio::sync::Notify,
}

impl Noted {
    /// The number of changes noted so far: a request's commit ticket once its change is
    /// made, and, read under the registry lock when a batch is taken, what the batch covers.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Resolves once a change is noted after the last call (or one was noted meanwhile).
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    fn bump(&self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}

/// Changes noted since the last write (see the module docs). Disabled (notes nothing) in a
/// memory-only core.
#[derive(Debug, Default)]
pub struct Journal {
    enabled: bool,
    /// The count of noted changes (renewals are not counted).
    noted: Arc<Noted>,
    changed: HashSet<Mark>,
    /// The serviceIds of the `Mark::Service`s in `changed`, for [`Journal::pending`].
    services: HashSet<String>,
    /// serviceId → instanceIds whose lease was renewed.
    renewed: HashMap<String, HashSet<String>>,
}

/// Marks taken from a [`Journal`] for one batch.
#[derive(Debug, Default)]
pub struct Taken {
    /// Changed records.
    pub changed: HashSet<Mark>,
    /// Renewed leases (serviceId → instanceIds).
    pub renewed: HashMap<String, HashSet<String>>,
}

impl Journal {
    /// Starts noting changes (a core with a store).
    pub(crate) fn enable(&mut self) {
        self.enabled = true;
    }

    /// The count of noted changes, for the writer and the requests waiting for a commit.
    pub fn noted(&self) -> Arc<Noted> {
        self.noted.clone()
    }

    /// Notes a change.
    pub fn mark(&mut self, mark: Mark) {
        if self.enabled {
            self.insert(mark);
            self.noted.bump();
        }
    }

    /// Notes a change of one instance.
    pub fn instance(&mut self, service_id: &str, instance_id: &str) {
        if self.enabled {
            self.mark(Mark::Instance {
                service_id: service_id.to_owned(),
                instance_id: instance_id.to_owned(),
            });
        }
    }

    /// Notes a change of any other record, by its key.
    pub fn key(&mut self, key: String) {
        self.mark(Mark::Key(key));
    }

    fn insert(&mut self, mark: Mark) {
        if let Mark::Service { service_id, .. } = &mark {
            self.services.insert(service_id.clone());
        }
        self.changed.insert(mark);
    }

    /// Notes a lease renewal (cheap when already noted since the last write).
    pub fn renewed(&mut self, service_id: &str, instance_id: &str) {
        if !self.enabled {
            return;
        }
        match self.renewed.get_mut(service_id) {
            Some(set) => {
                if !set.contains(instance_id) {
                    set.insert(instance_id.to_owned());
                }
            }
            None => {
                self.renewed.insert(
                    service_id.to_owned(),
                    HashSet::from([instance_id.to_owned()]),
                );
            }
        }
    }

    /// Whether the record of `key` has a change noted and not taken yet. O(1).
    pub fn pending(&self, key: &str) -> bool {
        if self.changed.is_empty() {
            return false;
        }
        match keys::parse(key) {
            keys::Parsed::Instance {
                service_id,
                instance_id,
                ..
            } => self.changed.contains(&Mark::Instance {
                service_id: service_id.into_owned(),
                instance_id: instance_id.into_owned(),
            }),
            keys::Parsed::Service { service_id, .. } => self.services.contains(&*service_id),
            keys::Parsed::Other => self.changed.contains(&Mark::Key(key.to_owned())),
            keys::Parsed::Index | keys::Parsed::Lease { .. } => false,
        }
    }

    /// Whether there is anything to write (renewals only when `leases`).
    pub fn is_empty(&self, leases: bool) -> bool {
        self.changed.is_empty() && (!leases || self.renewed.is_empty())
    }

    /// Takes the changes (and the renewals when `leases`).
    pub(crate) fn take(&mut self, leases: bool) -> Taken {
        self.services.clear();
        Taken {
            changed: std::mem::take(&mut self.changed),
            renewed: if leases {
                std::mem::take(&mut self.renewed)
            } else {
                HashMap::new()
            },
        }
    }

    /// Puts back marks whose batch failed (newer marks are kept too). Not counted again:
    /// they were noted once, and the writer retries them.
    pub(crate) fn restore(&mut self, taken: Taken) {
        for mark in taken.changed {
            self.insert(mark);
        }
        for (sid, ids) in taken.renewed {
            self.renewed.entry(sid).or_default().extend(ids);
        }
    }
}

/// Every record under [`keys::ROOT`] as the store holds it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (key, value) in key order.
    pub records: Vec<(String, Vec<u8>)>,
}

/// A storage adaptor: loads everything once at start, then applies batches of writes.
pub trait Adaptor: Send + Sync + 'static {
    /// Every record under [`keys::ROOT`].
    ///
    /// # Errors
    /// The store's error.
    fn load(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Applies one batch. Every write is idempotent, so a failed batch may be retried whole.
    ///
    /// # Errors
    /// The store's error.
    fn write(&self, batch: Vec<Write>) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The adaptor a core runs on.
pub(crate) enum Backend {
    /// redb under `--data-dir`.
    Embedded(embedded::Embedded),
    /// etcd (boxed: the client is large).
    Etcd(Box<etcd::EtcdStore>),
}

impl Backend {
    /// Opens the store of `config`; `None` for [`StoreConfig::Memory`].
    pub(crate) async fn open(config: &StoreConfig) -> Result<Option<Backend>, StoreError> {
        Ok(match config {
            StoreConfig::Memory => None,
            StoreConfig::Embedded { data_dir } => {
                let dir = data_dir.clone();
                let store =
                    tokio::task::spawn_blocking(move || embedded::Embedded::open(&dir)).await??;
                Some(Backend::Embedded(store))
            }
            StoreConfig::Etcd(etcd) => Some(Backend::Etcd(Box::new(
                etcd::EtcdStore::connect(etcd).await?,
            ))),
        })
    }

    /// Whether the core itself expires leases (embedded) or etcd does (etcd).
    pub(crate) fn expires_leases_locally(&self) -> bool {
        matches!(self, Backend::Embedded(_))
    }

    pub(crate) async fn load(&self) -> Result<Snapshot, StoreError> {
        match self {
            Backend::Embedded(s) => s.load().await,
            Backend::Etcd(s) => s.load().await,
        }
    }

    pub(crate) async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(s) => s.write(batch).await,
            Backend::Etcd(s) => s.write(batch).await,
        }
    }
}
