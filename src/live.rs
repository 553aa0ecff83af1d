//! Settings that change while the daemon runs: on SIGHUP, and when the `--config` file
//! changes, the settings are resolved again (the flags and environment as at start, the file
//! as it is now) and what can change in place is applied: the ticker interval and the log
//! filter and the export and import filters. A file that does not resolve is refused with its error logged, and the settings in
//! use stay. Settings that only a restart applies (addresses, the registry, the store...) are
//! named in the log and in `GET /v1/syncer/config` under `reload.restart_needed`.
//!
//! The gossip keyring and the exchange's TLS files have their own reloaders
//! ([`crate::membership::keyring`], [`crate::tls`]), fired by the same SIGHUP.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{ConfigSource, DaemonConfig, RegistryConfig};
use crate::reload::{FileWatch, Trigger};

/// Settings the reload keys apply in place; every other changed key waits for a restart.
pub const RELOADED_IN_PLACE: [&str; 3] = ["ticker_interval_secs", "log_filter", "filters"];

/// The outcome of the last reload, as `GET /v1/syncer/config` shows it under `reload`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadState {
    /// The `--config` file, when there is one (without it nothing is reloaded).
    pub file: Option<String>,
    /// Settings applied since start: 0 until a reload succeeds, then one more per success.
    pub revision: u64,
    /// The last reload, if any.
    pub last: Option<LastReload>,
}

/// One reload's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastReload {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// `signal` (SIGHUP) or `file` (the file changed).
    pub trigger: &'static str,
    /// Whether the new settings were taken.
    pub ok: bool,
    /// Why they were refused.
    pub error: Option<String>,
    /// Settings applied in place by this reload.
    pub applied: Vec<String>,
    /// Settings that changed in the file but take effect only at a restart.
    pub restart_needed: Vec<String>,
}

/// Where reloaded settings go.
#[derive(Debug)]
pub struct Targets {
    /// The reconcile loop's ticker interval ([`crate::sync::Syncer::with_ticker`]).
    pub ticker: watch::Sender<Duration>,
    /// The settings as `GET /v1/syncer/config` shows them.
    pub shown: watch::Sender<serde_json::Value>,
    /// The export and import filters ([`crate::sync::Syncer::with_filters`],
    /// [`crate::sync::exporter::Exporter::with_filters`]): the exporter lists its registry
    /// again and the loop reconciles at once when they change.
    pub filters: std::sync::Arc<watch::Sender<std::sync::Arc<crate::sync::filter::Filters>>>,
}

/// The settings as `GET /v1/syncer/config` shows them: [`effective_settings`]
/// and `reload`.
pub fn shown(config: &DaemonConfig, state: &ReloadState) -> serde_json::Value {
    let mut settings = effective_settings(config);
    if let Some(o) = settings.as_object_mut() {
        o.insert(
            "reload".into(),
            serde_json::to_value(state).unwrap_or_default(),
        );
    }
    settings
}

/// Applies the config file's log filter at start, unless `SYNCER_LOG`/`RUST_LOG` set one.
pub fn apply_log_filter(config: &DaemonConfig) {
    if crate::logging::filter_from_env() {
        return;
    }
    if let Some(filter) = &config.log_filter {
        if let Err(e) = crate::logging::set_filter(filter) {
            warn!(error = %e, "log_filter of the config file not applied");
        }
    }
}

/// Follows `source`'s file and SIGHUP (`watch`) until `shutdown`, applying each good new
/// version of the settings to `targets`; `running` is the configuration in use.
pub async fn follow(
    source: ConfigSource,
    mut running: DaemonConfig,
    targets: Targets,
    mut watch: FileWatch,
    shutdown: CancellationToken,
) {
    let mut state = ReloadState {
        file: source.path().map(|p| p.display().to_string()),
        ..ReloadState::default()
    };
    loop {
        let trigger = tokio::select! {
            () = shutdown.cancelled() => return,
            trigger = watch.changed() => trigger,
        };
        let trigger = match trigger {
            Trigger::Signal => "signal",
            Trigger::FileChanged => "file",
        };
        let last = match source.resolve() {
            Err(e) => {
                let reason = crate::errors::error_chain(&e);
                error!(trigger, error = %reason, "config file refused; keeping the settings in use");
                LastReload {
                    at_ms: crate::observe::events::now_ms(),
                    trigger,
                    ok: false,
                    error: Some(reason),
                    applied: Vec::new(),
                    restart_needed: Vec::new(),
                }
            }
            Ok(new) => {
                let last = apply(&mut running, new, &targets, trigger);
                state.revision += 1;
                info!(
                    trigger,
                    revision = state.revision,
                    applied = ?last.applied,
                    restart_needed = ?last.restart_needed,
                    "config reloaded"
                );
                if !last.restart_needed.is_empty() {
                    warn!(settings = ?last.restart_needed, "these settings changed in the config file but take effect only at a restart");
                }
                last
            }
        };
        state.last = Some(last);
        targets.shown.send_replace(shown(&running, &state));
    }
}

/// Takes what changes in place from `new` into `running`; names what waits for a restart.
fn apply(
    running: &mut DaemonConfig,
    new: DaemonConfig,
    targets: &Targets,
    trigger: &'static str,
) -> LastReload {
    let before = effective_settings(running);
    let after = effective_settings(&new);
    let mut restart_needed = Vec::new();
    if let (Some(before), Some(after)) = (before.as_object(), after.as_object()) {
        for (key, value) in after {
            if !RELOADED_IN_PLACE.contains(&key.as_str()) && before.get(key) != Some(value) {
                restart_needed.push(key.clone());
            }
        }
    }
    let mut applied = Vec::new();
    if new.filters.spec() != running.filters.spec() {
        targets
            .filters
            .send_replace(std::sync::Arc::new(new.filters.clone()));
        running.filters = new.filters.clone();
        applied.push("filters".to_owned());
    }
    if new.ticker_interval != running.ticker_interval {
        running.ticker_interval = new.ticker_interval;
        targets.ticker.send_replace(new.ticker_interval);
        applied.push("ticker_interval_secs".to_owned());
    }
    if new.log_filter != running.log_filter {
        if crate::logging::filter_from_env() {
            warn!("log_filter changed in the config file, but SYNCER_LOG or RUST_LOG sets the filter; use PUT /v1/syncer/log-level");
        } else {
            let text = new.log_filter.as_deref().unwrap_or("info");
            match crate::logging::set_filter(text) {
                Ok(_) => applied.push("log_filter".to_owned()),
                Err(e) => warn!(error = %e, "log_filter not applied"),
            }
        }
        running.log_filter = new.log_filter;
    }
    LastReload {
        at_ms: crate::observe::events::now_ms(),
        trigger,
        ok: true,
        error: None,
        applied,
        restart_needed,
    }
}

/// The settings `GET /v1/syncer/config` shows: everything that shapes the daemon's
/// behaviour, without a secret (no password, key or token; files by path only).
pub fn effective_settings(config: &DaemonConfig) -> serde_json::Value {
    let registry = match &config.registry {
        RegistryConfig::External { plugin, endpoints } => serde_json::json!({
            "plugin": plugin.name(),
            "endpoints": endpoints
                .iter()
                .map(|e| crate::credentials::without_userinfo(e).into_owned())
                .collect::<Vec<_>>(),
            "account": config.registry_auth.as_ref().map(|a| a.account.clone()),
            "tls": config.registry_tls.is_some(),
        }),
        RegistryConfig::Builtin { listen } => serde_json::json!({
            "plugin": "servicecenter",
            "builtin": listen.to_string(),
            "builtin_tls": config.builtin_tls.is_some(),
            "builtin_rbac": config.builtin_rbac.is_some(),
            "store": format!("{:?}", config.store),
            "builtin_max_connections": config.builtin_max_connections,
            "builtin_max_watchers": config.builtin_max_watchers,
            "builtin_max_body_bytes": config.builtin_max_body_bytes,
        }),
    };
    serde_json::json!({
        "node": config.node,
        "cluster_name": config.cluster_name,
        "registry": registry,
        "bind_addr": config.bind_addr.to_string(),
        "advertise_addr": config.advertise_addr.map(|a| a.to_string()),
        "rpc_addr": config.rpc_addr.to_string(),
        "rpc_max_connections": config.rpc_max_connections,
        "http_addr": config.http_addr.map(|a| a.to_string()),
        "http_token": config.http_token.is_some(),
        "admin_token": config.admin_token.is_some(),
        "log_filter": config.log_filter,
        "join_addrs": config.join_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ticker_interval_secs": config.ticker_interval.as_secs(),
        "grace_period_secs": config.grace_period.as_secs(),
        "mode": format!("{:?}", config.mode),
        "election_etcd": config.election_etcd.is_some(),
        "gossip_encrypted": config.keyring.is_some(),
        "keyring_file": config.keyring_file.as_ref().map(|p| p.display().to_string()),
        "exchange_tls": config.tls.is_some(),
        "insecure": config.insecure,
        "eureka_self_preservation": config.eureka_self_preservation,
        "filters": config.filters.spec(),
        "dry_run": config.dry_run,
    })
}
