//! Settings that change while the daemon runs: on SIGHUP, and when the `--config` file
//! changes, the settings are resolved again (the flags and environment as at start, the file
//! as it is now) and what can change in place is applied: the ticker interval and the log
//! filter. A file that does not resolve is refused with its error logged, and the settings in
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

use crate::config::{ConfigSource, DaemonConfig};
use crate::reload::{FileWatch, Trigger};

/// Settings the reload keys apply in place; every other changed key waits for a restart.
pub const RELOADED_IN_PLACE: [&str; 2] = ["ticker_interval_secs", "log_filter"];

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
}

/// The settings as `GET /v1/syncer/config` shows them: [`crate::daemon::effective_settings`]
/// and `reload`.
pub fn shown(config: &DaemonConfig, state: &ReloadState) -> serde_json::Value {
    let mut settings = crate::daemon::effective_settings(config);
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
    let before = crate::daemon::effective_settings(running);
    let after = crate::daemon::effective_settings(&new);
    let mut restart_needed = Vec::new();
    if let (Some(before), Some(after)) = (before.as_object(), after.as_object()) {
        for (key, value) in after {
            if !RELOADED_IN_PLACE.contains(&key.as_str()) && before.get(key) != Some(value) {
                restart_needed.push(key.clone());
            }
        }
    }
    let mut applied = Vec::new();
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
