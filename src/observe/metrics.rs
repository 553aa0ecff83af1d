//! The daemon's metrics, in the Prometheus (OpenMetrics) text format, with `prometheus-client`.
//!
//! Every label takes a bounded set of values: operation names and results are fixed lists,
//! and cluster names (chosen by whoever joins the gossip) are capped at
//! [`MAX_CLUSTER_LABELS`] distinct values, beyond which they count as `other`. No id and no
//! error text is ever a label.
//!
//! [`MeteredPlugin`] wraps the registry plugin so every registry call is timed
//! (`syncer_registry_request_seconds{op}`) and every write counted
//! (`syncer_registry_writes_total{op,result}`), whoever makes it (importer or exporter).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use syncer_plugin_api::{
    Changes, Error as PluginError, Instance, Listed, Plugin, Result as PluginResult, Service,
    Snapshot,
};

/// Most distinct cluster names used as label values; further clusters are labelled `other`.
pub const MAX_CLUSTER_LABELS: usize = 64;

/// The label value of clusters beyond [`MAX_CLUSTER_LABELS`].
pub const OTHER: &str = "other";

/// `{cluster}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    /// A cluster name (bounded, see [`Metrics::cluster_label`]).
    pub cluster: String,
}

/// `{origin_cluster}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    /// A cluster name (bounded).
    pub origin_cluster: String,
}

/// `{op}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// A registry operation: `list`, `changes`, `revision`, `ensure_service`, `register`,
    /// `heartbeat`, `unregister` (and `_batch` forms for the calls).
    pub op: &'static str,
}

/// `{op,result}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabel {
    /// `ensure_service`, `register`, `heartbeat` or `unregister` (one per item of a batch).
    pub op: &'static str,
    /// `ok`, `not_found` (the registry does not know the instance) or `error`.
    pub result: &'static str,
}

/// `{direction}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `sent` or `received`.
    pub direction: &'static str,
}

/// `{state}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `alive`, `suspect` or `down`.
    pub state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 0.5 ms to about 33 s (doubling).
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// The daemon's metric families, registered in one [`Registry`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    clusters: Mutex<HashSet<String>>,
    /// `syncer_peer_up{cluster}`: 1 while a peer cluster is heard from (its stream
    /// delivers, or its last pull answered), else 0.
    pub peer_up: Family<ClusterLabel, Gauge>,
    /// `syncer_leader{cluster}`: 1 where this member leads its cluster.
    pub leader: Family<ClusterLabel, Gauge>,
    /// `syncer_leader_changes_total`: changes of this cluster's leader seen by this member.
    pub leader_changes: Counter,
    /// `syncer_export_revision`: the revision of this member's export.
    pub export_revision: Gauge,
    /// `syncer_suspended`: 1 while imports are suspended (`POST /v1/syncer/suspend`).
    pub suspended: Gauge,
    /// `syncer_import_lag_revisions{cluster}`: revisions the peer gossips beyond the one
    /// this member holds of its export.
    pub import_lag: Family<ClusterLabel, Gauge>,
    /// `syncer_propagation_seconds`: from a change at the origin's exporter to its copy
    /// written here (wall clocks of two hosts: as good as their clock sync).
    pub propagation: Histogram,
    /// `syncer_copies{origin_cluster}`: copies held in the local registry.
    pub copies: Family<OriginLabel, Gauge>,
    /// `syncer_registry_writes_total{op,result}`.
    pub writes: Family<WriteLabel, Counter>,
    /// `syncer_registry_request_seconds{op}`.
    pub requests: HistogramFamily<OpLabel>,
    /// `syncer_reconcile_duration_seconds`: one full reconcile (pull, list, plan, apply).
    pub reconcile: Histogram,
    /// `syncer_exchange_bytes_total{direction}`: encoded gRPC messages of the exchange.
    pub exchange_bytes: Family<DirectionLabel, Counter>,
    /// `syncer_gossip_members{state}`: gossip members by state, this one included.
    pub gossip_members: Family<StateLabel, Gauge>,
    /// `syncer_events_total`: writes recorded in the event log.
    pub events: Counter,
    /// `syncer_registry_write_wait_seconds_total`: seconds registry writes waited for tokens
    /// of `--registry-write-rate`, all writers together (0 without a limit).
    pub write_wait: Counter<f64, AtomicU64>,
    /// `syncer_dry_run_pending{op}`: in dry run (`--dry-run`), the copies the last full
    /// reconcile would register (`op="register"`) and remove (`op="unregister"`); absent
    /// otherwise.
    pub dry_run_pending: Family<OpLabel, Gauge>,
    /// `syncer_uptime_seconds`: seconds since the daemon started (float gauge).
    started: Instant,
    uptime: Gauge<f64, AtomicU64>,
    /// Whether the registry answers, from every call through [`MeteredPlugin`].
    health: Mutex<RegistryHealth>,
}

/// Whether the local registry answers, as the last calls through [`MeteredPlugin`] saw.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RegistryHealth {
    /// The last call the registry answered (a refusal is an answer), in ms since the Unix
    /// epoch.
    pub last_ok_ms: Option<u64>,
    /// The last call it did not answer (unreachable, 5xx): its error, and when.
    pub last_error: Option<String>,
    /// See `last_error`.
    pub last_error_ms: Option<u64>,
}

impl RegistryHealth {
    /// Whether the registry answered its last call (never called counts as not).
    pub fn reachable(&self) -> bool {
        match (self.last_ok_ms, self.last_error_ms) {
            (Some(ok), Some(err)) => ok >= err,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family, registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let peer_up = Family::<ClusterLabel, Gauge>::default();
        let leader = Family::<ClusterLabel, Gauge>::default();
        let leader_changes = Counter::default();
        let export_revision = Gauge::default();
        let suspended = Gauge::default();
        let import_lag = Family::<ClusterLabel, Gauge>::default();
        let propagation = seconds_histogram();
        let copies = Family::<OriginLabel, Gauge>::default();
        let writes = Family::<WriteLabel, Counter>::default();
        let requests: HistogramFamily<OpLabel> = Family::new_with_constructor(seconds_histogram);
        let reconcile = seconds_histogram();
        let exchange_bytes = Family::<DirectionLabel, Counter>::default();
        let gossip_members = Family::<StateLabel, Gauge>::default();
        let events = Counter::default();
        let dry_run_pending = Family::<OpLabel, Gauge>::default();
        let uptime = Gauge::<f64, AtomicU64>::default();
        let write_wait = Counter::<f64, AtomicU64>::default();
        registry.register(
            "syncer_peer_up",
            "1 while a peer cluster is heard from, else 0",
            peer_up.clone(),
        );
        registry.register(
            "syncer_leader",
            "1 where this member leads its cluster",
            leader.clone(),
        );
        registry.register(
            "syncer_leader_changes",
            "Changes of this cluster's leader seen by this member",
            leader_changes.clone(),
        );
        registry.register(
            "syncer_export_revision",
            "Revision of this member's export",
            export_revision.clone(),
        );
        registry.register(
            "syncer_suspended",
            "1 while imports are suspended by the admin API, else 0",
            suspended.clone(),
        );
        registry.register(
            "syncer_import_lag_revisions",
            "Revisions a peer gossips beyond the one held of its export",
            import_lag.clone(),
        );
        registry.register(
            "syncer_propagation_seconds",
            "From a change at the origin's exporter to its copy written here",
            propagation.clone(),
        );
        registry.register(
            "syncer_copies",
            "Copies of other clusters' instances held in the local registry",
            copies.clone(),
        );
        registry.register(
            "syncer_registry_writes",
            "Writes to the local registry, per item, by operation and result",
            writes.clone(),
        );
        registry.register(
            "syncer_registry_request_seconds",
            "Duration of registry calls by operation",
            requests.clone(),
        );
        registry.register(
            "syncer_reconcile_duration_seconds",
            "Duration of full reconciles",
            reconcile.clone(),
        );
        registry.register(
            "syncer_exchange_bytes",
            "Bytes of gRPC messages of the exchange, by direction",
            exchange_bytes.clone(),
        );
        registry.register(
            "syncer_gossip_members",
            "Gossip members by state",
            gossip_members.clone(),
        );
        registry.register(
            "syncer_events",
            "Writes recorded in the event log",
            events.clone(),
        );
        registry.register(
            "syncer_registry_write_wait_seconds",
            "Seconds registry writes waited for tokens of --registry-write-rate",
            write_wait.clone(),
        );
        registry.register(
            "syncer_dry_run_pending",
            "In dry run, copies the last full reconcile would register or unregister",
            dry_run_pending.clone(),
        );
        registry.register(
            "syncer_uptime_seconds",
            "Seconds since the daemon started",
            uptime.clone(),
        );
        Metrics {
            registry,
            clusters: Mutex::new(HashSet::new()),
            peer_up,
            leader,
            leader_changes,
            export_revision,
            suspended,
            import_lag,
            propagation,
            copies,
            writes,
            requests,
            reconcile,
            exchange_bytes,
            gossip_members,
            events,
            write_wait,
            dry_run_pending,
            started: Instant::now(),
            uptime,
            health: Mutex::new(RegistryHealth::default()),
        }
    }

    /// Whether the registry answers, as the last calls saw.
    pub fn registry_health(&self) -> RegistryHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Notes whether the registry answered a call.
    fn answered<T>(&self, result: &PluginResult<T>) {
        let now = super::events::now_ms();
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e @ PluginError::Unavailable { .. }) => {
                health.last_error = Some(e.to_string());
                health.last_error_ms = Some(now);
            }
            _ => health.last_ok_ms = Some(now),
        }
    }

    /// The label value for cluster `name`: the name itself for the first
    /// [`MAX_CLUSTER_LABELS`] distinct names seen, [`OTHER`] after.
    pub fn cluster_label(&self, name: &str) -> String {
        let mut seen = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(name) {
            return name.to_owned();
        }
        if seen.len() < MAX_CLUSTER_LABELS {
            seen.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER.to_owned()
    }

    /// `{cluster}` for `name`, bounded.
    pub fn cluster(&self, name: &str) -> ClusterLabel {
        ClusterLabel {
            cluster: self.cluster_label(name),
        }
    }

    /// `{origin_cluster}` for `name`, bounded.
    pub fn origin(&self, name: &str) -> OriginLabel {
        OriginLabel {
            origin_cluster: self.cluster_label(name),
        }
    }

    /// Counts `n` bytes of exchange messages sent (`sent` true) or received.
    pub fn exchange(&self, sent: bool, n: usize) {
        let direction = if sent { "sent" } else { "received" };
        self.exchange_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus reads), ending in `# EOF`.
    pub fn encode(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn timed<T>(&self, op: &'static str, started: Instant, result: &PluginResult<T>) {
        self.answered(result);
        self.requests
            .get_or_create(&OpLabel { op })
            .observe(started.elapsed().as_secs_f64());
    }

    fn wrote<T>(&self, op: &'static str, result: &PluginResult<T>) {
        let result = match result {
            Ok(_) => "ok",
            Err(PluginError::NotFound(_)) => "not_found",
            Err(_) => "error",
        };
        self.writes.get_or_create(&WriteLabel { op, result }).inc();
    }

    fn wrote_batch<T>(
        &self,
        op: &'static str,
        results: &PluginResult<Option<Vec<PluginResult<T>>>>,
    ) {
        match results {
            Ok(Some(items)) => {
                for r in items {
                    self.wrote(op, r);
                }
            }
            // No batch call at this registry: the items are written one by one (and counted
            // then).
            Ok(None) => {}
            Err(e) => {
                let result = if matches!(e, PluginError::NotFound(_)) {
                    "not_found"
                } else {
                    "error"
                };
                self.writes.get_or_create(&WriteLabel { op, result }).inc();
            }
        }
    }
}

/// The registry plugin with every call timed and every write counted in [`Metrics`].
#[derive(Debug)]
pub struct MeteredPlugin {
    inner: Arc<dyn Plugin>,
    metrics: Arc<Metrics>,
}

impl MeteredPlugin {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Plugin>, metrics: Arc<Metrics>) -> MeteredPlugin {
        MeteredPlugin { inner, metrics }
    }
}

#[async_trait::async_trait]
impl Plugin for MeteredPlugin {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn list(&self) -> PluginResult<Snapshot> {
        let started = Instant::now();
        let r = self.inner.list().await;
        self.metrics.timed("list", started, &r);
        r
    }

    async fn revision(&self) -> PluginResult<Option<String>> {
        let started = Instant::now();
        let r = self.inner.revision().await;
        self.metrics.timed("revision", started, &r);
        r
    }

    async fn list_with_revision(&self) -> PluginResult<(Snapshot, Option<u64>)> {
        let started = Instant::now();
        let r = self.inner.list_with_revision().await;
        self.metrics.timed("list", started, &r);
        r
    }

    async fn list_each(&self, visit: &mut (dyn FnMut(Listed) + Send)) -> PluginResult<Option<u64>> {
        let started = Instant::now();
        let r = self.inner.list_each(visit).await;
        self.metrics.timed("list", started, &r);
        r
    }

    async fn changes(
        &self,
        since: u64,
        wait: Duration,
        imported: bool,
    ) -> PluginResult<Option<Changes>> {
        let started = Instant::now();
        let r = self.inner.changes(since, wait, imported).await;
        self.metrics.timed("changes", started, &r);
        r
    }

    async fn ensure_service(&self, service: &Service) -> PluginResult<String> {
        let started = Instant::now();
        let r = self.inner.ensure_service(service).await;
        self.metrics.timed("ensure_service", started, &r);
        self.metrics.wrote("ensure_service", &r);
        r
    }

    async fn register(&self, service: &Service, instance: &Instance) -> PluginResult<String> {
        let started = Instant::now();
        let r = self.inner.register(service, instance).await;
        self.metrics.timed("register", started, &r);
        self.metrics.wrote("register", &r);
        r
    }

    async fn ensure_services(
        &self,
        services: &[&Service],
    ) -> PluginResult<Option<Vec<PluginResult<String>>>> {
        let started = Instant::now();
        let r = self.inner.ensure_services(services).await;
        self.metrics.timed("ensure_service_batch", started, &r);
        self.metrics.wrote_batch("ensure_service", &r);
        r
    }

    async fn register_batch(
        &self,
        items: &[(&Service, &Instance)],
    ) -> PluginResult<Option<Vec<PluginResult<String>>>> {
        let started = Instant::now();
        let r = self.inner.register_batch(items).await;
        self.metrics.timed("register_batch", started, &r);
        self.metrics.wrote_batch("register", &r);
        r
    }

    async fn heartbeat(&self, service: &Service, instance_id: &str) -> PluginResult<()> {
        let started = Instant::now();
        let r = self.inner.heartbeat(service, instance_id).await;
        self.metrics.timed("heartbeat", started, &r);
        self.metrics.wrote("heartbeat", &r);
        r
    }

    async fn heartbeat_batch(
        &self,
        items: &[(&Service, &str)],
    ) -> PluginResult<Option<Vec<PluginResult<()>>>> {
        let started = Instant::now();
        let r = self.inner.heartbeat_batch(items).await;
        self.metrics.timed("heartbeat_batch", started, &r);
        self.metrics.wrote_batch("heartbeat", &r);
        r
    }

    async fn unregister(&self, service: &Service, instance_id: &str) -> PluginResult<()> {
        let started = Instant::now();
        let r = self.inner.unregister(service, instance_id).await;
        self.metrics.timed("unregister", started, &r);
        self.metrics.wrote("unregister", &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_labels_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_CLUSTER_LABELS {
            assert_eq!(m.cluster_label(&format!("c{i}")), format!("c{i}"));
        }
        assert_eq!(m.cluster_label("one-too-many"), OTHER);
        assert_eq!(m.cluster_label("c0"), "c0");
    }

    #[test]
    fn the_exposition_names_every_family() {
        let m = Metrics::new();
        m.leader_changes.inc();
        m.leader.get_or_create(&m.cluster("a")).set(1);
        let text = m.encode();
        for name in [
            "syncer_leader_changes_total 1",
            "syncer_leader{cluster=\"a\"} 1",
            "# TYPE syncer_propagation_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
