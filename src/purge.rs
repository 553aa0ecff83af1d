//! `syncer purge`: removes the copies a syncer made from a registry, and nothing else.
//!
//! A copy is an instance carrying the origin marker [`ORIGIN_CLUSTER`] (service-center
//! instance `properties`, Eureka instance `metadata`; DESIGN.md decision 2): exactly what
//! the importer writes and what its exporter skips. `purge` lists the registry through the
//! same plugin the daemon uses (all tenants at service-center), unregisters each copy of the
//! chosen origin cluster (or of all), prints one line per copy, and lists again to check that
//! none is left.
//!
//! Services are left in place, empty or not: the importer creates a copy's service with the
//! origin's appId, name and version (a deterministic id, decision 3), which a native
//! instance of the same service shares, and neither the service-center syncer nor this one
//! marks the services it created; a service-center service with no instance costs a key
//! and is harmless, and Eureka drops an app with its last instance by itself.
//!
//! Run it with the site's syncers stopped: a running leader registers the copies again
//! within a tick (the final check then reports them).

use std::io::Write;
use std::sync::Arc;

use syncer_plugin_api::{Instance, Plugin, Service, ORIGIN_CLUSTER};

use crate::cli::{PluginKind, PurgeArgs};
use crate::config::{DaemonConfig, RegistryConfig};

/// Errors of `syncer purge`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry settings are invalid (as the daemon would refuse them).
    #[error("invalid registry settings")]
    Config(#[from] crate::config::Error),
    /// No registry address was given: purge works on an external registry.
    #[error(
        "no registry: give --sc-addr (or sc_addr in --config); purge does not run a built-in core"
    )]
    NoRegistry,
    /// The TLS settings toward the registry are unusable.
    #[error("cannot set up TLS toward the registry")]
    Tls(#[source] crate::tls::Error),
    /// The plugin could not be built.
    #[error("cannot set up the registry plugin")]
    Plugin(#[source] crate::daemon::Error),
    /// Listing the registry failed; nothing was removed after it.
    #[error("cannot list the registry")]
    List(#[source] syncer_plugin_api::Error),
    /// Some copies could not be removed (each was printed with its error), or copies were
    /// found again by the final listing (a syncer still running?).
    #[error("{failed} of {found} copies could not be removed; {left} found again after the purge (is a syncer of this site still running?)")]
    Incomplete {
        /// Copies found.
        found: usize,
        /// Removals that failed.
        failed: usize,
        /// Copies of the chosen origins still listed after the purge.
        left: usize,
    },
    /// Writing the report failed.
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
}

/// Validated settings of `syncer purge`.
#[derive(Debug)]
pub struct Settings {
    /// The registry's plugin kind.
    pub plugin: PluginKind,
    /// The registry's endpoints.
    pub endpoints: Vec<String>,
    /// TLS toward an `https://` registry.
    pub tls: Option<crate::registry_tls::RegistryTlsConfig>,
    /// The account to log in as (servicecenter plugin).
    pub auth: Option<syncer_plugin_servicecenter::Credentials>,
    /// Only copies of this origin cluster; `None`: all.
    pub origin_cluster: Option<String>,
    /// List, remove nothing.
    pub dry_run: bool,
}

impl Settings {
    /// Validates `args` as the daemon validates its registry settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a setting the daemon would refuse, [`Error::NoRegistry`]
    /// without `--sc-addr`.
    pub fn resolve(args: PurgeArgs) -> Result<Settings, Error> {
        let config = DaemonConfig::resolve(args.registry_args())?;
        let RegistryConfig::External { plugin, endpoints } = config.registry else {
            return Err(Error::NoRegistry);
        };
        Ok(Settings {
            plugin,
            endpoints,
            tls: config.registry_tls,
            auth: config.registry_auth,
            origin_cluster: args.origin_cluster,
            dry_run: args.dry_run,
        })
    }

    /// The plugin these settings reach the registry through.
    ///
    /// # Errors
    /// [`Error::Tls`], [`Error::Plugin`].
    pub fn plugin(&self) -> Result<Arc<dyn Plugin>, Error> {
        let tls = match &self.tls {
            Some(settings) => Some(Arc::new(
                crate::registry_tls::client_config(settings).map_err(Error::Tls)?,
            )),
            None => None,
        };
        crate::daemon::build_plugin_with_tls(
            self.plugin,
            self.endpoints.clone(),
            tls,
            self.auth.clone(),
        )
        .map_err(Error::Plugin)
    }
}

/// What [`purge`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Copies found (of the chosen origin, or all).
    pub found: usize,
    /// Copies removed (0 on a dry run).
    pub removed: usize,
    /// Removals that failed.
    pub failed: usize,
    /// Instances without an origin marker (native), left alone.
    pub native: usize,
}

/// Whether `instance` is a copy of `origin_cluster` (of any origin when `None`); its origin
/// when it is.
fn copy_of<'a>(instance: &'a Instance, origin_cluster: Option<&str>) -> Option<&'a str> {
    let origin = instance.properties.get(ORIGIN_CLUSTER)?;
    match origin_cluster {
        Some(wanted) if wanted != origin => None,
        _ => Some(origin),
    }
}

/// Lists the registry through `plugin` and removes every copy of `origin_cluster` (all
/// copies when `None`; none when `dry_run`), writing one tab-separated line per copy to
/// `out`: origin cluster, service (`domain/project/appId/serviceName/version`), instance
/// id, and `removed`, `would remove` or `failed: <error>`. Then lists again and counts the
/// copies still there.
///
/// # Errors
/// [`Error::List`] when the registry cannot be listed, [`Error::Incomplete`] when a
/// removal failed or copies are listed again afterwards, [`Error::Output`].
pub async fn purge(
    plugin: &dyn Plugin,
    origin_cluster: Option<&str>,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let snapshot = plugin.list().await.map_err(Error::List)?;
    let services: std::collections::HashMap<&str, &Service> = snapshot
        .services
        .iter()
        .map(|s| (s.service_id.as_str(), s))
        .collect();
    let mut summary = Summary::default();
    for instance in &snapshot.instances {
        let Some(origin) = copy_of(instance, origin_cluster) else {
            if instance.origin_cluster().is_none() {
                summary.native += 1;
            }
            continue;
        };
        summary.found += 1;
        let Some(service) = services.get(instance.service_id.as_str()) else {
            summary.failed += 1;
            writeln!(
                out,
                "{origin}\t?/{}\t{}\tfailed: its service is not listed",
                instance.service_id, instance.instance_id
            )
            .map_err(Error::Output)?;
            continue;
        };
        let name = crate::sync::importer::service_name(service);
        let outcome = if dry_run {
            "would remove".to_owned()
        } else {
            match plugin.unregister(service, &instance.instance_id).await {
                Ok(()) => {
                    summary.removed += 1;
                    "removed".to_owned()
                }
                Err(e) => {
                    summary.failed += 1;
                    format!("failed: {e}")
                }
            }
        };
        writeln!(out, "{origin}\t{name}\t{}\t{outcome}", instance.instance_id)
            .map_err(Error::Output)?;
    }
    let left = if dry_run {
        0
    } else {
        let again = plugin.list().await.map_err(Error::List)?;
        again
            .instances
            .iter()
            .filter(|i| copy_of(i, origin_cluster).is_some())
            .count()
    };
    if summary.failed > 0 || left > 0 {
        return Err(Error::Incomplete {
            found: summary.found,
            failed: summary.failed,
            left,
        });
    }
    Ok(summary)
}

/// `syncer purge`: [`purge`] with `settings`, the report on stdout and a last line on
/// stderr with the counts.
///
/// # Errors
/// As [`Settings::plugin`] and [`purge`].
pub async fn run(settings: Settings) -> Result<Summary, Error> {
    let plugin = settings.plugin()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let summary = purge(
        plugin.as_ref(),
        settings.origin_cluster.as_deref(),
        settings.dry_run,
        &mut out,
    )
    .await?;
    out.flush().map_err(Error::Output)?;
    eprintln!(
        "{} {} cop{} of {}; {} native instance{} left alone",
        if settings.dry_run {
            "would remove"
        } else {
            "removed"
        },
        summary.found,
        if summary.found == 1 { "y" } else { "ies" },
        settings.origin_cluster.as_deref().unwrap_or("every origin"),
        summary.native,
        if summary.native == 1 { "" } else { "s" },
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marked_instances_of_the_chosen_origin_are_copies() {
        let mut copy = Instance::default();
        copy.properties.insert(ORIGIN_CLUSTER.into(), "east".into());
        let native = Instance::default();
        assert_eq!(copy_of(&copy, None), Some("east"));
        assert_eq!(copy_of(&copy, Some("east")), Some("east"));
        assert_eq!(copy_of(&copy, Some("west")), None);
        assert_eq!(copy_of(&native, None), None);
    }
}
