//! Membership: which syncer agents are alive, found by gossip (SWIM, with the `foca` crate,
//! over UDP).
//!
//! This is the bottom of the data flow in DESIGN.md: every member gossips its node name,
//! cluster name, gossip address and gRPC (exchange) address; the rest of the daemon reads
//! the alive [`Member`]s from [`Membership::members`] to elect a cluster's leader and to
//! find where to pull a peer cluster's services. It replaces the serf agent of the
//! service-center syncer (servicecomb-notes a.1-a.4): the serf tags `syncer-cluster-name`
//! and `syncer-rpc-port` become fields of the gossiped identity, and the default gossip port
//! stays 30190.
//!
//! Main types: [`Config`] (what to bind, whom to join), [`Membership`] (bound, then
//! [`Membership::run`] until shut down), [`Member`] (one alive agent), [`Error`].
//!
//! foca is a sans-IO state machine: one task ([`Membership::run`]) owns it, feeds it
//! datagrams and timer events, and carries out what it asks for (send datagrams, schedule
//! timers, report membership changes).
//!
//! With a keyring ([`Config::keyring`]: `--encrypt`, or `--keyring-file`) every datagram is
//! sealed with an AEAD cipher and stamped with the sender's clock ([`cipher`]); datagrams that
//! do not open, were sent outside the replay window, or were received before are dropped
//! before foca sees them, and a rate-limited warning says so, so members with a wrong or
//! missing key cannot join and recorded datagrams cannot be played again. A new keyring
//! ([`Membership::follow_keyring`], fed by [`keyring::reload`]) takes effect at once, without
//! a restart.

pub mod cipher;
#[cfg(test)]
mod fuzz;
mod identity;
pub mod keyring;
pub mod notice;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::cipher::{Cipher, Keyring, Refused, REPLAY_WINDOW};
pub use self::identity::Member;
use self::identity::NodeId;
use self::notice::{ExportRevision, Heard, Notices, RevisionNotice};

/// The gossip port of the service-center syncer (`--bind-addr` default).
pub const DEFAULT_GOSSIP_PORT: u16 = 30190;

/// The shortest accepted [`Config::probe_period`]: foca needs room for a round trip and an
/// indirect probe inside one period.
pub const MIN_PROBE_PERIOD: Duration = Duration::from_millis(30);

/// The cluster size foca's LAN preset is sized for (how often an update is re-sent).
const EXPECTED_CLUSTER_SIZE: u32 = 16;

/// Largest datagram read from the socket, in bytes. foca writes at most 1400 bytes and
/// rejects longer input itself; a larger buffer lets it see (and refuse) oversized junk
/// instead of a silently truncated packet.
const RECV_BUFFER_BYTES: usize = 65_536;

/// First delay between join attempts while no other member is known.
const JOIN_RETRY_MIN: Duration = Duration::from_secs(1);

/// Longest delay between join attempts; also how often a connected member checks whether
/// it became isolated (then it announces to `--join-addr` again).
const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Shortest time between two warnings about undecryptable, stale or replayed datagrams (each
/// kind its own), or about join addresses that never answer.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Unanswered announces before warning that no member answers.
const UNANSWERED_ANNOUNCES_BEFORE_WARN: u32 = 2;

/// Where a member with a wildcard bind address and no join address looks for its own IP:
/// connecting a UDP socket only picks a route and source address, it sends nothing.
const ROUTE_PROBE_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);
const ROUTE_PROBE_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    9,
);

/// How to take part in the gossip pool.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--node`: this member's name, unique in the pool.
    pub node: String,
    /// `--cluster-name`: the cluster (site) this member serves; advertised to every member.
    pub cluster_name: String,
    /// `--bind-addr`: the UDP address to gossip on (default `0.0.0.0:30190`). Port 0 picks a
    /// free port (see [`Membership::local_addr`]).
    pub bind_addr: SocketAddr,
    /// The gossip address other members reach us at. `None`: the bound address; when that IP
    /// is unspecified (`0.0.0.0`, `::`), the local IP of the route to the first join address
    /// (or of the default route), else `127.0.0.1`. An unspecified IP or port 0 here is
    /// filled in the same way.
    pub advertise_addr: Option<SocketAddr>,
    /// `--rpc-addr`: the exchange (gRPC) address advertised to the others. An unspecified IP
    /// is replaced by the advertised gossip IP, as the service-center syncer advertised its
    /// serf IP with the `syncer-rpc-port` tag.
    pub rpc_addr: SocketAddr,
    /// `--join-addr`: gossip addresses of existing members. Announced to at start and again
    /// (every 1 s, backing off to 5 s) while no other member is known.
    pub join_addrs: Vec<SocketAddr>,
    /// How often a random member is probed, in time (default 1 s). A crashed member is
    /// declared down after about 2-3 periods of probing plus 3 periods of suspicion.
    /// At least [`MIN_PROBE_PERIOD`].
    pub probe_period: Duration,
    /// `--encrypt` (a keyring of one key) or `--keyring-file`: the pool's keys, the first
    /// sealing, any opening; `None` gossips in the clear. Two members see each other when
    /// each one's first key is in the other's keyring (or both have none).
    pub keyring: Option<Keyring>,
}

impl Config {
    /// The defaults of the service-center syncer for `node` in `cluster_name`: gossip on
    /// `0.0.0.0:30190`, gRPC on `0.0.0.0:30191`, no join address, 1 s probe period.
    pub fn new(node: impl Into<String>, cluster_name: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            cluster_name: cluster_name.into(),
            bind_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GOSSIP_PORT)),
            advertise_addr: None,
            rpc_addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_GOSSIP_PORT + 1)),
            join_addrs: Vec::new(),
            probe_period: Duration::from_secs(1),
            keyring: None,
        }
    }
}

#[cfg(test)]
impl Member {
    /// A member on 127.0.0.1 (gossip on `port`, the exchange on `port + 1`), for unit tests.
    pub(crate) fn on_loopback(node: &str, cluster: &str, port: u16) -> Member {
        Member {
            node: node.into(),
            cluster_name: cluster.into(),
            gossip_addr: ([127, 0, 0, 1], port).into(),
            rpc_addr: ([127, 0, 0, 1], port + 1).into(),
        }
    }
}

/// Why membership could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable; nothing was bound.
    #[error("invalid membership config: {0}")]
    InvalidConfig(String),
    /// The gossip socket could not be bound (the port is taken, or the IP is not local).
    #[error("cannot bind the gossip socket to {addr}")]
    Bind {
        /// The `--bind-addr` that failed.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bound socket did not report its address; the socket was closed again.
    #[error("cannot read the address of the gossip socket bound to {addr}")]
    LocalAddr {
        /// The `--bind-addr` that was bound.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Leaving the cluster failed; the socket is closed anyway, and the others will notice
    /// this member's absence by failure detection instead.
    #[error("cannot leave the gossip cluster")]
    Leave(#[source] foca::Error),
}

type Swim = Foca<NodeId, PostcardCodec, SmallRng, Notices>;

/// A bound member of the gossip pool, ready to [`run`](Membership::run).
pub struct Membership {
    /// Datagrams in and out; owned by the run task, which is the only one touching foca.
    socket: UdpSocket,
    /// The actual bound address (port 0 resolved).
    local_addr: SocketAddr,
    /// The identity at start (foca may renew it later; the public fields stay the same).
    identity: NodeId,
    /// The SWIM state machine.
    foca: Swim,
    /// Where to announce ourselves while we know no one.
    join_addrs: Vec<SocketAddr>,
    /// Publishes the alive members (self included) after every change.
    members: watch::Sender<Vec<Member>>,
    /// Seals and opens datagrams when a keyring is set.
    cipher: Option<Cipher>,
    /// New keyrings to use from now on ([`Membership::follow_keyring`]).
    keyring_updates: Option<watch::Receiver<Keyring>>,
    /// The newest export revision heard per cluster (fed by foca's broadcast handler).
    heard: watch::Sender<Heard>,
    /// Our export's revisions, to gossip ([`Membership::gossip_export`]).
    export: Option<watch::Receiver<ExportRevision>>,
    /// Where members by state are counted ([`Membership::with_metrics`]).
    metrics: Option<Arc<crate::observe::metrics::Metrics>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("local_addr", &self.local_addr)
            .field("identity", &self.identity)
            .field("join_addrs", &self.join_addrs)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Binds the UDP gossip socket and prepares the SWIM state; nothing is sent yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for an empty node name or a probe period below
    /// [`MIN_PROBE_PERIOD`]; [`Error::Bind`] (naming the address) when the port is taken.
    pub async fn bind(config: Config) -> Result<Membership, Error> {
        if config.node.is_empty() {
            return Err(Error::InvalidConfig("the node name is empty".into()));
        }
        if config.probe_period < MIN_PROBE_PERIOD {
            return Err(Error::InvalidConfig(format!(
                "the probe period {:?} is below the minimum {:?}",
                config.probe_period, MIN_PROBE_PERIOD
            )));
        }

        let socket = UdpSocket::bind(config.bind_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind_addr,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| Error::LocalAddr {
            addr: config.bind_addr,
            source,
        })?;

        let gossip_addr = advertised_gossip_addr(
            config.advertise_addr.unwrap_or(local_addr),
            local_addr,
            &config.join_addrs,
        )
        .await;
        let rpc_addr = if config.rpc_addr.ip().is_unspecified() {
            SocketAddr::new(gossip_addr.ip(), config.rpc_addr.port())
        } else {
            config.rpc_addr
        };
        let identity =
            NodeId::starting_now(config.node, config.cluster_name, gossip_addr, rpc_addr);

        // Entropy only decides whom to probe next; a clock-seeded fallback is good enough.
        let rng = SmallRng::try_from_rng(&mut rand::rngs::SysRng)
            .unwrap_or_else(|_| SmallRng::seed_from_u64(identity.generation));
        let (heard, _) = watch::channel(Heard::new());
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            foca_config(config.probe_period),
            rng,
            PostcardCodec,
            Notices::new(heard.clone()),
        );

        // Our own address is a join address when one list is handed to every member.
        let join_addrs: Vec<SocketAddr> = config
            .join_addrs
            .into_iter()
            .filter(|addr| *addr != gossip_addr && *addr != local_addr)
            .collect();

        info!(
            node = %identity.node,
            cluster = %identity.cluster_name,
            bind_addr = %local_addr,
            advertise_addr = %gossip_addr,
            rpc_addr = %rpc_addr,
            join_addrs = ?join_addrs,
            probe_period_ms = config.probe_period.as_millis() as u64,
            encrypted = config.keyring.is_some(),
            keys = config.keyring.as_ref().map_or(0, Keyring::len),
            "gossip bound"
        );

        let (members, _) = watch::channel(vec![identity.to_member()]);
        Ok(Membership {
            socket,
            local_addr,
            identity,
            foca,
            join_addrs,
            members,
            cipher: config.keyring.as_ref().map(Cipher::new),
            keyring_updates: None,
            heard,
            export: None,
            metrics: None,
        })
    }

    /// Seals and opens with each new keyring `updates` publishes, from the moment the run
    /// task sees it (no restart; the replay cache is kept). Its current value is taken as
    /// already in use: set [`Config::keyring`] to it.
    pub fn follow_keyring(mut self, mut updates: watch::Receiver<Keyring>) -> Membership {
        updates.mark_unchanged();
        self.keyring_updates = Some(updates);
        self
    }

    /// Gossips this cluster's export revision (a [`RevisionNotice`]) each time `revisions`
    /// moves past revision 0; set it on the member that leads (every member may: the
    /// newest notice wins).
    pub fn gossip_export(mut self, revisions: watch::Receiver<ExportRevision>) -> Membership {
        self.export = Some(revisions);
        self
    }

    /// The newest export revision gossiped per member, by node name (ours included, once
    /// gossiped).
    pub fn heard(&self) -> watch::Receiver<Heard> {
        self.heard.subscribe()
    }

    /// This member as the others see it (advertised addresses).
    pub fn local_member(&self) -> Member {
        self.identity.to_member()
    }

    /// The address the gossip socket is bound to (with the OS-chosen port for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counts members by state (`syncer_gossip_members{state}`) after every change.
    pub fn with_metrics(mut self, metrics: Arc<crate::observe::metrics::Metrics>) -> Membership {
        self.metrics = Some(metrics);
        self
    }

    /// The alive members, this one included, sorted by node name; a new value is published
    /// after every membership change.
    ///
    /// At most one entry per node name: when a restarted member still has its previous life
    /// in the pool (on another address, until that is detected down), the newest is shown.
    /// Subscribe before [`run`](Membership::run); when `run` returns, the receivers see the
    /// channel closed.
    pub fn members(&self) -> watch::Receiver<Vec<Member>> {
        self.members.subscribe()
    }

    /// Gossips until `shutdown` is cancelled, then leaves the cluster: the others are told
    /// this member is down (they drop it within a gossip round) and the call returns.
    ///
    /// Bad or undecodable datagrams are logged at debug and dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Leave`] when foca cannot encode the leave message; the member stops anyway.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Membership {
            socket,
            foca,
            join_addrs,
            members,
            cipher,
            identity,
            export,
            keyring_updates,
            metrics,
            ..
        } = self;
        let mut export = export;
        let mut keyring_updates = keyring_updates;
        let mut agent = Agent {
            socket,
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: JoinSet::new(),
            members,
            metrics,
            cipher,
            undecryptable: Throttled::default(),
            stale: Throttled::default(),
            replayed: Throttled::default(),
            unanswered: 0,
            unanswered_warning: Throttled::default(),
        };
        let mut recv_buf = vec![0u8; RECV_BUFFER_BYTES];

        let join_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(join_timer);
        let mut join_backoff = JOIN_RETRY_MIN;

        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = agent.socket.recv_from(&mut recv_buf) => match received {
                    Ok((len, from)) => agent.handle_datagram(&recv_buf[..len], from).await,
                    // No peer can make this fail for long on an unconnected UDP socket
                    // (e.g. a stray ICMP error on some platforms); keep serving.
                    Err(error) => debug!(error = %error, "gossip receive failed"),
                },
                Some(fired) = agent.timers.join_next() => {
                    if let Ok(timer) = fired {
                        agent.handle_timer(timer).await;
                    }
                }
                changed = export_changed(&mut export) => match changed {
                    Some(at) => agent.notify(&identity, at).await,
                    None => export = None,
                },
                changed = keyring_changed(&mut keyring_updates) => match changed {
                    Some(keyring) => agent.rekey(&keyring),
                    None => keyring_updates = None,
                },
                () = &mut join_timer, if !join_addrs.is_empty() => {
                    let next = if agent.foca.num_members() == 0 {
                        agent.unanswered += 1;
                        if agent.unanswered > UNANSWERED_ANNOUNCES_BEFORE_WARN
                            && agent.unanswered_warning.ready()
                        {
                            warn!(join_addrs = ?join_addrs, announces = agent.unanswered,
                                "no member answers: join addresses unreachable, or a wrong or missing --encrypt key? (or --keyring-file: is its first key in the others' keyrings?)");
                        }
                        agent.announce(&join_addrs).await;
                        let next = join_backoff;
                        join_backoff = (join_backoff * 2).min(JOIN_RETRY_MAX);
                        next
                    } else {
                        agent.unanswered = 0;
                        join_backoff = JOIN_RETRY_MIN;
                        JOIN_RETRY_MAX
                    };
                    join_timer.as_mut().reset(Instant::now() + next);
                }
            }
        }

        agent.leave().await
    }
}

/// The next export revision past 0 from `export`; `None` once it closed; never without one.
async fn export_changed(
    export: &mut Option<watch::Receiver<ExportRevision>>,
) -> Option<ExportRevision> {
    let Some(rx) = export else {
        return std::future::pending().await;
    };
    loop {
        rx.changed().await.ok()?;
        let at = *rx.borrow_and_update();
        if at.revision > 0 {
            return Some(at);
        }
    }
}

/// The next keyring from `updates`; `None` once it closed; never without one.
async fn keyring_changed(updates: &mut Option<watch::Receiver<Keyring>>) -> Option<Keyring> {
    let Some(rx) = updates else {
        return std::future::pending().await;
    };
    rx.changed().await.ok()?;
    let keyring = rx.borrow_and_update().clone();
    Some(keyring)
}

/// The wall clock in milliseconds since the Unix epoch (0 before it), as sealed datagrams
/// carry it.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The run task's state: foca plus what carries out its requests.
struct Agent {
    socket: UdpSocket,
    foca: Swim,
    /// Collects foca's outputs during one call; drained right after it.
    runtime: AccumulatingRuntime<NodeId>,
    /// One sleeping task per pending foca timer, returning the timer when due. Dropping the
    /// set (at shutdown) aborts them all.
    timers: JoinSet<foca::Timer<NodeId>>,
    members: watch::Sender<Vec<Member>>,
    metrics: Option<Arc<crate::observe::metrics::Metrics>>,
    /// The keyring's cipher: seals what is sent, opens what is received, refuses replays.
    cipher: Option<Cipher>,
    /// Rate limit of the "failed to decrypt" warning.
    undecryptable: Throttled,
    /// Rate limit of the "outside the replay window" warning.
    stale: Throttled,
    /// Rate limit of the "replayed" warning.
    replayed: Throttled,
    /// Announces sent in a row while no other member is known.
    unanswered: u32,
    /// Rate limit of the "no member answers" warning.
    unanswered_warning: Throttled,
}

/// A rate limit for one warning: at most one per [`WARN_EVERY`], counting what it skipped.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttled {
    /// Whether to log now; counts a skip when not.
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            self.skipped += 1;
            return false;
        }
        self.last = Some(now);
        self.skipped = 0;
        true
    }
}

impl Agent {
    async fn handle_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let opened;
        let data = match &mut self.cipher {
            None => data,
            Some(cipher) => match cipher.open(data, unix_ms()) {
                Ok(plain) => {
                    opened = plain;
                    &opened[..]
                }
                Err(refused) => {
                    self.warn_refused(refused, from);
                    return;
                }
            },
        };
        if let Err(error) = self.foca.handle_data(data, &mut self.runtime) {
            if self.cipher.is_none()
                && matches!(error, foca::Error::MalformedPacket | foca::Error::Decode(_))
            {
                let skipped = self.undecryptable.skipped;
                if self.undecryptable.ready() {
                    warn!(from = %from, error = %error, similar_since_last = skipped,
                        "gossip packet failed to decode: is --encrypt set on the other members?");
                }
            }
            log_foca_error(&error, Some(from), "dropped gossip datagram");
        }
        self.drain().await;
    }

    /// The rate-limited warning about a datagram the cipher refused.
    fn warn_refused(&mut self, refused: Refused, from: SocketAddr) {
        match refused {
            Refused::Undecryptable => {
                let skipped = self.undecryptable.skipped;
                if self.undecryptable.ready() {
                    warn!(from = %from, similar_since_last = skipped,
                        "gossip packet failed to decrypt: wrong or missing --encrypt key? (no key of the keyring opens it)");
                }
            }
            Refused::OutsideWindow { skew_ms } => {
                let skipped = self.stale.skipped;
                if self.stale.ready() {
                    warn!(from = %from, skew_ms, window_secs = REPLAY_WINDOW.as_secs(),
                        similar_since_last = skipped,
                        "gossip packet dropped: sent outside the replay window (a replay, or clocks too far apart?)");
                }
            }
            Refused::Replayed | Refused::Forgotten => {
                let skipped = self.replayed.skipped;
                if self.replayed.ready() {
                    let reason = match refused {
                        Refused::Replayed => "received before",
                        _ => "older than the replay cache remembers",
                    };
                    warn!(from = %from, reason, similar_since_last = skipped,
                        "gossip packet dropped: a replay");
                }
            }
        }
    }

    /// Seals with `keyring`'s first key and opens with any of its keys from now on.
    fn rekey(&mut self, keyring: &Keyring) {
        let primary_changed = match &mut self.cipher {
            Some(cipher) => cipher.set_keyring(keyring),
            None => {
                self.cipher = Some(Cipher::new(keyring));
                true
            }
        };
        info!(
            keys = keyring.len(),
            primary_changed, "gossip keyring reloaded"
        );
    }

    async fn handle_timer(&mut self, timer: foca::Timer<NodeId>) {
        if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
            log_foca_error(&error, None, "gossip timer failed");
        }
        self.drain().await;
    }

    async fn announce(&mut self, join_addrs: &[SocketAddr]) {
        debug!(join_addrs = ?join_addrs, "announcing to join addresses");
        for addr in join_addrs {
            if let Err(error) = self
                .foca
                .announce(NodeId::join_target(*addr), &mut self.runtime)
            {
                log_foca_error(&error, Some(*addr), "announce failed");
            }
        }
        self.drain().await;
    }

    async fn leave(mut self) -> Result<(), Error> {
        let left = self.foca.leave_cluster(&mut self.runtime);
        // Flush the leave gossip: once send_to returns, the datagram is with the kernel.
        while let Some((to, data)) = self.runtime.to_send() {
            self.send(&to, &data).await;
        }
        match left {
            Ok(()) => {
                info!(node = %self.foca.identity().node, "left the gossip cluster");
                Ok(())
            }
            Err(error) => Err(Error::Leave(error)),
        }
    }

    /// Gossips that `cluster`'s export is at `at`, at once to a few members (foca then keeps
    /// passing it on with its gossip).
    async fn notify(&mut self, us: &NodeId, at: ExportRevision) {
        let notice = RevisionNotice {
            node: us.node.clone(),
            cluster: us.cluster_name.clone(),
            at,
        };
        match self.foca.add_broadcast(&notice.encode()) {
            Ok(_) => {
                if let Err(error) = self.foca.broadcast(&mut self.runtime) {
                    log_foca_error(&error, None, "revision notice not sent");
                }
            }
            Err(error) => log_foca_error(&error, None, "revision notice not queued"),
        }
        self.drain().await;
    }

    /// Carries out everything foca asked for during the last call.
    async fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send(&to, &data).await;
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.spawn(async move {
                tokio::time::sleep(after).await;
                timer
            });
        }
        // Every notification (up, down, restart, us joining or being declared down) can
        // change the list; publishing an unchanged list is a no-op.
        let mut notified = false;
        while let Some(notification) = self.runtime.to_notify() {
            log_notification(notification);
            notified = true;
        }
        if notified {
            self.publish();
        }
    }

    async fn send(&self, to: &NodeId, data: &[u8]) {
        let sealed;
        let data = match &self.cipher {
            None => data,
            Some(cipher) => match cipher.seal(data, unix_ms()) {
                Some(out) => {
                    sealed = out;
                    &sealed[..]
                }
                None => {
                    warn!(to = %to.gossip_addr, "cannot encrypt a gossip datagram; not sent");
                    return;
                }
            },
        };
        if let Err(error) = self.socket.send_to(data, to.gossip_addr).await {
            debug!(to = %to.gossip_addr, error = %error, "gossip send failed");
        }
    }

    fn publish(&self) {
        if let Some(metrics) = &self.metrics {
            // This member is alive; foca's state holds the others, down ones included
            // until it forgets them.
            let (mut alive, mut suspect, mut down) = (1i64, 0i64, 0i64);
            for member in self.foca.iter_membership_state() {
                match member.state() {
                    foca::State::Alive => alive += 1,
                    foca::State::Suspect => suspect += 1,
                    foca::State::Down => down += 1,
                }
            }
            for (state, n) in [("alive", alive), ("suspect", suspect), ("down", down)] {
                metrics
                    .gossip_members
                    .get_or_create(&crate::observe::metrics::StateLabel { state })
                    .set(n);
            }
        }
        let current = alive_members(
            self.foca.identity(),
            self.foca.iter_members().map(|m| m.id()),
        );
        self.members.send_if_modified(|published| {
            if *published == current {
                false
            } else {
                debug!(members = ?current, "membership changed");
                *published = current;
                true
            }
        });
    }
}

/// The public member list: one entry per node name (ourselves, else the newest generation),
/// sorted by node name.
fn alive_members<'a>(local: &NodeId, others: impl Iterator<Item = &'a NodeId>) -> Vec<Member> {
    let mut by_node: BTreeMap<&str, &NodeId> = BTreeMap::new();
    for id in others {
        let newest = by_node.entry(&id.node).or_insert(id);
        if id.generation > newest.generation {
            *newest = id;
        }
    }
    by_node.insert(&local.node, local);
    by_node.into_values().map(NodeId::to_member).collect()
}

/// Logs a foca notification: changes of other members and our own lifecycle at info.
fn log_notification(notification: OwnedNotification<NodeId>) {
    match notification {
        OwnedNotification::MemberUp(id) => {
            info!(member = %id.node, cluster = %id.cluster_name, addr = %id.gossip_addr,
                rpc_addr = %id.rpc_addr, "member up");
        }
        OwnedNotification::MemberDown(id) => {
            info!(member = %id.node, cluster = %id.cluster_name, addr = %id.gossip_addr,
                "member down");
        }
        OwnedNotification::Rename(old, new) => {
            info!(member = %new.node, cluster = %new.cluster_name, addr = %new.gossip_addr,
                rpc_addr = %new.rpc_addr, previous_addr = %old.gossip_addr, "member restarted");
        }
        OwnedNotification::Active => {
            info!("joined the gossip cluster");
        }
        OwnedNotification::Idle => {
            info!("no other member is known");
        }
        OwnedNotification::Defunct => {
            warn!("the cluster declared this member down");
        }
        OwnedNotification::Rejoin(id) => {
            info!(generation = id.generation, "rejoining the gossip cluster");
        }
    }
}

fn log_foca_error(error: &foca::Error, from: Option<SocketAddr>, message: &'static str) {
    let from = from.map(|addr| addr.to_string()).unwrap_or_default();
    match error {
        // What a stray, stale or hostile sender can cause: not our problem.
        foca::Error::DataTooBig
        | foca::Error::MalformedPacket
        | foca::Error::Decode(_)
        | foca::Error::DataFromOurselves
        | foca::Error::IndirectForOurselves => {
            debug!(from = %from, error = %error, "{message}");
        }
        _ => warn!(from = %from, error = %error, "{message}"),
    }
}

/// SWIM tuned for fast detection: foca's LAN preset with our probe period, suspicion of
/// three periods, and the extensions that let late joiners learn everyone and partitions
/// heal (periodic announce, announce to down members, periodic gossip).
fn foca_config(probe_period: Duration) -> foca::Config {
    let one = NonZeroUsize::MIN;
    let cluster_size = NonZeroU32::new(EXPECTED_CLUSTER_SIZE).unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(cluster_size);
    config.probe_period = probe_period;
    // A third of the period leaves the rest for the indirect probes (foca: rtt < period).
    config.probe_rtt = probe_period / 3;
    config.suspect_to_down_after = probe_period * 3;
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: probe_period * 10,
        num_members: one,
    });
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: probe_period * 15,
        num_members: one.saturating_add(1),
    });
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: (probe_period / 5).max(Duration::from_millis(10)),
        num_members: one.saturating_add(2),
    });
    config
}

/// Fills in an unspecified IP or port 0 of the gossip address we advertise.
async fn advertised_gossip_addr(
    wanted: SocketAddr,
    local_addr: SocketAddr,
    join_addrs: &[SocketAddr],
) -> SocketAddr {
    let port = if wanted.port() == 0 {
        local_addr.port()
    } else {
        wanted.port()
    };
    let ip = if wanted.ip().is_unspecified() {
        let target = join_addrs.first().copied().unwrap_or(if wanted.is_ipv6() {
            ROUTE_PROBE_V6
        } else {
            ROUTE_PROBE_V4
        });
        match route_source_ip(target).await {
            Ok(ip) => ip,
            Err(error) => {
                warn!(target = %target, error = %error,
                    "cannot find the local IP to advertise, using loopback");
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        }
    } else {
        wanted.ip()
    };
    SocketAddr::new(ip, port)
}

/// The local IP the OS would send from to reach `target` (nothing is sent).
async fn route_source_ip(target: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if target.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any).await?;
    probe.connect(target).await?;
    let ip = probe.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no route"));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: &str, port: u16, generation: u64) -> NodeId {
        NodeId {
            node: node.to_owned(),
            cluster_name: "site".to_owned(),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            generation,
        }
    }

    #[test]
    fn members_are_sorted_by_node_and_include_ourselves() {
        let me = id("b", 1000, 1);
        let others = [id("c", 3000, 1), id("a", 2000, 1)];
        let nodes: Vec<String> = alive_members(&me, others.iter())
            .into_iter()
            .map(|m| m.node)
            .collect();
        assert_eq!(nodes, ["a", "b", "c"]);
    }

    #[test]
    fn a_restarted_member_is_listed_once_with_its_newest_address() {
        let me = id("a", 1000, 1);
        let others = [id("b", 2000, 5), id("b", 4000, 9), id("b", 3000, 7)];
        let members = alive_members(&me, others.iter());
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].gossip_addr.port(), 4000);
    }

    #[test]
    fn our_own_previous_life_never_hides_us() {
        let me = id("a", 1000, 1);
        let others = [id("a", 2000, 99)];
        let members = alive_members(&me, others.iter());
        assert_eq!(members, vec![me.to_member()]);
    }

    #[test]
    fn the_foca_config_is_accepted_by_foca() {
        for period in [MIN_PROBE_PERIOD, Duration::from_secs(1)] {
            let config = foca_config(period);
            assert!(config.probe_rtt < config.probe_period);
            assert!(!config.probe_rtt.is_zero());
            let mut foca = Foca::new(
                id("a", 1000, 1),
                config.clone(),
                SmallRng::seed_from_u64(7),
                PostcardCodec,
            );
            assert!(foca.set_config(config).is_ok());
        }
    }

    #[tokio::test]
    async fn an_unspecified_advertise_ip_becomes_the_route_to_the_join_address() {
        let local = SocketAddr::from(([0, 0, 0, 0], 4000));
        let join = [SocketAddr::from(([127, 0, 0, 1], 5000))];
        let addr = advertised_gossip_addr(local, local, &join).await;
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 4000)));
    }

    #[tokio::test]
    async fn an_explicit_advertise_address_is_kept() {
        let wanted = SocketAddr::from(([10, 1, 2, 3], 7000));
        let local = SocketAddr::from(([0, 0, 0, 0], 4000));
        assert_eq!(advertised_gossip_addr(wanted, local, &[]).await, wanted);
    }

    #[tokio::test]
    async fn binding_a_taken_port_names_the_address() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut config = Config::new("a", "site");
        config.bind_addr = taken.local_addr().expect("addr");
        let error = Membership::bind(config).await.expect_err("port is taken");
        assert!(matches!(error, Error::Bind { .. }));
        assert!(error
            .to_string()
            .contains(&taken.local_addr().expect("addr").to_string()));
    }

    #[tokio::test]
    async fn an_unspecified_rpc_ip_is_replaced_by_the_gossip_ip() {
        let mut config = Config::new("a", "site");
        config.bind_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.rpc_addr = SocketAddr::from(([0, 0, 0, 0], 30191));
        let membership = Membership::bind(config).await.expect("binds");
        let member = membership.local_member();
        assert_eq!(member.rpc_addr, SocketAddr::from(([127, 0, 0, 1], 30191)));
        assert_eq!(member.gossip_addr, membership.local_addr());
        assert_eq!(*membership.members().borrow(), vec![member]);
    }
}
