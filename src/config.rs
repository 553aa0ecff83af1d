//! Validated daemon settings: [`DaemonConfig`] built from the command line, the environment
//! and the `--config` YAML file, with precedence flag > env > file > default.
//!
//! After [`DaemonConfig::resolve`] nothing stringly-typed travels further: addresses are
//! `SocketAddr`, durations `Duration`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::cli::{CoreLimitsArgs, DaemonArgs, Mode, PluginKind, RegistryArgs};
use crate::credentials::{redact_list, without_userinfo, Redacted};
use crate::etcd::{self, ClientConfig as EtcdClientConfig};
use crate::membership::cipher::{GossipKey, Keyring};
use crate::membership::keyring;
use crate::registry_tls::RegistryTlsConfig;
use crate::servicecenter::store::StoreConfig;
use crate::servicecenter::tls::CoreTlsConfig;
use crate::tls::{Secret, TlsConfig, TlsVersion};

/// Default gossip port (the service-center syncer's).
pub const DEFAULT_GOSSIP_PORT: u16 = 30190;
/// Default gRPC port (the service-center syncer's).
pub const DEFAULT_RPC_PORT: u16 = 30191;

/// Default port of the daemon's HTTP listener (`--http-addr`): metrics, health, status API,
/// dashboard.
pub const DEFAULT_HTTP_PORT: u16 = 30300;
/// Default address of the built-in core.
pub const DEFAULT_BUILTIN_ADDR: &str = "127.0.0.1:30100";
/// Default seconds between reconciles.
pub const DEFAULT_TICKER_INTERVAL_SECS: u64 = 30;

/// Errors found while building the settings; each names the setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML for these settings (unknown keys are errors).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A setting has a bad value.
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        /// The flag name.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The gossip keyring file (`--keyring-file`) cannot be used; the message never quotes a
    /// key.
    #[error("invalid --keyring-file {path}")]
    Keyring {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: keyring::Error,
    },
    /// The etcd settings (endpoints, TLS, user, password) cannot be used; the message never
    /// quotes a password.
    #[error(transparent)]
    Etcd(#[from] crate::etcd::Error),
    /// The registry account settings (`--sc-account`, its password) cannot be used; the
    /// message never quotes a password.
    #[error(transparent)]
    RegistryAuth(#[from] crate::registry_auth::Error),
}

/// The `--config` YAML file: the flags' names with underscores. Also accepts the keys of the
/// service-center syncer's config file (`servicecenter: {addr, plugin}`; `log_file`,
/// `profile`, `enable_compression`, `auto_sync` are accepted and ignored; its `tls_config`
/// block configures the exchange's mutual TLS).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As `--sc-addr`.
    pub sc_addr: Option<String>,
    /// As `--sc-plugin`.
    pub sc_plugin: Option<PluginKind>,
    /// As `--bind-addr`.
    pub bind_addr: Option<String>,
    /// As `--advertise-addr`.
    pub advertise_addr: Option<SocketAddr>,
    /// As `--rpc-addr`.
    pub rpc_addr: Option<String>,
    /// As `--rpc-max-connections`.
    pub rpc_max_connections: Option<usize>,
    /// As `--http-addr`.
    pub http_addr: Option<String>,
    /// As `--http-token-file`.
    pub http_token_file: Option<PathBuf>,
    /// As `--admin-token-file`.
    pub admin_token_file: Option<PathBuf>,
    /// The log filter (`EnvFilter` syntax, e.g. `info,syncer::sync=debug`); `SYNCER_LOG`
    /// or `RUST_LOG` win over it. Applied again on a reload.
    pub log_filter: Option<String>,
    /// As `--join-addr` (a comma list).
    pub join_addr: Option<String>,
    /// As `--node`.
    pub node: Option<String>,
    /// As `--cluster-name`.
    pub cluster_name: Option<String>,
    /// As `--ticker-interval`, seconds.
    pub ticker_interval: Option<u64>,
    /// As `--grace-period`, seconds.
    pub grace_period: Option<u64>,
    /// As `--registry-write-rate`, writes per second.
    pub registry_write_rate: Option<u32>,
    /// As `--registry-write-burst`, writes.
    pub registry_write_burst: Option<u32>,
    /// As `--eureka-domain-project`.
    pub eureka_domain_project: Option<String>,
    /// As `--export-include` and friends: `{export: {include, exclude}, import: {...}}`.
    pub filters: Option<crate::sync::filter::FiltersSpec>,
    /// As `--dry-run`.
    pub dry_run: Option<bool>,
    /// As `--builtin-addr`.
    pub builtin_addr: Option<SocketAddr>,
    /// As `--builtin-max-connections`.
    pub builtin_max_connections: Option<usize>,
    /// As `--builtin-max-watchers`.
    pub builtin_max_watchers: Option<usize>,
    /// As `--builtin-tls-cert-file`.
    pub builtin_tls_cert_file: Option<PathBuf>,
    /// As `--builtin-tls-key-file`.
    pub builtin_tls_key_file: Option<PathBuf>,
    /// As `--builtin-tls-client-ca-file`.
    pub builtin_tls_client_ca_file: Option<PathBuf>,
    /// As `--builtin-rbac`.
    pub builtin_rbac: Option<bool>,
    /// As `--builtin-rbac-root-password-file`.
    pub builtin_rbac_root_password_file: Option<PathBuf>,
    /// As `--mode`.
    pub mode: Option<Mode>,
    /// As `--cluster-port`.
    pub cluster_port: Option<u16>,
    /// As `--election-etcd-endpoints` (a comma list).
    pub election_etcd_endpoints: Option<String>,
    /// As `--encrypt` (base64).
    pub encrypt: Option<String>,
    /// As `--keyring-file`.
    pub keyring_file: Option<PathBuf>,
    /// As `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// As `--etcd-endpoints` (a comma list).
    pub etcd_endpoints: Option<String>,
    /// As `--etcd-user`.
    pub etcd_user: Option<String>,
    /// As `--etcd-password-file` (below `SYNCER_ETCD_PASSWORD`).
    pub etcd_password_file: Option<PathBuf>,
    /// As `--etcd-ca-file`.
    pub etcd_ca_file: Option<PathBuf>,
    /// As `--etcd-cert-file`.
    pub etcd_cert_file: Option<PathBuf>,
    /// As `--etcd-key-file`.
    pub etcd_key_file: Option<PathBuf>,
    /// As `--eureka-self-preservation`.
    pub eureka_self_preservation: Option<bool>,
    /// As `--quota-services`.
    pub quota_services: Option<usize>,
    /// As `--quota-instances`.
    pub quota_instances: Option<usize>,
    /// As `--quota-schemas-per-service`.
    pub quota_schemas_per_service: Option<usize>,
    /// As `--quota-tags-per-service`.
    pub quota_tags_per_service: Option<usize>,
    /// As `--quota-rules-per-service`.
    pub quota_rules_per_service: Option<usize>,
    /// As `--max-instance-metadata-bytes`.
    pub max_instance_metadata_bytes: Option<usize>,
    /// As `--max-body-bytes`.
    pub max_body_bytes: Option<usize>,
    /// The service-center syncer's registry block.
    pub servicecenter: Option<LegacyRegistry>,
    /// service-center syncer keys with no effect here.
    pub log_file: Option<serde_yaml::Value>,
    /// Ignored (service-center syncer compatibility).
    pub profile: Option<serde_yaml::Value>,
    /// Ignored (service-center syncer compatibility).
    pub enable_compression: Option<serde_yaml::Value>,
    /// Ignored (service-center syncer compatibility).
    pub auto_sync: Option<serde_yaml::Value>,
    /// Mutual TLS of the exchange: the service-center syncer's block.
    pub tls_config: Option<FileTls>,
    /// As `--insecure`.
    pub insecure: Option<bool>,
}

/// The service-center syncer's `tls_config:` block (1.3.0 `syncer/config/tlsconfig.go`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// As `--tls-enabled`.
    pub enabled: Option<bool>,
    /// As `--tls-verify-peer`.
    pub verify_peer: Option<bool>,
    /// As `--tls-min-version` (`TLSv1.2`, `TLSv1.3`).
    pub min_version: Option<String>,
    /// As `--tls-passphrase`.
    pub passphrase: Option<String>,
    /// As `--tls-ca-file`.
    pub ca_file: Option<PathBuf>,
    /// As `--tls-cert-file`.
    pub cert_file: Option<PathBuf>,
    /// As `--tls-key-file`.
    pub key_file: Option<PathBuf>,
    /// As `--tls-ciphers`, a list.
    pub ciphers: Option<Vec<String>>,
}

/// The service-center syncer's `servicecenter:` block.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyRegistry {
    /// Registry address(es).
    pub addr: Option<String>,
    /// Plugin name.
    pub plugin: Option<PluginKind>,
    /// TLS of the registry client, for https:// addresses (as `--sc-tls-*`).
    pub tls_config: Option<FileTls>,
    /// The account to log in as, toward a service-center with RBAC (as `--sc-account`,
    /// `--sc-password-file`).
    pub auth: Option<crate::registry_auth::FileAuth>,
}

impl FileConfig {
    /// Reads and parses a config file.
    ///
    /// # Errors
    /// [`Error::Read`], [`Error::Parse`] (unknown keys included).
    pub fn load(path: &Path) -> Result<FileConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_yaml::from_str(&text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Where the daemon's registry is. `Debug` shows endpoint URLs redacted
/// ([`crate::credentials`]).
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryConfig {
    /// An external registry at these endpoints, reached through this plugin.
    External {
        /// The plugin.
        plugin: PluginKind,
        /// Endpoint URLs (with scheme).
        endpoints: Vec<String>,
    },
    /// The built-in core, served in-process on this address and synced through the
    /// servicecenter plugin.
    Builtin {
        /// HTTP address.
        listen: SocketAddr,
    },
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryConfig::External {
                plugin, endpoints, ..
            } => f
                .debug_struct("External")
                .field("plugin", plugin)
                .field("endpoints", &Redacted(endpoints))
                .finish_non_exhaustive(),
            RegistryConfig::Builtin { listen, .. } => f
                .debug_struct("Builtin")
                .field("listen", listen)
                .finish_non_exhaustive(),
        }
    }
}

/// The default `--cluster-name` of a daemon syncing the registry at `sc_addr` (the text as
/// given): the MD5 (hex) of that text with the user information (`user:pass@`) taken out of
/// each comma-separated address. The service-center syncer 1.3.0 hashed the raw text; without
/// credentials in the address the name is the same, with them it no longer carries a
/// password that could be brute-forced from the hash (the name is gossiped, sent with every
/// export and stored in `syncerOriginCluster` at every peer).
pub fn default_cluster_name(sc_addr: &str) -> String {
    let text = sc_addr
        .split(',')
        .map(without_userinfo)
        .collect::<Vec<_>>()
        .join(",");
    hex::encode(Md5::digest(text.as_bytes()))
}

/// Validated settings of `syncer daemon`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The registry to sync.
    pub registry: RegistryConfig,
    /// TLS toward an external registry with an `https://` address (`servicecenter.tls_config`,
    /// `--sc-tls-*`); `None` when no address is `https://` (or with the built-in core).
    pub registry_tls: Option<RegistryTlsConfig>,
    /// The account the servicecenter plugin logs in as, toward an external service-center
    /// with RBAC (`--sc-account`, `--sc-password-file`, `SYNCER_SC_PASSWORD`,
    /// `servicecenter.auth`); `None`: no login. `Debug` shows the password as `***`.
    pub registry_auth: Option<syncer_plugin_servicecenter::Credentials>,
    /// The built-in core over HTTPS (`--builtin-tls-*`); `None`: plain HTTP.
    pub builtin_tls: Option<CoreTlsConfig>,
    /// service-center's RBAC in the built-in core (`--builtin-rbac`); the daemon logs in to
    /// its core as root with this password. `None`: off.
    pub builtin_rbac: Option<crate::servicecenter::registry::rbac::RbacSettings>,
    /// Gossip (UDP) bind address.
    pub bind_addr: SocketAddr,
    /// Gossip address advertised to others, if not the bind address.
    pub advertise_addr: Option<SocketAddr>,
    /// gRPC bind address.
    pub rpc_addr: SocketAddr,
    /// Exchange connections open at once (`--rpc-max-connections`).
    pub rpc_max_connections: usize,
    /// The daemon's HTTP listener (`--http-addr`); `None`: off.
    pub http_addr: Option<SocketAddr>,
    /// The bearer token its requests must carry (`--http-token-file`, read at start);
    /// `None`: no token. `Debug` shows `***`.
    pub http_token: Option<crate::observe::http::Token>,
    /// The bearer token of the admin endpoints (`--admin-token-file`, read at start);
    /// `None`: they answer only on a loopback listener.
    pub admin_token: Option<crate::observe::http::Token>,
    /// The config file's `log_filter`, checked.
    pub log_filter: Option<String>,
    /// What the settings were resolved from, to resolve them again on SIGHUP or when the
    /// `--config` file changes; `None` without a `--config` file.
    pub source: Option<ConfigSource>,
    /// The built-in core's HTTP connections open at once (`--builtin-max-connections`).
    pub builtin_max_connections: usize,
    /// The built-in core's WebSocket watchers open at once (`--builtin-max-watchers`).
    pub builtin_max_watchers: usize,
    /// Members to join.
    pub join_addrs: Vec<SocketAddr>,
    /// This member's name.
    pub node: String,
    /// This site's name.
    pub cluster_name: String,
    /// Time between reconciles.
    pub ticker_interval: Duration,
    /// How long an unreachable peer's instances are kept.
    pub grace_period: Duration,
    /// The token bucket on registry writes (`--registry-write-rate`,
    /// `--registry-write-burst`); `None`: unlimited.
    pub registry_write_rate: Option<WriteRate>,
    /// The tenant a Eureka site's apps are reported under (`--eureka-domain-project`,
    /// validated `domain/project`); used by the eureka plugin only.
    pub eureka_domain_project: String,
    /// What this site exports and imports (`--export-include` and friends, YAML
    /// `filters`); the default passes everything.
    pub filters: crate::sync::filter::Filters,
    /// `--dry-run`: compute every write, make none.
    pub dry_run: bool,
    /// Cluster mode (compatibility only).
    pub mode: Mode,
    /// etcd of the leader election (`--election-etcd-endpoints`, else `--etcd-endpoints`,
    /// with the `--etcd-*` TLS and user settings); `None`: the first alive member by node
    /// name leads.
    pub election_etcd: Option<EtcdClientConfig>,
    /// The gossip keyring: `--encrypt` (one key) or the keys of `--keyring-file` as read at
    /// start; `None` gossips in the clear. Redacted in `Debug`.
    pub keyring: Option<Keyring>,
    /// `--keyring-file`, read again when it changes and on SIGHUP.
    pub keyring_file: Option<PathBuf>,
    /// Where the built-in core keeps its registry (used only with
    /// [`RegistryConfig::Builtin`]): etcd if `--etcd-endpoints`, else `--data-dir`.
    pub store: StoreConfig,
    /// Eureka self-preservation in the built-in core (`--eureka-self-preservation`).
    pub eureka_self_preservation: bool,
    /// The built-in core's quotas and instance size limit (`--quota-*`,
    /// `--max-instance-metadata-bytes`).
    pub builtin_limits: crate::servicecenter::registry::Limits,
    /// The built-in core's largest request body, bytes (`--max-body-bytes`).
    pub builtin_max_body_bytes: usize,
    /// Mutual TLS of the exchange (`--tls-enabled`, `tls_config`); `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// `--insecure`: listeners beyond loopback without encryption, TLS or authentication
    /// were allowed explicitly.
    pub insecure: bool,
}

/// The flags and environment a [`DaemonConfig`] came from, kept to read the `--config` file
/// again. `Debug` shows only the file's path (the flags may hold a gossip key).
#[derive(Clone)]
pub struct ConfigSource(std::sync::Arc<DaemonArgs>);

impl std::fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConfigSource").field(&self.0.config).finish()
    }
}

impl ConfigSource {
    /// The `--config` file.
    pub fn path(&self) -> Option<&Path> {
        self.0.config.as_deref()
    }

    /// Resolves the settings again: the flags and environment as at start, the file as it
    /// is now.
    ///
    /// # Errors
    /// As [`DaemonConfig::resolve`].
    pub fn resolve(&self) -> Result<DaemonConfig, Error> {
        DaemonConfig::resolve(DaemonArgs::clone(&self.0))
    }
}

impl DaemonConfig {
    /// Applies flag/env > file > default and validates.
    ///
    /// # Errors
    /// [`Error`] naming the setting at fault.
    pub fn resolve(args: DaemonArgs) -> Result<DaemonConfig, Error> {
        let source = args
            .config
            .is_some()
            .then(|| ConfigSource(std::sync::Arc::new(args.clone())));
        let mut file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let legacy = file.servicecenter.unwrap_or_default();
        let sc_tls = resolve_registry_tls(&args.registry, legacy.tls_config.unwrap_or_default())?;
        let registry_auth = crate::registry_auth::resolve(
            args.registry.sc_account.clone(),
            args.registry.sc_password_file.clone(),
            crate::registry_auth::password_from_env(),
            legacy.auth.unwrap_or_default(),
        )?;
        let builtin_tls = core_tls(
            [
                "--builtin-tls-cert-file",
                "--builtin-tls-key-file",
                "--builtin-tls-client-ca-file",
            ],
            args.builtin_tls_cert_file
                .clone()
                .or(file.builtin_tls_cert_file.take()),
            args.builtin_tls_key_file
                .clone()
                .or(file.builtin_tls_key_file.take()),
            args.builtin_tls_client_ca_file
                .clone()
                .or(file.builtin_tls_client_ca_file.take()),
        )?;
        let tls = resolve_tls(&args, file.tls_config.take().unwrap_or_default())?;
        let etcd_access = etcd::Access {
            user: args.etcd.etcd_user.clone().or(file.etcd_user.take()),
            password: etcd::Access::password_source(
                args.etcd.etcd_password_file.clone(),
                etcd::Access::password_from_env(),
                file.etcd_password_file.take(),
            ),
            ca_file: args.etcd.etcd_ca_file.clone().or(file.etcd_ca_file.take()),
            cert_file: args
                .etcd
                .etcd_cert_file
                .clone()
                .or(file.etcd_cert_file.take()),
            key_file: args
                .etcd
                .etcd_key_file
                .clone()
                .or(file.etcd_key_file.take()),
        };
        let store_etcd = EtcdClientConfig::resolve(
            "--etcd-endpoints",
            args.etcd_endpoints
                .clone()
                .or_else(|| file.etcd_endpoints.clone())
                .as_deref(),
            &etcd_access,
        )?;
        let election_etcd = match args
            .election_etcd_endpoints
            .clone()
            .or_else(|| file.election_etcd_endpoints.clone())
        {
            Some(list) => {
                EtcdClientConfig::resolve("--election-etcd-endpoints", Some(&list), &etcd_access)?
            }
            None => store_etcd.clone(),
        };
        if !etcd_access.is_empty() && store_etcd.is_none() && election_etcd.is_none() {
            return Err(invalid(
                "--etcd-user/--etcd-*-file",
                "",
                "etcd TLS or authentication settings are given, but no etcd endpoint: add \
                 --etcd-endpoints or --election-etcd-endpoints, or remove them",
            ));
        }
        let keyring_file = args
            .keyring_file
            .clone()
            .or_else(|| file.keyring_file.clone());
        let keyring = match (
            args.encrypt.clone().or_else(|| file.encrypt.clone()),
            &keyring_file,
        ) {
            (Some(_), Some(path)) => {
                return Err(invalid(
                    "--keyring-file",
                    &path.display().to_string(),
                    "cannot be combined with --encrypt (flag, SYNCER_ENCRYPT or `encrypt:`); \
                     give one: a keyring file of one line is the --encrypt key",
                ))
            }
            (Some(text), None) => Some(Keyring::single(
                GossipKey::from_base64(&text).map_err(|e| invalid("--encrypt", "<redacted>", e))?,
            )),
            (None, Some(path)) => Some(keyring::load(path).map_err(|source| Error::Keyring {
                path: path.clone(),
                source,
            })?),
            (None, None) => None,
        };
        let sc_addr = args.registry.sc_addr.or(file.sc_addr).or(legacy.addr);
        let plugin = args
            .registry
            .sc_plugin
            .or(file.sc_plugin)
            .or(legacy.plugin)
            .unwrap_or(PluginKind::Servicecenter);
        let node = match args.node.or(file.node) {
            Some(node) => node,
            None => hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "syncer".to_owned()),
        };
        if node.trim().is_empty() {
            return Err(invalid("--node", &node, "must not be empty"));
        }
        let registry = match &sc_addr {
            Some(addrs) => {
                let endpoints: Vec<String> = addrs
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        if a.contains("://") {
                            a.to_owned()
                        } else {
                            format!("http://{a}")
                        }
                    })
                    .collect();
                if endpoints.is_empty() {
                    return Err(invalid(
                        "--sc-addr",
                        &redact_list(addrs),
                        "no address given",
                    ));
                }
                RegistryConfig::External { plugin, endpoints }
            }
            None => {
                if plugin == PluginKind::Eureka {
                    return Err(invalid(
                        "--sc-plugin",
                        "eureka",
                        "the eureka plugin needs --sc-addr (e.g. http://127.0.0.1:8761/eureka)",
                    ));
                }
                let listen = match args.builtin_addr.or(file.builtin_addr) {
                    Some(a) => a,
                    None => DEFAULT_BUILTIN_ADDR
                        .parse()
                        .map_err(|e| invalid("--builtin-addr", DEFAULT_BUILTIN_ADDR, e))?,
                };
                RegistryConfig::Builtin { listen }
            }
        };
        let registry_tls = sc_tls.for_registry(&registry)?;
        if let Some(auth) = &registry_auth {
            let refusal = match &registry {
                RegistryConfig::External {
                    plugin: PluginKind::Eureka,
                    ..
                } => Some("applies to the servicecenter plugin only (Eureka takes user:pass@ in --sc-addr)"),
                RegistryConfig::External { endpoints, .. }
                    if endpoints.iter().any(|e| crate::credentials::has_userinfo(e)) =>
                {
                    Some("cannot be combined with user:pass@ in --sc-addr: give one")
                }
                RegistryConfig::External { .. } => None,
                RegistryConfig::Builtin { .. } => {
                    Some("applies to a registry given with --sc-addr, not to the built-in core")
                }
            };
            if let Some(reason) = refusal {
                return Err(invalid("--sc-account", &auth.account, reason));
            }
        }
        let builtin_rbac = if args.builtin_rbac || file.builtin_rbac.unwrap_or(false) {
            let file_path = args
                .builtin_rbac_root_password_file
                .clone()
                .or(file.builtin_rbac_root_password_file.take());
            let settings =
                crate::servicecenter::registry::rbac::RbacSettings::resolve(file_path.as_deref())
                    .map_err(|e| invalid("--builtin-rbac-root-password-file", "", &e))?;
            if settings.root_password.is_none() {
                return Err(invalid(
                    "--builtin-rbac",
                    "true",
                    "the daemon logs in to its core as root: give root's password with \
                     --builtin-rbac-root-password-file FILE or SYNCER_RBAC_ROOT_PASSWORD",
                ));
            }
            if let RegistryConfig::External { .. } = &registry {
                return Err(invalid(
                    "--builtin-rbac",
                    "true",
                    "the built-in core runs only without --sc-addr; for a registry with RBAC \
                     use --sc-account and --sc-password-file",
                ));
            }
            Some(settings)
        } else {
            None
        };
        if let (Some(core_tls), RegistryConfig::External { .. }) = (&builtin_tls, &registry) {
            return Err(invalid(
                "--builtin-tls-cert-file",
                &core_tls.cert_file.display().to_string(),
                "the built-in core runs only without --sc-addr; for an https:// registry use \
                 --sc-tls-ca-file (and --sc-tls-cert-file, --sc-tls-key-file)",
            ));
        }
        let cluster_name = match args.cluster_name.or(file.cluster_name) {
            Some(name) if !name.trim().is_empty() => name,
            Some(name) => return Err(invalid("--cluster-name", &name, "must not be empty")),
            None => match &sc_addr {
                // The service-center syncer's rule, without the credentials.
                Some(raw) => default_cluster_name(raw),
                // A built-in core belongs to this process alone: the site is the node.
                None => node.clone(),
            },
        };
        let insecure = args.insecure || file.insecure.unwrap_or(false);
        let gossip_sealed = keyring.is_some();
        // Secure by default: with nothing secure configured, listen on loopback only.
        let secure = gossip_sealed && tls.is_some();
        let default_host = if secure || insecure {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let bind_addr = socket_addr(
            "--bind-addr",
            args.bind_addr.or(file.bind_addr).as_deref(),
            default_host,
            DEFAULT_GOSSIP_PORT,
        )?;
        let rpc_addr = socket_addr(
            "--rpc-addr",
            args.rpc_addr.or(file.rpc_addr).as_deref(),
            default_host,
            DEFAULT_RPC_PORT,
        )?;
        if !insecure && !secure {
            for (setting, addr) in [("--bind-addr", bind_addr), ("--rpc-addr", rpc_addr)] {
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        setting,
                        &addr.to_string(),
                        format!(
                            "listening beyond loopback needs gossip encryption and exchange TLS ({}{}): \
                             set --encrypt or --keyring-file, and --tls-enabled with --tls-ca-file, \
                             --tls-cert-file, --tls-key-file (docs/security.md); or pass --insecure to \
                             let anyone who reaches these ports join, lead and read this site",
                            if gossip_sealed { "gossip is encrypted" } else { "gossip is not encrypted" },
                            if tls.is_some() { ", TLS is on" } else { ", TLS is off" },
                        ),
                    ));
                }
            }
        }
        // With client certificates required, or RBAC over HTTPS, the core authenticates its
        // callers.
        let core_authenticated = builtin_tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some() || builtin_rbac.is_some());
        if let RegistryConfig::Builtin { listen } = &registry {
            if !insecure && !core_authenticated && !listen.ip().is_loopback() {
                return Err(invalid(
                    "--builtin-addr",
                    &listen.to_string(),
                    "the built-in service-center authenticates its callers only with client \
                     certificates or RBAC over HTTPS: keep it on loopback, set \
                     --builtin-tls-cert-file and --builtin-tls-key-file with \
                     --builtin-tls-client-ca-file or --builtin-rbac, or pass --insecure to let \
                     anyone who reaches it read and write the registry",
                ));
            }
        }
        let mut join_addrs = Vec::new();
        if let Some(list) = args.join_addr.or(file.join_addr) {
            for a in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                join_addrs.push(socket_addr(
                    "--join-addr",
                    Some(a),
                    "",
                    DEFAULT_GOSSIP_PORT,
                )?);
            }
        }
        let ticker_secs = args
            .ticker_interval
            .or(file.ticker_interval)
            .unwrap_or(DEFAULT_TICKER_INTERVAL_SECS);
        if ticker_secs == 0 {
            return Err(invalid(
                "--ticker-interval",
                "0",
                "must be at least 1 second",
            ));
        }
        let filters = resolve_filters(
            [
                &args.export_include,
                &args.export_exclude,
                &args.import_include,
                &args.import_exclude,
            ],
            file.filters.take().unwrap_or_default(),
        )?;
        let dry_run = args.dry_run.or(file.dry_run).unwrap_or(false);
        let rpc_max_connections = connection_limit(
            "--rpc-max-connections",
            args.rpc_max_connections.or(file.rpc_max_connections),
            crate::exchange::transport::MAX_CONNECTIONS,
        )?;
        let builtin_max_connections = connection_limit(
            "--builtin-max-connections",
            args.builtin_max_connections
                .or(file.builtin_max_connections),
            crate::listener::http::MAX_CONNECTIONS,
        )?;
        let core_limits = args.core_limits.or(&CoreLimitsArgs {
            quota_services: file.quota_services,
            quota_instances: file.quota_instances,
            quota_schemas_per_service: file.quota_schemas_per_service,
            quota_tags_per_service: file.quota_tags_per_service,
            quota_rules_per_service: file.quota_rules_per_service,
            max_instance_metadata_bytes: file.max_instance_metadata_bytes,
            max_body_bytes: file.max_body_bytes,
        });
        for (setting, value) in [
            ("--quota-services", core_limits.quota_services),
            ("--quota-instances", core_limits.quota_instances),
            (
                "--quota-schemas-per-service",
                core_limits.quota_schemas_per_service,
            ),
            (
                "--quota-tags-per-service",
                core_limits.quota_tags_per_service,
            ),
            (
                "--quota-rules-per-service",
                core_limits.quota_rules_per_service,
            ),
            (
                "--max-instance-metadata-bytes",
                core_limits.max_instance_metadata_bytes,
            ),
            ("--max-body-bytes", core_limits.max_body_bytes),
        ] {
            if value == Some(0) {
                return Err(invalid(setting, "0", "must be at least 1"));
            }
        }
        let http_addr = match args.http_addr.or(file.http_addr) {
            Some(off) if off.trim().eq_ignore_ascii_case("off") => None,
            given => Some(socket_addr(
                "--http-addr",
                given.as_deref(),
                "127.0.0.1",
                DEFAULT_HTTP_PORT,
            )?),
        };
        let http_token = match args.http_token_file.or(file.http_token_file) {
            Some(path) => Some(crate::observe::http::Token::read(&path).map_err(|reason| {
                invalid("--http-token-file", &path.display().to_string(), reason)
            })?),
            None => None,
        };
        let admin_token = match args.admin_token_file.or(file.admin_token_file) {
            Some(path) => Some(crate::observe::http::Token::read(&path).map_err(|reason| {
                invalid("--admin-token-file", &path.display().to_string(), reason)
            })?),
            None => None,
        };
        let log_filter = match file.log_filter.take() {
            Some(text) => Some(
                crate::logging::parse(&text)
                    .map(|_| text.trim().to_owned())
                    .map_err(|reason| invalid("log_filter", &text, reason))?,
            ),
            None => None,
        };
        if let Some(addr) = http_addr {
            if !insecure && http_token.is_none() && !addr.ip().is_loopback() {
                return Err(invalid(
                    "--http-addr",
                    &addr.to_string(),
                    "the daemon's HTTP listener shows the whole site (members, services, \
                     instances, settings): beyond loopback set --http-token-file, or pass \
                     --insecure to let anyone who reaches it read them",
                ));
            }
        }
        let builtin_max_watchers = match args.builtin_max_watchers.or(file.builtin_max_watchers) {
            Some(0) => {
                return Err(invalid(
                    "--builtin-max-watchers",
                    "0",
                    "must be at least 1 watcher",
                ))
            }
            given => given.unwrap_or(crate::servicecenter::core::MAX_WATCHERS),
        };
        let registry_write_rate = write_rate(
            args.registry_write_rate.or(file.registry_write_rate),
            args.registry_write_burst.or(file.registry_write_burst),
        )?;
        let eureka_domain_project = args
            .eureka_domain_project
            .or(file.eureka_domain_project.take())
            .unwrap_or_else(|| syncer_plugin_api::DEFAULT_DOMAIN_PROJECT.to_owned());
        syncer_plugin_eureka::valid_domain_project(&eureka_domain_project)
            .map_err(|reason| invalid("--eureka-domain-project", &eureka_domain_project, reason))?;
        let grace_secs = args
            .grace_period
            .or(file.grace_period)
            .unwrap_or((ticker_secs * 4).max(30));
        Ok(DaemonConfig {
            registry,
            registry_tls,
            registry_auth,
            builtin_tls,
            builtin_rbac,
            bind_addr,
            advertise_addr: args.advertise_addr.or(file.advertise_addr),
            rpc_addr,
            rpc_max_connections,
            http_addr,
            http_token,
            admin_token,
            log_filter,
            source,
            builtin_max_connections,
            builtin_max_watchers,
            join_addrs,
            node,
            cluster_name,
            ticker_interval: Duration::from_secs(ticker_secs),
            grace_period: Duration::from_secs(grace_secs),
            registry_write_rate,
            eureka_domain_project,
            filters,
            dry_run,
            mode: args.mode.or(file.mode).unwrap_or(Mode::Single),
            election_etcd,
            keyring,
            keyring_file,
            store: StoreConfig::from_flags(args.data_dir.or(file.data_dir), store_etcd),
            eureka_self_preservation: args.eureka_self_preservation
                || file.eureka_self_preservation.unwrap_or(false),
            builtin_limits: self::core_limits(&core_limits),
            builtin_max_body_bytes: core_max_body_bytes(&core_limits),
            tls,
            insecure,
        })
    }
}

/// A token bucket on registry writes: `per_sec` writes per second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    /// Writes per second, sustained.
    pub per_sec: std::num::NonZeroU32,
    /// Writes at once (the bucket's size).
    pub burst: std::num::NonZeroU32,
}

/// The write rate of `--registry-write-rate` (`0` or none: unlimited) and
/// `--registry-write-burst` (none: a tenth of the rate, at least 1, so that no 1 s window
/// sees more than 1.1 x the rate; the restart-storm bench saw 1.68 x with a burst of a whole
/// second's worth).
///
/// # Errors
/// [`Error::Invalid`] for a burst of 0, or a burst without a rate.
pub fn write_rate(rate: Option<u32>, burst: Option<u32>) -> Result<Option<WriteRate>, Error> {
    let Some(per_sec) = rate.and_then(std::num::NonZeroU32::new) else {
        if let Some(burst) = burst {
            return Err(invalid(
                "--registry-write-burst",
                &burst.to_string(),
                "needs --registry-write-rate above 0 (the burst of an unlimited rate means nothing)",
            ));
        }
        return Ok(None);
    };
    let burst = match burst {
        None => std::num::NonZeroU32::new(per_sec.get() / 10).unwrap_or(std::num::NonZeroU32::MIN),
        Some(b) => std::num::NonZeroU32::new(b)
            .ok_or_else(|| invalid("--registry-write-burst", "0", "must be at least 1 write"))?,
    };
    Ok(Some(WriteRate { per_sec, burst }))
}

/// The filters: each of the four lists from its flag (or environment variable) when given,
/// else from the file's `filters` block; compiled.
///
/// # Errors
/// [`Error::Invalid`] naming the list's flag and the entry at fault.
fn resolve_filters(
    flags: [&Vec<String>; 4],
    file: crate::sync::filter::FiltersSpec,
) -> Result<crate::sync::filter::Filters, Error> {
    use crate::sync::filter::{Filter, FilterSpec, Filters, FiltersSpec};
    let pick = |flag: &Vec<String>, file: Vec<String>| {
        if flag.is_empty() {
            file
        } else {
            flag.clone()
        }
    };
    let [export_include, export_exclude, import_include, import_exclude] = flags;
    let spec = FiltersSpec {
        export: FilterSpec {
            include: pick(export_include, file.export.include),
            exclude: pick(export_exclude, file.export.exclude),
        },
        import: FilterSpec {
            include: pick(import_include, file.import.include),
            exclude: pick(import_exclude, file.import.exclude),
        },
    };
    // Each list alone first, so that the error names the flag of the entry at fault.
    for (setting, list, include) in [
        ("--export-include", &spec.export.include, true),
        ("--export-exclude", &spec.export.exclude, false),
        ("--import-include", &spec.import.include, true),
        ("--import-exclude", &spec.import.exclude, false),
    ] {
        let one = if include {
            FilterSpec {
                include: list.clone(),
                ..FilterSpec::default()
            }
        } else {
            FilterSpec {
                exclude: list.clone(),
                ..FilterSpec::default()
            }
        };
        if let Err(e) = Filter::new(&one) {
            return Err(invalid(setting, &list.join(","), e));
        }
    }
    Filters::new(&spec).map_err(|(direction, e)| invalid("filters", direction, e))
}

/// The registry's quotas and size limits of `args`: each value given, else its default
/// (service-center's quotas; see [`crate::servicecenter::registry::limits`]).
pub fn core_limits(args: &CoreLimitsArgs) -> crate::servicecenter::registry::Limits {
    let d = crate::servicecenter::registry::Limits::default();
    crate::servicecenter::registry::Limits {
        services: args.quota_services.unwrap_or(d.services),
        instances: args.quota_instances.unwrap_or(d.instances),
        schemas_per_service: args
            .quota_schemas_per_service
            .unwrap_or(d.schemas_per_service),
        tags_per_service: args.quota_tags_per_service.unwrap_or(d.tags_per_service),
        rules_per_service: args.quota_rules_per_service.unwrap_or(d.rules_per_service),
        instance_metadata_bytes: args
            .max_instance_metadata_bytes
            .unwrap_or(d.instance_metadata_bytes),
    }
}

/// The request body limit of `args`, else [`crate::listener::http::MAX_BODY_BYTES`].
pub fn core_max_body_bytes(args: &CoreLimitsArgs) -> usize {
    args.max_body_bytes
        .unwrap_or(crate::listener::http::MAX_BODY_BYTES)
}

/// A connection limit `given` for `setting`, else `default`; at least 1.
///
/// # Errors
/// [`Error`] when it is 0.
pub fn connection_limit(
    setting: &'static str,
    given: Option<usize>,
    default: usize,
) -> Result<usize, Error> {
    match given {
        Some(0) => Err(invalid(setting, "0", "must be at least 1 connection")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// The exchange's TLS settings: flag/env > `tls_config` > default (the service-center
/// syncer's files under `$SSL_ROOT` or `./certs`). `None` when TLS is not enabled.
fn resolve_tls(args: &DaemonArgs, file: FileTls) -> Result<Option<TlsConfig>, Error> {
    let enabled = args.tls_enabled.or(file.enabled).unwrap_or(false);
    if !enabled {
        // A file path given on the command line without enabling TLS is a mistake to report,
        // not to ignore: the user would believe the exchange is protected.
        for (setting, given) in [
            ("--tls-ca-file", args.tls_ca_file.is_some()),
            ("--tls-cert-file", args.tls_cert_file.is_some()),
            ("--tls-key-file", args.tls_key_file.is_some()),
        ] {
            if given {
                return Err(invalid(
                    setting,
                    "",
                    "TLS is not enabled: add --tls-enabled (or tls_config.enabled: true)",
                ));
            }
        }
        return Ok(None);
    }
    if !args.tls_verify_peer.or(file.verify_peer).unwrap_or(true) {
        return Err(invalid(
            "--tls-verify-peer",
            "false",
            "turning off peer verification would let any host read and feed this site; it is \
             not supported (verify_peer must be true)",
        ));
    }
    let defaults = TlsConfig::defaults();
    let min_version = min_version(
        "--tls-min-version",
        args.tls_min_version.clone().or(file.min_version),
    )?;
    let ciphers = cipher_list(args.tls_ciphers.as_deref(), file.ciphers);
    Ok(Some(TlsConfig {
        ca_file: args
            .tls_ca_file
            .clone()
            .or(file.ca_file)
            .unwrap_or(defaults.ca_file),
        cert_file: args
            .tls_cert_file
            .clone()
            .or(file.cert_file)
            .unwrap_or(defaults.cert_file),
        key_file: args
            .tls_key_file
            .clone()
            .or(file.key_file)
            .unwrap_or(defaults.key_file),
        passphrase: args
            .tls_passphrase
            .clone()
            .or(file.passphrase)
            .map(Secret::new),
        min_version,
        ciphers,
    }))
}

/// The built-in core's TLS settings from the certificate, key and client CA flags named
/// `flags` (in that order; `syncer servicecenter`'s `--tls-*` or the daemon's
/// `--builtin-tls-*`): `None` when none is given.
///
/// # Errors
/// [`Error::Invalid`] naming the missing flag when a key comes without a certificate, a
/// certificate without a key, or a client CA without both.
pub fn core_tls(
    flags: [&'static str; 3],
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
) -> Result<Option<CoreTlsConfig>, Error> {
    let missing = |given: &'static str, path: &PathBuf, needed: &str| {
        invalid(
            given,
            &path.display().to_string(),
            format!("needs {needed} too"),
        )
    };
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(CoreTlsConfig {
            cert_file,
            key_file,
            client_ca_file,
        })),
        (Some(cert), None) => Err(missing(flags[0], &cert, flags[1])),
        (None, Some(key)) => Err(missing(flags[1], &key, flags[0])),
        (None, None) => match client_ca_file {
            Some(ca) => Err(missing(
                flags[2],
                &ca,
                &format!("{} and {}", flags[0], flags[1]),
            )),
            None => Ok(None),
        },
    }
}

/// The registry client's TLS settings as given (flag/env > `servicecenter.tls_config` >
/// service-center's default files where they exist > the system's trust store), checked
/// against the registry's addresses by [`ScTls::for_registry`].
#[derive(Debug)]
struct ScTls {
    settings: RegistryTlsConfig,
    /// `servicecenter.tls_config.enabled`.
    enabled: Option<bool>,
    /// The first `--sc-tls-*` flag (or env var) given, if any.
    flag_given: Option<&'static str>,
}

impl ScTls {
    /// The settings for `registry`: `None` unless an external address is `https://`.
    fn for_registry(self, registry: &RegistryConfig) -> Result<Option<RegistryTlsConfig>, Error> {
        let https = match registry {
            RegistryConfig::External { endpoints, .. } => endpoints
                .iter()
                .any(|e| syncer_plugin_http::client::is_https(e)),
            RegistryConfig::Builtin { .. } => false,
        };
        if !https {
            // A flag given for nothing is a mistake to report, not to ignore: the user would
            // believe the registry link is protected. (The YAML block may stay, as in
            // service-center's own files, where it is on by default.)
            if let Some(flag) = self.flag_given {
                return Err(invalid(
                    flag,
                    "",
                    "applies to https:// registry addresses only: give --sc-addr https://...",
                ));
            }
            return Ok(None);
        }
        if self.enabled == Some(false) {
            return Err(invalid(
                "--sc-addr",
                "https://...",
                "servicecenter.tls_config.enabled is false but the registry address is https://; \
                 remove `enabled: false` or use http://",
            ));
        }
        Ok(Some(self.settings))
    }
}

/// Reads the registry client's TLS settings (see [`ScTls`]).
fn resolve_registry_tls(args: &RegistryArgs, file: FileTls) -> Result<ScTls, Error> {
    let flag_given = [
        ("--sc-tls-ca-file", args.sc_tls_ca_file.is_some()),
        ("--sc-tls-cert-file", args.sc_tls_cert_file.is_some()),
        ("--sc-tls-key-file", args.sc_tls_key_file.is_some()),
        ("--sc-tls-passphrase", args.sc_tls_passphrase.is_some()),
        ("--sc-tls-verify-peer", args.sc_tls_verify_peer.is_some()),
        ("--sc-tls-min-version", args.sc_tls_min_version.is_some()),
        ("--sc-tls-ciphers", args.sc_tls_ciphers.is_some()),
    ]
    .into_iter()
    .find_map(|(flag, given)| given.then_some(flag));
    let min_version = min_version(
        "--sc-tls-min-version",
        args.sc_tls_min_version.clone().or(file.min_version),
    )?;
    let ciphers = cipher_list(args.sc_tls_ciphers.as_deref(), file.ciphers);
    // Check the names now: a typo is an error at start, naming the flag.
    crate::tls::provider(&ciphers)
        .map_err(|e| invalid("--sc-tls-ciphers", &ciphers.join(","), e))?;
    let dir = crate::registry_tls::default_dir();
    let existing = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    let ca_file = args
        .sc_tls_ca_file
        .clone()
        .or(file.ca_file)
        .or_else(|| existing(crate::tls::DEFAULT_CA_FILE));
    let (cert_file, key_file) = match (
        args.sc_tls_cert_file.clone().or(file.cert_file),
        args.sc_tls_key_file.clone().or(file.key_file),
    ) {
        (Some(cert), Some(key)) => (Some(cert), Some(key)),
        (Some(cert), None) => {
            return Err(invalid(
                "--sc-tls-cert-file",
                &cert.display().to_string(),
                "needs --sc-tls-key-file too (or servicecenter.tls_config.key_file)",
            ))
        }
        (None, Some(key)) => {
            return Err(invalid(
                "--sc-tls-key-file",
                &key.display().to_string(),
                "needs --sc-tls-cert-file too (or servicecenter.tls_config.cert_file)",
            ))
        }
        // service-center's default pair, when both files are there.
        (None, None) => match (
            existing(crate::tls::DEFAULT_CERT_FILE),
            existing(crate::tls::DEFAULT_KEY_FILE),
        ) {
            (Some(cert), Some(key)) => (Some(cert), Some(key)),
            _ => (None, None),
        },
    };
    Ok(ScTls {
        settings: RegistryTlsConfig {
            ca_file,
            cert_file,
            key_file,
            passphrase: args
                .sc_tls_passphrase
                .clone()
                .or(file.passphrase)
                .map(Secret::new),
            verify_peer: args.sc_tls_verify_peer.or(file.verify_peer).unwrap_or(true),
            min_version,
            ciphers,
        },
        enabled: file.enabled,
        flag_given,
    })
}

/// `min_version` of a TLS block (flag or file text), TLS 1.2 when not given.
fn min_version(setting: &'static str, text: Option<String>) -> Result<TlsVersion, Error> {
    match text {
        Some(text) => TlsVersion::parse(&text).map_err(|e| invalid(setting, &text, e)),
        None => Ok(TlsVersion::Tls12),
    }
}

/// `ciphers` of a TLS block: the flag's comma list, else the file's list, else none.
fn cipher_list(flag: Option<&str>, file: Option<Vec<String>>) -> Vec<String> {
    match flag {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.unwrap_or_default(),
    }
}

fn invalid(setting: &'static str, value: &str, reason: impl ToString) -> Error {
    Error::Invalid {
        setting,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// Parses `host:port`, `host` (port defaulted) or `:port` (host defaulted), resolving names.
fn socket_addr(
    setting: &'static str,
    value: Option<&str>,
    default_host: &str,
    default_port: u16,
) -> Result<SocketAddr, Error> {
    let value = value.map(str::trim).unwrap_or("");
    let text = if value.is_empty() {
        format!("{default_host}:{default_port}")
    } else if let Some(port) = value.strip_prefix(':') {
        format!("{default_host}:{port}")
    } else if value.parse::<SocketAddr>().is_ok() || has_port(value) {
        value.to_owned()
    } else if value.contains(':') {
        // A bare IPv6 address.
        format!("[{value}]:{default_port}")
    } else {
        format!("{value}:{default_port}")
    };
    text.to_socket_addrs()
        .map_err(|e| invalid(setting, value, format!("not an address: {e}")))?
        .next()
        .ok_or_else(|| invalid(setting, value, "resolves to no address"))
}

fn has_port(value: &str) -> bool {
    match value.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && (!host.contains(':') || host.ends_with(']'))
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_service_center_syncers() {
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            ..Default::default()
        })
        .expect("valid");
        // Nothing secure configured: the service-center syncer's ports, on loopback only.
        assert_eq!(c.bind_addr, "127.0.0.1:30190".parse().expect("addr"));
        assert_eq!(c.rpc_addr, "127.0.0.1:30191".parse().expect("addr"));
        assert!(c.tls.is_none() && !c.insecure);
        assert_eq!(
            c.registry,
            RegistryConfig::Builtin {
                listen: "127.0.0.1:30100".parse().expect("addr")
            }
        );
        assert_eq!(c.cluster_name, "n1");
        assert_eq!(c.ticker_interval, Duration::from_secs(30));
    }

    #[test]
    fn cluster_name_defaults_to_md5_of_sc_addr_and_ports_default() {
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            registry: RegistryArgs {
                sc_addr: Some("http://127.0.0.1:30100".into()),
                ..Default::default()
            },
            bind_addr: Some("127.0.0.2".into()),
            rpc_addr: Some(":4000".into()),
            join_addr: Some("127.0.0.3, 127.0.0.4:7000".into()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(
            c.cluster_name,
            hex::encode(Md5::digest(b"http://127.0.0.1:30100"))
        );
        assert_eq!(c.bind_addr, "127.0.0.2:30190".parse().expect("addr"));
        assert_eq!(c.rpc_addr, "127.0.0.1:4000".parse().expect("addr"));
        assert_eq!(
            c.join_addrs,
            vec![
                "127.0.0.3:30190".parse().expect("addr"),
                "127.0.0.4:7000".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn the_default_cluster_name_hashes_the_addresses_without_their_credentials() {
        // Without credentials: the service-center syncer 1.3.0's name, the MD5 of the text.
        for raw in [
            "http://127.0.0.1:30100",
            "10.0.0.1:30100, http://10.0.0.2:30100",
        ] {
            assert_eq!(
                default_cluster_name(raw),
                hex::encode(Md5::digest(raw.as_bytes()))
            );
        }
        // With them: the MD5 of the text with each `user:pass@` taken out.
        assert_eq!(
            default_cluster_name(
                "http://scUser:s3cretPW2@10.0.0.1:30100,http://u:p@10.0.0.2:30100"
            ),
            hex::encode(Md5::digest(b"http://10.0.0.1:30100,http://10.0.0.2:30100"))
        );
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            registry: RegistryArgs {
                sc_addr: Some("http://scUser:s3cretPW2@127.0.0.1:30100".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(
            c.cluster_name,
            hex::encode(Md5::digest(b"http://127.0.0.1:30100"))
        );
        // The plugin still gets the credentials; nothing shown has them.
        assert!(
            matches!(&c.registry, RegistryConfig::External { endpoints, .. }
            if endpoints == &["http://scUser:s3cretPW2@127.0.0.1:30100"])
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cretPW2"), "{shown}");
        assert!(shown.contains("scUser:***@127.0.0.1:30100"), "{shown}");
    }

    #[test]
    fn core_limits_come_from_flags_then_the_file_then_service_center_s_defaults() {
        let c = DaemonConfig::resolve(DaemonArgs::default()).expect("defaults");
        assert_eq!(
            c.builtin_limits,
            crate::servicecenter::registry::Limits::default()
        );
        assert_eq!(c.builtin_limits.services, 50_000);
        assert_eq!(c.builtin_limits.instances, 150_000);
        assert_eq!(c.builtin_max_body_bytes, 2 * 1024 * 1024);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "quota_instances: 7\nquota_tags_per_service: 3\nmax_body_bytes: 4096\n",
        )
        .expect("write");
        let mut args = DaemonArgs {
            config: Some(path.clone()),
            ..DaemonArgs::default()
        };
        args.core_limits.quota_instances = Some(9);
        let c = DaemonConfig::resolve(args).expect("given");
        assert_eq!(c.builtin_limits.instances, 9);
        assert_eq!(c.builtin_limits.tags_per_service, 3);
        assert_eq!(c.builtin_limits.rules_per_service, 100);
        assert_eq!(c.builtin_max_body_bytes, 4096);
        std::fs::write(&path, "quota_services: 0\n").expect("write");
        let e = DaemonConfig::resolve(DaemonArgs {
            config: Some(path),
            ..DaemonArgs::default()
        })
        .expect_err("zero");
        assert!(e.to_string().contains("--quota-services"), "{e}");
    }

    #[test]
    fn connection_limits_default_and_refuse_zero() {
        let c = DaemonConfig::resolve(DaemonArgs::default()).expect("defaults");
        assert_eq!(c.rpc_max_connections, 256);
        assert_eq!(c.builtin_max_connections, 512);
        let c = DaemonConfig::resolve(DaemonArgs {
            rpc_max_connections: Some(9),
            builtin_max_connections: Some(7),
            ..DaemonArgs::default()
        })
        .expect("given");
        assert_eq!((c.rpc_max_connections, c.builtin_max_connections), (9, 7));
        assert_eq!(c.builtin_max_watchers, 1_000);
        let c = DaemonConfig::resolve(DaemonArgs {
            builtin_max_watchers: Some(3),
            ..DaemonArgs::default()
        })
        .expect("given");
        assert_eq!(c.builtin_max_watchers, 3);
        let e = DaemonConfig::resolve(DaemonArgs {
            builtin_max_watchers: Some(0),
            ..DaemonArgs::default()
        })
        .expect_err("zero");
        assert!(e.to_string().contains("--builtin-max-watchers"), "{e}");
        // `syncer servicecenter --max-watchers` writes the core's default out (cli.rs).
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(["syncer", "servicecenter"])
            .expect("parsed");
        let crate::cli::Command::Servicecenter(args) = cli.command else {
            panic!("not the servicecenter command");
        };
        assert_eq!(args.max_watchers, crate::servicecenter::core::MAX_WATCHERS);
        let e = DaemonConfig::resolve(DaemonArgs {
            rpc_max_connections: Some(0),
            ..DaemonArgs::default()
        })
        .expect_err("zero");
        assert!(e.to_string().contains("--rpc-max-connections"), "{e}");
    }

    #[test]
    fn the_http_listener_defaults_to_loopback_turns_off_and_needs_a_token_beyond() {
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            ..Default::default()
        })
        .expect("defaults");
        assert_eq!(
            c.http_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)))
        );
        assert!(c.http_token.is_none());
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            http_addr: Some("off".into()),
            ..Default::default()
        })
        .expect("off");
        assert_eq!(c.http_addr, None);
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            http_addr: Some("0.0.0.0:9000".into()),
            ..Default::default()
        })
        .expect_err("open listener");
        assert!(err.to_string().contains("--http-token-file"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "  t0ken \n").expect("token");
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            http_addr: Some("0.0.0.0:9000".into()),
            http_token_file: Some(token.clone()),
            ..Default::default()
        })
        .expect("with a token");
        let t = c.http_token.expect("token read");
        assert!(t.matches("t0ken") && !t.matches("other"));
        assert_eq!(format!("{t:?}"), "***");
        std::fs::write(&token, "\n").expect("empty token");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            http_token_file: Some(token),
            ..Default::default()
        })
        .expect_err("empty token");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn beyond_loopback_needs_encryption_and_tls_or_an_explicit_insecure() {
        let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_args = |mut args: DaemonArgs| {
            args.tls_enabled = Some(true);
            args.tls_ca_file = Some(dir.path().join("ca.pem"));
            args.tls_cert_file = Some(dir.path().join("cert.pem"));
            args.tls_key_file = Some(dir.path().join("key.pem"));
            args
        };
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            bind_addr: Some("0.0.0.0".into()),
            ..Default::default()
        })
        .expect_err("open gossip");
        let text = err.to_string();
        assert!(
            text.contains("--bind-addr") && text.contains("--insecure"),
            "{text}"
        );
        assert!(
            text.contains("--tls-enabled") && text.contains("--keyring-file"),
            "{text}"
        );
        // Encryption alone is not enough: the exchange would be open.
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            rpc_addr: Some("0.0.0.0:4000".into()),
            encrypt: Some(key.into()),
            ..Default::default()
        })
        .expect_err("open exchange");
        assert!(err.to_string().contains("--rpc-addr"), "{err}");
        // Both: the service-center syncer's defaults come back.
        let c = DaemonConfig::resolve(tls_args(DaemonArgs {
            node: Some("n1".into()),
            encrypt: Some(key.into()),
            ..Default::default()
        }))
        .expect("secure");
        assert_eq!(c.bind_addr, "0.0.0.0:30190".parse().expect("addr"));
        assert_eq!(c.rpc_addr, "0.0.0.0:30191".parse().expect("addr"));
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert_file, dir.path().join("cert.pem"));
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        // --insecure: the same defaults, without protection.
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            insecure: true,
            ..Default::default()
        })
        .expect("insecure");
        assert_eq!(c.bind_addr, "0.0.0.0:30190".parse().expect("addr"));
        assert!(c.insecure);
        // The built-in core has no authentication: beyond loopback only with --insecure.
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            builtin_addr: Some("0.0.0.0:30100".parse().expect("addr")),
            ..Default::default()
        })
        .expect_err("open core");
        assert!(err.to_string().contains("--builtin-addr"), "{err}");
    }

    #[test]
    fn tls_settings_come_from_flags_or_the_tls_config_block_and_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syncer.yaml");
        std::fs::write(
            &path,
            "tls_config:\n  enabled: true\n  verify_peer: true\n  min_version: TLSv1.3\n  passphrase: s3cret\n  ca_file: /x/ca.pem\n  cert_file: /x/cert.pem\n  key_file: /x/key.pem\n  ciphers: [TLS_AES_128_GCM_SHA256]\n",
        )
        .expect("write");
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            config: Some(path.clone()),
            tls_cert_file: Some("/y/cert.pem".into()),
            ..Default::default()
        })
        .expect("valid");
        let tls = c.tls.expect("enabled by the file");
        assert_eq!(tls.ca_file, PathBuf::from("/x/ca.pem"));
        assert_eq!(tls.cert_file, PathBuf::from("/y/cert.pem"), "the flag wins");
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.ciphers, ["TLS_AES_128_GCM_SHA256"]);
        assert!(
            !format!("{tls:?}").contains("s3cret"),
            "the passphrase is redacted"
        );
        // Defaults: the service-center syncer's file names.
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            tls_enabled: Some(true),
            ..Default::default()
        })
        .expect("valid");
        let tls = c.tls.expect("enabled");
        assert!(tls.ca_file.ends_with("trust.cer"), "{tls:?}");
        assert!(tls.cert_file.ends_with("server.cer"), "{tls:?}");
        assert!(tls.key_file.ends_with("server_key.pem"), "{tls:?}");
        // Turning verification off is refused; so is a file flag without --tls-enabled.
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            tls_enabled: Some(true),
            tls_verify_peer: Some(false),
            ..Default::default()
        })
        .expect_err("no verification");
        assert!(err.to_string().contains("--tls-verify-peer"), "{err}");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            tls_cert_file: Some("/y/cert.pem".into()),
            ..Default::default()
        })
        .expect_err("not enabled");
        assert!(err.to_string().contains("--tls-enabled"), "{err}");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            tls_enabled: Some(true),
            tls_min_version: Some("TLSv1.0".into()),
            ..Default::default()
        })
        .expect_err("old version");
        assert!(err.to_string().contains("--tls-min-version"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syncer.yaml");
        std::fs::write(
            &path,
            "node: from-file\nticker_interval: 9\nservicecenter:\n  addr: http://10.0.0.1:8761/eureka\n  plugin: eureka\ntls_config:\n  enabled: false\n",
        )
        .expect("write");
        let c = DaemonConfig::resolve(DaemonArgs {
            config: Some(path.clone()),
            ticker_interval: Some(2),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.node, "from-file");
        assert_eq!(c.ticker_interval, Duration::from_secs(2));
        assert!(matches!(
            c.registry,
            RegistryConfig::External {
                plugin: PluginKind::Eureka,
                ..
            }
        ));

        std::fs::write(&path, "nodes: typo\n").expect("write");
        let err = DaemonConfig::resolve(DaemonArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("unknown key");
        assert!(err.to_string().contains("nodes"), "{err}");
    }

    #[test]
    fn filters_come_from_flags_env_or_the_file_and_a_bad_glob_names_its_flag_and_entry() {
        use clap::Parser;
        let daemon = |argv: &[&str]| -> DaemonArgs {
            let cli = crate::cli::Cli::try_parse_from(
                ["syncer", "daemon", "--node", "n1"].iter().chain(argv),
            )
            .expect("parse");
            match cli.command {
                crate::cli::Command::Daemon(args) => *args,
                other => panic!("not daemon: {other:?}"),
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syncer.yaml");
        std::fs::write(
            &path,
            "filters:\n  export:\n    include: ['default/default/*/orders-*']\n    exclude: ['meta:env=dev']\n  import:\n    exclude: ['**/secret-*']\ndry_run: true\n",
        )
        .expect("write");
        let path_arg = path.display().to_string();
        let c = DaemonConfig::resolve(daemon(&["--config", &path_arg])).expect("valid");
        assert_eq!(
            c.filters.spec().export.include,
            vec!["default/default/*/orders-*".to_string()]
        );
        assert_eq!(
            c.filters.spec().import.exclude,
            vec!["**/secret-*".to_string()]
        );
        assert!(c.dry_run);

        // Flags: comma separated and repeatable, each list overriding the file's.
        let c = DaemonConfig::resolve(daemon(&[
            "--config",
            &path_arg,
            "--export-include",
            "a/b/c/d,a/b/c/e",
            "--export-include",
            "meta:env=prod",
            "--dry-run=false",
        ]))
        .expect("valid");
        assert_eq!(
            c.filters.spec().export.include,
            vec!["a/b/c/d", "a/b/c/e", "meta:env=prod"]
        );
        assert_eq!(c.filters.spec().export.exclude, vec!["meta:env=dev"]);
        assert!(!c.dry_run);

        let err = DaemonConfig::resolve(daemon(&["--import-exclude", "default/default/[x/y"]))
            .expect_err("bad glob");
        let text = err.to_string();
        assert!(
            text.contains("--import-exclude") && text.contains("default/default/[x/y"),
            "{text}"
        );
        let err = DaemonConfig::resolve(daemon(&["--export-include", "orders-*"]))
            .expect_err("three parts short");
        assert!(err.to_string().contains("--export-include"), "{err}");

        std::fs::write(&path, "filters:\n  exports: {}\n").expect("write");
        assert!(DaemonConfig::resolve(daemon(&["--config", &path_arg])).is_err());

        // The environment, comma separated like the flag (a variable only this test uses).
        std::env::set_var(
            "SYNCER_IMPORT_INCLUDE",
            "default/default/shop/*,meta:env=prod",
        );
        let args = daemon(&[]);
        std::env::remove_var("SYNCER_IMPORT_INCLUDE");
        let c = DaemonConfig::resolve(args).expect("valid");
        assert_eq!(
            c.filters.spec().import.include,
            vec!["default/default/shop/*", "meta:env=prod"]
        );
        assert!(c.filters.export.is_everything());
    }

    #[test]
    fn the_grace_period_defaults_to_one_lease_of_a_copy_and_at_least_30_s() {
        let grace = |tick: u64| {
            DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                ticker_interval: Some(tick),
                ..Default::default()
            })
            .expect("valid")
            .grace_period
        };
        // A copy's lease is 4 ticks (healthCheck interval = tick, times = 3).
        assert_eq!(grace(30), Duration::from_secs(120));
        assert_eq!(grace(10), Duration::from_secs(40));
        assert_eq!(grace(1), Duration::from_secs(30));
    }

    #[test]
    fn the_election_uses_etcd_endpoints_unless_given_its_own_and_keys_are_checked() {
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            etcd_endpoints: Some("127.0.0.1:2379, http://10.0.0.2:2379".into()),
            ..Default::default()
        })
        .expect("valid");
        let endpoints = |etcd: &Option<EtcdClientConfig>| {
            etcd.as_ref()
                .map(|e| e.endpoints.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            endpoints(&c.election_etcd),
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert!(c.keyring.is_none());
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            etcd_endpoints: Some("http://127.0.0.1:2379".into()),
            election_etcd_endpoints: Some("http://10.0.0.9:2379".into()),
            encrypt: Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(endpoints(&c.election_etcd), ["http://10.0.0.9:2379"]);
        assert_eq!(c.keyring.as_ref().map(Keyring::len), Some(1));
        assert!(!format!("{c:?}").contains("BwcH"), "the key is redacted");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            encrypt: Some("c2hvcnQ=".into()),
            ..Default::default()
        })
        .expect_err("a short key");
        assert!(err.to_string().contains("--encrypt"), "{err}");
        assert!(!err.to_string().contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn etcd_tls_and_user_come_from_flags_or_the_file_and_serve_the_store_and_the_election() {
        let dir = tempfile::tempdir().expect("tempdir");
        let password = dir.path().join("etcd-password");
        std::fs::write(&password, "etcdPW9\n").expect("write");
        let yaml = dir.path().join("syncer.yaml");
        std::fs::write(
            &yaml,
            format!(
                "etcd_endpoints: 127.0.0.1:2379\netcd_user: root\netcd_password_file: {}\n\
                 etcd_ca_file: /x/ca.pem\netcd_cert_file: /x/cert.pem\netcd_key_file: /x/key.pem\n",
                password.display()
            ),
        )
        .expect("write");
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            config: Some(yaml),
            etcd: crate::cli::EtcdArgs {
                etcd_ca_file: Some("/y/ca.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid");
        let StoreConfig::Etcd(store) = &c.store else {
            panic!("an etcd store: {:?}", c.store)
        };
        assert_eq!(store.endpoints, ["https://127.0.0.1:2379"]);
        assert_eq!(store.user(), Some("root"));
        let tls = store.tls.as_ref().expect("tls");
        assert_eq!(tls.ca_file, PathBuf::from("/y/ca.pem"), "the flag wins");
        assert_eq!(c.election_etcd.as_ref(), Some(store));
        assert!(!format!("{c:?}").contains("etcdPW9"), "{c:?}");

        // Credentials in the URL are refused, never ignored; the password is not quoted.
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            election_etcd_endpoints: Some("http://root:etcdPW9@127.0.0.1:2379".into()),
            ..Default::default()
        })
        .expect_err("credentials in the URL");
        let text = err.to_string();
        assert!(text.contains("--election-etcd-endpoints"), "{text}");
        assert!(!text.contains("etcdPW9"), "{text}");
        // Settings without any etcd endpoint are a mistake to report.
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            etcd: crate::cli::EtcdArgs {
                etcd_user: Some("root".into()),
                etcd_password_file: Some(password),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect_err("no endpoint");
        assert!(err.to_string().contains("--etcd-endpoints"), "{err}");
    }

    #[test]
    fn a_keyring_file_is_read_from_lines_comments_or_a_json_array() {
        use base64::Engine;
        let b64 = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring");
        let resolve = |args: DaemonArgs| {
            DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                ..args
            })
        };
        let expected = Keyring::new(vec![
            GossipKey::from_bytes([2; 32]),
            GossipKey::from_bytes([1; 32]),
        ]);
        std::fs::write(
            &path,
            format!("# new first\n{}\n\n{} # old\n", b64(2), b64(1)),
        )
        .expect("write");
        let c = resolve(DaemonArgs {
            keyring_file: Some(path.clone()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.keyring, expected);
        assert_eq!(c.keyring_file.as_deref(), Some(path.as_path()));
        assert!(
            !format!("{c:?}").contains(&b64(2)[..8]),
            "keys are redacted"
        );

        // serf's format, from the config file.
        std::fs::write(&path, format!("[\"{}\", \"{}\"]", b64(2), b64(1))).expect("write");
        let yaml = dir.path().join("syncer.yaml");
        std::fs::write(&yaml, format!("keyring_file: {}\n", path.display())).expect("write");
        let c = resolve(DaemonArgs {
            config: Some(yaml),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(c.keyring, expected);

        // An empty file is refused.
        std::fs::write(&path, "# no key yet\n").expect("write");
        let err = resolve(DaemonArgs {
            keyring_file: Some(path.clone()),
            ..Default::default()
        })
        .expect_err("no key");
        assert!(matches!(err, Error::Keyring { .. }), "{err}");
    }

    #[test]
    fn encrypt_and_a_keyring_file_together_are_an_error_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring");
        std::fs::write(&path, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").expect("write");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            encrypt: Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into()),
            keyring_file: Some(path),
            ..Default::default()
        })
        .expect_err("both");
        let message = err.to_string();
        assert!(message.contains("--encrypt"), "{message}");
        assert!(message.contains("--keyring-file"), "{message}");
        assert!(!message.contains("BwcH"), "{message}");
    }

    #[test]
    fn a_bad_key_in_the_keyring_file_names_its_line_but_not_its_text() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keyring");
        // The second key lost a character.
        std::fs::write(
            &path,
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\nCAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICA=\n",
        )
        .expect("write");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            keyring_file: Some(path.clone()),
            ..Default::default()
        })
        .expect_err("a bad key");
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(message.contains("--keyring-file"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 2"), "{message}");
        assert!(!message.contains("CAgI"), "{message}");
        assert!(!message.contains("BwcH"), "{message}");
    }

    #[test]
    fn registry_tls_comes_from_the_servicecenter_block_and_a_flag_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syncer.yaml");
        std::fs::write(
            &path,
            "servicecenter:\n  addr: https://127.0.0.1:30100\n  plugin: servicecenter\n  tls_config:\n    enabled: true\n    verify_peer: true\n    min_version: TLSv1.3\n    passphrase: s3cret\n    ca_file: /x/ca.pem\n    cert_file: /x/cert.pem\n    key_file: /x/key.pem\n    ciphers: [TLS_AES_128_GCM_SHA256]\n",
        )
        .expect("write");
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            config: Some(path),
            registry: RegistryArgs {
                sc_tls_ca_file: Some("/y/ca.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid");
        let tls = c.registry_tls.clone().expect("https registry");
        assert_eq!(
            tls.ca_file,
            Some(PathBuf::from("/y/ca.pem")),
            "the flag wins"
        );
        assert_eq!(tls.cert_file, Some(PathBuf::from("/x/cert.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("/x/key.pem")));
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.ciphers, ["TLS_AES_128_GCM_SHA256"]);
        assert!(tls.verify_peer);
        assert!(c.tls.is_none(), "the exchange's TLS is another block");
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the passphrase is redacted"
        );
        // verify_peer: false is allowed toward the registry (logged at WARN at start).
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            registry: RegistryArgs {
                sc_addr: Some("https://127.0.0.1:30100".into()),
                sc_tls_verify_peer: Some(false),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid");
        assert!(!c.registry_tls.expect("https").verify_peer);
    }

    #[test]
    fn registry_tls_applies_to_https_addresses_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syncer.yaml");
        // service-center's files carry the block on by default: with http:// it is unused.
        std::fs::write(
            &path,
            "servicecenter:\n  addr: http://127.0.0.1:30100\n  tls_config:\n    enabled: true\n    ca_file: /x/ca.pem\n",
        )
        .expect("write");
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            config: Some(path),
            ..Default::default()
        })
        .expect("valid");
        assert!(c.registry_tls.is_none());
        // A flag for an http:// registry or the built-in core is a mistake, named.
        for sc_addr in [Some("http://127.0.0.1:30100".to_owned()), None] {
            let err = DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                registry: RegistryArgs {
                    sc_addr,
                    sc_tls_ca_file: Some("/x/ca.pem".into()),
                    ..Default::default()
                },
                ..Default::default()
            })
            .expect_err("nothing to apply to");
            assert!(err.to_string().contains("--sc-tls-ca-file"), "{err}");
        }
        // One https:// address among several is enough.
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            registry: RegistryArgs {
                sc_addr: Some("http://10.0.0.1:30100,https://10.0.0.2:30100".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid");
        let tls = c.registry_tls.expect("https");
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert!(tls.verify_peer && tls.cert_file.is_none());
    }

    #[test]
    fn registry_tls_errors_name_the_flag() {
        let resolve = |args: DaemonArgs| {
            DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                registry: RegistryArgs {
                    sc_addr: Some("https://127.0.0.1:30100".into()),
                    ..args.registry
                },
                ..args
            })
        };
        let err = resolve(DaemonArgs {
            registry: RegistryArgs {
                sc_tls_cert_file: Some("/x/cert.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect_err("no key");
        assert!(err.to_string().contains("--sc-tls-cert-file"), "{err}");
        assert!(err.to_string().contains("--sc-tls-key-file"), "{err}");
        let err = resolve(DaemonArgs {
            registry: RegistryArgs {
                sc_tls_min_version: Some("TLSv1.1".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect_err("old version");
        assert!(err.to_string().contains("--sc-tls-min-version"), "{err}");
        let err = resolve(DaemonArgs {
            registry: RegistryArgs {
                sc_tls_ciphers: Some("TLS_RSA_WITH_RC4_128_MD5".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect_err("unknown cipher");
        assert!(err.to_string().contains("--sc-tls-ciphers"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("syncer.yaml");
        std::fs::write(&path, "servicecenter:\n  tls_config:\n    enabled: false\n")
            .expect("write");
        let err = resolve(DaemonArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .expect_err("https with TLS disabled");
        assert!(err.to_string().contains("enabled is false"), "{err}");
        std::fs::write(&path, "servicecenter:\n  tls_config:\n    ca_fil: /x\n").expect("write");
        let err = resolve(DaemonArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("unknown key");
        assert!(err.to_string().contains("ca_fil"), "{err}");
    }

    #[test]
    fn builtin_rbac_needs_root_s_password_and_the_built_in_core_and_with_https_leaves_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "Root-pass-1\n").expect("write");
        let rbac = |sc_addr: Option<&str>, file: Option<PathBuf>, addr: &str, tls: bool| {
            DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                registry: RegistryArgs {
                    sc_addr: sc_addr.map(str::to_string),
                    ..Default::default()
                },
                builtin_addr: Some(addr.parse().expect("addr")),
                builtin_rbac: true,
                builtin_rbac_root_password_file: file,
                builtin_tls_cert_file: tls.then(|| "/x/cert.pem".into()),
                builtin_tls_key_file: tls.then(|| "/x/key.pem".into()),
                ..Default::default()
            })
        };
        let c = rbac(None, Some(pw.clone()), "127.0.0.1:30100", false).expect("valid");
        let settings = c.builtin_rbac.expect("rbac on");
        assert_eq!(settings.root_password.as_deref(), Some("Root-pass-1"));
        assert!(
            !format!("{settings:?}").contains("Root-pass-1"),
            "Debug hides it"
        );
        let err = rbac(
            Some("http://127.0.0.1:30100"),
            Some(pw.clone()),
            "127.0.0.1:1",
            false,
        )
        .expect_err("no built-in core");
        assert!(err.to_string().contains("--sc-account"), "{err}");
        // RBAC over HTTPS authenticates callers: beyond loopback is allowed; over HTTP not.
        assert!(rbac(None, Some(pw.clone()), "0.0.0.0:30100", true).is_ok());
        let err = rbac(None, Some(pw), "0.0.0.0:30100", false).expect_err("plain HTTP");
        assert!(err.to_string().contains("--builtin-addr"), "{err}");
        if std::env::var_os("SYNCER_RBAC_ROOT_PASSWORD").is_none()
            && std::env::var_os("SC_INIT_ROOT_PASSWORD").is_none()
        {
            let err = rbac(None, None, "127.0.0.1:30100", false).expect_err("no password");
            assert!(err.to_string().contains("root's password"), "{err}");
        }
    }

    #[test]
    fn the_builtin_core_over_https_needs_a_certificate_and_a_key_and_no_sc_addr() {
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            builtin_tls_cert_file: Some("/x/cert.pem".into()),
            builtin_tls_key_file: Some("/x/key.pem".into()),
            ..Default::default()
        })
        .expect("valid");
        let tls = c.builtin_tls.expect("https core");
        assert_eq!(tls.cert_file, PathBuf::from("/x/cert.pem"));
        assert_eq!(tls.client_ca_file, None);
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            builtin_tls_client_ca_file: Some("/x/ca.pem".into()),
            ..Default::default()
        })
        .expect_err("a client CA alone");
        assert!(
            err.to_string().contains("--builtin-tls-client-ca-file"),
            "{err}"
        );
        assert!(err.to_string().contains("--builtin-tls-cert-file"), "{err}");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            registry: RegistryArgs {
                sc_addr: Some("http://127.0.0.1:30100".into()),
                ..Default::default()
            },
            builtin_tls_cert_file: Some("/x/cert.pem".into()),
            builtin_tls_key_file: Some("/x/key.pem".into()),
            ..Default::default()
        })
        .expect_err("no built-in core");
        assert!(err.to_string().contains("--builtin-tls-cert-file"), "{err}");
        // With client certificates required, the core may listen beyond loopback; with
        // server TLS alone it may not (nobody is authenticated).
        let open = |client_ca: Option<PathBuf>| {
            DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                builtin_addr: Some("0.0.0.0:30100".parse().expect("addr")),
                builtin_tls_cert_file: Some("/x/cert.pem".into()),
                builtin_tls_key_file: Some("/x/key.pem".into()),
                builtin_tls_client_ca_file: client_ca,
                ..Default::default()
            })
        };
        assert!(open(Some("/x/ca.pem".into())).is_ok());
        let err = open(None).expect_err("unauthenticated");
        assert!(err.to_string().contains("--builtin-addr"), "{err}");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = DaemonConfig::resolve(DaemonArgs {
            bind_addr: Some("not an addr:x".into()),
            ..Default::default()
        })
        .expect_err("bad");
        assert!(err.to_string().contains("--bind-addr"), "{err}");
        let err = DaemonConfig::resolve(DaemonArgs {
            registry: RegistryArgs {
                sc_plugin: Some(PluginKind::Eureka),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect_err("eureka needs an address");
        assert!(err.to_string().contains("--sc-addr"), "{err}");
    }

    #[test]
    fn the_write_rate_is_off_by_default_and_its_burst_defaults_to_a_tenth_of_it() {
        let resolve = |rate: Option<u32>, burst: Option<u32>| {
            DaemonConfig::resolve(DaemonArgs {
                node: Some("n1".into()),
                registry_write_rate: rate,
                registry_write_burst: burst,
                ..Default::default()
            })
        };
        let off = resolve(None, None).expect("default");
        assert_eq!(off.registry_write_rate, None);
        assert_eq!(
            resolve(Some(0), None).expect("zero").registry_write_rate,
            None
        );
        let on = resolve(Some(500), None)
            .expect("rate")
            .registry_write_rate
            .expect("limited");
        assert_eq!((on.per_sec.get(), on.burst.get()), (500, 50));
        let slow = resolve(Some(5), None)
            .expect("slow")
            .registry_write_rate
            .expect("limited");
        assert_eq!(slow.burst.get(), 1);
        let burst = resolve(Some(500), Some(50))
            .expect("burst")
            .registry_write_rate
            .expect("limited");
        assert_eq!(burst.burst.get(), 50);
        for (rate, burst) in [(Some(500), Some(0)), (None, Some(10)), (Some(0), Some(10))] {
            let err = resolve(rate, burst).expect_err("bad burst");
            assert!(err.to_string().contains("--registry-write-burst"), "{err}");
        }
    }

    #[test]
    fn the_eureka_domain_project_is_validated_and_read_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("syncer.yaml");
        std::fs::write(
            &file,
            "registry_write_rate: 200\neureka_domain_project: dom/proj\n",
        )
        .expect("write");
        let c = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            config: Some(file),
            ..Default::default()
        })
        .expect("file");
        assert_eq!(c.eureka_domain_project, "dom/proj");
        assert_eq!(c.registry_write_rate.map(|r| r.per_sec.get()), Some(200));
        let default = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            ..Default::default()
        })
        .expect("default");
        assert_eq!(default.eureka_domain_project, "default/default");
        let err = DaemonConfig::resolve(DaemonArgs {
            node: Some("n1".into()),
            eureka_domain_project: Some("no-slash".into()),
            ..Default::default()
        })
        .expect_err("bad shape");
        assert!(err.to_string().contains("--eureka-domain-project"), "{err}");
    }
}
