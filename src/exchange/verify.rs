//! Which gossiped members count: with mutual TLS, a member counts for the cluster it claims
//! in gossip only once its exchange server has proved it (DESIGN.md decision 10).
//!
//! Gossip says who is alive, and anyone holding the gossip key can claim any cluster and any
//! node name. So before a member takes part in electing its cluster's leader, or is followed
//! as its cluster's exporter, [`verify_members`] calls it: `Identify` over mutual TLS with the
//! claimed cluster as the server name. The handshake proves the member's certificate (signed
//! by the CA) names the cluster; the answer proves the node at that address is the node
//! gossiped (a member that gossips another member's exchange address gets that member's
//! node name back, and is refused). Until then the member is left out of the list the
//! syncer sees; a refusal is retried with a backoff of up to [`RETRY_MAX`] and logged at
//! WARN (rate-limited per claimed cluster), naming the claimed cluster and the reason (for a
//! certificate for another site: the names it carries).
//!
//! This member itself always counts: its own certificate was checked to name its cluster at
//! start.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::client::ExchangeClient;
use super::transport::LogLimit;
use crate::membership::Member;

/// First wait before checking a refused member again.
pub const RETRY_MIN: Duration = Duration::from_millis(500);

/// Longest wait between two checks of a refused member.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Deadline of one check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Most checks in flight at once.
const MAX_CHECKS: usize = 32;

/// What a member claims in gossip; verified as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Claim {
    node: String,
    cluster: String,
    rpc_addr: SocketAddr,
}

impl Claim {
    fn of(m: &Member) -> Claim {
        Claim {
            node: m.node.clone(),
            cluster: m.cluster_name.clone(),
            rpc_addr: m.rpc_addr,
        }
    }
}

/// A refused claim: when to try again, and the next wait.
#[derive(Debug)]
struct Refused {
    retry_at: Instant,
    backoff: Duration,
}

/// Publishes, from the gossiped `members`, those that have proved their claim (and `local`,
/// always), until `members` closes (gossip has left: then the returned channel closes too,
/// as gossip's own would); see the module doc. The returned list keeps the gossiped order.
pub fn verify_members(
    mut members: watch::Receiver<Vec<Member>>,
    local: String,
    client: Arc<ExchangeClient>,
) -> watch::Receiver<Vec<Member>> {
    let initial: Vec<Member> = members
        .borrow()
        .iter()
        .filter(|m| m.node == local)
        .cloned()
        .collect();
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        let mut verified: HashSet<Claim> = HashSet::new();
        let mut refused: HashMap<Claim, Refused> = HashMap::new();
        let mut checking: HashSet<Claim> = HashSet::new();
        let mut checks: JoinSet<(Claim, Result<(), String>)> = JoinSet::new();
        let limit = LogLimit::default();
        loop {
            let gossiped = members.borrow_and_update().clone();
            let claims: HashSet<Claim> = gossiped.iter().map(Claim::of).collect();
            // Forget members that left: a returning one proves itself again.
            verified.retain(|c| claims.contains(c));
            refused.retain(|c, _| claims.contains(c));
            let now = Instant::now();
            for m in gossiped.iter().filter(|m| m.node != local) {
                let claim = Claim::of(m);
                if verified.contains(&claim)
                    || checking.contains(&claim)
                    || checking.len() >= MAX_CHECKS
                    || refused.get(&claim).is_some_and(|r| r.retry_at > now)
                {
                    continue;
                }
                checking.insert(claim.clone());
                let client = client.clone();
                checks.spawn(async move {
                    let outcome = check(&client, &claim).await;
                    (claim, outcome)
                });
            }
            let list: Vec<Member> = gossiped
                .into_iter()
                .filter(|m| m.node == local || verified.contains(&Claim::of(m)))
                .collect();
            tx.send_if_modified(|published| {
                if *published == list {
                    false
                } else {
                    *published = list;
                    true
                }
            });
            let next_retry = refused
                .values()
                .map(|r| r.retry_at)
                .min()
                .unwrap_or_else(|| Instant::now() + RETRY_MAX);
            tokio::select! {
                changed = members.changed() => if changed.is_err() { return },
                Some(done) = checks.join_next() => {
                    let Ok((claim, outcome)) = done else { continue };
                    checking.remove(&claim);
                    match outcome {
                        Ok(()) => {
                            info!(node = %claim.node, cluster = %claim.cluster, rpc_addr = %claim.rpc_addr,
                                "member verified: its certificate names its cluster");
                            refused.remove(&claim);
                            verified.insert(claim);
                        }
                        Err(reason) => {
                            let backoff = refused
                                .get(&claim)
                                .map_or(RETRY_MIN, |r| (r.backoff * 2).min(RETRY_MAX));
                            if limit.ready(&claim.cluster) {
                                warn!(node = %claim.node, claimed_cluster = %claim.cluster,
                                    rpc_addr = %claim.rpc_addr, reason = %reason,
                                    "member refused: it does not prove the cluster it claims; it neither leads nor is imported");
                            } else {
                                debug!(node = %claim.node, claimed_cluster = %claim.cluster, reason = %reason, "member refused");
                            }
                            refused.insert(claim, Refused { retry_at: Instant::now() + backoff, backoff });
                        }
                    }
                }
                () = tokio::time::sleep_until(next_retry) => {}
            }
        }
    });
    rx
}

/// Calls `Identify` on the claimed member and compares its answer with the claim.
async fn check(client: &ExchangeClient, claim: &Claim) -> Result<(), String> {
    let reply = tokio::time::timeout(
        CHECK_TIMEOUT,
        client.identify(claim.rpc_addr, &claim.cluster),
    )
    .await
    .map_err(|_| "no answer within 10 s".to_owned())?
    .map_err(|e| e.to_string())?;
    if reply.cluster != claim.cluster || reply.node != claim.node {
        return Err(format!(
            "the exchange at {} answers as node {:?} of cluster {:?}",
            claim.rpc_addr, reply.node, reply.cluster
        ));
    }
    Ok(())
}
