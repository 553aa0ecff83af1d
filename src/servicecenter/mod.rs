//! Built-in service-center core: an in-memory registry speaking the
//! service-center v4 REST API (under `/v4`) and the Eureka v2 REST API (under
//! `/eureka` and `/eureka/v2`), so a site needs no registry of its own.
//!
//! Layers (DESIGN.md decision 7): HTTP API ([`v4`], [`eureka`]) → metadata
//! service ([`registry`]: rules, validation, leases) → in-memory indexes (inside
//! [`registry::Registry`]) → storage adaptor ([`store`]: embedded redb file, or etcd;
//! [`Core::new`] is memory only, [`Core::open`] loads from and writes to a store).
//!
//! One registry serves both APIs: an app registered through `/eureka` is the
//! microservice (`default`/`default`, appId `eureka`, lower-case serviceName,
//! version `0.0.1`), and every microservice of tenant `default/default` is
//! visible through `/eureka` as the app named by its upper-cased serviceName.
//! Eureka-only fields (ports, URLs, VIPs, dataCenterInfo, ...) are kept in a
//! private side record per instance ([`registry::EurekaSide`]); Eureka
//! `metadata` and SC `properties` are the same map.
//!
//! Main types: [`Core`] (shared state), [`router`] (the HTTP API), [`serve`] (over HTTPS:
//! [`serve_tls`] with [`tls::CoreTls`]).

pub mod changelog;
pub mod dependencies;
pub mod discovery;
pub mod error;
pub mod eureka;
pub mod eureka_registry;
pub mod extract;
pub mod govern;
mod persist;
pub mod rbac;
pub mod records;
pub mod registry;
pub mod rules;
pub mod schemas;
pub mod store;
pub mod tags;
pub mod tls;
pub mod v4;
pub mod watch;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use registry::Registry;

/// How often the lease-expiry task runs.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Shared registry state of the built-in core (cheap to clone, `Arc` inside).
///
/// The lock is a std `Mutex`: every operation is short, synchronous, and is
/// never held across an `.await`.
#[derive(Clone, Default)]
pub struct Core {
    registry: Arc<Mutex<Registry>>,
    /// The storage adaptor; `None` for a memory-only core. Its writer (and, for etcd, its
    /// watch) runs inside [`serve`].
    store: Option<Arc<store::Backend>>,
    /// RBAC's runtime when it is on ([`Core::enable_rbac`]).
    rbac: Option<Arc<rbac::Guard>>,
}

impl Core {
    /// An empty, memory-only registry.
    pub fn new() -> Core {
        Core::default()
    }

    /// A registry kept in the store of `config`, loaded from it first (memory only for
    /// [`store::StoreConfig::Memory`]). Changes are written, and for etcd other cores'
    /// changes followed, while [`serve`] runs.
    ///
    /// # Errors
    /// [`store::StoreError`] when the store cannot be opened or read (data directory in
    /// use by another process, etcd unreachable, ...).
    pub async fn open(config: store::StoreConfig) -> Result<Core, store::StoreError> {
        let Some(backend) = store::Backend::open(&config).await? else {
            return Ok(Core::new());
        };
        let core = Core {
            registry: Arc::default(),
            store: Some(Arc::new(backend)),
            rbac: None,
        };
        if let Some(backend) = &core.store {
            persist::restore(&core, backend).await?;
        }
        Ok(core)
    }

    /// Turns service-center's RBAC on ([`rbac`]): creates the account `root` (role `admin`)
    /// with `settings.root_password` when the store has none, and the token key. Call it
    /// before [`router`]/[`serve`].
    ///
    /// # Errors
    /// The root password breaks the password rules ([`rbac::password::check`]).
    pub async fn enable_rbac(mut self, settings: &rbac::RbacSettings) -> Result<Core, String> {
        self.rbac = Some(Arc::new(rbac::Guard::new(settings)?));
        rbac::init(&self, settings).await?;
        tracing::info!("RBAC is on: every v4 request needs a token, /eureka basic auth");
        Ok(self)
    }

    /// Whether RBAC is on.
    pub fn rbac_enabled(&self) -> bool {
        self.rbac.is_some()
    }

    /// Writes every change noted so far to the store now (no-op without a store).
    ///
    /// # Errors
    /// The store's error; the changes stay noted for the next attempt.
    pub async fn flush(&self) -> Result<(), store::StoreError> {
        match &self.store {
            Some(backend) => persist::flush(self, backend, true).await.map(|_| ()),
            None => Ok(()),
        }
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
        eureka_registry::tick(&mut reg, now);
        n
    }

    /// Turns Eureka self-preservation on or off (off by default; `eureka_registry.rs`).
    pub fn set_eureka_self_preservation(&self, on: bool) {
        self.lock().eureka.set_self_preservation(on);
    }

    /// Runs the core's background tasks until `shutdown`, through one tracker: the store
    /// writer (which writes what is left when stopped), the etcd watch (with etcd), and
    /// lease expiry every `EXPIRY_CHECK_INTERVAL` (without etcd: etcd expires leases
    /// itself). Returns when all have stopped. [`serve`] runs it for as long as it serves.
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
            tasks.spawn(persist::run_writer(self.clone(), backend, shutdown.clone()));
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

/// The HTTP API: SC v4 under `/v4` and Eureka v2 under `/eureka` and `/eureka/v2`.
///
/// With RBAC on ([`Core::enable_rbac`]) the RBAC routes are added and every request passes
/// [`rbac::api::guard`].
pub fn router(core: Core) -> axum::Router {
    let routes = v4::router(core.clone()).merge(eureka::router(core.clone()));
    if core.rbac_enabled() {
        routes
            .merge(rbac::api::routes(core.clone()))
            .layer(axum::middleware::from_fn_with_state(core, rbac::api::guard))
    } else {
        routes
    }
}

/// Serves `router(core)` on `listener` until `shutdown` is cancelled, and runs
/// the lease-expiry task (every second) for as long.
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    core: Core,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_tls(listener, core, None, shutdown).await
}

/// [`serve`], over HTTPS when `tls` is set ([`tls::TlsListener`]).
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    core: Core,
    tls: Option<Arc<tls::CoreTls>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, client_certificates = tls.as_ref().is_some_and(|t| t.requires_client_certificates()), "service-center core listening");
    // A child token: stopping the expiry task must not cancel the caller's token.
    let stop = shutdown.child_token();
    // The certificate is read again when its files change and on SIGHUP.
    let reload = tokio_util::task::TaskTracker::new();
    if let Some(tls) = &tls {
        let hup = crate::reload::sighup(&reload, stop.clone());
        reload.spawn(tls.clone().follow(
            crate::reload::FileWatch::new(tls.files(), hup),
            stop.clone(),
        ));
    }
    reload.close();
    // The store writer, the etcd watch and lease expiry; stopped after the HTTP server, so
    // the last requests' changes are written too.
    let background_stop = CancellationToken::new();
    let background = tokio::spawn(core.clone().run(background_stop.clone()));
    let result = match tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls, stop.clone())?;
            axum::serve(
                listener,
                router(core).into_make_service_with_connect_info::<rbac::api::ClientAddr>(),
            )
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
        }
        None => {
            // Small request/response pairs: Nagle's algorithm would add delayed-ACK stalls
            // (~40 ms).
            let nodelay: fn(&mut tokio::net::TcpStream) = |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
            };
            let listener = axum::serve::ListenerExt::tap_io(listener, nodelay);
            axum::serve(
                listener,
                router(core).into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
        }
    };
    stop.cancel();
    reload.wait().await;
    background_stop.cancel();
    let _ = background.await;
    tracing::info!(%addr, "service-center core stopped");
    result
}
