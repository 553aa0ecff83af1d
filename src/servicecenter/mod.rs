//! Built-in service-center core: an in-memory registry speaking the
//! service-center v4 REST API (under `/v4`) and the Eureka v2 REST API (under
//! `/eureka` and `/eureka/v2`), so a site needs no registry of its own.
//!
//! Layers (DESIGN.md decision 7): HTTP API ([`v4`], [`eureka`]) → metadata
//! service ([`registry`]: rules, validation, leases) → in-memory indexes (inside
//! [`registry::Registry`]). Storage is memory only for now.
//!
//! One registry serves both APIs: an app registered through `/eureka` is the
//! microservice (`default`/`default`, appId `eureka`, lower-case serviceName,
//! version `0.0.1`), and every microservice of tenant `default/default` is
//! visible through `/eureka` as the app named by its upper-cased serviceName.
//! Eureka-only fields (ports, URLs, VIPs, dataCenterInfo, ...) are kept in a
//! private side record per instance ([`registry::EurekaSide`]); Eureka
//! `metadata` and SC `properties` are the same map.
//!
//! Main types: [`Core`] (shared state), [`router`] (the HTTP API), [`serve`].

pub mod error;
pub mod eureka;
pub mod registry;
pub mod v4;

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
}

impl Core {
    /// An empty registry.
    pub fn new() -> Core {
        Core::default()
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

    /// Removes instances whose lease ended; returns how many.
    pub fn expire_leases(&self) -> usize {
        self.lock().expire(Instant::now())
    }
}

/// The HTTP API: SC v4 under `/v4` and Eureka v2 under `/eureka` and `/eureka/v2`.
pub fn router(core: Core) -> axum::Router {
    v4::router(core.clone()).merge(eureka::router(core))
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
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "service-center core listening");
    // A child token: stopping the expiry task must not cancel the caller's token.
    let stop = shutdown.child_token();
    let expiry = {
        let core = core.clone();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let n = core.expire_leases();
                        if n > 0 {
                            tracing::debug!(expired = n, "instance leases expired");
                        }
                    }
                }
            }
        })
    };
    let result = axum::serve(listener, router(core))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    stop.cancel();
    let _ = expiry.await;
    tracing::info!(%addr, "service-center core stopped");
    result
}
