//! Syncing: the leader's reconcile loop, and its parts.
//!
//! Each tick (and whenever membership changes) the leader of this cluster pulls every other
//! cluster's export ([`crate::exchange`]), lists its own registry ([`exporter`]), rebuilds the
//! mapping from the registry's metadata ([`mapping`]) and applies the difference
//! ([`importer`]). Members that are not leaders only serve `Pull`.

pub mod exporter;
pub mod importer;
pub mod mapping;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use syncer_plugin_api::Plugin;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exchange::client::ExchangeClient;
use crate::membership::Member;
use exporter::Exporter;
use importer::{PeerExport, PlanConfig};
use mapping::Mapping;

/// Settings of the reconcile loop.
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's node name.
    pub node: String,
    /// This member's cluster name.
    pub cluster_name: String,
    /// Time between reconciles; also the heartbeat interval of imported instances.
    pub ticker_interval: Duration,
    /// How long copies of a cluster that vanished (no member alive, or every pull failing)
    /// are kept before they are removed (DESIGN.md decision 6).
    pub grace_period: Duration,
    /// Registry calls in flight at once while applying a plan.
    pub concurrency: usize,
}

/// The reconcile loop of one member.
#[derive(Debug)]
pub struct Syncer {
    config: Config,
    plugin: Arc<dyn Plugin>,
    exporter: Arc<Exporter>,
    client: ExchangeClient,
    members: watch::Receiver<Vec<Member>>,
    /// When each peer cluster was last pulled successfully; clusters whose copies exist but
    /// that were never pulled since start count from `started`.
    last_pulled: HashMap<String, Instant>,
    started: Instant,
}

impl Syncer {
    /// Builds the loop. `members` lists alive members, this one included.
    pub fn new(
        config: Config,
        plugin: Arc<dyn Plugin>,
        exporter: Arc<Exporter>,
        members: watch::Receiver<Vec<Member>>,
    ) -> Syncer {
        let client = ExchangeClient::new(
            config.cluster_name.clone(),
            config
                .ticker_interval
                .clamp(Duration::from_secs(2), Duration::from_secs(10)),
        );
        Syncer {
            config,
            plugin,
            exporter,
            client,
            members,
            last_pulled: HashMap::new(),
            started: Instant::now(),
        }
    }

    /// Runs until `shutdown` is cancelled. Never fails: registry and peer errors are logged
    /// and retried on the next tick.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.ticker_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                changed = self.members.changed() => {
                    if changed.is_err() {
                        // Membership ended: the daemon is shutting down.
                        return;
                    }
                    debug!("membership changed, reconciling early");
                }
            }
            let members = self.members.borrow_and_update().clone();
            let leader = leader_of(&members, &self.config.cluster_name);
            let is_leader = leader.is_none_or(|m| m.node == self.config.node);
            if was_leader != Some(is_leader) {
                info!(
                    cluster = %self.config.cluster_name,
                    leader = %leader.map(|m| m.node.as_str()).unwrap_or(&self.config.node),
                    is_leader,
                    "cluster leadership"
                );
                was_leader = Some(is_leader);
            }
            if is_leader {
                self.reconcile(&members).await;
            }
        }
    }

    /// One level-triggered reconcile: pull peers, list local, plan, apply.
    async fn reconcile(&mut self, members: &[Member]) {
        let started = Instant::now();
        let peers = peer_clusters(members, &self.config.cluster_name);
        let client = &self.client;
        let pulls = join_all(peers.iter().map(|(cluster, candidates)| async move {
            for member in candidates {
                match client.pull(member.rpc_addr).await {
                    Ok(export) if export.cluster == **cluster => return Some(export),
                    Ok(export) => {
                        warn!(peer = %member.node, advertised = %cluster, answered = %export.cluster, "peer answered for another cluster, ignored");
                    }
                    Err(e) => {
                        warn!(peer = %member.node, cluster = %cluster, error = %e, "pull failed");
                    }
                }
            }
            None
        }))
        .await;
        let exports: Vec<PeerExport> = pulls.into_iter().flatten().collect();
        let now = Instant::now();
        for export in &exports {
            self.last_pulled.insert(export.cluster.clone(), now);
        }

        let local = match self.exporter.refresh().await {
            Ok(local) => local,
            Err(e) => {
                warn!(error = %e, "listing the local registry failed; reconcile skipped");
                return;
            }
        };
        let actual = Mapping::from_snapshot(&local);
        // Copies of clusters not pulled this round are kept within the grace period.
        let pulled: HashSet<&str> = exports.iter().map(|e| e.cluster.as_str()).collect();
        let mut retained = HashSet::new();
        for origin in actual.0.copies.keys() {
            if pulled.contains(origin.cluster.as_str()) || retained.contains(&origin.cluster) {
                continue;
            }
            let since = *self
                .last_pulled
                .get(&origin.cluster)
                .unwrap_or(&self.started);
            if now.duration_since(since) < self.config.grace_period {
                retained.insert(origin.cluster.clone());
            } else {
                info!(cluster = %origin.cluster, grace_secs = self.config.grace_period.as_secs(), "peer cluster gone past its grace period, removing its instances");
            }
        }
        let plan_config = PlanConfig {
            local_cluster: self.config.cluster_name.clone(),
            heartbeat_interval_secs: u32::try_from(self.config.ticker_interval.as_secs().max(1))
                .unwrap_or(u32::MAX),
            heartbeat_times: 3,
        };
        let plan = importer::plan(&plan_config, &exports, &retained, actual);
        let applied = importer::apply(self.plugin.as_ref(), plan, self.config.concurrency).await;
        if applied.registered + applied.unregistered + applied.failed > 0 {
            info!(
                peers = exports.len(),
                registered = applied.registered,
                unregistered = applied.unregistered,
                heartbeated = applied.heartbeated,
                failed = applied.failed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "reconciled"
            );
        } else {
            debug!(
                peers = exports.len(),
                heartbeated = applied.heartbeated,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "reconciled"
            );
        }
    }
}

/// The leader of `cluster`: its alive member whose node name sorts first (DESIGN.md
/// decision 5, without etcd).
pub fn leader_of<'a>(members: &'a [Member], cluster: &str) -> Option<&'a Member> {
    members
        .iter()
        .filter(|m| m.cluster_name == cluster)
        .min_by(|a, b| a.node.cmp(&b.node))
}

/// Other clusters and their alive members, leader first: whom to pull, in order of preference.
pub fn peer_clusters<'a>(members: &'a [Member], local: &str) -> BTreeMap<&'a str, Vec<&'a Member>> {
    let mut out: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for m in members.iter().filter(|m| m.cluster_name != local) {
        out.entry(m.cluster_name.as_str()).or_default().push(m);
    }
    for candidates in out.values_mut() {
        candidates.sort_by(|a, b| a.node.cmp(&b.node));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, cluster: &str, port: u16) -> Member {
        Member {
            node: node.into(),
            cluster_name: cluster.into(),
            gossip_addr: ([127, 0, 0, 1], port).into(),
            rpc_addr: ([127, 0, 0, 1], port + 1).into(),
        }
    }

    #[test]
    fn the_leader_is_the_first_node_of_its_cluster() {
        let members = vec![
            member("b", "x", 1),
            member("a", "y", 3),
            member("c", "x", 5),
        ];
        assert_eq!(leader_of(&members, "x").map(|m| m.node.as_str()), Some("b"));
        assert_eq!(leader_of(&members, "y").map(|m| m.node.as_str()), Some("a"));
        assert!(leader_of(&members, "z").is_none());
    }

    #[test]
    fn peers_are_grouped_by_cluster_leader_first_without_the_local_cluster() {
        let members = vec![
            member("d", "y", 1),
            member("a", "x", 3),
            member("c", "y", 5),
        ];
        let peers = peer_clusters(&members, "x");
        assert_eq!(peers.len(), 1);
        let nodes: Vec<_> = peers["y"].iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes, vec!["c", "d"]);
    }
}
