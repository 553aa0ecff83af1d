//! The command line: `syncer daemon`, `syncer servicecenter`, `syncer keygen`,
//! `syncer version`.
//!
//! Arguments are parsed raw here (every value optional, so that a flag or its `SYNCER_*`
//! environment variable can be told apart from "not given") and turned into validated typed
//! settings by [`crate::config`], which applies the precedence flag > env > file > default.
//! Flag names, defaults and ports are the service-center syncer's.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Multi-registry syncer: bridges Eureka and service-center sites, with a built-in
/// service-center core.
#[derive(Debug, Parser)]
#[command(name = "syncer", version, propagate_version = true)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "SYNCER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a syncer agent. With no --sc-addr it also runs the built-in service-center core
    /// (on --builtin-addr) and syncs that: `syncer daemon` alone is a working standalone site.
    Daemon(Box<DaemonArgs>),
    /// Run only the built-in service-center core (service-center v4 API under /v4, Eureka v2
    /// API under /eureka and /eureka/v2).
    Servicecenter(Box<ServicecenterArgs>),
    /// Remove the copies this syncer made (instances carrying its origin markers) from a
    /// registry, of one origin cluster or all, printing each; native instances and every
    /// service are left alone. Stop the site's syncers first (their leader would register
    /// the copies again).
    Purge(Box<PurgeArgs>),
    /// Print a new random gossip key (32 bytes, base64) on one line, for --encrypt or a line
    /// of --keyring-file: `syncer keygen >> keyring`.
    Keygen,
    /// Print the version.
    Version,
}

/// Registry kinds a plugin exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// service-center v4 REST API (also the built-in core).
    Servicecenter,
    /// Eureka v2 REST API; --sc-addr is the base URL including /eureka.
    Eureka,
}

impl PluginKind {
    /// The plugin's name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::Servicecenter => "servicecenter",
            PluginKind::Eureka => "eureka",
        }
    }
}

/// Cluster modes of the service-center syncer, accepted for compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One syncer per registry.
    Single,
    /// Several syncers per registry sharing a cluster name; one leads.
    Cluster,
}

/// Flags of `syncer daemon`. Every one may also come from its `SYNCER_*` variable or the
/// `--config` file; each doc gives its default.
#[derive(Debug, Default, Clone, Args)]
pub struct DaemonArgs {
    /// YAML file with the same settings (keys as the flags, with underscores: sc_addr,
    /// sc_plugin, bind_addr, ...; and log_filter). Flags and env vars override it. Read again
    /// on SIGHUP and when it changes: the ticker interval and log_filter apply in place, a
    /// bad file is refused and the settings in use stay.
    #[arg(long, env = "SYNCER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The registry and how to reach it.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Gossip address (UDP); a missing port means 30190. (default: 0.0.0.0:30190 with gossip
    /// encryption and TLS configured, or with --insecure; else 127.0.0.1:30190)
    #[arg(long, env = "SYNCER_BIND_ADDR")]
    pub bind_addr: Option<String>,
    /// Gossip address advertised to other members, when --bind-addr is not reachable as is
    /// (e.g. 0.0.0.0 or behind NAT). (default: --bind-addr, or this host's outbound IP for 0.0.0.0)
    #[arg(long, env = "SYNCER_ADVERTISE_ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    /// gRPC address of the exchange; a missing port means 30191. An unspecified IP is
    /// advertised as the gossip IP. (default: 0.0.0.0:30191 with gossip encryption and TLS
    /// configured, or with --insecure; else 127.0.0.1:30191)
    #[arg(long, env = "SYNCER_RPC_ADDR")]
    pub rpc_addr: Option<String>,
    /// Most exchange (gRPC) connections open at once; further ones wait in the kernel's
    /// backlog until one closes (a rate-limited warning says so). Each peer leader and
    /// verifying member needs a few. Keep it and --builtin-max-connections under the process's
    /// file descriptor limit (`ulimit -n`). (default: 256)
    #[arg(long, env = "SYNCER_RPC_MAX_CONNECTIONS")]
    pub rpc_max_connections: Option<usize>,
    /// The daemon's own HTTP listener: /metrics (Prometheus), /healthz, /readyz, the status
    /// API (/v1/syncer/...) and the dashboard at /. A missing port means 30300; `off` turns
    /// it off. Beyond loopback it needs --http-token-file (or --insecure). (default:
    /// 127.0.0.1:30300)
    #[arg(long, env = "SYNCER_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// A file holding the bearer token every request to --http-addr must carry (header
    /// `Authorization: Bearer <token>`, or the dashboard's `syncer_token` cookie), except
    /// /healthz and /readyz. Required when --http-addr is beyond loopback, unless --insecure.
    /// (default: none; no token asked on loopback)
    #[arg(long, env = "SYNCER_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
    /// A file holding the bearer token the admin endpoints of --http-addr (resync, suspend,
    /// resume, log-level) must carry as `Authorization: Bearer <token>`. Without it they
    /// answer only on a loopback --http-addr (and then take --http-token-file's token if one
    /// is set). Requests from a browser (with an Origin or a cross-site Sec-Fetch-Site header)
    /// are refused either way. (default: none)
    #[arg(long, env = "SYNCER_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Gossip addresses of existing members to join, comma separated; a missing port means
    /// 30190. (default: none; start a new pool)
    #[arg(long, env = "SYNCER_JOIN_ADDR")]
    pub join_addr: Option<String>,
    /// This member's name, unique in the pool. (default: the host name)
    #[arg(long, env = "SYNCER_NODE")]
    pub node: Option<String>,
    /// Name of this site; syncers of one site share it. (default: the MD5 of --sc-addr, as the
    /// service-center syncer; with the built-in core: the node name)
    #[arg(long, env = "SYNCER_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Seconds between full reconciles (anti-entropy: peers' whole exports against the
    /// local registry) and heartbeats of imported instances, whose lease is 4 ticks. Changes
    /// themselves cross as they happen, over the peers' export streams. (default: 30)
    #[arg(long, env = "SYNCER_TICKER_INTERVAL")]
    pub ticker_interval: Option<u64>,
    /// Seconds an unreachable peer cluster's instances are kept before they are removed.
    /// (default: one lease of an imported instance: 4 x --ticker-interval, at least 30)
    #[arg(long, env = "SYNCER_GRACE_PERIOD")]
    pub grace_period: Option<u64>,
    /// Most writes per second to the registry: registrations, unregistrations, heartbeats of
    /// copies and service creations, each instance of a batch counting as one (reads are not
    /// limited). A token bucket the importer and the heartbeats of copies share; `0` is
    /// unlimited. Off by default: any fixed number is too low for a large site (every copy
    /// needs a heartbeat within its lease of 4 x --ticker-interval, so keep it above copies /
    /// (2 x --ticker-interval); a warning says when it is not) or too high to protect a small
    /// registry: set it from your registry's capacity, e.g. 500. Heartbeats of copies are
    /// spread over the first half of each tick in any case, and only the leader writes, so a
    /// restart of many syncers does not burst. (default: 0, unlimited)
    #[arg(long, env = "SYNCER_REGISTRY_WRITE_RATE")]
    pub registry_write_rate: Option<u32>,
    /// Writes that may go at once (the bucket's size), at least 1; any 1 s window sees at
    /// most the rate plus this. (default: a tenth of --registry-write-rate, at least 1)
    #[arg(long, env = "SYNCER_REGISTRY_WRITE_BURST")]
    pub registry_write_burst: Option<u32>,
    /// Export filter, include list: globs over domain/project/appId/serviceName (`*` stays
    /// within a part, `**` spans parts; e.g. default/default/*/orders-*) or meta:KEY=VALUE
    /// matches on instance metadata (e.g. meta:env=prod), comma separated, repeatable. This
    /// site offers its peers only the instances one entry matches; what stops matching is
    /// removed at the peers. YAML filters.export.include. (default: none; everything)
    #[arg(long, env = "SYNCER_EXPORT_INCLUDE", value_delimiter = ',')]
    pub export_include: Vec<String>,
    /// Export filter, exclude list (entries as --export-include): instances an entry matches
    /// are not offered to peers, whatever the include list says. YAML
    /// filters.export.exclude. (default: none)
    #[arg(long, env = "SYNCER_EXPORT_EXCLUDE", value_delimiter = ',')]
    pub export_exclude: Vec<String>,
    /// Import filter, include list (entries as --export-include, matched against the origin
    /// instance): this site copies only the peers' instances one entry matches, and removes
    /// its copies of those that stop matching (events with reason `filter`). YAML
    /// filters.import.include. (default: none; everything)
    #[arg(long, env = "SYNCER_IMPORT_INCLUDE", value_delimiter = ',')]
    pub import_include: Vec<String>,
    /// Import filter, exclude list: peers' instances an entry matches are not copied here,
    /// and copies of them are removed. YAML filters.import.exclude. (default: none)
    #[arg(long, env = "SYNCER_IMPORT_EXCLUDE", value_delimiter = ',')]
    pub import_exclude: Vec<String>,
    /// Dry run: compute every write to the registry and make none (no registration, removal
    /// or heartbeat of copies, so copies written before expire after their lease unless
    /// another syncer keeps them). /v1/syncer/status (`dry_run`, `pending`), /metrics
    /// (syncer_dry_run_pending{op}) and the events (marked `dry_run`) show what it would
    /// write. YAML dry_run. (default: false)
    #[arg(long, env = "SYNCER_DRY_RUN", num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: Option<bool>,
    /// Address of the built-in service-center core, used when --sc-addr is not given.
    /// (default: 127.0.0.1:30100)
    #[arg(long, env = "SYNCER_BUILTIN_ADDR")]
    pub builtin_addr: Option<SocketAddr>,
    /// Most HTTP connections open at once to the built-in core; further ones wait in the
    /// kernel's backlog until one closes (a rate-limited warning says so). A request head
    /// must arrive within 10 s and an idle connection is closed (see README, "Limits").
    /// (default: 512)
    #[arg(long, env = "SYNCER_BUILTIN_MAX_CONNECTIONS")]
    pub builtin_max_connections: Option<usize>,
    /// Most WebSocket watchers (`.../watcher`, `.../listwatcher`) open at once on the built-in
    /// core; one more is refused with service-center's 400100 (see README, "Limits").
    /// (default: 1000)
    #[arg(long, env = "SYNCER_BUILTIN_MAX_WATCHERS")]
    pub builtin_max_watchers: Option<usize>,
    /// Serve the built-in core over HTTPS with this PEM certificate (chain); with
    /// --builtin-tls-key-file. Re-read when it changes and on SIGHUP. The daemon's own plugin
    /// reaches the core over https, trusting exactly the certificate it serves. (default:
    /// none; plain HTTP)
    #[arg(long, env = "SYNCER_BUILTIN_TLS_CERT_FILE")]
    pub builtin_tls_cert_file: Option<PathBuf>,
    /// PEM file of the built-in core's private key (PKCS#8, RSA or EC; not encrypted).
    /// (default: none)
    #[arg(long, env = "SYNCER_BUILTIN_TLS_KEY_FILE")]
    pub builtin_tls_key_file: Option<PathBuf>,
    /// Require a client certificate signed by this PEM CA file from every client of the
    /// built-in core (mutual TLS); needs --builtin-tls-cert-file. (default: none; no client
    /// certificate asked for)
    #[arg(long, env = "SYNCER_BUILTIN_TLS_CLIENT_CA_FILE")]
    pub builtin_tls_client_ca_file: Option<PathBuf>,
    /// Turn on service-center's RBAC in the built-in core (as `syncer servicecenter --rbac`):
    /// its clients need a token or, on /eureka, basic auth of an account. This daemon logs in
    /// to it as root with the password of --builtin-rbac-root-password-file, else
    /// SYNCER_RBAC_ROOT_PASSWORD (also root's first password). With
    /// --builtin-tls-cert-file it lets --builtin-addr leave loopback. (default: off)
    #[arg(long, env = "SYNCER_BUILTIN_RBAC")]
    pub builtin_rbac: bool,
    /// File whose first line is root's password for --builtin-rbac. (default: none; the
    /// environment variable)
    #[arg(long, env = "SYNCER_BUILTIN_RBAC_ROOT_PASSWORD_FILE")]
    pub builtin_rbac_root_password_file: Option<PathBuf>,
    /// single or cluster; accepted for compatibility with the service-center syncer (any
    /// number of syncers may share a cluster name). (default: single)
    #[arg(long, env = "SYNCER_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// The service-center syncer's etcd peer port; accepted for compatibility, unused.
    /// (default: 30192)
    #[arg(long, env = "SYNCER_CLUSTER_PORT")]
    pub cluster_port: Option<u16>,
    /// etcd client URLs, comma separated, for the cluster's leader election (etcd's
    /// election /syncer/leader/{cluster-name}: one lease-based key per member under it).
    /// (default: --etcd-endpoints when given, else no etcd: the leader is the alive member
    /// whose node name sorts first)
    #[arg(long, env = "SYNCER_ELECTION_ETCD_ENDPOINTS")]
    pub election_etcd_endpoints: Option<String>,
    /// Shared gossip key: 32 bytes in base64 (`syncer keygen`). Every gossip datagram is
    /// encrypted (XChaCha20-Poly1305) and stamped against replays; members without the same
    /// key cannot join. A keyring of one key: to rotate keys without a restart, use
    /// --keyring-file instead (not both). (default: none; gossip in the clear)
    #[arg(long, env = "SYNCER_ENCRYPT", hide_env_values = true)]
    pub encrypt: Option<String>,
    /// File of gossip keys, one base64 32-byte key per line (`#` comments and blank lines
    /// skipped), or a JSON array of keys (serf's keyring file). The first key seals, any key
    /// opens. Read again when the file changes and on SIGHUP; a bad new version is refused
    /// and the keys in use stay. Rotate: add the new key second everywhere, move it first
    /// everywhere, remove the old one everywhere. Not with --encrypt. (default: none)
    #[arg(long, env = "SYNCER_KEYRING_FILE")]
    pub keyring_file: Option<PathBuf>,
    /// Directory of the built-in core's embedded store (services, instances, leases survive
    /// a restart). Not used with --etcd-endpoints or --sc-addr. (default: ./data)
    #[arg(long, env = "SYNCER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// etcd client URLs, comma separated, e.g. http://10.0.0.1:2379: the built-in core keeps
    /// its registry in etcd (service-center's key layout) instead of --data-dir, so several
    /// cores share one registry. (default: none)
    #[arg(long, env = "SYNCER_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// TLS and authentication toward etcd (the store and the election).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Eureka self-preservation in the built-in core: evict expired leases only while the
    /// renewals of the last minute exceed 85 % of those expected (Netflix's default
    /// behaviour). (default: off; expired leases always go)
    #[arg(long, env = "SYNCER_EUREKA_SELF_PRESERVATION")]
    pub eureka_self_preservation: bool,
    /// With --sc-plugin eureka: the tenant, `domain/project`, this Eureka site's apps are
    /// reported under, so at service-center sites their copies land in that domain and
    /// project (Eureka itself has no tenants). Letters, digits, `_`, `-`, `.`; a config error
    /// otherwise. (default: default/default, the service-center syncer's choice)
    #[arg(long, env = "SYNCER_EUREKA_DOMAIN_PROJECT")]
    pub eureka_domain_project: Option<String>,
    /// Quotas and size limits of the built-in core.
    #[command(flatten)]
    pub core_limits: CoreLimitsArgs,
    /// Mutual TLS on the gRPC exchange: this site presents --tls-cert-file (which must name
    /// --cluster-name as a DNS subject alternative name) and accepts only peers whose
    /// certificate is signed by --tls-ca-file and names the cluster they claim. A TLS syncer
    /// never falls back to plaintext. (default: false; YAML tls_config.enabled)
    #[arg(long, env = "SYNCER_TLS_ENABLED", num_args = 0..=1, default_missing_value = "true")]
    pub tls_enabled: Option<bool>,
    /// PEM file of the CA certificate(s) that sign every site's certificate.
    /// (default: $SSL_ROOT/trust.cer, or ./certs/trust.cer without SSL_ROOT)
    #[arg(long, env = "SYNCER_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of this site's certificate (chain); reloaded when it changes and on SIGHUP.
    /// (default: $SSL_ROOT/server.cer, or ./certs/server.cer)
    #[arg(long, env = "SYNCER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, RSA or EC; encrypted PKCS#8 with
    /// --tls-passphrase). (default: $SSL_ROOT/server_key.pem, or ./certs/server_key.pem)
    #[arg(long, env = "SYNCER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Passphrase of an encrypted key file; prefer the environment variable or the YAML file
    /// to the flag (a flag shows in `ps`). (default: none)
    #[arg(long, env = "SYNCER_TLS_PASSPHRASE", hide_env_values = true)]
    pub tls_passphrase: Option<String>,
    /// Verify the peer's certificate; must stay true (accepted for compatibility with the
    /// service-center syncer's tls_config.verify_peer). (default: true)
    #[arg(long, env = "SYNCER_TLS_VERIFY_PEER", num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify_peer: Option<bool>,
    /// Lowest TLS version: TLSv1.2 or TLSv1.3. (default: TLSv1.2)
    #[arg(long, env = "SYNCER_TLS_MIN_VERSION")]
    pub tls_min_version: Option<String>,
    /// Cipher suites allowed, comma separated IANA names (e.g.
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256). (default: rustls'
    /// safe defaults)
    #[arg(long, env = "SYNCER_TLS_CIPHERS")]
    pub tls_ciphers: Option<String>,
    /// Allow gossip and the exchange to listen beyond loopback without gossip encryption and
    /// exchange TLS (and the built-in core without authentication). Anyone who reaches those
    /// ports can then join, lead and read the site. Logged at WARN. Without it, a daemon with
    /// nothing secure configured listens on 127.0.0.1 by default and refuses a non-loopback
    /// address. (default: false)
    #[arg(long, env = "SYNCER_INSECURE")]
    pub insecure: bool,
}

/// Flags of `syncer purge`: the registry as `syncer daemon` reaches it (the same flags,
/// environment variables and `--config` keys), and what to remove.
#[derive(Debug, Default, Args)]
pub struct PurgeArgs {
    /// YAML file of the daemon; only its registry settings are used (sc_addr, sc_plugin,
    /// servicecenter: {addr, plugin, tls_config, auth}).
    #[arg(long, env = "SYNCER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The registry, as the daemon reaches it.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Remove only the copies of instances from this origin cluster (the value of their
    /// `syncerOriginCluster` marker, the peer's --cluster-name). (default: every origin)
    #[arg(long)]
    pub origin_cluster: Option<String>,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl PurgeArgs {
    /// The registry settings as daemon arguments (everything else at its default), for
    /// [`crate::config::DaemonConfig::resolve`] to validate as it does the daemon's.
    pub fn registry_args(&self) -> DaemonArgs {
        DaemonArgs {
            config: self.config.clone(),
            registry: self.registry.clone(),
            ..DaemonArgs::default()
        }
    }
}

/// The registry flags `syncer daemon` and `syncer purge` share: where it is, its plugin, TLS
/// toward it and the account to log in as. Each may also come from its `SYNCER_*` variable
/// or the `--config` file.
#[derive(Debug, Default, Clone, Args)]
pub struct RegistryArgs {
    /// Registry address(es), comma separated, e.g. http://10.0.0.1:30100 or, for eureka,
    /// http://10.0.0.1:8761/eureka. (default: none: `syncer daemon` runs the built-in core on
    /// --builtin-addr; `syncer purge` needs it, here or in --config)
    #[arg(long, env = "SYNCER_SC_ADDR")]
    pub sc_addr: Option<String>,
    /// Plugin for the registry: servicecenter or eureka. (default: servicecenter)
    #[arg(long, env = "SYNCER_SC_PLUGIN", value_enum)]
    pub sc_plugin: Option<PluginKind>,
    /// PEM file of the CA(s) the registry's certificate must chain to, for https:// in
    /// --sc-addr (YAML servicecenter.tls_config.ca_file). (default:
    /// $SSL_ROOT/servicecenter/trust.cer, or ./certs/servicecenter/trust.cer, when that file
    /// exists; else the system's trust store)
    #[arg(long, env = "SYNCER_SC_TLS_CA_FILE")]
    pub sc_tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate presented to an https:// registry that asks for
    /// one; with --sc-tls-key-file. (default: $SSL_ROOT/servicecenter/server.cer, or
    /// ./certs/servicecenter/server.cer, when it and the key file exist; else none)
    #[arg(long, env = "SYNCER_SC_TLS_CERT_FILE")]
    pub sc_tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, RSA or EC; encrypted PKCS#8
    /// with --sc-tls-passphrase). (default: $SSL_ROOT/servicecenter/server_key.pem, or
    /// ./certs/servicecenter/server_key.pem, when it and the certificate exist)
    #[arg(long, env = "SYNCER_SC_TLS_KEY_FILE")]
    pub sc_tls_key_file: Option<PathBuf>,
    /// Passphrase of an encrypted --sc-tls-key-file; prefer the environment variable or the
    /// YAML file to the flag (a flag shows in `ps`). (default: none)
    #[arg(long, env = "SYNCER_SC_TLS_PASSPHRASE", hide_env_values = true)]
    pub sc_tls_passphrase: Option<String>,
    /// Verify the https:// registry's certificate (chain and name). false accepts any
    /// certificate, as service-center's verify_peer: false does, and is logged at WARN at
    /// start: anyone between the syncer and the registry can then read and change what is
    /// synced. (default: true)
    #[arg(long, env = "SYNCER_SC_TLS_VERIFY_PEER", num_args = 0..=1, default_missing_value = "true")]
    pub sc_tls_verify_peer: Option<bool>,
    /// Lowest TLS version toward the registry: TLSv1.2 or TLSv1.3. (default: TLSv1.2)
    #[arg(long, env = "SYNCER_SC_TLS_MIN_VERSION")]
    pub sc_tls_min_version: Option<String>,
    /// Cipher suites allowed toward the registry, comma separated IANA names. (default:
    /// rustls' safe defaults)
    #[arg(long, env = "SYNCER_SC_TLS_CIPHERS")]
    pub sc_tls_ciphers: Option<String>,
    /// service-center account the servicecenter plugin logs in as, for a registry with RBAC
    /// on (POST /v4/token; the token is renewed before it expires). Its password comes from
    /// --sc-password-file, else SYNCER_SC_PASSWORD (the password itself), else YAML
    /// servicecenter.auth.password_file; never from a flag. YAML servicecenter.auth.account.
    /// (default: none; no login)
    #[arg(long, env = "SYNCER_SC_ACCOUNT")]
    pub sc_account: Option<String>,
    /// File holding the --sc-account password (one line; a final line break is not part of
    /// it), read at start. Takes precedence over SYNCER_SC_PASSWORD. (default: none)
    #[arg(long, env = "SYNCER_SC_PASSWORD_FILE")]
    pub sc_password_file: Option<PathBuf>,
}

/// Flags of `syncer servicecenter`.
#[derive(Debug, Args)]
pub struct ServicecenterArgs {
    /// HTTP address to serve on.
    #[arg(long, env = "SYNCER_LISTEN", default_value = "127.0.0.1:30100")]
    pub listen: SocketAddr,
    /// Most HTTP connections open at once; further ones wait in the kernel's backlog until
    /// one closes (a rate-limited warning says so). A request head must arrive within 10 s
    /// and an idle connection is closed (see README, "Limits"). Keep it under the process's
    /// file descriptor limit (`ulimit -n`).
    #[arg(long, env = "SYNCER_MAX_CONNECTIONS", default_value_t = crate::listener::http::MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Most WebSocket watchers (`.../watcher`, `.../listwatcher`) open at once; one more is
    /// refused with service-center's 400100 (see README, "Limits").
    // The default is `servicecenter::core::MAX_WATCHERS` (a test in config.rs checks it),
    // written out: naming it here would make the core's layers and the CLI a cycle.
    #[arg(long, env = "SYNCER_MAX_WATCHERS", default_value_t = 1_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_watchers: usize,
    /// Serve over HTTPS with this PEM certificate (chain); with --tls-key-file. Re-read (with
    /// the key and the client CA) when it changes and on SIGHUP. (default: none; plain HTTP)
    #[arg(long, env = "SYNCER_BUILTIN_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, RSA or EC; not encrypted).
    /// (default: none)
    #[arg(long, env = "SYNCER_BUILTIN_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Require a client certificate signed by this PEM CA file from every client (mutual
    /// TLS); needs --tls-cert-file. (default: none; no client certificate asked for)
    #[arg(
        long,
        env = "SYNCER_BUILTIN_TLS_CLIENT_CA_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Directory of the embedded store (services, instances, leases survive a restart).
    /// Not used with --etcd-endpoints.
    #[arg(long, env = "SYNCER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// etcd client URLs, comma separated, e.g. http://10.0.0.1:2379: keep the registry in
    /// etcd (service-center's key layout) so several cores share it. (default: none; use
    /// --data-dir)
    #[arg(long, env = "SYNCER_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// TLS and authentication toward etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Eureka self-preservation: evict expired leases only while the renewals of the last
    /// minute exceed 85 % of those expected (Netflix's default behaviour). (default: off)
    #[arg(long, env = "SYNCER_EUREKA_SELF_PRESERVATION")]
    pub eureka_self_preservation: bool,
    /// Quotas and size limits.
    #[command(flatten)]
    pub core_limits: CoreLimitsArgs,
    /// Turn on service-center's RBAC: every /v4 request needs a token from POST /v4/token
    /// (accounts and roles under /v4/accounts and /v4/roles), /eureka needs HTTP basic auth
    /// of an account. The first start creates the account `root` (role admin) with the
    /// password of --rbac-root-password-file, else of SYNCER_RBAC_ROOT_PASSWORD (or
    /// SC_INIT_ROOT_PASSWORD). See docs/security.md. (default: off)
    #[arg(long, env = "SYNCER_RBAC")]
    pub rbac: bool,
    /// File whose first line is root's first password (8 to 32 characters with an upper-case
    /// letter, a lower-case letter, a digit and a special character). Read only when the
    /// store has no root account yet. (default: none; the environment variable)
    #[arg(long, env = "SYNCER_RBAC_ROOT_PASSWORD_FILE", requires = "rbac")]
    pub rbac_root_password_file: Option<PathBuf>,
    /// Lifetime of a token whose request names no tokenExpirationTime: a number with s, m or
    /// h, from 1s to 24h. (default: 30m, as service-center)
    #[arg(
        long,
        env = "SYNCER_RBAC_TOKEN_TTL",
        requires = "rbac",
        default_value = "30m"
    )]
    pub rbac_token_ttl: String,
}

/// Quotas and size limits of a core (`syncer servicecenter`, and the daemon's built-in
/// core), flag > environment variable > YAML key (daemon) > default. The quotas and their
/// defaults are service-center's; going over one answers its error 400100 (HTTP 400; on
/// /eureka a 400 with the same text). They apply to every write, this syncer's copies of
/// other sites' instances included. See README, "Limits".
#[derive(Debug, Default, Clone, Args)]
pub struct CoreLimitsArgs {
    /// Most microservices in the core, all tenants together (service-center's QUOTA_SERVICE).
    /// (default: 50000)
    #[arg(long, env = "SYNCER_QUOTA_SERVICES",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub quota_services: Option<usize>,
    /// Most instances in the core, all tenants together (service-center's QUOTA_INSTANCE).
    /// (default: 150000)
    #[arg(long, env = "SYNCER_QUOTA_INSTANCES",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub quota_instances: Option<usize>,
    /// Most schemas of one microservice (service-center's QUOTA_SCHEMA). (default: 100)
    #[arg(long, env = "SYNCER_QUOTA_SCHEMAS_PER_SERVICE",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub quota_schemas_per_service: Option<usize>,
    /// Most tags of one microservice (service-center's QUOTA_TAG). (default: 100)
    #[arg(long, env = "SYNCER_QUOTA_TAGS_PER_SERVICE",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub quota_tags_per_service: Option<usize>,
    /// Most black/white list rules of one microservice (service-center's QUOTA_RULE).
    /// (default: 100)
    #[arg(long, env = "SYNCER_QUOTA_RULES_PER_SERVICE",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub quota_rules_per_service: Option<usize>,
    /// Most bytes of one instance's free-form text: the keys and values of its properties
    /// (Eureka metadata), its endpoints, health-check URL and data-center fields, and for a
    /// Eureka registration its URLs, VIP addresses and dataCenterInfo metadata. More is
    /// refused: 400001 on /v4, 400 on /eureka. (default: 65536)
    #[arg(long, env = "SYNCER_MAX_INSTANCE_METADATA_BYTES",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_instance_metadata_bytes: Option<usize>,
    /// Largest request body the core reads, in bytes (service-center's max_body_bytes); a
    /// larger one is answered 413 before it is read whole. (default: 2097152)
    #[arg(long, env = "SYNCER_MAX_BODY_BYTES",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_body_bytes: Option<usize>,
}

impl CoreLimitsArgs {
    /// Each value given here, else the one of `fallback` (the YAML file's).
    pub fn or(&self, fallback: &CoreLimitsArgs) -> CoreLimitsArgs {
        CoreLimitsArgs {
            quota_services: self.quota_services.or(fallback.quota_services),
            quota_instances: self.quota_instances.or(fallback.quota_instances),
            quota_schemas_per_service: self
                .quota_schemas_per_service
                .or(fallback.quota_schemas_per_service),
            quota_tags_per_service: self
                .quota_tags_per_service
                .or(fallback.quota_tags_per_service),
            quota_rules_per_service: self
                .quota_rules_per_service
                .or(fallback.quota_rules_per_service),
            max_instance_metadata_bytes: self
                .max_instance_metadata_bytes
                .or(fallback.max_instance_metadata_bytes),
            max_body_bytes: self.max_body_bytes.or(fallback.max_body_bytes),
        }
    }
}

/// TLS and authentication toward etcd, for every etcd endpoint of the process (the built-in
/// core's store and the leader election). The password is never a flag: it comes from
/// --etcd-password-file or the environment variable SYNCER_ETCD_PASSWORD.
#[derive(Debug, Default, Clone, Args)]
pub struct EtcdArgs {
    /// etcd user (etcd's `auth enable`); its password comes from --etcd-password-file, else
    /// SYNCER_ETCD_PASSWORD. A wrong password stops the start. Credentials in an etcd URL are
    /// refused. (default: none)
    #[arg(long, env = "SYNCER_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (one line). Takes precedence over
    /// SYNCER_ETCD_PASSWORD. (default: none)
    #[arg(long, env = "SYNCER_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// PEM file of the CA that signs etcd's certificate: etcd is reached over TLS, its
    /// endpoints are https:// (a bare host:port gets https://). (default: none; plaintext)
    #[arg(long, env = "SYNCER_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for etcd's --client-cert-auth; with
    /// --etcd-key-file and --etcd-ca-file. (default: none)
    #[arg(long, env = "SYNCER_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key. (default: none)
    #[arg(long, env = "SYNCER_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
}
