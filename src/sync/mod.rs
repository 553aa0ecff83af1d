//! Syncing: the leader's loop, and its parts.
//!
//! The leader of this cluster follows every other cluster's export through a watch stream
//! ([`crate::exchange`], one task per peer: [`follow`]): each change is applied as it
//! arrives, against a cached mapping, so a registration crosses in milliseconds ([`peer`],
//! [`importer::plan_changes`]). Each tick it also runs a full, level-triggered reconcile: the
//! peers' whole exports (from the streams, or pulled where no stream is up), its own registry
//! listed ([`exporter`], which hands the listing's copies on), the mapping rebuilt from the
//! registry's metadata ([`mapping`]), the difference applied and every copy heartbeated
//! ([`importer`]). A missed event costs latency, never correctness (DESIGN.md
//! decisions 1 and 4). Members that are not leaders only serve the exchange.
//!
//! What crosses is filtered ([`filter`]): the exporter leaves out what the export filter
//! does not pass, the importer what the import filter does not pass (removing copies that
//! stop passing). Both are held behind a watch ([`Syncer::with_filters`],
//! [`exporter::Exporter::with_filters`]) and a new value takes effect at once. In dry run
//! ([`Syncer::with_dry_run`]) the loop plans as ever and writes nothing: it reports what it
//! would write ([`importer::preview`]).

pub mod exporter;
pub mod filter;
pub mod follow;
pub mod importer;
pub mod mapping;
pub mod peer;
pub mod ratelimit;
pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{join_all, FutureExt};
use syncer_plugin_api::Plugin;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::exchange::client::ExchangeClient;
use crate::leadership::LeaderWatch;
use crate::membership::Member;
use crate::observe::events::now_ms;
use crate::observe::status::{
    PeerStatus, Query, ResyncError, ResyncReport, Suspension, SyncStatus,
};
use crate::observe::Observer;
use crate::records::{PeerEvent, PeerExport};
use exporter::Exporter;
use filter::Filters;
use follow::{
    follow_stream, lagging, StreamReport, Watching, FIRST_EVENT_WAIT, LAG_CHECK, STREAM_LAG_LIMIT,
};
use importer::{PeerView, PlanConfig};
use mapping::{LocalCopy, OriginKey};
use peer::PeerExportState;

/// Settings of the reconcile loop.
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's node name.
    pub node: String,
    /// This member's cluster name.
    pub cluster_name: String,
    /// Time between full reconciles; also the heartbeat interval of imported instances,
    /// whose lease is 4 ticks.
    pub ticker_interval: Duration,
    /// How long copies of a cluster that vanished (no member alive, or every pull failing)
    /// are kept before they are removed (DESIGN.md decision 6).
    pub grace_period: Duration,
    /// Registry calls in flight at once while applying a plan.
    pub concurrency: usize,
}

/// Events from the watch streams, buffered before the loop applies them; beyond this the
/// streams wait (gRPC flow control slows the peer), so a busy loop holds at most this many
/// parts of a whole export.
pub const EVENT_BUFFER: usize = 32;

/// The reconcile loop of one member.
#[derive(Debug)]
pub struct Syncer {
    config: Config,
    plugin: Arc<dyn Plugin>,
    exporter: Arc<Exporter>,
    client: Arc<ExchangeClient>,
    members: watch::Receiver<Vec<Member>>,
    /// When each peer cluster was last heard from (pulled, or an event on its stream);
    /// clusters whose copies exist but that were never heard from count from `started`.
    last_heard: HashMap<String, Instant>,
    started: Instant,
    /// Watch streams by peer cluster.
    watching: HashMap<String, Watching>,
    /// Peers' exports as followed through their streams.
    exports: HashMap<String, PeerExportState>,
    /// Reports of the stream tasks: (cluster, generation, report); capacity [`EVENT_BUFFER`].
    reports_tx: mpsc::Sender<(String, u64, StreamReport)>,
    reports_rx: mpsc::Receiver<(String, u64, StreamReport)>,
    next_generation: u64,
    /// The mapping as of the last full reconcile, updated by every change applied since;
    /// `None` until the first full reconcile of a leadership term.
    copies: Option<HashMap<OriginKey, LocalCopy>>,
    /// Who leads this cluster ([`crate::leadership`]: the gossip rule or an etcd election).
    leader: LeaderWatch,
    /// Cancelled once this member may leave: gossip leaves, the election resigns. Until then
    /// a leaving leader keeps its copies' leases fresh (see [`Syncer::with_handover`]).
    leave: CancellationToken,
    /// Peer cluster names, shared by every copy's key.
    names: HashMap<String, Arc<str>>,
    /// The export revisions gossiped per member ([`Syncer::with_notices`]).
    heard: Option<watch::Receiver<crate::membership::notice::Heard>>,
    /// Metrics, events and the published status ([`Syncer::with_observer`]).
    observer: Observer,
    /// Questions from the status API, answered between changes.
    queries: Option<mpsc::Receiver<Query>>,
    /// Copies held per origin cluster (of `copies`, kept as it changes).
    copy_counts: HashMap<Arc<str>, usize>,
    /// The last leader seen (for `syncer_leader_changes_total`).
    last_leader: Option<String>,
    /// Full reconciles done, and when the last one ended (ms since the epoch, its length
    /// in ms, and the instant).
    reconciles: u64,
    reconciled: Option<(u64, u64, Instant)>,
    /// Spreads each tick's heartbeats of copies over half the tick ([`ratelimit`]); started
    /// by [`Syncer::run`], `None` outside it and during a handover (whose final heartbeats go
    /// at once).
    pacer: Option<ratelimit::HeartbeatPacer>,
    /// The filters as they may change at run time ([`Syncer::with_filters`]); `None`:
    /// everything is imported.
    filters: Option<watch::Receiver<Arc<Filters>>>,
    /// Dry run ([`Syncer::with_dry_run`]): plan, write nothing.
    dry_run: bool,
    /// In dry run, the writes pending at the last full reconcile (their events are recorded
    /// once, when they become pending), and its report for the status.
    pending: HashSet<(bool, OriginKey)>,
    pending_writes: Option<crate::observe::status::PendingWrites>,
    /// Set while imports are suspended (`POST /v1/syncer/suspend`).
    suspended: Option<Suspension>,
    /// Commands that arrived while a reconcile was listing, carried out after it (at most
    /// [`MAX_DEFERRED_COMMANDS`]).
    deferred: std::collections::VecDeque<Query>,
    /// Ticker interval changes from a config reload ([`Syncer::with_ticker`]).
    ticker_changes: Option<watch::Receiver<Duration>>,
}

/// Admin commands kept while a reconcile lists the registry; more are refused.
pub const MAX_DEFERRED_COMMANDS: usize = 16;

/// An admin command waiting for the reconcile that carries it out.
enum Pending {
    Resync(oneshot::Sender<Result<ResyncReport, ResyncError>>),
    Suspend(Suspension, oneshot::Sender<(Suspension, usize)>),
    Resume(
        Option<Suspension>,
        oneshot::Sender<(Option<Suspension>, Option<ResyncReport>)>,
    ),
}

/// How long a leaving leader waits for an etcd successor, heartbeating meanwhile.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

impl Syncer {
    /// Builds the loop. `members` lists alive members, this one included (whom to follow);
    /// `leader` says whether this member leads its cluster.
    pub fn new(
        config: Config,
        plugin: Arc<dyn Plugin>,
        exporter: Arc<Exporter>,
        members: watch::Receiver<Vec<Member>>,
        leader: LeaderWatch,
    ) -> Syncer {
        let client = Arc::new(
            ExchangeClient::new(config.cluster_name.clone(), exchange_timeout(&config))
                .with_node(config.node.clone()),
        );
        let (reports_tx, reports_rx) = mpsc::channel(EVENT_BUFFER);
        Syncer {
            config,
            plugin,
            exporter,
            client,
            members,
            last_heard: HashMap::new(),
            started: Instant::now(),
            watching: HashMap::new(),
            exports: HashMap::new(),
            reports_tx,
            reports_rx,
            next_generation: 0,
            copies: None,
            leader,
            leave: CancellationToken::new(),
            names: HashMap::new(),
            heard: None,
            observer: Observer::new().0,
            queries: None,
            copy_counts: HashMap::new(),
            last_leader: None,
            reconciles: 0,
            reconciled: None,
            pacer: None,
            filters: None,
            dry_run: false,
            pending: HashSet::new(),
            pending_writes: None,
            suspended: None,
            deferred: std::collections::VecDeque::new(),
            ticker_changes: None,
        }
    }

    /// Imports only what `filters`' import filter passes, as it is now and as it changes:
    /// a new value starts a full reconcile at once, which registers what it lets in and
    /// removes the copies of what it leaves out (reason `filter`).
    pub fn with_filters(mut self, filters: watch::Receiver<Arc<Filters>>) -> Syncer {
        self.filters = Some(filters);
        self
    }

    /// Dry run (`--dry-run`): every reconcile plans as ever and writes nothing (no
    /// registration, removal or heartbeat of copies: copies written earlier expire after
    /// their lease unless another syncer keeps them); the status and
    /// `syncer_dry_run_pending{op}` show what it would write, and each write that becomes
    /// pending is recorded once as an event marked `dry_run`. Changes from the peers' streams
    /// are shown by the next full reconcile: at once after a whole export (a stream's
    /// start), else at the next tick.
    pub fn with_dry_run(mut self, dry_run: bool) -> Syncer {
        self.dry_run = dry_run;
        self
    }

    /// The plan's settings, with the import filter as it is now.
    fn plan_config(&self) -> PlanConfig {
        let mut config = plan_config(&self.config);
        if let Some(filters) = &self.filters {
            config.import_filter = filters.borrow().import.clone();
        }
        config
    }

    /// Follows changes of the ticker interval (a config reload): the next tick comes one
    /// new interval after the change, and copies registered from then on get the new lease
    /// (4 ticks). Copies registered before keep their lease until they are registered again;
    /// a heartbeat that finds one expired registers it again.
    pub fn with_ticker(mut self, changes: watch::Receiver<Duration>) -> Syncer {
        self.ticker_changes = Some(changes);
        self
    }

    /// Records metrics and events in `observer`, publishes its status there, and answers
    /// the `queries` of its status API.
    /// Call it before [`Syncer::with_tls`], which builds the client that counts the
    /// exchange's bytes here.
    pub fn with_observer(mut self, observer: Observer, queries: mpsc::Receiver<Query>) -> Syncer {
        self.observer = observer;
        self.queries = Some(queries);
        let tls = self.client.tls().cloned();
        self.with_tls(tls)
    }

    /// Connects to peers with mutual TLS (`Some`, see [`crate::tls`]) instead of plaintext.
    pub fn with_tls(mut self, tls: Option<Arc<crate::tls::ExchangeTls>>) -> Syncer {
        self.client = Arc::new(
            ExchangeClient::new(
                self.config.cluster_name.clone(),
                exchange_timeout(&self.config),
            )
            .with_node(self.config.node.clone())
            .with_tls(tls)
            .with_metrics(Some(self.observer.metrics.clone())),
        );
        self
    }

    /// Compares each watch stream with the revision its member gossips (`heard`, from
    /// [`crate::membership::Membership::heard`]) and restarts a stream that stays behind
    /// for [`STREAM_LAG_LIMIT`].
    pub fn with_notices(
        mut self,
        heard: watch::Receiver<crate::membership::notice::Heard>,
    ) -> Syncer {
        self.heard = Some(heard);
        self
    }

    /// Restarts the streams that stay behind their member's gossiped revision. Not while
    /// reports wait to be applied: then the loop is behind, not the stream.
    fn restart_lagging(&mut self) {
        let Some(heard) = &self.heard else {
            return;
        };
        if !self.reports_rx.is_empty() {
            return;
        }
        let lagging = lagging(
            &mut self.watching,
            &self.exports,
            &heard.borrow(),
            Instant::now(),
        );
        for cluster in lagging {
            warn!(cluster = %cluster, limit_secs = STREAM_LAG_LIMIT.as_secs(), "export stream behind the revision its member gossips; restarting it");
            // Started again by `follow_peers`, resuming from the export held.
            if let Some(w) = self.watching.remove(&cluster) {
                w.stop.cancel();
            }
        }
    }

    /// The shared name of `cluster`.
    fn name(&mut self, cluster: &str) -> Arc<str> {
        if let Some(name) = self.names.get(cluster) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(cluster);
        self.names.insert(cluster.to_owned(), name.clone());
        name
    }

    /// The token to cancel when this member may leave (gossip leave, election resignation).
    /// On shutdown a leader first heartbeats every copy (a whole lease for the successor to
    /// take over in), then cancels `leave`; when its leader watch shows a successor (an etcd
    /// election) it keeps heartbeating each tick until another member leads, or
    /// [`HANDOVER_TIMEOUT`].
    pub fn with_handover(mut self, leave: CancellationToken) -> Syncer {
        self.leave = leave;
        self
    }

    /// Who leads this cluster (node name, or `-` while nobody is known to lead), and
    /// whether it is this member.
    fn leadership(&mut self) -> (String, bool) {
        let (leader, is_leader) = self.leader.current();
        (leader.unwrap_or_else(|| "-".to_owned()), is_leader)
    }

    /// Shutdown of a leader: renew every copy's lease, let go of the leadership, and with an
    /// election keep heartbeating until a successor holds the key (or the timeout).
    async fn hand_over(&mut self) {
        if let Some(pacer) = self.pacer.take() {
            pacer.finish().await;
        }
        let members = self.members.borrow().clone();
        let deadline = tokio::time::Instant::now() + HANDOVER_TIMEOUT;
        if tokio::time::timeout_at(deadline, self.reconcile(&members))
            .await
            .is_err()
        {
            warn!("final heartbeat before handover timed out");
        }
        self.leave.cancel();
        if !self.leader.shows_successor() {
            info!("left the cluster; a successor leads once gossip tells it");
            return;
        }
        let mut election = self.leader.clone();
        let mut ticker = tokio::time::interval(self.config.ticker_interval);
        ticker.tick().await;
        loop {
            let (leader, is_leader) = election.current();
            if leader.is_some() && !is_leader {
                info!(successor = ?leader, "handed the cluster leadership over");
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    info!("no successor seen before the handover timeout");
                    return;
                }
                changed = election.changed() => if !changed {
                    // The election ended; its last word stays readable.
                    let last = election.last();
                    info!(successor = ?last, "election ended during the handover");
                    return;
                },
                _ = ticker.tick() => {
                    let _ = tokio::time::timeout_at(deadline, self.reconcile(&members)).await;
                }
            }
        }
    }

    /// Runs until `shutdown` is cancelled. Never fails: registry and peer errors are logged
    /// and retried.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.ticker_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = None;
        let mut lag_check = tokio::time::interval(LAG_CHECK);
        lag_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.pacer = Some(ratelimit::HeartbeatPacer::spawn(
            self.plugin.clone(),
            self.config.concurrency,
            shutdown.child_token(),
        ));
        loop {
            let mut full = true;
            let mut command = self.deferred.pop_front();
            if command.is_none() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                    () = lost_copies(&mut self.pacer) => {
                        debug!("paced heartbeats found copies the registry lost, reconciling early");
                    }
                    interval = ticker_changed(&mut self.ticker_changes) => {
                        if interval != self.config.ticker_interval {
                            info!(
                                from_secs = self.config.ticker_interval.as_secs(),
                                to_secs = interval.as_secs(),
                                "ticker interval changed"
                            );
                            self.config.ticker_interval = interval;
                            ticker = tokio::time::interval_at(
                                tokio::time::Instant::now() + interval,
                                interval,
                            );
                            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                        continue;
                    }
                    _ = lag_check.tick(), if self.heard.is_some() => {
                        full = false;
                    }
                    changed = self.members.changed() => {
                        if changed.is_err() {
                            // Membership ended: the daemon is shutting down.
                            break;
                        }
                        debug!("membership changed, reconciling early");
                    }
                    Some((cluster, generation, report)) = self.reports_rx.recv() => {
                        full = self.on_report(cluster, generation, report).await;
                    }
                    () = leader_changed(&mut self.leader) => {
                        debug!("leader changed, reconciling early");
                    }
                    () = filters_changed(&mut self.filters) => {
                        info!("filters changed, reconciling");
                    }
                    Some(query) = next_query(&mut self.queries) => {
                        match self.answer(query) {
                            None => continue,
                            Some(c) => command = Some(c),
                        }
                    }
                }
            }
            let mut pending = None;
            if let Some(command) = command {
                match self.begin(command) {
                    Some(p) => pending = Some(p),
                    None => continue,
                }
            }
            let members = self.members.borrow_and_update().clone();
            let (leader, is_leader) = self.leadership();
            if leader != "-" && self.last_leader.as_deref() != Some(leader.as_str()) {
                self.observer.metrics.leader_changes.inc();
                self.last_leader = Some(leader.clone());
            }
            self.observer
                .metrics
                .leader
                .get_or_create(&self.observer.metrics.cluster(&self.config.cluster_name))
                .set(i64::from(is_leader));
            if was_leader != Some(is_leader) {
                info!(
                    cluster = %self.config.cluster_name,
                    leader = %leader,
                    is_leader,
                    "cluster leadership"
                );
                was_leader = Some(is_leader);
            }
            let mut report = None;
            if is_leader {
                self.restart_lagging();
                self.follow_peers(&members);
                if full || pending.is_some() {
                    report = self.reconcile(&members).await;
                    // Time spent reconciling is not time a stream was behind: the loop
                    // did not read its reports meanwhile.
                    for w in self.watching.values_mut() {
                        w.behind_since = None;
                    }
                }
            } else {
                self.stop_following();
            }
            self.publish_status(&members, &leader, is_leader);
            if let Some(pending) = pending {
                let report = if is_leader {
                    report
                } else {
                    Some(ResyncReport::default())
                };
                match pending {
                    Pending::Resync(reply) => {
                        let _ = reply.send(report.ok_or(ResyncError::ListingFailed));
                    }
                    Pending::Suspend(suspension, reply) => {
                        let _ = reply.send((suspension, report.map_or(0, |r| r.unregistered)));
                    }
                    Pending::Resume(ended, reply) => {
                        let _ = reply.send((ended, report));
                    }
                }
            }
        }
        if was_leader == Some(true) && shutdown.is_cancelled() {
            self.hand_over().await;
        }
        self.leave.cancel();
        self.stop_following();
        if let Some(pacer) = self.pacer.take() {
            pacer.finish().await;
        }
    }

    /// Handles one stream report; returns whether a full reconcile should follow (the
    /// mapping is not known yet, or the stream showed a gap).
    async fn on_report(&mut self, cluster: String, generation: u64, report: StreamReport) -> bool {
        if self.watching.get(&cluster).map(|w| w.generation) != Some(generation) {
            return false; // a replaced stream's late report
        }
        let event = match report {
            StreamReport::Event(event) => event,
            StreamReport::Down(reason) => {
                debug!(cluster = %cluster, reason = %reason, "export stream down");
                if let Some(w) = self.watching.get_mut(&cluster) {
                    w.failed = true;
                }
                if let Some(state) = self.exports.get_mut(&cluster) {
                    state.abandon_incoming();
                }
                return false;
            }
        };
        self.last_heard.insert(cluster.clone(), Instant::now());
        if let Some(w) = self.watching.get_mut(&cluster) {
            // The stream delivers: it is not stalled, whatever it is behind by.
            w.behind_since = None;
        }
        let whole = matches!(event, PeerEvent::Full { more: false, .. });
        let changed_at_ms = match &event {
            PeerEvent::Change { changed_at_ms, .. } => *changed_at_ms,
            PeerEvent::Full { .. } => 0,
        };
        let name = self.name(&cluster);
        let config = self.plan_config();
        let state = self.exports.entry(cluster.clone()).or_default();
        let mut delta = match state.apply(event) {
            Ok(delta) => delta,
            Err(gap) => {
                warn!(cluster = %cluster, error = %gap, "export stream out of step, restarting it");
                if let Some(w) = self.watching.remove(&cluster) {
                    w.stop.cancel();
                }
                self.exports.remove(&cluster);
                return false;
            }
        };
        if state.is_known() {
            if let Some(w) = self.watching.get(&cluster) {
                w.held.send_replace((state.epoch, state.revision));
            }
        }
        let Some(copies) = self.copies.as_mut() else {
            return true;
        };
        if self.dry_run {
            // Nothing is written: the next full reconcile shows what this change would do,
            // at once for a whole export (a stream's start), else at the next tick.
            return whole;
        }
        if whole {
            // A whole export also tells what vanished while no stream was up.
            let removed: HashSet<_> = delta.removed.iter().copied().collect();
            for origin in copies.keys() {
                if *origin.cluster == *cluster
                    && !state.contains(&origin.instance)
                    && !removed.contains(&origin.instance)
                {
                    delta.removed.push(origin.instance);
                }
            }
        }
        if self.suspended.is_some() {
            // Followed, not applied: resume reconciles against what is held then.
            return false;
        }
        let view = PeerView {
            cluster: name.clone(),
            state,
        };
        let plan = importer::plan_changes(&config, view, &delta, copies);
        if plan.changes_nothing() {
            return false;
        }
        let started = Instant::now();
        let applied = apply(
            self.plugin.as_ref(),
            &self.observer,
            &config,
            plan,
            self.config.concurrency,
        )
        .await;
        let mut held = self.copy_counts.get(&name).copied().unwrap_or(0);
        for origin in &applied.removed {
            if copies.remove(origin).is_some() {
                held = held.saturating_sub(1);
            }
        }
        for (origin, copy) in applied.copies {
            if copies.insert(origin, copy).is_none() {
                held += 1;
            }
        }
        self.copy_counts.insert(name, held);
        if changed_at_ms > 0 && applied.registered + applied.unregistered > 0 {
            // Wall clocks of two hosts: a clock behind the origin's reads as 0.
            let ms = now_ms().saturating_sub(changed_at_ms);
            self.observer
                .metrics
                .propagation
                .observe(ms as f64 / 1000.0);
        }
        debug!(
            cluster = %cluster,
            registered = applied.registered,
            unregistered = applied.unregistered,
            failed = applied.failed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "applied peer change"
        );
        false
    }

    /// Makes sure one watch stream runs per peer cluster, to its leader.
    fn follow_peers(&mut self, members: &[Member]) {
        let peers = peer_clusters(members, &self.config.cluster_name);
        self.watching.retain(|cluster, w| {
            let keep = peers
                .get(cluster.as_str())
                .and_then(|c| c.first())
                .is_some_and(|m| m.rpc_addr == w.addr);
            if !keep {
                w.stop.cancel();
            }
            keep
        });
        for (cluster, candidates) in peers {
            let Some(target) = candidates.first() else {
                continue;
            };
            if self.watching.contains_key(cluster) {
                continue;
            }
            self.next_generation += 1;
            let w = Watching {
                node: target.node.clone(),
                addr: target.rpc_addr,
                generation: self.next_generation,
                stop: CancellationToken::new(),
                since: Instant::now(),
                failed: false,
                behind_since: None,
                held: watch::channel(
                    self.exports
                        .get(cluster)
                        .filter(|state| state.is_known())
                        .map_or((0, 0), |state| (state.epoch, state.revision)),
                )
                .0,
            };
            // A stream resumes from the export held, if any: the same member answers with
            // the changes since, another one (its own run) with its whole export.
            tokio::spawn(follow_stream(
                self.client.clone(),
                cluster.to_owned(),
                w.addr,
                w.generation,
                self.reports_tx.clone(),
                w.stop.clone(),
                w.held.subscribe(),
            ));
            self.watching.insert(cluster.to_owned(), w);
        }
    }

    /// Stops every stream and forgets what they told (not leading any more).
    fn stop_following(&mut self) {
        for (_, w) in self.watching.drain() {
            w.stop.cancel();
        }
        self.exports.clear();
        self.copies = None;
        self.copy_counts.clear();
        if let Some(pacer) = &mut self.pacer {
            pacer.stop();
        }
        if self.pending_writes.take().is_some() {
            self.pending.clear();
            self.observer.metrics.dry_run_pending.clear();
        }
    }

    /// Publishes how this member sees each peer cluster ([`Observer::publish`]), and sets
    /// the per-cluster gauges.
    fn publish_status(&mut self, members: &[Member], leader: &str, is_leader: bool) {
        let peers = peer_clusters(members, &self.config.cluster_name);
        let mut clusters: std::collections::BTreeSet<String> =
            peers.keys().map(|c| (*c).to_owned()).collect();
        clusters.extend(self.copy_counts.keys().map(|c| c.to_string()));
        clusters.extend(self.last_heard.keys().cloned());
        clusters.extend(self.exports.keys().cloned());
        let heard = self.heard.as_ref().map(|h| h.borrow().clone());
        let now = Instant::now();
        let wall = now_ms();
        let metrics = self.observer.metrics.clone();
        let mut out = Vec::with_capacity(clusters.len());
        for cluster in clusters {
            let alive: Vec<String> = peers
                .get(cluster.as_str())
                .map(|m| m.iter().map(|m| m.node.clone()).collect())
                .unwrap_or_default();
            let watching = self.watching.get(&cluster);
            let export = self.exports.get(&cluster).filter(|s| s.is_known());
            let last_heard = self.last_heard.get(&cluster).copied();
            let gossiped = watching.and_then(|w| {
                heard
                    .as_ref()
                    .and_then(|h| h.get(&w.node))
                    .filter(|at| export.is_none_or(|e| e.epoch == at.epoch))
                    .map(|at| at.revision)
            });
            let since_heard = last_heard.map(|at| now.duration_since(at));
            let state = if !is_leader {
                "idle"
            } else if alive.is_empty() {
                "gone"
            } else if watching.is_some_and(|w| !w.failed) && export.is_some() {
                "following"
            } else if since_heard.is_some_and(|d| d < self.config.ticker_interval * 2) {
                "pulled"
            } else if watching.is_some_and(|w| !w.failed) {
                "connecting"
            } else {
                "unreachable"
            };
            let grace_left_secs = (state == "gone" || state == "unreachable").then(|| {
                let since = last_heard.unwrap_or(self.started);
                self.config
                    .grace_period
                    .saturating_sub(now.duration_since(since))
                    .as_secs()
            });
            let copies = self.copy_counts.get(cluster.as_str()).copied().unwrap_or(0);
            let label = metrics.cluster(&cluster);
            metrics
                .peer_up
                .get_or_create(&label)
                .set(i64::from(matches!(state, "following" | "pulled")));
            let held = export.map_or(0, |e| e.revision);
            metrics
                .import_lag
                .get_or_create(&label)
                .set(i64::try_from(gossiped.map_or(0, |g| g.saturating_sub(held))).unwrap_or(0));
            metrics
                .copies
                .get_or_create(&metrics.origin(&cluster))
                .set(i64::try_from(copies).unwrap_or(i64::MAX));
            out.push(PeerStatus {
                state: state.to_owned(),
                members: alive,
                following: watching.map(|w| w.node.clone()),
                epoch: export.map_or(0, |e| e.epoch),
                revision_held: held,
                revision_gossiped: gossiped,
                last_heard_ms: since_heard
                    .map(|d| wall.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
                exported: export.map_or(0, |e| e.len()),
                copies,
                grace_left_secs,
                cluster,
            });
        }
        self.observer.publish(SyncStatus {
            leader: (leader != "-").then(|| leader.to_owned()),
            is_leader,
            reconciled_at_ms: self.reconciled.map(|r| r.0),
            reconcile_ms: self.reconciled.map(|r| r.1),
            reconciles: self.reconciles,
            lease_secs: lease(&self.config).as_secs(),
            peers: out,
            dry_run: self.dry_run,
            pending: self.pending_writes.clone(),
            suspended: self.suspended.clone(),
        });
    }

    /// Answers one question of the status API from the exports and copies held; a command
    /// (resync, suspend, resume) is handed back for the loop to carry out.
    fn answer(&self, query: Query) -> Option<Query> {
        match query {
            Query::Services { limit, reply } => {
                let report = status::services(
                    &self.exports,
                    self.copies.as_ref(),
                    &self.observer.events,
                    limit,
                );
                let _ = reply.send(report);
            }
            Query::Instances {
                cluster,
                service,
                limit,
                reply,
            } => {
                let lease_left = self
                    .reconciled
                    .map(|(_, _, at)| lease(&self.config).saturating_sub(at.elapsed()).as_secs());
                let report = status::instances(
                    &self.exports,
                    self.copies.as_ref(),
                    cluster.as_deref(),
                    service.as_deref(),
                    lease_left,
                    limit,
                );
                let _ = reply.send(report);
            }
            command @ (Query::Resync { .. } | Query::Suspend { .. } | Query::Resume { .. }) => {
                return Some(command);
            }
        }
        None
    }

    /// Starts an admin command: what needs a reconcile comes back as [`Pending`] (the loop
    /// reconciles, then answers); what does not is answered here.
    fn begin(&mut self, command: Query) -> Option<Pending> {
        match command {
            Query::Resync { cluster, reply } => {
                if let Some(cluster) = cluster {
                    let known = self.watching.contains_key(&cluster)
                        || self.exports.contains_key(&cluster)
                        || self.copy_counts.contains_key(cluster.as_str())
                        || self
                            .members
                            .borrow()
                            .iter()
                            .any(|m| m.cluster_name == cluster);
                    if !known || cluster == self.config.cluster_name {
                        let _ = reply.send(Err(ResyncError::UnknownCluster(cluster)));
                        return None;
                    }
                    info!(cluster = %cluster, "resync asked: fetching the whole export again");
                    // Its stream starts again from nothing: the whole export comes again.
                    if let Some(w) = self.watching.remove(&cluster) {
                        w.stop.cancel();
                    }
                    self.exports.remove(&cluster);
                } else {
                    info!("resync asked: full reconcile");
                }
                Some(Pending::Resync(reply))
            }
            Query::Suspend { copies, reply } => {
                let suspension = Suspension {
                    since_ms: now_ms(),
                    copies,
                };
                info!(copies = ?copies, "imports suspended");
                self.suspended = Some(suspension.clone());
                self.observer.metrics.suspended.set(1);
                // Reconciled at once (with `keep`, heartbeats only; with `drop`, every copy
                // removed), and the status published before the answer.
                Some(Pending::Suspend(suspension, reply))
            }
            Query::Resume { reply } => {
                let ended = self.suspended.take();
                self.observer.metrics.suspended.set(0);
                info!(
                    was_suspended = ended.is_some(),
                    "imports resumed: full reconcile"
                );
                Some(Pending::Resume(ended, reply))
            }
            query => {
                self.answer(query);
                None
            }
        }
    }

    /// One level-triggered reconcile: peers' exports, local listing, plan, apply. Returns
    /// what it did, or `None` when the listing failed.
    async fn reconcile(&mut self, members: &[Member]) -> Option<ResyncReport> {
        let started = Instant::now();
        let peers = peer_clusters(members, &self.config.cluster_name);
        // Peers followed by a stream need no pull.
        let mut streamed: Vec<&str> = Vec::new();
        let mut to_pull = Vec::new();
        for (cluster, candidates) in peers {
            match self.exports.get(cluster) {
                Some(state) if state.is_known() => streamed.push(cluster),
                _ if self
                    .watching
                    .get(cluster)
                    .is_some_and(|w| !w.failed && w.since.elapsed() < FIRST_EVENT_WAIT) =>
                {
                    debug!(cluster = %cluster, "waiting for the stream's whole export instead of pulling");
                }
                _ => to_pull.push((cluster, candidates)),
            }
        }
        let client = &self.client;
        let pulls = join_all(to_pull.iter().map(|(cluster, candidates)| async move {
            for member in candidates {
                match client.pull(member.rpc_addr, cluster).await {
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
        let now = Instant::now();
        let pulled: Vec<PeerExport> = pulls.into_iter().flatten().collect();
        for cluster in pulled
            .iter()
            .map(|e| e.cluster.as_str())
            .chain(streamed.iter().copied())
        {
            self.last_heard.insert(cluster.to_owned(), now);
        }
        // Pulled exports are kept packed for the plan, like the streamed ones.
        let pulled: Vec<(String, PeerExportState)> = pulled
            .into_iter()
            .map(|e| {
                let state = PeerExportState::pulled(&e.snapshot);
                (e.cluster, state)
            })
            .collect();
        let streamed: Vec<String> = streamed.iter().map(|c| (*c).to_owned()).collect();

        let pulled_ms = started.elapsed().as_millis() as u64;
        // Listing takes seconds at 100,000 instances: the streams' changes are applied
        // meanwhile, not after the reconcile. That is safe because the plan is made after
        // the listing, from the streams' states as they are then, and every operation is
        // idempotent (a copy registered meanwhile is registered again under the same id, one
        // removed meanwhile is removed again).
        //
        // The listing runs as a task of its own, not as a future polled only by this select:
        // a report's handler below awaits the registry too, and while it did, the listing
        // was not polled. A listing holding the plugin's login lock (renewing an expired
        // token, its request in flight) then waited for a poll that never came, while the
        // handler waited for that lock: the syncer stopped for good, and its copies expired
        // at the registry (caught by a stress run of tests/rbac_sites.rs, 3 s tokens).
        let exporter = self.exporter.clone();
        let mut listing = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut builder = mapping::MappingBuilder::default();
            let listed = exporter.refresh(&mut builder).await;
            (listed, builder)
        }));
        let (listed, builder) = loop {
            tokio::select! {
                joined = &mut listing => match joined {
                    Ok(done) => break done,
                    Err(e) => {
                        warn!(error = %e, "listing the local registry failed; reconcile skipped");
                        return None;
                    }
                },
                Some((cluster, generation, report)) = self.reports_rx.recv() => {
                    self.on_report(cluster, generation, report).await;
                }
                Some(query) = next_query(&mut self.queries) => {
                    if let Some(command) = self.answer(query) {
                        // Beyond the bound the command is dropped, and its caller answered
                        // 503 (its reply channel closes).
                        if self.deferred.len() < MAX_DEFERRED_COMMANDS {
                            self.deferred.push_back(command);
                        }
                    }
                }
            }
        };
        drop(listing);
        if let Err(e) = listed {
            warn!(error = %e, "listing the local registry failed; reconcile skipped");
            return None;
        }
        // The copies listed, and the duplicates among them.
        let actual = builder.finish();
        // The cached mapping is rebuilt from the listing: let the old one go.
        self.copies = None;
        let names: Vec<Arc<str>> = streamed
            .iter()
            .chain(pulled.iter().map(|(c, _)| c))
            .map(|c| self.name(c))
            .collect();
        let states = streamed
            .iter()
            .filter_map(|cluster| self.exports.get(cluster))
            .chain(pulled.iter().map(|(_, state)| state));
        let exports: Vec<PeerView<'_>> = names
            .into_iter()
            .zip(states)
            .map(|(cluster, state)| PeerView { cluster, state })
            .collect();
        // Copies of clusters not heard from this round are kept within the grace period.
        let heard: HashSet<&str> = exports.iter().map(|e| &*e.cluster).collect();
        let mut retained = HashSet::new();
        let mut gone = HashSet::new();
        for origin in actual.0.copies.keys() {
            if heard.contains(&*origin.cluster)
                || retained.contains(&*origin.cluster)
                || gone.contains(&*origin.cluster)
            {
                continue;
            }
            let since = *self
                .last_heard
                .get(&*origin.cluster)
                .unwrap_or(&self.started);
            if now.duration_since(since) < self.config.grace_period {
                retained.insert(origin.cluster.to_string());
            } else {
                info!(cluster = %origin.cluster, grace_secs = self.config.grace_period.as_secs(), "peer cluster gone past its grace period, removing its instances");
                gone.insert(&*origin.cluster);
            }
        }
        let config = self.plan_config();
        let plan = importer::plan(&config, &exports, &retained, actual);
        let mut plan = match &self.suspended {
            Some(suspension) => plan.suspended(suspension.copies),
            None => plan,
        };
        // Heartbeats go to the pacer, spread over half the tick; registrations and removals
        // are made now, not behind them. (A dry run writes nothing, heartbeats included.)
        let paced: Option<Vec<(OriginKey, LocalCopy)>> =
            self.pacer.as_ref().filter(|_| !self.dry_run).map(|_| {
                std::mem::take(&mut plan.heartbeat)
                    .into_iter()
                    .map(|keep| (keep.origin, keep.copy))
                    .collect()
            });
        let planned_ms = started.elapsed().as_millis() as u64;
        let mut applied = if self.dry_run {
            let (applied, preview) =
                importer::preview(plan, &self.pending, Some(self.observer.events.clone()));
            let metrics = &self.observer.metrics;
            for (op, n) in [
                ("register", preview.pending.register),
                ("unregister", preview.pending.unregister),
            ] {
                metrics
                    .dry_run_pending
                    .get_or_create(&crate::observe::metrics::OpLabel { op })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.pending = preview.keys;
            self.pending_writes = Some(preview.pending);
            applied
        } else {
            apply(
                self.plugin.as_ref(),
                &self.observer,
                &config,
                plan,
                self.config.concurrency,
            )
            .await
        };
        if let (Some(paced), Some(pacer)) = (paced, self.pacer.as_mut()) {
            // Counted as kept: a copy the registry lost is reported by the pacer, and the
            // reconcile that follows finds it missing from its listing.
            applied.heartbeated += paced.len();
            applied.copies.extend(paced.iter().cloned());
            pacer.submit(paced, self.config.ticker_interval);
        }
        let elapsed = started.elapsed();
        self.observer
            .metrics
            .reconcile
            .observe(elapsed.as_secs_f64());
        self.reconciles += 1;
        self.reconciled = Some((
            now_ms(),
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            Instant::now(),
        ));
        self.copy_counts = count_copies(&applied.copies);
        if applied.registered + applied.unregistered + applied.failed > 0 {
            debug!(
                pulled_ms,
                planned_ms,
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
        let report = ResyncReport {
            is_leader: true,
            registered: applied.registered,
            unregistered: applied.unregistered,
            heartbeated: applied.heartbeated,
            failed: applied.failed,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.copies = Some(applied.copies);
        Some(report)
    }
}

/// Deadline of one exchange call (a pull, a connection): the tick, between 2 and 10 s.
pub fn exchange_timeout(config: &Config) -> Duration {
    config
        .ticker_interval
        .clamp(Duration::from_secs(2), Duration::from_secs(10))
}

fn plan_config(config: &Config) -> PlanConfig {
    PlanConfig {
        local_cluster: config.cluster_name.clone(),
        heartbeat_interval_secs: u32::try_from(config.ticker_interval.as_secs().max(1))
            .unwrap_or(u32::MAX),
        heartbeat_times: 3,
        import_filter: Arc::default(),
    }
}

/// Carries `plan` out ([`importer::apply`]), recording its writes in `observer`'s event
/// log. Boxed: the plan's borrows keep the compiler from seeing that the future is Send
/// (rust-lang/rust#102211).
async fn apply(
    plugin: &dyn Plugin,
    observer: &Observer,
    config: &PlanConfig,
    plan: importer::Plan<'_>,
    concurrency: usize,
) -> importer::Applied {
    importer::apply(
        plugin,
        config,
        plan,
        concurrency,
        Some(observer.events.clone()),
    )
    .boxed()
    .await
}

/// The lease of copies: the tick times (missed heartbeats tolerated + 1).
fn lease(config: &Config) -> Duration {
    let c = plan_config(config);
    Duration::from_secs(u64::from(c.heartbeat_interval_secs) * u64::from(c.heartbeat_times + 1))
}

/// Copies held per origin cluster.
fn count_copies(copies: &HashMap<OriginKey, LocalCopy>) -> HashMap<Arc<str>, usize> {
    let mut out: HashMap<Arc<str>, usize> = HashMap::new();
    for origin in copies.keys() {
        *out.entry(origin.cluster.clone()).or_default() += 1;
    }
    out
}

/// The next question of the status API; never when there is no channel (or it closed).
async fn next_query(queries: &mut Option<mpsc::Receiver<Query>>) -> Option<Query> {
    match queries {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the filters change; never without filters or once their source has
/// ended.
async fn filters_changed(filters: &mut Option<watch::Receiver<Arc<Filters>>>) {
    match filters {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The next ticker interval of a reload; never without a source (or once it ended).
async fn ticker_changed(changes: &mut Option<watch::Receiver<Duration>>) -> Duration {
    if let Some(rx) = changes {
        if rx.changed().await.is_ok() {
            return *rx.borrow_and_update();
        }
        *changes = None;
    }
    std::future::pending().await
}

/// Resolves when the leader changes; never once its source has ended.
/// Resolves when the pacer reports copies the registry lost; never without a pacer.
async fn lost_copies(pacer: &mut Option<ratelimit::HeartbeatPacer>) {
    match pacer {
        Some(pacer) => pacer.lost().await,
        None => std::future::pending().await,
    }
}

async fn leader_changed(leader: &mut LeaderWatch) {
    if !leader.changed().await {
        std::future::pending::<()>().await;
    }
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

    #[test]
    fn peers_are_grouped_by_cluster_leader_first_without_the_local_cluster() {
        let members = vec![
            Member::on_loopback("d", "y", 1),
            Member::on_loopback("a", "x", 3),
            Member::on_loopback("c", "y", 5),
        ];
        let peers = peer_clusters(&members, "x");
        assert_eq!(peers.len(), 1);
        let nodes: Vec<_> = peers["y"].iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes, vec!["c", "d"]);
    }

    /// An empty registry that refuses writes.
    #[derive(Debug)]
    struct Empty;

    #[async_trait::async_trait]
    impl Plugin for Empty {
        fn name(&self) -> &'static str {
            "empty"
        }
        async fn list(&self) -> syncer_plugin_api::Result<syncer_plugin_api::Snapshot> {
            Ok(syncer_plugin_api::Snapshot::default())
        }
        async fn ensure_service(
            &self,
            _: &syncer_plugin_api::Service,
        ) -> syncer_plugin_api::Result<String> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
        async fn register(
            &self,
            _: &syncer_plugin_api::Service,
            _: &syncer_plugin_api::Instance,
        ) -> syncer_plugin_api::Result<String> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
        async fn heartbeat(
            &self,
            _: &syncer_plugin_api::Service,
            _: &str,
        ) -> syncer_plugin_api::Result<()> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
        async fn unregister(
            &self,
            _: &syncer_plugin_api::Service,
            _: &str,
        ) -> syncer_plugin_api::Result<()> {
            Err(syncer_plugin_api::Error::Rejected("read only".into()))
        }
    }

    /// [`Empty`] whose listings wait until `open` has a permit; counts them in `listed`.
    #[derive(Debug)]
    struct Gated {
        open: Arc<tokio::sync::Semaphore>,
        listed: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Plugin for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        async fn list(&self) -> syncer_plugin_api::Result<syncer_plugin_api::Snapshot> {
            self.listed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _permit = self.open.acquire().await;
            Ok(syncer_plugin_api::Snapshot::default())
        }
        async fn ensure_service(
            &self,
            s: &syncer_plugin_api::Service,
        ) -> syncer_plugin_api::Result<String> {
            Empty.ensure_service(s).await
        }
        async fn register(
            &self,
            s: &syncer_plugin_api::Service,
            i: &syncer_plugin_api::Instance,
        ) -> syncer_plugin_api::Result<String> {
            Empty.register(s, i).await
        }
        async fn heartbeat(
            &self,
            s: &syncer_plugin_api::Service,
            id: &str,
        ) -> syncer_plugin_api::Result<()> {
            Empty.heartbeat(s, id).await
        }
        async fn unregister(
            &self,
            s: &syncer_plugin_api::Service,
            id: &str,
        ) -> syncer_plugin_api::Result<()> {
            Empty.unregister(s, id).await
        }
    }

    /// A syncer alone in its cluster (`c1`, node `n1`) on `plugin`, in dry run, ticking once
    /// (at start) within a test; its observer; and its membership's sender, to keep while it
    /// runs (dropped, the membership closes, and the deferred-commands test times out).
    fn lone_syncer(plugin: Arc<dyn Plugin>) -> (Syncer, Observer, watch::Sender<Vec<Member>>) {
        let (members_tx, members) = watch::channel(vec![Member::on_loopback("n1", "c1", 1)]);
        let leader = crate::leadership::gossip("n1".into(), "c1".into(), members.clone());
        let (observer, queries) = Observer::new();
        let syncer = Syncer::new(
            Config {
                node: "n1".into(),
                cluster_name: "c1".into(),
                ticker_interval: Duration::from_secs(3600),
                grace_period: Duration::from_secs(3600),
                concurrency: 1,
            },
            plugin.clone(),
            Arc::new(Exporter::new(plugin)),
            members,
            leader,
        )
        .with_observer(observer.clone(), queries)
        .with_dry_run(true);
        (syncer, observer, members_tx)
    }

    /// Admin commands that arrive while a reconcile lists a slow registry are kept, up to
    /// [`MAX_DEFERRED_COMMANDS`], and carried out after it; the rest are dropped (their
    /// callers answered 503), so a flood of `POST /v1/syncer/resync` cannot grow the loop's
    /// memory while the registry hangs.
    #[tokio::test]
    async fn commands_beyond_the_deferred_bound_are_refused_while_a_listing_hangs() {
        use std::sync::atomic::Ordering;
        let open = Arc::new(tokio::sync::Semaphore::new(0));
        let listed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (syncer, observer, _members) = lone_syncer(Arc::new(Gated {
            open: open.clone(),
            listed: listed.clone(),
        }));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(syncer.run(shutdown.clone()));
        let wait = Duration::from_secs(5);
        // The first reconcile's listing hangs.
        tokio::time::timeout(wait, async {
            while listed.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first listing started");
        let sent = MAX_DEFERRED_COMMANDS + 8;
        let mut replies = Vec::new();
        for _ in 0..sent {
            let (reply, answer) = oneshot::channel();
            observer
                .queries()
                .send(Query::Resync {
                    cluster: None,
                    reply,
                })
                .await
                .expect("the loop takes queries");
            replies.push(answer);
        }
        // Let the loop take every command while the listing still hangs, then free it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        open.add_permits(usize::MAX >> 4);
        let mut done = 0;
        let mut refused = 0;
        for answer in replies {
            match tokio::time::timeout(wait, answer)
                .await
                .expect("every command is answered or dropped in time")
            {
                Ok(Ok(_)) => done += 1,
                Ok(Err(e)) => panic!("resync failed: {e}"),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(
            (done, refused),
            (MAX_DEFERRED_COMMANDS, sent - MAX_DEFERRED_COMMANDS)
        );
        shutdown.cancel();
        tokio::time::timeout(wait, running)
            .await
            .expect("the loop stops")
            .expect("loop task");
    }

    #[tokio::test]
    async fn new_filters_sent_through_the_watch_start_a_full_reconcile_at_once() {
        let (tx, rx) = watch::channel(Arc::new(Filters::default()));
        // Only the first tick falls within the test: any other reconcile is the filters'
        // doing.
        let (syncer, observer, _members) = lone_syncer(Arc::new(Empty));
        let syncer = syncer.with_filters(rx);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(syncer.run(shutdown.clone()));
        let mut status = observer.follow_status();
        let wait = Duration::from_secs(5);
        let first = tokio::time::timeout(wait, status.wait_for(|s| s.reconciles >= 1))
            .await
            .expect("first reconcile in time")
            .expect("status alive")
            .clone();
        assert!(first.dry_run);
        assert_eq!(first.pending.map(|p| p.register + p.unregister), Some(0));

        let spec = filter::FiltersSpec {
            import: filter::FilterSpec {
                exclude: vec!["**/secret-*".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        tx.send_replace(Arc::new(Filters::new(&spec).expect("filters")));
        tokio::time::timeout(wait, status.wait_for(|s| s.reconciles >= 2))
            .await
            .expect("a reconcile for the new filters")
            .expect("status alive");
        shutdown.cancel();
        tokio::time::timeout(wait, running)
            .await
            .expect("the loop stops")
            .expect("loop task");
    }
}
