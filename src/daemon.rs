//! `syncer daemon`: builds every subsystem from a [`DaemonConfig`] and runs them until
//! shutdown.
//!
//! Start order: the built-in core (when no external registry is configured), the plugin, the
//! gRPC exchange listener, gossip membership, then the reconcile loop. Every task is spawned
//! through one [`TaskTracker`] and stops on one [`CancellationToken`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use syncer_plugin_api::Plugin;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::cli::PluginKind;
use crate::config::{DaemonConfig, RegistryConfig};
use crate::exchange::client::ExchangeClient;
use crate::exchange::server::ExchangeServer;
use crate::exchange::verify::verify_members;
use crate::leadership::{self, EtcdElection};
use crate::membership::{self, Membership};
use crate::observe::http::{ExportSummary, Site};
use crate::observe::metrics::MeteredPlugin;
use crate::observe::Observer;
use crate::reload::FileWatch;
use crate::servicecenter;
use crate::sync::exporter::Exporter;
use crate::sync::ratelimit::{RateLimitedPlugin, WriteLimiter};
use crate::sync::{self, Syncer};
use crate::tls::ExchangeTls;

/// How long in-flight work may take to finish after shutdown is requested.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Timeout of one registry call.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the daemon from starting. Once started, it only stops on shutdown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be bound.
    #[error(
        "cannot bind the {what} address {addr} (is another syncer or registry running there?)"
    )]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plugin could not be built from its settings.
    #[error("cannot set up the {plugin} plugin")]
    Plugin {
        /// The plugin's name.
        plugin: &'static str,
        /// The cause.
        #[source]
        source: syncer_plugin_api::Error,
    },
    /// Gossip membership could not start.
    #[error("cannot start gossip membership")]
    Membership(#[from] membership::Error),
    /// The exchange's TLS files are unusable.
    #[error("cannot set up the exchange's TLS")]
    Tls(#[from] crate::tls::Error),
    /// The leader election's etcd refused this member (user, password, certificate) or its
    /// TLS files cannot be read.
    #[error("cannot take part in the etcd leader election")]
    Election(#[source] crate::etcd::Error),
    /// The built-in core's store (--data-dir or --etcd-endpoints) could not be opened.
    #[error("cannot open the built-in service-center's store")]
    Store(#[from] servicecenter::store::StoreError),
    /// The TLS settings toward the registry (`servicecenter.tls_config`, `--sc-tls-*`) are
    /// unusable.
    #[error("cannot set up TLS toward the registry")]
    RegistryTls(#[source] crate::tls::Error),
    /// The built-in core's TLS files (`--builtin-tls-*`) are unusable.
    #[error("cannot set up the built-in service-center's TLS")]
    CoreTls(#[source] crate::tls::Error),
    /// The built-in core's RBAC could not be turned on (`--builtin-rbac`), e.g. the root
    /// password breaks the password rules.
    #[error("cannot turn the built-in service-center's RBAC on: {0}")]
    CoreRbac(String),
}

/// Runs the daemon until `shutdown` is cancelled, then drains within [`SHUTDOWN_GRACE`].
///
/// # Errors
/// [`Error`] when a subsystem cannot start.
pub async fn run(config: DaemonConfig, shutdown: CancellationToken) -> Result<(), Error> {
    let tracker = TaskTracker::new();
    // SIGHUP re-reads the keyring and the TLS files (each reloader also watches its files).
    let hup = crate::reload::sighup(&tracker, shutdown.clone());
    info!(
        node = %config.node,
        cluster = %config.cluster_name,
        registry = ?config.registry,
        registry_account = ?config.registry_auth.as_ref().map(|a| &a.account),
        bind_addr = %config.bind_addr,
        rpc_addr = %config.rpc_addr,
        join_addrs = ?config.join_addrs,
        ticker_interval_secs = config.ticker_interval.as_secs(),
        grace_period_secs = config.grace_period.as_secs(),
        filters = ?config.filters.spec(),
        dry_run = config.dry_run,
        mode = ?config.mode,
        election_etcd = ?config.election_etcd,
        encrypt = config.keyring.is_some(),
        keyring_file = ?config.keyring_file,
        tls = config.tls.is_some(),
        insecure = config.insecure,
        "starting syncer daemon"
    );
    if config.insecure {
        warn!(
            gossip_encrypted = config.keyring.is_some(),
            exchange_tls = config.tls.is_some(),
            "--insecure: listeners beyond loopback may run without gossip encryption, exchange TLS or registry authentication; anyone who reaches them can join, lead and read this site"
        );
    }
    // The exchange's TLS material, checked before anything is bound: the certificate must
    // name this cluster.
    let tls = match &config.tls {
        Some(settings) => {
            let tls = ExchangeTls::load(settings.clone(), &config.cluster_name)?;
            info!(names = ?tls.names(), cert_file = %settings.cert_file.display(), "exchange TLS certificate loaded");
            tracker.spawn(
                tls.clone()
                    .follow(FileWatch::new(tls.files(), hup.clone()), shutdown.clone()),
            );
            Some(tls)
        }
        None => None,
    };

    // The election's etcd, checked before anything is bound: a refused user, password or
    // certificate stops the start; a down etcd is waited for.
    let election = match &config.election_etcd {
        Some(etcd) => {
            let election = EtcdElection::new(leadership::EtcdConfig {
                etcd: etcd.clone(),
                node: config.node.clone(),
                cluster_name: config.cluster_name.clone(),
                lease_ttl: leadership::DEFAULT_LEASE_TTL,
            });
            match election.check().await {
                Ok(()) => {}
                Err(e) if e.is_unreachable() => {
                    warn!(error = %e, "the election's etcd is not reachable yet; no leader until it is")
                }
                Err(e) => return Err(Error::Election(e)),
            }
            Some(election)
        }
        None => None,
    };

    // The built-in core's change feed, when the registry is in this process: the
    // exporter lists the registry when it moves instead of polling.
    let mut local_revision = None;
    // Stops the built-in core once the reconcile loop has handed over (or at the end).
    let core_stop = CancellationToken::new();
    let (kind, endpoints, registry_tls) = match &config.registry {
        RegistryConfig::External { plugin, endpoints } => {
            let tls = match &config.registry_tls {
                Some(settings) => Some(registry_client_tls(
                    &tracker,
                    settings,
                    endpoints,
                    shutdown.clone(),
                )?),
                None => None,
            };
            (*plugin, endpoints.clone(), tls)
        }
        RegistryConfig::Builtin { listen } => {
            // Read before anything is bound: a bad file stops the start.
            let core_tls = match &config.builtin_tls {
                Some(settings) => {
                    let tls =
                        servicecenter::tls::CoreTls::load(settings).map_err(Error::CoreTls)?;
                    info!(cert_file = %settings.cert_file.display(), client_ca_file = ?settings.client_ca_file, "built-in service-center serves HTTPS");
                    Some(tls)
                }
                None => None,
            };
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|source| Error::Bind {
                    what: "built-in service-center",
                    addr: *listen,
                    source,
                })?;
            let local = listener.local_addr().unwrap_or(*listen);
            let mut core = servicecenter::Core::open(config.store.clone()).await?;
            core.set_eureka_self_preservation(config.eureka_self_preservation);
            core.set_limits(config.builtin_limits);
            core.set_max_watchers(config.builtin_max_watchers);
            if let Some(rbac) = &config.builtin_rbac {
                core = core.enable_rbac(rbac).await.map_err(Error::CoreRbac)?;
            }
            local_revision = Some(core.revisions());
            // The core stops last: a leaving leader still heartbeats its copies into it.
            let token = core_stop.clone();
            let served_tls = core_tls.clone();
            let limits = servicecenter::HttpLimits {
                max_connections: config.builtin_max_connections,
                max_body_bytes: config.builtin_max_body_bytes,
                ..Default::default()
            };
            tracker.spawn(
                async move {
                    if let Err(e) =
                        servicecenter::serve_with(listener, core, served_tls, limits, token).await
                    {
                        error!(error = %e, "built-in service-center stopped");
                    }
                }
                .instrument(tracing::info_span!("servicecenter", addr = %local)),
            );
            // This process's plugin trusts exactly the certificate its core serves.
            let (scheme, tls) = match &core_tls {
                Some(core_tls) => (
                    "https",
                    Some(core_tls.loopback_client_config().map_err(Error::CoreTls)?),
                ),
                None => ("http", None),
            };
            (
                PluginKind::Servicecenter,
                vec![format!("{scheme}://{}", reachable(local))],
                tls,
            )
        }
    };
    // With RBAC in the built-in core, this process logs in to it as root.
    let auth = match (&config.registry, &config.builtin_rbac) {
        (RegistryConfig::Builtin { .. }, Some(rbac)) => {
            rbac.root_password
                .as_ref()
                .map(|pw| syncer_plugin_servicecenter::Credentials {
                    account: servicecenter::registry::rbac::ROOT.to_string(),
                    password: syncer_plugin_servicecenter::Password::new(pw.clone()),
                })
        }
        _ => config.registry_auth.clone(),
    };
    let registry_endpoints: Vec<String> = endpoints
        .iter()
        .map(|e| crate::credentials::without_userinfo(e).into_owned())
        .collect();
    let plugin = build_registry_plugin(
        kind,
        endpoints,
        registry_tls,
        auth,
        &config.eureka_domain_project,
    )?;
    // Metrics, events and the loop's status; every registry call is timed and counted.
    let (observer, queries) = Observer::new();
    let plugin: Arc<dyn Plugin> = Arc::new(MeteredPlugin::new(plugin, observer.metrics.clone()));
    // Writes wait for their tokens outside the metered call: request durations stay the
    // registry's own.
    let plugin: Arc<dyn Plugin> = match config.registry_write_rate {
        Some(rate) => {
            info!(
                writes_per_sec = rate.per_sec.get(),
                burst = rate.burst.get(),
                "registry writes rate-limited"
            );
            Arc::new(RateLimitedPlugin::new(
                plugin,
                WriteLimiter::new(rate, observer.metrics.write_wait.clone()),
            ))
        }
        None => plugin,
    };
    let http_listener = match config.http_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    what: "HTTP (--http-addr: metrics, status, dashboard)",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };

    let rpc_listener = TcpListener::bind(config.rpc_addr)
        .await
        .map_err(|source| Error::Bind {
            what: "rpc (gRPC exchange)",
            addr: config.rpc_addr,
            source,
        })?;
    let rpc_addr = rpc_listener.local_addr().unwrap_or(config.rpc_addr);

    let membership = Membership::bind(membership::Config {
        node: config.node.clone(),
        cluster_name: config.cluster_name.clone(),
        bind_addr: config.bind_addr,
        advertise_addr: config.advertise_addr,
        rpc_addr,
        join_addrs: config.join_addrs.clone(),
        probe_period: Duration::from_secs(1),
        keyring: config.keyring.clone(),
    })
    .await?
    .with_metrics(observer.metrics.clone());
    // A keyring file is followed: each good new version reaches the gossip task at once.
    let membership = match (&config.keyring_file, &config.keyring) {
        (Some(path), Some(keyring)) => {
            let (updates, reload) = membership::keyring::reload(
                path.clone(),
                keyring.clone(),
                hup.clone(),
                shutdown.clone(),
            );
            tracker.spawn(reload.instrument(tracing::info_span!("keyring")));
            membership.follow_keyring(updates)
        }
        _ => membership,
    };
    // The filters, behind a watch so that a reload can swap them: the exporter and the
    // reconcile loop apply each new value at once. Kept until the daemon stops.
    let filters = Arc::new(tokio::sync::watch::channel(Arc::new(config.filters.clone())).0);
    if config.dry_run {
        info!("dry run: every write is computed and none is made (no registration, removal or heartbeat of copies); see /v1/syncer/status");
    }
    let exporter = Arc::new(Exporter::new(plugin.clone()).with_filters(filters.subscribe()));
    let membership = membership.gossip_export(exporter.feed().export_revisions());
    let members = membership.members();
    // With TLS, a member counts for the cluster it claims only once it has proved it.
    let members = match &tls {
        Some(tls) => verify_members(
            members,
            config.node.clone(),
            Arc::new(
                ExchangeClient::new(
                    config.cluster_name.clone(),
                    crate::exchange::verify::CHECK_TIMEOUT,
                )
                .with_node(config.node.clone())
                .with_tls(Some(tls.clone())),
            ),
        ),
        None => members,
    };
    let heard = membership.heard();
    // Cancelled by the reconcile loop once this member may go: after a leader's handover
    // (see `Syncer::with_handover`), or at once for a follower.
    let leave = CancellationToken::new();
    {
        let (leave, core_stop) = (leave.clone(), core_stop.clone());
        tracker.spawn(async move {
            leave.cancelled().await;
            core_stop.cancel();
        });
    }

    let poll_interval = if local_revision.is_some() {
        // Only a backstop: the core's revision says when to list.
        config.ticker_interval
    } else {
        EXTERNAL_POLL_INTERVAL
    };
    tracker.spawn(
        exporter
            .clone()
            .follow(local_revision, poll_interval, shutdown.clone())
            .instrument(tracing::info_span!("exporter")),
    );
    let server = ExchangeServer::new(config.cluster_name.clone(), plugin.name(), exporter.clone())
        .with_node(config.node.clone())
        .with_tls(tls.clone())
        .with_limits(crate::exchange::server::Limits {
            max_connections: config.rpc_max_connections,
            ..Default::default()
        })
        .with_metrics(observer.metrics.clone());
    let token = shutdown.clone();
    tracker.spawn(
        async move {
            if let Err(e) = server.run(rpc_listener, token).await {
                error!(error = %e, "exchange server stopped");
            }
        }
        .instrument(tracing::info_span!("exchange", addr = %rpc_addr)),
    );

    let token = leave.clone();
    tracker.spawn(
        async move {
            if let Err(e) = membership.run(token).await {
                error!(error = %e, "gossip membership stopped");
            }
        }
        .instrument(tracing::info_span!("membership")),
    );

    let leader = match &election {
        Some(election) => election.leader(),
        None => leadership::gossip(
            config.node.clone(),
            config.cluster_name.clone(),
            members.clone(),
        ),
    };
    // Settings that a reload (SIGHUP, or a change of the --config file) changes in place.
    crate::live::apply_log_filter(&config);
    let (ticker_tx, ticker_rx) = watch::channel(config.ticker_interval);
    let initial_reload = crate::live::ReloadState {
        file: config
            .source
            .as_ref()
            .and_then(|s| s.path())
            .map(|p| p.display().to_string()),
        ..Default::default()
    };
    let (shown_tx, shown_rx) = watch::channel(crate::live::shown(&config, &initial_reload));
    if let Some(source) = config.source.clone() {
        let files = source
            .path()
            .map(|p| vec![p.to_path_buf()])
            .unwrap_or_default();
        tracker.spawn(crate::live::follow(
            source,
            config.clone(),
            crate::live::Targets {
                ticker: ticker_tx,
                shown: shown_tx,
                filters: filters.clone(),
            },
            FileWatch::new(files, hup.clone()),
            shutdown.clone(),
        ));
    }
    let syncer = Syncer::new(
        sync::Config {
            node: config.node.clone(),
            cluster_name: config.cluster_name.clone(),
            ticker_interval: config.ticker_interval,
            grace_period: config.grace_period,
            concurrency: 64,
        },
        plugin,
        exporter.clone(),
        members.clone(),
        leader,
    );
    if let Some(election) = election {
        tracker.spawn(
            election
                .run(leave.clone(), sync::HANDOVER_TIMEOUT)
                .instrument(tracing::info_span!("election")),
        );
    }
    if let Some(listener) = http_listener {
        let local = listener.local_addr().ok();
        let feed_exporter = exporter.clone();
        let metrics = observer.metrics.clone();
        let export = Arc::new(move || {
            let feed = feed_exporter.feed();
            let (revision, services, instances) = feed.sizes();
            metrics
                .export_revision
                .set(i64::try_from(revision).unwrap_or(i64::MAX));
            ExportSummary {
                epoch: feed.epoch(),
                revision,
                services,
                instances,
            }
        });
        // The gauge also moves between scrapes of the status.
        {
            let (mut revisions, metrics) = (exporter.feed().revisions(), observer.metrics.clone());
            let token = shutdown.clone();
            tracker.spawn(async move {
                loop {
                    let revision = *revisions.borrow_and_update();
                    metrics
                        .export_revision
                        .set(i64::try_from(revision).unwrap_or(i64::MAX));
                    tokio::select! {
                        () = token.cancelled() => return,
                        changed = revisions.changed() => if changed.is_err() { return },
                    }
                }
            });
        }
        let site = Site {
            node: config.node.clone(),
            cluster: config.cluster_name.clone(),
            plugin: kind.name(),
            registry: registry_endpoints,
            rpc_addr,
            members: members.clone(),
            export,
            config: shown_rx,
        };
        let admin = crate::observe::http::Admin {
            token: config.admin_token.clone(),
            loopback: local.is_some_and(|a| a.ip().is_loopback()),
        };
        info!(addr = ?local, token = config.http_token.is_some(), "HTTP listener (metrics, status API, dashboard) started");
        tracker.spawn(
            crate::observe::http::serve(
                listener,
                observer.clone(),
                site,
                config.http_token.clone(),
                admin,
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("http")),
        );
    }
    let syncer = syncer
        .with_observer(observer, queries)
        .with_tls(tls)
        .with_handover(leave.clone())
        .with_notices(heard)
        .with_ticker(ticker_rx)
        .with_filters(filters.subscribe())
        .with_dry_run(config.dry_run);
    let token = shutdown.clone();
    tracker.spawn(
        async move {
            syncer.run(token).await;
            // Whatever ended the loop, gossip leaves and the election resigns.
            leave.cancel();
        }
        .instrument(tracing::info_span!("sync", cluster = %config.cluster_name)),
    );
    drop(hup);
    tracker.close();

    shutdown.cancelled().await;
    info!("shutting down");
    drop(filters);
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        info!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "some tasks did not stop within the grace period"
        );
    }
    Ok(())
}

/// How often an external registry without a revision token is listed to notice changes
/// (see [`crate::sync::exporter::Exporter::follow`]).
pub const EXTERNAL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Builds the plugin for `kind` over `endpoints`.
///
/// # Errors
/// [`Error::Plugin`] when the plugin refuses its settings.
pub fn build_plugin(kind: PluginKind, endpoints: Vec<String>) -> Result<Arc<dyn Plugin>, Error> {
    build_plugin_with_tls(kind, endpoints, None, None)
}

/// [`build_plugin`], with the TLS client configuration for `https://` endpoints and the
/// service-center account to log in as (`auth`, servicecenter plugin only).
///
/// # Errors
/// [`Error::Plugin`] when the plugin refuses its settings (an `https://` endpoint without
/// `tls`, or an account for the eureka plugin, included).
pub fn build_plugin_with_tls(
    kind: PluginKind,
    endpoints: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: Option<syncer_plugin_servicecenter::Credentials>,
) -> Result<Arc<dyn Plugin>, Error> {
    build_registry_plugin(
        kind,
        endpoints,
        tls,
        auth,
        syncer_plugin_api::DEFAULT_DOMAIN_PROJECT,
    )
}

/// [`build_plugin_with_tls`], with the tenant (`domain/project`, already validated) the
/// eureka plugin reports its apps under (`--eureka-domain-project`; unused by the
/// servicecenter plugin).
///
/// # Errors
/// As [`build_plugin_with_tls`].
pub fn build_registry_plugin(
    kind: PluginKind,
    endpoints: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: Option<syncer_plugin_servicecenter::Credentials>,
    eureka_domain_project: &str,
) -> Result<Arc<dyn Plugin>, Error> {
    let plugin: Arc<dyn Plugin> = match kind {
        PluginKind::Servicecenter => Arc::new(
            syncer_plugin_servicecenter::ServiceCenterPlugin::new(
                syncer_plugin_servicecenter::Config {
                    endpoints,
                    request_timeout: REGISTRY_TIMEOUT,
                    // One request for the whole registry, all tenants, as the
                    // service-center syncer 1.3.0 read it.
                    use_admin_dump: true,
                    tls: tls.clone(),
                    auth,
                    ..Default::default()
                },
            )
            .map_err(|source| Error::Plugin {
                plugin: kind.name(),
                source,
            })?,
        ),
        PluginKind::Eureka if auth.is_some() => {
            return Err(Error::Plugin {
                plugin: kind.name(),
                source: syncer_plugin_api::Error::Rejected(
                    "the eureka plugin has no account login (use user:pass@ in the address)".into(),
                ),
            })
        }
        PluginKind::Eureka => Arc::new(
            syncer_plugin_eureka::EurekaPlugin::new(syncer_plugin_eureka::Config {
                endpoints,
                request_timeout: REGISTRY_TIMEOUT,
                tls,
                domain_project: eureka_domain_project.to_owned(),
            })
            .map_err(|source| Error::Plugin {
                plugin: kind.name(),
                source,
            })?,
        ),
    };
    Ok(plugin)
}

/// The client configuration toward an `https://` registry, logged (where trust comes from,
/// whether a client certificate is presented; a WARN for `verify_peer: false`), and a probe
/// of each `https://` endpoint in the background: a certificate problem is logged at ERROR
/// with the address and the reason at once, not only when the first request fails.
fn registry_client_tls(
    tracker: &TaskTracker,
    settings: &crate::registry_tls::RegistryTlsConfig,
    endpoints: &[String],
    shutdown: CancellationToken,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config =
        Arc::new(crate::registry_tls::client_config(settings).map_err(Error::RegistryTls)?);
    let trust = match &settings.ca_file {
        Some(path) => path.display().to_string(),
        None => "the system's trust store".to_owned(),
    };
    info!(
        trust = %trust,
        client_cert_file = ?settings.cert_file,
        min_version = ?settings.min_version,
        verify_peer = settings.verify_peer,
        "registry TLS configured"
    );
    if !settings.verify_peer {
        warn!("registry TLS: verify_peer is false; any certificate is accepted, so anyone between this syncer and the registry can read and change what is synced");
    }
    for endpoint in endpoints
        .iter()
        .filter(|e| syncer_plugin_http::client::is_https(e))
    {
        let (endpoint, config, shutdown) = (
            crate::credentials::without_userinfo(endpoint).into_owned(),
            config.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            // Until the registry answers at all (it may start after the syncer): then once.
            let mut backoff =
                crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            let mut warned = false;
            loop {
                let outcome = tokio::select! {
                    () = shutdown.cancelled() => return,
                    outcome = crate::registry_tls::probe(&endpoint, config.clone()) => outcome,
                };
                match outcome {
                    Ok(()) => info!(registry = %endpoint, "registry TLS handshake succeeded"),
                    Err(e @ crate::registry_tls::ProbeError::Handshake(_)) => {
                        error!(registry = %endpoint, error = %e, "registry TLS handshake failed: nothing can be read from or written to this registry until its certificate or the TLS settings are fixed")
                    }
                    Err(e) => {
                        if !warned {
                            warn!(registry = %endpoint, error = %e, "registry not reachable yet; its TLS handshake is checked once it is");
                            warned = true;
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff.next_wait()) => {}
                        }
                        continue;
                    }
                }
                return;
            }
        });
    }
    Ok(config)
}

/// An address a client on this host can connect to: an unspecified IP becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}
