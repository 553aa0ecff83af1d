//! Logging: tracing's subscriber on stderr, with a filter that can change at run time
//! (`PUT /v1/syncer/log-level`, or `log_filter` in the `--config` file on a reload).
//!
//! The filter has `EnvFilter`'s syntax (`info`, `info,syncer::sync=debug`, ...). At start it
//! comes from `SYNCER_LOG`, else `RUST_LOG`, else `info`; a filter set in the environment
//! wins over the config file's `log_filter` (flags and env over the file, as every setting),
//! but the admin API may still change it.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::cli::LogFormat;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 1024;

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter's text as last set.
    text: Mutex<String>,
    /// Whether the start filter came from `SYNCER_LOG` or `RUST_LOG`.
    from_env: bool,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the subscriber (once per process; later calls do nothing).
pub fn init(format: LogFormat) {
    let from_env = ["SYNCER_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    let (filter, text) = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, from_env.clone().unwrap_or_default()),
        _ => (EnvFilter::new("info"), "info".to_owned()),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            text: Mutex::new(text),
            from_env: from_env.is_some(),
        });
    }
}

/// Checks a filter's text without setting it.
///
/// # Errors
/// Why the text is not a filter (too long, or its syntax).
pub fn parse(text: &str) -> Result<EnvFilter, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the log filter is empty; e.g. `info` or `info,syncer::sync=debug`".into());
    }
    if text.len() > MAX_FILTER_BYTES {
        return Err(format!(
            "the log filter is {} bytes; at most {MAX_FILTER_BYTES}",
            text.len()
        ));
    }
    EnvFilter::try_new(text).map_err(|e| format!("not a log filter ({e}): {text:?}"))
}

/// Sets the filter; returns it as set.
///
/// # Errors
/// As [`parse`], or when logging was not set up by [`init`].
pub fn set_filter(text: &str) -> Result<String, String> {
    let filter = parse(text)?;
    let control = CONTROL
        .get()
        .ok_or_else(|| "logging is not set up by this process".to_owned())?;
    control
        .handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log filter: {e}"))?;
    let text = text.trim().to_owned();
    *control.text.lock().unwrap_or_else(|e| e.into_inner()) = text.clone();
    tracing::info!(filter = %text, "log filter changed");
    Ok(text)
}

/// The filter in use; `None` when logging was not set up by [`init`].
pub fn filter() -> Option<String> {
    CONTROL
        .get()
        .map(|c| c.text.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

/// Whether the start filter came from the environment (`SYNCER_LOG`, `RUST_LOG`), which
/// the config file's `log_filter` does not override.
pub fn filter_from_env() -> bool {
    CONTROL.get().is_some_and(|c| c.from_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(parse("info,syncer::sync=debug").is_ok());
        assert!(parse("  ").is_err());
        assert!(parse(&"a".repeat(MAX_FILTER_BYTES + 1)).is_err());
        assert!(parse("info,[{=").is_err());
    }
}
