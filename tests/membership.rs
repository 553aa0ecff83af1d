//! Gossip membership between real members on loopback UDP (OS-chosen ports).
//!
//! Each test starts members through `syncer::membership`, then polls `members()` until the
//! expected view appears or a deadline passes; nothing sleeps blindly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use syncer::membership::{Config, Member, Membership};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Probe period of the test members: short, so failure detection takes seconds.
const PROBE_PERIOD: Duration = Duration::from_millis(300);

/// How long any expected view may take to appear (generous: CI machines are shared).
const DEADLINE: Duration = Duration::from_secs(20);

/// A member running in its own task.
struct Running {
    member: Member,
    gossip_addr: SocketAddr,
    members: watch::Receiver<Vec<Member>>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), syncer::membership::Error>>,
}

impl Running {
    async fn start(node: &str, cluster: &str, join: &[SocketAddr]) -> Running {
        let any_port = "127.0.0.1:0".parse().expect("addr");
        Running::start_at(any_port, node, cluster, join).await
    }

    async fn start_at(bind: SocketAddr, node: &str, cluster: &str, join: &[SocketAddr]) -> Running {
        let config = Config {
            node: node.to_owned(),
            cluster_name: cluster.to_owned(),
            bind_addr: bind,
            advertise_addr: None,
            // An unspecified IP: the member must advertise its gossip IP with this port.
            rpc_addr: "0.0.0.0:30191".parse().expect("addr"),
            join_addrs: join.to_vec(),
            probe_period: PROBE_PERIOD,
            keyring: None,
        };
        let membership = Membership::bind(config).await.expect("binds");
        let shutdown = CancellationToken::new();
        Running {
            member: membership.local_member(),
            gossip_addr: membership.local_addr(),
            members: membership.members(),
            task: tokio::spawn(membership.run(shutdown.clone())),
            shutdown,
        }
    }

    /// Waits until this member's view, reduced to node names, equals `nodes`.
    async fn sees(&mut self, nodes: &[&str]) -> Vec<Member> {
        let started = Instant::now();
        let wanted: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        let seen = tokio::time::timeout(
            DEADLINE,
            self.members
                .wait_for(|members| members.iter().map(|m| &m.node).eq(wanted.iter())),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|members| members.clone());
        let Some(members) = seen else {
            panic!(
                "{} did not see {nodes:?} within {DEADLINE:?}; it sees {:?}",
                self.member.node,
                *self.members.borrow()
            );
        };
        eprintln!(
            "{} saw {nodes:?} after {:?}",
            self.member.node,
            started.elapsed()
        );
        members
    }

    /// Waits until this member lists `member` exactly (addresses included).
    async fn sees_member(&mut self, member: &Member) {
        let seen = tokio::time::timeout(
            DEADLINE,
            self.members.wait_for(|members| members.contains(member)),
        )
        .await
        .is_ok_and(|waited| waited.is_ok());
        assert!(
            seen,
            "{} did not see {member:?} within {DEADLINE:?}; it sees {:?}",
            self.member.node,
            *self.members.borrow()
        );
    }

    /// Leaves gracefully and waits for the gossip task to end.
    async fn leave(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("task did not panic")
            .expect("left cleanly");
    }

    /// Vanishes without a word, as a crashed process would.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn three_members() -> (Running, Running, Running) {
    let a = Running::start("node-a", "site-1", &[]).await;
    let b = Running::start("node-b", "site-1", &[a.gossip_addr]).await;
    let c = Running::start("node-c", "site-2", &[a.gossip_addr]).await;
    (a, b, c)
}

#[tokio::test]
async fn three_members_joining_through_the_first_all_see_each_other() {
    let (mut a, mut b, mut c) = three_members().await;
    let expected = vec![a.member.clone(), b.member.clone(), c.member.clone()];
    for running in [&mut a, &mut b, &mut c] {
        let seen = running.sees(&["node-a", "node-b", "node-c"]).await;
        assert_eq!(seen, expected, "cluster names and addresses travel intact");
    }
    assert_eq!(c.member.cluster_name, "site-2");
    assert_eq!(b.member.rpc_addr, "127.0.0.1:30191".parse().expect("addr"));
    assert_eq!(b.member.gossip_addr, b.gossip_addr);
    for running in [a, b, c] {
        running.leave().await;
    }
}

#[tokio::test]
async fn a_crashed_member_is_marked_down_by_the_others() {
    let (mut a, mut b, mut c) = three_members().await;
    for running in [&mut a, &mut b, &mut c] {
        running.sees(&["node-a", "node-b", "node-c"]).await;
    }
    let crashed_at = Instant::now();
    c.crash().await;
    a.sees(&["node-a", "node-b"]).await;
    b.sees(&["node-a", "node-b"]).await;
    eprintln!("crash detected by both after {:?}", crashed_at.elapsed());
    a.leave().await;
    b.leave().await;
}

#[tokio::test]
async fn a_member_that_leaves_is_removed_quickly() {
    let (mut a, mut b, mut c) = three_members().await;
    for running in [&mut a, &mut b, &mut c] {
        running.sees(&["node-a", "node-b", "node-c"]).await;
    }
    let left_at = Instant::now();
    b.leave().await;
    a.sees(&["node-a", "node-c"]).await;
    c.sees(&["node-a", "node-c"]).await;
    let took = left_at.elapsed();
    eprintln!("leave seen by both after {took:?}");
    // Failure detection alone needs several probe periods plus 3 of suspicion; a leave is
    // gossiped at once.
    assert!(took < PROBE_PERIOD * 3, "leave took {took:?}");
    a.leave().await;
    c.leave().await;
}

#[tokio::test]
async fn a_member_restarted_under_the_same_name_rejoins_with_its_new_address() {
    let (mut a, mut b, mut c) = three_members().await;
    for running in [&mut a, &mut b, &mut c] {
        running.sees(&["node-a", "node-b", "node-c"]).await;
    }
    let old_addr = c.gossip_addr;
    c.crash().await;

    // Restarted at once, before the others have noticed the crash.
    let restarted_at = Instant::now();
    let mut c = Running::start("node-c", "site-2", &[a.gossip_addr]).await;
    assert_ne!(c.gossip_addr, old_addr);
    let new_c = c.member.clone();
    a.sees_member(&new_c).await;
    b.sees_member(&new_c).await;
    c.sees(&["node-a", "node-b", "node-c"]).await;
    eprintln!("restart seen by all after {:?}", restarted_at.elapsed());
    // The previous life never shows up beside the new one, and is gone for good.
    a.sees(&["node-a", "node-b", "node-c"]).await;
    assert!(a.members.borrow().iter().all(|m| m.gossip_addr != old_addr));

    for running in [a, b, c] {
        running.leave().await;
    }
}

#[tokio::test]
async fn a_member_restarted_on_the_same_address_replaces_its_previous_life() {
    let (mut a, mut b, mut c) = three_members().await;
    for running in [&mut a, &mut b, &mut c] {
        running.sees(&["node-a", "node-b", "node-c"]).await;
    }
    let addr = c.gossip_addr;
    c.crash().await;

    let restarted_at = Instant::now();
    let mut c = Running::start_at(addr, "node-c", "site-2", &[a.gossip_addr]).await;
    c.sees(&["node-a", "node-b", "node-c"]).await;
    a.sees(&["node-a", "node-b", "node-c"]).await;
    // Not just still listed from before the crash: once a's failure detection has had time
    // to drop a member (b, crashed now), the new c is still there.
    b.crash().await;
    a.sees(&["node-a", "node-c"]).await;
    c.sees(&["node-a", "node-c"]).await;
    eprintln!("same-address restart held for {:?}", restarted_at.elapsed());

    for running in [a, c] {
        running.leave().await;
    }
}

#[tokio::test]
async fn a_late_joiner_learns_every_member_from_one_join_address() {
    let (mut a, mut b, mut c) = three_members().await;
    for running in [&mut a, &mut b, &mut c] {
        running.sees(&["node-a", "node-b", "node-c"]).await;
    }
    // Joins through the last one, which did not itself introduce a or b.
    let mut d = Running::start("node-d", "site-2", &[c.gossip_addr]).await;
    let all = ["node-a", "node-b", "node-c", "node-d"];
    for running in [&mut a, &mut b, &mut c, &mut d] {
        running.sees(&all).await;
    }
    for running in [a, b, c, d] {
        running.leave().await;
    }
}

#[tokio::test]
async fn a_member_keeps_retrying_its_join_address_until_someone_answers() {
    // Reserve a port and start the joiner against it; once its first announce has arrived
    // there unanswered, start the seed on that port.
    let reserved = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let seed_addr = reserved.local_addr().expect("addr");
    let mut joiner = Running::start("node-j", "site-1", &[seed_addr]).await;
    let mut first_announce = [0u8; 2048];
    tokio::time::timeout(DEADLINE, reserved.recv_from(&mut first_announce))
        .await
        .expect("the joiner announces at once")
        .expect("receive");
    drop(reserved);
    let seed_started = Instant::now();

    let config = Config {
        node: "node-s".to_owned(),
        cluster_name: "site-1".to_owned(),
        bind_addr: seed_addr,
        advertise_addr: None,
        rpc_addr: "127.0.0.1:30191".parse().expect("addr"),
        join_addrs: Vec::new(),
        probe_period: PROBE_PERIOD,
        keyring: None,
    };
    let seed = Membership::bind(config)
        .await
        .expect("binds the reserved port");
    let mut seed_members = seed.members();
    let shutdown = CancellationToken::new();
    let seed_task = tokio::spawn(seed.run(shutdown.clone()));

    joiner.sees(&["node-j", "node-s"]).await;
    eprintln!("joined on a retry after {:?}", seed_started.elapsed());
    tokio::time::timeout(
        DEADLINE,
        seed_members.wait_for(|members| members.len() == 2),
    )
    .await
    .expect("seed sees the joiner")
    .expect("seed still running");

    joiner.leave().await;
    shutdown.cancel();
    seed_task
        .await
        .expect("task did not panic")
        .expect("left cleanly");
}

#[tokio::test]
async fn garbage_datagrams_are_ignored() {
    let mut a = Running::start("node-a", "site-1", &[]).await;
    let mut b = Running::start("node-b", "site-1", &[a.gossip_addr]).await;
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for payload in [&b""[..], b"\x00", b"\xff\xff\xff\xff", &[0x42; 2000][..]] {
        junk.send_to(payload, a.gossip_addr).expect("send");
    }
    a.sees(&["node-a", "node-b"]).await;
    b.sees(&["node-a", "node-b"]).await;
    assert!(!a.task.is_finished());
    a.leave().await;
    b.leave().await;
}

#[tokio::test]
async fn export_revisions_are_gossiped_to_the_other_clusters() {
    use syncer::membership::notice::ExportRevision;
    let config = |node: &str, cluster: &str, join: Vec<SocketAddr>| Config {
        node: node.to_owned(),
        cluster_name: cluster.to_owned(),
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        advertise_addr: None,
        rpc_addr: "127.0.0.1:30191".parse().expect("addr"),
        join_addrs: join,
        probe_period: PROBE_PERIOD,
        keyring: None,
    };
    let (revision_tx, revision_rx) = watch::channel(ExportRevision {
        epoch: 7,
        revision: 0,
    });
    let a = Membership::bind(config("a", "site-a", Vec::new()))
        .await
        .expect("binds")
        .gossip_export(revision_rx);
    let b = Membership::bind(config("b", "site-b", vec![a.local_addr()]))
        .await
        .expect("binds");
    let mut heard = b.heard();
    let mut b_members = b.members();
    let shutdown = CancellationToken::new();
    let tasks = [
        tokio::spawn(a.run(shutdown.clone())),
        tokio::spawn(b.run(shutdown.clone())),
    ];
    tokio::time::timeout(DEADLINE, b_members.wait_for(|m| m.len() == 2))
        .await
        .expect("b sees a")
        .expect("membership runs");
    for revision in [1, 2, 5] {
        revision_tx.send_replace(ExportRevision { epoch: 7, revision });
        let started = Instant::now();
        tokio::time::timeout(
            DEADLINE,
            heard.wait_for(|h| h.get("a").is_some_and(|at| at.revision == revision)),
        )
        .await
        .expect("b hears a's revision")
        .expect("membership runs");
        eprintln!("revision {revision} heard after {:?}", started.elapsed());
    }
    assert_eq!(
        heard.borrow().get("a"),
        Some(&ExportRevision {
            epoch: 7,
            revision: 5
        })
    );
    assert!(!heard.borrow().contains_key("b"), "b exports nothing");
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
}
