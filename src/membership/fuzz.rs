//! Fuzzing of what gossip receives (issue 13): sealed datagrams (the keyring's opener) and
//! the datagrams foca decodes after them (identities, revision notices), junk and mutated
//! real ones, never panic.
//!
//! Stable Rust, with proptest: `SYNCER_FUZZ_CASES` inputs per target (default 500 in the
//! suite). The long run, at least 10^6 inputs per target:
//! `SYNCER_FUZZ_CASES=1000000 cargo test --release --lib membership::fuzz`.

use std::net::SocketAddr;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, PostcardCodec};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::watch;

use super::cipher::{Cipher, GossipKey, Keyring};
use super::identity::NodeId;
use super::notice::{ExportRevision, Notices, RevisionNotice};
use super::{foca_config, Swim};

fn cases() -> u32 {
    std::env::var("SYNCER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn member(node: &str, port: u16) -> Swim {
    let id = NodeId::starting_now(node.into(), "site".into(), addr(port), addr(port + 1));
    let (heard, _) = watch::channel(Default::default());
    Foca::with_custom_broadcast(
        id,
        foca_config(Duration::from_secs(1)),
        SmallRng::seed_from_u64(7),
        PostcardCodec,
        Notices::new(heard),
    )
}

/// Real datagrams: an announce, its answers, and a gossiped revision notice.
fn seeds() -> Vec<Vec<u8>> {
    let mut a = member("a", 7000);
    let mut b = member("b", 7002);
    let mut runtime = AccumulatingRuntime::new();
    let mut out = Vec::new();
    let _ = a.announce(NodeId::join_target(addr(7002)), &mut runtime);
    let notice = RevisionNotice {
        node: "a".into(),
        cluster: "site".into(),
        at: ExportRevision {
            epoch: 1,
            revision: 42,
        },
    };
    let _ = a.add_broadcast(&notice.encode());
    for _ in 0..3 {
        let mut sent = Vec::new();
        while let Some((_, data)) = runtime.to_send() {
            sent.push(data.to_vec());
        }
        for data in &sent {
            let _ = b.handle_data(data, &mut runtime);
        }
        out.extend(sent);
        let _ = a.broadcast(&mut runtime);
    }
    out.retain(|d| !d.is_empty());
    out
}

/// A seed with a few byte edits (set, insert, remove, truncate).
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    assert!(!seeds.is_empty(), "foca produced datagrams to start from");
    (
        proptest::sample::select(seeds),
        proptest::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 0..6),
    )
        .prop_map(|(mut data, edits)| {
            for (kind, at, byte) in edits {
                let at = at % (data.len() + 1);
                match kind {
                    0 if at < data.len() => data[at] = byte,
                    1 => data.insert(at, byte),
                    2 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.truncate(at),
                }
            }
            data
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn foca_with_our_identity_and_notices_never_panics_on_junk(
        data in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let mut b = member("b", 7002);
        let mut runtime = AccumulatingRuntime::new();
        let _ = b.handle_data(&data, &mut runtime);
    }

    #[test]
    fn foca_never_panics_on_mutated_datagrams(data in mutated()) {
        let mut b = member("b", 7002);
        let mut runtime = AccumulatingRuntime::new();
        let _ = b.handle_data(&data, &mut runtime);
    }

    #[test]
    fn the_opener_never_panics_and_never_opens_a_forgery(
        data in proptest::collection::vec(any::<u8>(), 0..1600),
        flip in any::<(usize, u8)>(),
    ) {
        let keyring = Keyring::single(GossipKey::from_bytes([9; 32]));
        let mut cipher = Cipher::new(&keyring);
        let now = 1_800_000_000_000;
        prop_assert!(cipher.open(&data, now).is_err());
        // A real datagram with one byte changed never opens either.
        let mut sealed = cipher.seal(&data, now).expect("seal");
        let at = flip.0 % sealed.len();
        sealed[at] ^= flip.1.max(1);
        prop_assert!(cipher.open(&sealed, now).is_err());
    }
}
