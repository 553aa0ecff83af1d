//! Leadership of a cluster (DESIGN.md decision 5): who of a cluster's members reads and
//! writes its registry.
//!
//! Without etcd, the leader is the alive gossip member of the cluster whose node name sorts
//! first ([`leader_of`]). With etcd configured, it is an etcd election.
//!
//! The election is etcd's own (its v3election service, through etcd-client's
//! [`ElectionClient`](etcd_client::ElectionClient)), named `/syncer/leader/{cluster}`: every
//! member campaigns with a lease of [`EtcdConfig::lease_ttl`] (default 3 s, a keep-alive
//! every third of it), which puts a key `/syncer/leader/{cluster}/{lease id in hex}` holding
//! its node name. The member whose key was created first leads while it keeps its lease
//! alive; the others wait in line and observe the leader. A resignation deletes the leader's
//! key, a crashed leader's key expires with its lease (within one TTL), and the next in line
//! is elected. A leader that cannot renew its lease for a whole TTL steps down on its own, so
//! two members believe they lead for at most the time etcd takes to notice; DESIGN.md
//! decision 3 makes that brief overlap harmless.
//!
//! Either way the rest of the daemon sees one [`LeaderWatch`]: a watch of the node name of
//! the cluster's current leader ([`Leader`]), fed by the gossip rule from the member list
//! ([`gossip`]) or by the election ([`EtcdElection::leader`]). The reconcile loop, its
//! handover and its logs read only that watch.
//!
//! Main types: [`LeaderWatch`], [`EtcdConfig`], [`EtcdElection`] (built, then
//! [`EtcdElection::run`]).

use std::time::Duration;

use etcd_client::{ConnectOptions, LeaderKey, LeaderResponse, ObserveStream, ResignOptions};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::membership::Member;

/// The leader of `cluster`: its alive member whose node name sorts first (DESIGN.md
/// decision 5, without etcd).
pub fn leader_of<'a>(members: &'a [Member], cluster: &str) -> Option<&'a Member> {
    members
        .iter()
        .filter(|m| m.cluster_name == cluster)
        .min_by(|a, b| a.node.cmp(&b.node))
}

/// One member's view of who leads its cluster: a watch of the leader's node name, from
/// the gossip rule ([`gossip`]) or an etcd election ([`EtcdElection::leader`]).
#[derive(Debug, Clone)]
pub struct LeaderWatch {
    /// This member's node name.
    node: String,
    leader: watch::Receiver<Leader>,
    /// Whether the source publishes a successor after this member lets go (an etcd
    /// election); a member that left the gossip pool hears nothing more.
    shows_successor: bool,
}

impl LeaderWatch {
    /// The leader now, and whether it is this member; marks the value seen.
    pub fn current(&mut self) -> (Leader, bool) {
        let leader = self.leader.borrow_and_update().clone();
        let is_leader = leader.as_deref() == Some(self.node.as_str());
        (leader, is_leader)
    }

    /// Whether a successor is published after this member resigns (see
    /// [`LeaderWatch::changed`]); false with the gossip rule.
    pub fn shows_successor(&self) -> bool {
        self.shows_successor
    }

    /// Resolves when the leader changes; `false` once the source has ended (its last value
    /// stays readable).
    pub async fn changed(&mut self) -> bool {
        self.leader.changed().await.is_ok()
    }

    /// The last value, without marking it seen.
    pub fn last(&self) -> Leader {
        self.leader.borrow().clone()
    }
}

/// The leader by the gossip rule ([`leader_of`]), updated on every change of `members`
/// (alive members, this one included) until the member list closes. While the list does
/// not show this member's cluster yet, this member leads.
pub fn gossip(
    node: String,
    cluster: String,
    mut members: watch::Receiver<Vec<Member>>,
) -> LeaderWatch {
    let me = node.clone();
    let rule = move |members: &[Member]| -> Leader {
        Some(leader_of(members, &cluster).map_or_else(|| node.clone(), |m| m.node.clone()))
    };
    let (tx, rx) = watch::channel(rule(&members.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = members.changed() => if changed.is_err() { break },
                () = tx.closed() => break,
            }
            let leader = rule(&members.borrow_and_update());
            tx.send_if_modified(|current| {
                let modified = *current != leader;
                *current = leader;
                modified
            });
        }
    });
    LeaderWatch {
        node: me,
        leader: rx,
        shows_successor: false,
    }
}

/// Prefix of the election names; the cluster name follows (then each candidate's lease).
pub const LEADER_KEY_PREFIX: &str = "/syncer/leader/";

/// Default TTL of a member's election lease: a crashed leader's key goes within this time.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// Timeout of one etcd request (and of connecting).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// First wait before the election starts over while etcd is unreachable.
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// Longest wait between attempts while etcd is unreachable.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The node name of the cluster's leader as this member knows it; `None` while unknown
/// (no leader yet, or etcd unreachable: then this member does not lead either).
pub type Leader = Option<String>;

/// The election name of `cluster`: its candidates' keys are `{name}/{lease id in hex}`.
pub fn leader_key(cluster: &str) -> String {
    format!("{LEADER_KEY_PREFIX}{cluster}")
}

/// How to take part in a cluster's etcd election.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// etcd client URLs (`http://host:2379`), TLS and user.
    pub etcd: crate::etcd::ClientConfig,
    /// This member's node name: the value of its candidate key.
    pub node: String,
    /// The cluster whose leader is elected.
    pub cluster_name: String,
    /// TTL of the election lease, whole seconds, at least 2 (default
    /// [`DEFAULT_LEASE_TTL`]): a crashed leader is replaced within about this time.
    pub lease_ttl: Duration,
}

/// Why one term of the election ended (the election then starts over, after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An etcd request failed (unreachable, timed out, refused).
    #[error("etcd request failed: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// Connecting failed (unreachable, refused, a PEM file unreadable).
    #[error("cannot connect to etcd")]
    Connect(#[from] crate::etcd::Error),
    /// The lease expired, or could not be renewed for a whole TTL: this member no longer
    /// leads.
    #[error("the election lease was lost")]
    LeaseLost,
    /// etcd closed a stream (watch or keep-alive).
    #[error("etcd closed the {0} stream")]
    StreamClosed(&'static str),
}

/// A member's part in its cluster's etcd election.
#[derive(Debug)]
pub struct EtcdElection {
    config: EtcdConfig,
    /// Publishes the current leader after every change.
    leader: watch::Sender<Leader>,
}

impl EtcdElection {
    /// Prepares the election; nothing is contacted until [`run`](EtcdElection::run).
    pub fn new(config: EtcdConfig) -> EtcdElection {
        let (leader, _) = watch::channel(None);
        EtcdElection { config, leader }
    }

    /// The leader of the cluster, updated on every change. Subscribe before `run`; the
    /// watch ends when `run` returns.
    pub fn leader(&self) -> LeaderWatch {
        LeaderWatch {
            node: self.config.node.clone(),
            leader: self.leader.subscribe(),
            shows_successor: true,
        }
    }

    /// Connects once and reads the election name's key, so that a refused user, password or
    /// certificate stops the start instead of being retried for ever by [`run`](Self::run).
    ///
    /// # Errors
    /// [`crate::etcd::Error`]; [`crate::etcd::Error::is_unreachable`] tells a down etcd
    /// (which `run` waits for) from a refusal.
    pub async fn check(&self) -> Result<(), crate::etcd::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        self.config
            .etcd
            .connect(options, &leader_key(&self.config.cluster_name))
            .await
            .map(drop)
    }

    /// Campaigns, leads or follows until `resign` is cancelled, retrying with a backoff
    /// while etcd is unreachable (then no leader is published). On `resign`, a leader
    /// deletes its key and waits up to `handover` for another member to claim it (published
    /// as the new leader, so the caller can stop heartbeating); its lease is then revoked.
    pub async fn run(self, resign: CancellationToken, handover: Duration) {
        let name = leader_key(&self.config.cluster_name);
        info!(name = %name, etcd = ?self.config.etcd,
            lease_ttl_secs = self.config.lease_ttl.as_secs(), "etcd election starting");
        let mut backoff = crate::backoff::Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            match self.term(&name, &resign, handover).await {
                Ok(()) => break,
                Err(e) => {
                    self.publish(None);
                    warn!(name = %name, error = %e, "etcd election interrupted, retrying");
                }
            }
            tokio::select! {
                () = resign.cancelled() => break,
                () = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }

    fn publish(&self, leader: Leader) {
        self.leader.send_if_modified(|current| {
            if *current == leader {
                return false;
            }
            info!(cluster = %self.config.cluster_name, leader = ?leader, "etcd leader changed");
            *current = leader;
            true
        });
    }

    /// One lease's life: campaign and observe the leader, until resigning (Ok) or an etcd
    /// failure (Err).
    async fn term(
        &self,
        name: &str,
        resign: &CancellationToken,
        handover: Duration,
    ) -> Result<(), Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let mut client = self.config.etcd.client(options).await?;
        // Campaign and observe wait as long as another member leads: no request timeout.
        let waiting = ConnectOptions::new().with_connect_timeout(REQUEST_TIMEOUT);
        let mut elections = self.config.etcd.client(waiting).await?.election_client();
        let ttl_secs = i64::try_from(self.config.lease_ttl.as_secs().max(2)).unwrap_or(2);
        let lease = client.lease_grant(ttl_secs, None).await?.id();
        let (mut keeper, mut keep_alive) = client.lease_keep_alive(lease).await?;
        let renew_every = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(2)) / 3;
        let mut renew = tokio::time::interval(renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lease_ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(2));
        let mut renewed = Instant::now();
        debug!(lease, ttl_secs, "election lease granted");

        // Observing answers only once somebody leads: it opens while this member campaigns.
        let mut observer = elections.clone();
        let opening = observer.observe(name);
        tokio::pin!(opening);
        let mut observe: Option<ObserveStream> = None;
        let mut campaigner = elections.clone();
        let campaign = campaigner.campaign(name, self.config.node.as_bytes(), lease);
        tokio::pin!(campaign);
        // This member's key once elected.
        let mut elected: Option<LeaderKey> = None;
        let mut holder: Leader = None;

        let outcome = loop {
            tokio::select! {
                () = resign.cancelled() => break Ok(()),
                _ = renew.tick() => {
                    if elected.is_some() && renewed.elapsed() >= lease_ttl {
                        break Err(Error::LeaseLost);
                    }
                    keeper.keep_alive().await?;
                }
                message = keep_alive.message() => match message? {
                    Some(response) if response.ttl() > 0 => renewed = Instant::now(),
                    Some(_) => break Err(Error::LeaseLost),
                    None => break Err(Error::StreamClosed("keep-alive")),
                },
                response = &mut campaign, if elected.is_none() => {
                    let key = response?.take_leader().unwrap_or_default();
                    debug!(key = %String::from_utf8_lossy(key.key()), "elected");
                    elected = Some(key);
                    holder = Some(self.config.node.clone());
                    self.publish(holder.clone());
                }
                opened = &mut opening, if observe.is_none() => observe = Some(opened?),
                message = next_leader(&mut observe) => {
                    let Some(response) = message? else {
                        break Err(Error::StreamClosed("observe"));
                    };
                    // Elected, this member leads until its lease goes; an older word of
                    // the observation does not change that.
                    if elected.is_none() {
                        holder = value_of(&response);
                        self.publish(holder.clone());
                    }
                }
            }
        };
        outcome?;

        // Resigning: free the key, then wait (still renewing) for a successor to be elected.
        if let Some(key) = elected {
            if let Err(e) = elections
                .resign(Some(ResignOptions::new().with_leader(key)))
                .await
            {
                warn!(name = %name, error = %e, "cannot resign; the key expires with the lease");
            }
            info!(name = %name, "resigned the cluster leadership");
            let deadline = Instant::now() + handover;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        info!(handover_ms = handover.as_millis() as u64, "no successor claimed the leadership in time");
                        break;
                    }
                    _ = renew.tick() => {
                        let _ = keeper.keep_alive().await;
                    }
                    opened = &mut opening, if observe.is_none() => match opened {
                        Ok(opened) => observe = Some(opened),
                        Err(_) => break,
                    },
                    message = next_leader(&mut observe) => {
                        let Ok(Some(response)) = message else { break };
                        let successor = value_of(&response)
                            .filter(|s| *s != self.config.node);
                        if let Some(successor) = successor {
                            info!(successor = %successor, "a successor leads the cluster");
                            holder = Some(successor);
                            break;
                        }
                    }
                }
            }
        }
        // The successor stays published (the caller stops heartbeating on it); without one,
        // nobody is known to lead.
        if holder.as_deref() == Some(self.config.node.as_str()) {
            holder = None;
        }
        self.publish(holder);
        if let Err(e) = client.lease_revoke(lease).await {
            debug!(error = %e, "cannot revoke the election lease; it expires by itself");
        }
        Ok(())
    }
}

/// The next word of an observation; never before it is open.
async fn next_leader(
    observe: &mut Option<ObserveStream>,
) -> Result<Option<LeaderResponse>, etcd_client::Error> {
    match observe {
        Some(observe) => observe.message().await,
        None => std::future::pending().await,
    }
}

/// The node name an observed leader key holds.
fn value_of(response: &LeaderResponse) -> Leader {
    response
        .kv()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_key_is_per_cluster() {
        assert_eq!(leader_key("site-a"), "/syncer/leader/site-a");
    }

    #[test]
    fn the_leader_is_the_first_node_of_its_cluster() {
        let members = vec![
            Member::on_loopback("b", "x", 1),
            Member::on_loopback("a", "y", 3),
            Member::on_loopback("c", "x", 5),
        ];
        assert_eq!(leader_of(&members, "x").map(|m| m.node.as_str()), Some("b"));
        assert_eq!(leader_of(&members, "y").map(|m| m.node.as_str()), Some("a"));
        assert!(leader_of(&members, "z").is_none());
    }
}
