//! The foca identity of a member: what every gossip message says about its sender.
//!
//! [`NodeId`] carries everything a peer needs to know about a member (node name, cluster
//! name, gossip and gRPC addresses), so no separate metadata exchange is needed. foca keys
//! members by [`foca::Identity::addr`], the gossip address; the `generation` field lets a
//! restarted member (or one wrongly declared down) take its address back at once instead of
//! waiting for the cluster to forget the old identity.

use std::fmt;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One alive syncer agent, as gossiped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its `--node` name.
    pub node: String,
    /// Its `--cluster-name`.
    pub cluster_name: String,
    /// The address it gossips on (UDP).
    pub gossip_addr: SocketAddr,
    /// The address of its exchange server (gRPC).
    pub rpc_addr: SocketAddr,
}

/// The identity foca gossips about each member.
///
/// Two identities with the same gossip address are two lives of one member; the one with the
/// higher `generation` wins (see [`foca::Identity::win_addr_conflict`]).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct NodeId {
    /// `--node`: the member's unique name.
    pub(crate) node: String,
    /// `--cluster-name`: the site this member serves.
    pub(crate) cluster_name: String,
    /// Where peers send gossip (UDP) to this member.
    pub(crate) gossip_addr: SocketAddr,
    /// Where peers reach this member's exchange server (gRPC).
    pub(crate) rpc_addr: SocketAddr,
    /// Milliseconds since the Unix epoch when the process started, plus one per renewal.
    ///
    /// A restart therefore always produces a higher value than any earlier life of the
    /// member (as long as the wall clock does not go back), and a renewal after a false
    /// "down" verdict is higher than the identity the cluster declared down.
    pub(crate) generation: u64,
}

impl NodeId {
    /// The identity of a member starting now.
    pub(crate) fn starting_now(
        node: String,
        cluster_name: String,
        gossip_addr: SocketAddr,
        rpc_addr: SocketAddr,
    ) -> Self {
        // A clock before 1970 is a broken host; generation 0 still works, it only loses
        // address conflicts against earlier lives of this member.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            node,
            cluster_name,
            gossip_addr,
            rpc_addr,
            generation,
        }
    }

    /// A stand-in for the unknown member listening at a `--join-addr`.
    ///
    /// foca accepts an announce addressed to any identity with its own gossip address, so
    /// the other fields don't matter; they are empty and the generation is the lowest.
    pub(crate) fn join_target(gossip_addr: SocketAddr) -> Self {
        Self {
            node: String::new(),
            cluster_name: String::new(),
            gossip_addr,
            rpc_addr: gossip_addr,
            generation: 0,
        }
    }

    /// The public view of this identity.
    pub(crate) fn to_member(&self) -> Member {
        Member {
            node: self.node.clone(),
            cluster_name: self.cluster_name.clone(),
            gossip_addr: self.gossip_addr,
            rpc_addr: self.rpc_addr,
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short, because foca's own tracing prints identities in every span.
        write!(
            f,
            "{}@{}/{}#{}",
            self.node, self.gossip_addr, self.cluster_name, self.generation
        )
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// Bumps the generation so the cluster accepts us again right after declaring us down.
    fn renew(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(Self {
            generation,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The newer generation wins. Ties (two processes started in the same millisecond on
    /// one address, which the OS prevents on one host) are broken by the other fields so
    /// every member picks the same winner.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (
            self.generation,
            &self.node,
            &self.cluster_name,
            self.rpc_addr,
        ) > (
            adversary.generation,
            &adversary.node,
            &adversary.cluster_name,
            adversary.rpc_addr,
        )
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn id(node: &str, port: u16, generation: u64) -> NodeId {
        NodeId {
            node: node.to_owned(),
            cluster_name: "site-a".to_owned(),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            generation,
        }
    }

    #[test]
    fn renewing_keeps_everything_but_bumps_the_generation() {
        let old = id("a", 7000, 41);
        let new = old.renew().expect("renewable");
        assert_eq!(new.generation, 42);
        assert_eq!(new.addr(), old.addr());
        assert_eq!(new.to_member(), old.to_member());
        assert_ne!(new, old);
    }

    #[test]
    fn renewing_at_the_last_generation_gives_up_instead_of_wrapping() {
        assert_eq!(id("a", 7000, u64::MAX).renew(), None);
    }

    #[test]
    fn the_newer_generation_wins_an_address_conflict() {
        let old = id("a", 7000, 1);
        let new = id("a", 7000, 2);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn a_tie_in_generation_still_has_exactly_one_winner() {
        let a = id("a", 7000, 5);
        let b = id("b", 7000, 5);
        assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
    }

    #[test]
    fn a_restarted_member_outranks_its_previous_life() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let before = NodeId::starting_now("a".into(), "c".into(), addr, addr);
        let after = NodeId {
            generation: before.generation + 1,
            ..before.clone()
        };
        assert!(after.win_addr_conflict(&before));
        assert!(
            before.generation > 1_600_000_000_000,
            "generation is wall-clock ms"
        );
    }

    #[test]
    fn a_join_target_shares_only_the_address() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 7000));
        let target = NodeId::join_target(addr);
        assert_eq!(target.addr(), addr);
        assert!(target.node.is_empty());
        assert!(id("a", 7000, 1).win_addr_conflict(&target));
    }

    #[test]
    fn identities_survive_the_wire_codec() {
        let original = id("node-1", 30190, 1_700_000_000_000);
        let bytes = postcard::to_allocvec(&original).expect("encodes");
        let decoded: NodeId = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(decoded, original);
        assert!(postcard::from_bytes::<NodeId>(&bytes[..bytes.len() / 2]).is_err());
    }
}
