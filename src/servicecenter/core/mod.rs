//! The core's state and tasks: [`Core`] (the registry behind one lock, the store, RBAC's
//! runtime) and [`Core::run`], which owns the store writer, the etcd watch and lease expiry.
//! A request that changed the registry waits for its change to be committed to the store
//! ([`Core::committed`], group commit) before it answers.
//! The HTTP layer ([`super::api`]) holds a `Core`; the registry ([`super::registry`]) and
//! the store ([`super::store`]) never see it.

pub mod metrics;
mod persist;
mod watchers;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::registry::{self, rbac, Registry};
use super::store;
pub use metrics::CoreMetrics;
pub use watchers::{Watcher, MAX_WATCHERS};

/// How often the lease-expiry task runs.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a request waits for its change to be committed ([`Core::committed`]).
pub const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// Why a change was not confirmed as committed ([`Core::committed`]). In every case the
/// change stays in the registry (memory), and the writer keeps trying to write it: it may
/// or may not be stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The store failed the batch holding the change (the batch is retried).
    #[error("the store failed to write the change")]
    Store(#[source] Arc<store::StoreError>),
    /// No batch holding the change was committed within this time.
    #[error("the change was not committed within {0:?}")]
    Timeout(Duration),
    /// The writer has stopped (shutdown) without writing the change.
    #[error("the store writer has stopped")]
    Stopped,
}

/// Shared registry state of the built-in core: one `Arc` around [`CoreParts`], so the clone
/// every request makes (axum's `State`) is one reference count, not one per part.
///
/// The lock is a std `Mutex`: every operation is short, synchronous, and is
/// never held across an `.await`.
#[derive(Clone, Default)]
pub struct Core(Arc<CoreParts>);

impl std::ops::Deref for Core {
    type Target = CoreParts;

    fn deref(&self) -> &CoreParts {
        &self.0
    }
}

/// The parts of a [`Core`], shared by its clones. Set while the core is built (`open`,
/// `enable_rbac`, `set_max_watchers`), read afterwards.
#[derive(Clone, Default)]
pub struct CoreParts {
    registry: Arc<Mutex<Registry>>,
    /// The storage adaptor; `None` for a memory-only core. Its writer (and, for etcd, its
    /// watch) runs inside [`serve`](crate::servicecenter::serve).
    store: Option<Arc<store::Backend>>,
    /// Group commit's counts (with a store): what is noted, what is committed.
    commits: Option<Arc<persist::Commits>>,
    /// RBAC's runtime when it is on ([`Core::enable_rbac`]).
    pub(in crate::servicecenter) rbac: Option<Arc<rbac::Guard>>,
    /// The slots of admin dumps being rendered ([`Core::dump_slots`]).
    dumps: DumpSlots,
    /// The WebSocket watchers' places and wake-ups ([`Core::watcher`]).
    watchers: Arc<watchers::Watchers>,
    /// What `/metrics` and the status page show ([`Core::metrics`]).
    metrics: Arc<CoreMetrics>,
}

/// How many admin dumps may be rendered at once; more wait for a slot.
pub(crate) const CONCURRENT_DUMPS: usize = 2;

/// The slots of admin dumps being rendered: [`CONCURRENT_DUMPS`] permits.
#[derive(Clone)]
struct DumpSlots(Arc<tokio::sync::Semaphore>);

impl Default for DumpSlots {
    fn default() -> Self {
        DumpSlots(Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DUMPS)))
    }
}

impl Core {
    /// The parts to set while the core is built (copied first if a clone shares them).
    fn parts_mut(&mut self) -> &mut CoreParts {
        Arc::make_mut(&mut self.0)
    }

    /// An empty, memory-only registry.
    pub fn new() -> Core {
        Core::default()
    }

    /// A registry kept in the store of `config`, loaded from it first (memory only for
    /// [`store::StoreConfig::Memory`]). Changes are written, and for etcd other cores'
    /// changes followed, while [`serve`](crate::servicecenter::serve) runs.
    ///
    /// # Errors
    /// [`store::StoreError`] when the store cannot be opened or read (data directory in
    /// use by another process, etcd unreachable, ...).
    pub async fn open(config: store::StoreConfig) -> Result<Core, store::StoreError> {
        let Some(backend) = store::Backend::open(&config).await? else {
            return Ok(Core::new());
        };
        let mut core = Core(Arc::new(CoreParts {
            store: Some(Arc::new(backend)),
            ..CoreParts::default()
        }));
        if let Some(backend) = &core.store {
            persist::restore(&core, backend).await?;
        }
        let noted = core.lock().journal.noted();
        core.parts_mut().commits = Some(Arc::new(persist::Commits::new(noted)));
        Ok(core)
    }

    /// Turns service-center's RBAC on ([`rbac`]): creates the account `root` (role `admin`)
    /// with `settings.root_password` when the store has none, and the token key. Call it
    /// before [`router`](crate::servicecenter::router)/[`serve`](crate::servicecenter::serve).
    ///
    /// # Errors
    /// The root password breaks the password rules ([`rbac::password::check`]).
    pub async fn enable_rbac(mut self, settings: &rbac::RbacSettings) -> Result<Core, String> {
        self.parts_mut().rbac = Some(Arc::new(rbac::Guard::new(settings)?));
        init_rbac(&self, settings).await?;
        tracing::info!("RBAC is on: every v4 request needs a token, /eureka basic auth");
        Ok(self)
    }

    /// The core's measurements: HTTP requests, heartbeats, renewals, watchers
    /// ([`metrics`]), for `/metrics` and the status page.
    pub fn metrics(&self) -> &Arc<CoreMetrics> {
        &self.0.metrics
    }

    /// The storage adaptor's kind: `memory`, `embedded` or `etcd`.
    pub fn store_kind(&self) -> &'static str {
        match self.store.as_deref() {
            None => "memory",
            Some(store::Backend::Embedded(_)) => "embedded",
            Some(store::Backend::Etcd(_)) => "etcd",
        }
    }

    /// Whether this core expires leases itself (memory and embedded stores), or etcd does.
    pub fn expires_leases_locally(&self) -> bool {
        self.store
            .as_ref()
            .is_none_or(|b| b.expires_leases_locally())
    }

    /// Whether RBAC is on.
    pub fn rbac_enabled(&self) -> bool {
        self.rbac.is_some()
    }

    /// Writes every change noted so far to the store now (no-op without a store).
    ///
    /// # Errors
    /// [`CommitError::Store`]; the changes stay noted for the next attempt.
    pub async fn flush(&self) -> Result<(), CommitError> {
        match (&self.store, &self.commits) {
            (Some(backend), Some(commits)) => persist::flush(self, backend, commits, true)
                .await
                .map(|_| ())
                .map_err(CommitError::Store),
            _ => Ok(()),
        }
    }

    /// The commit ticket of the changes made so far: the journal's count of noted changes
    /// (0 without a store). Take it after making a change, then await
    /// [`Core::committed`]. Heartbeats are not counted (renewals are written lazily).
    pub fn ticket(&self) -> u64 {
        self.commits.as_ref().map_or(0, |c| c.ticket())
    }

    /// Resolves once every change counted in `ticket` ([`Core::ticket`]) is committed to the
    /// store, i.e. once a batch taken after them is written (a redb transaction committed
    /// with an fsync, or acknowledged by etcd). Immediate without a store, or when already
    /// committed. The writer runs inside [`Core::run`]; without it this waits
    /// [`COMMIT_WAIT`].
    ///
    /// # Errors
    /// [`CommitError`]: the store failed that batch, [`COMMIT_WAIT`] passed, or the writer
    /// stopped. The change is then still in memory and may or may not be stored.
    pub async fn committed(&self, ticket: u64) -> Result<(), CommitError> {
        match &self.commits {
            Some(commits) => commits.wait(ticket).await,
            None => Ok(()),
        }
    }

    /// The slots of admin dumps: a dump holds one while it is rendered and read
    /// (`api/v4/dump.rs`), so that at most [`CONCURRENT_DUMPS`] (2) take CPU at once.
    pub(crate) fn dump_slots(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::clone(&self.dumps.0)
    }

    /// Locks the registry for one synchronous operation.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way worse than losing the registry, so keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A counter bumped on every change of a service or instance
    /// (create, delete, register, unregister, status/properties update,
    /// expiry); heartbeats do not bump it. Starts at 0.
    pub fn revision(&self) -> u64 {
        self.lock().revision()
    }

    /// [`Core::revision`] as a watch, sent on every bump (the registry's change feed), for
    /// a reader in this process that would otherwise poll. Only later changes are seen.
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().changes.subscribe()
    }

    /// Removes instances whose lease ended; returns how many.
    pub fn expire_leases(&self) -> usize {
        let mut reg = self.lock();
        let now = Instant::now();
        // Eureka self-preservation (off by default) may hold evictions back.
        let n = if reg.eureka.evictions_allowed(now) {
            reg.expire(now)
        } else {
            0
        };
        registry::eureka::tick(&mut reg, now);
        n
    }

    /// Sets the registry's quotas and size limits ([`registry::limits`]; service-center's
    /// defaults until called). What the store already holds stays, over a quota or not.
    pub fn set_limits(&self, limits: registry::Limits) {
        self.lock().set_limits(limits);
    }

    /// Sets how many WebSocket watchers may be open at once (at least 1; default
    /// [`MAX_WATCHERS`]); call it before serving: watchers already open keep the old places.
    pub fn set_max_watchers(&mut self, max: usize) {
        self.parts_mut().watchers = Arc::new(watchers::Watchers::new(max));
    }

    /// How many WebSocket watchers may be open at once ([`Core::set_max_watchers`]).
    pub fn max_watchers(&self) -> usize {
        self.watchers.max()
    }

    /// One more watcher: its place, held until it is dropped, and its wake-ups
    /// ([`watchers`]); `None` when all [`Core::max_watchers`] are taken.
    pub(crate) fn watcher(&self) -> Option<Watcher> {
        self.watchers.join(&self.registry)
    }

    /// Turns Eureka self-preservation on or off (off by default; `eureka_registry.rs`).
    pub fn set_eureka_self_preservation(&self, on: bool) {
        self.lock().eureka.set_self_preservation(on);
    }

    /// Runs the core's background tasks until `shutdown`, through one tracker: the store
    /// writer (which writes what is left when stopped), the etcd watch (with etcd), and
    /// lease expiry every `EXPIRY_CHECK_INTERVAL` (without etcd: etcd expires leases
    /// itself). Returns when all have stopped. [`serve`](crate::servicecenter::serve) runs it for as long as it serves.
    pub async fn run(self, shutdown: CancellationToken) {
        let tasks = tokio_util::task::TaskTracker::new();
        if let Some(backend) = self.store.clone() {
            if let store::Backend::Etcd(etcd) = &*backend {
                tasks.spawn(persist::follow_etcd(
                    self.clone(),
                    (**etcd).clone(),
                    shutdown.clone(),
                ));
            }
            if let Some(commits) = self.commits.clone() {
                tasks.spawn(persist::run_writer(
                    self.clone(),
                    backend,
                    commits,
                    shutdown.clone(),
                ));
            }
        }
        let local_expiry = self
            .store
            .as_ref()
            .is_none_or(|b| b.expires_leases_locally());
        let core = self;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick(), if local_expiry => {
                        let n = core.expire_leases();
                        if n > 0 {
                            tracing::debug!(expired = n, "instance leases expired");
                        }
                    }
                }
            }
        });
        tasks.close();
        tasks.wait().await;
    }
}

/// Creates the root account (role `admin`) and the signing key when missing.
///
/// # Errors
/// When the root password breaks the password rules.
async fn init_rbac(core: &Core, settings: &rbac::RbacSettings) -> Result<(), String> {
    let has_root = core.lock().rbac.account(rbac::ROOT).is_some();
    if !has_root {
        let Some(pw) = settings.root_password.clone() else {
            return Err(
                "the store has no root account yet: give its first password with \
                        --rbac-root-password-file FILE or SYNCER_RBAC_ROOT_PASSWORD"
                    .to_string(),
            );
        };
        rbac::password::check(rbac::ROOT, &pw)
            .map_err(|e| format!("the root password is refused: {}", e.detail))?;
        let hash = tokio::task::spawn_blocking(move || rbac::password::hash(&pw))
            .await
            .map_err(|e| format!("hashing the root password: {e}"))?
            .map_err(|e| format!("hashing the root password: {}", e.detail))?;
        let mut reg = core.lock();
        if reg.rbac.account(rbac::ROOT).is_none() {
            reg.create_account(rbac::ROOT, hash, vec![rbac::ADMIN.to_string()], "active")
                .map_err(|e| e.detail)?;
            tracing::info!("RBAC: account root created");
        }
    }
    core.lock().ensure_keys().map_err(|e| e.detail)?;
    Ok(())
}
