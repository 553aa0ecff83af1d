//! Following peer clusters' exports through watch streams: one task per peer cluster
//! streams its leader's export ([`follow_stream`]), reconnects with a backoff when the
//! stream ends, resumes from the export held, and reports each event to the reconcile loop
//! ([`super::Syncer`]), which owns the streams as [`Watching`]. A stream that stays behind
//! what its member gossips is found by [`lagging`] and restarted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::peer::PeerExportState;
use crate::backoff::Backoff;
use crate::exchange::client::ExchangeClient;
use crate::exchange::convert::event_from_wire;
use crate::membership::notice::{ExportRevision, Heard};
use crate::records::PeerEvent;

/// What a watch stream task reports.
#[derive(Debug)]
pub enum StreamReport {
    /// An event of the peer's export.
    Event(PeerEvent),
    /// The stream ended or failed; the task reconnects by itself.
    Down(String),
}

/// A running watch stream of one peer cluster.
#[derive(Debug)]
pub struct Watching {
    /// The member streamed from: its node name,
    pub node: String,
    /// and its exchange address.
    pub addr: SocketAddr,
    /// Distinguishes reports of this task from those of a replaced one.
    pub generation: u64,
    /// Stops the task.
    pub stop: CancellationToken,
    /// When the task started.
    pub since: Instant,
    /// Whether the stream has gone down since (then the peer is pulled until it is back).
    pub failed: bool,
    /// Since when the stream has been behind what its member gossiped
    /// ([`crate::membership::notice`]).
    pub behind_since: Option<Instant>,
    /// The (epoch, revision) of the export held from this stream, which a reconnecting
    /// stream resumes from ((0, 0): nothing held, start from the whole export).
    pub held: watch::Sender<(u64, u64)>,
}

/// How long a stream may stay behind the revision its member gossiped, delivering nothing,
/// before it is restarted: a stalled connection delivers nothing and reports no error.
pub const STREAM_LAG_LIMIT: Duration = Duration::from_secs(3);

/// How often streams are compared with the gossiped revisions.
pub const LAG_CHECK: Duration = Duration::from_secs(1);

/// The clusters whose streams have been behind their member's gossiped revision for
/// [`STREAM_LAG_LIMIT`] (or, before their first whole export, for [`FIRST_EVENT_WAIT`]),
/// as of `now`; notes in each stream since when it is behind.
pub fn lagging(
    watching: &mut HashMap<String, Watching>,
    exports: &HashMap<String, PeerExportState>,
    heard: &Heard,
    now: Instant,
) -> Vec<String> {
    let mut out = Vec::new();
    for (cluster, w) in watching.iter_mut() {
        let held = exports
            .get(cluster)
            .filter(|s| s.is_known())
            .map(|s| ExportRevision {
                epoch: s.epoch,
                revision: s.revision,
            });
        let behind = match heard.get(&w.node) {
            Some(at) => held.is_none_or(|held| held < *at),
            None => false,
        };
        if !behind {
            w.behind_since = None;
            continue;
        }
        let since = *w.behind_since.get_or_insert(now);
        let limit = if held.is_some() {
            STREAM_LAG_LIMIT
        } else {
            FIRST_EVENT_WAIT
        };
        if now.duration_since(since) >= limit && now.duration_since(w.since) >= limit {
            out.push(cluster.clone());
        }
    }
    out
}

/// How long a new watch stream has to deliver the whole export before the reconcile pulls
/// the peer instead; until then the reconcile leaves that peer's copies as they are
/// rather than transferring its export twice.
pub const FIRST_EVENT_WAIT: Duration = Duration::from_secs(30);

/// First wait before a stream reconnects ([`Backoff`]).
pub const STREAM_RETRY_FIRST: Duration = Duration::from_millis(200);

/// Longest wait before a stream reconnects.
pub const STREAM_RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows one peer's export stream until `stop`, reconnecting with a [`Backoff`] of up to
/// [`STREAM_RETRY_MAX`] (resuming from `held`, the export the loop holds from it), and
/// reports every event to the loop.
pub async fn follow_stream(
    client: Arc<ExchangeClient>,
    cluster: String,
    addr: SocketAddr,
    generation: u64,
    reports: mpsc::Sender<(String, u64, StreamReport)>,
    stop: CancellationToken,
    held: watch::Receiver<(u64, u64)>,
) {
    let mut backoff = Backoff::new(STREAM_RETRY_FIRST, STREAM_RETRY_MAX);
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = stream_once(&client, &cluster, addr, generation, &reports, *held.borrow()) => outcome,
        };
        let reason = match outcome {
            Ok(()) => "stream ended".to_owned(),
            Err(reason) => reason,
        };
        if reports
            .send((cluster.clone(), generation, StreamReport::Down(reason)))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

async fn stream_once(
    client: &ExchangeClient,
    cluster: &str,
    addr: SocketAddr,
    generation: u64,
    reports: &mpsc::Sender<(String, u64, StreamReport)>,
    (epoch, revision): (u64, u64),
) -> Result<(), String> {
    let mut stream = client
        .watch(addr, cluster, epoch, revision)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let Some(event) = stream.message().await.map_err(|e| e.to_string())? else {
            return Ok(());
        };
        client.received(prost::Message::encoded_len(&event));
        if event.cluster != cluster {
            return Err(format!(
                "peer at {addr} streams cluster {}, expected {cluster}",
                event.cluster
            ));
        }
        let event = event_from_wire(event).map_err(|e| format!("invalid event: {e}"))?;
        if reports
            .send((cluster.to_owned(), generation, StreamReport::Event(event)))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_behind_its_members_gossiped_revision_is_restarted_after_the_limit() {
        let t0 = Instant::now();
        let mut watching = HashMap::from([(
            "y".to_string(),
            Watching {
                node: "c".into(),
                addr: ([127, 0, 0, 1], 1).into(),
                generation: 1,
                stop: CancellationToken::new(),
                since: t0,
                failed: false,
                behind_since: None,
                held: watch::channel((0, 0)).0,
            },
        )]);
        let mut state = PeerExportState::default();
        state
            .apply(PeerEvent::Full {
                epoch: 9,
                revision: 4,
                snapshot: Default::default(),
                more: false,
            })
            .expect("whole export");
        let exports = HashMap::from([("y".to_string(), state)]);
        let at = |revision| Heard::from([("c".to_string(), ExportRevision { epoch: 9, revision })]);
        // Caught up, or nothing heard: never lagging.
        assert!(lagging(&mut watching, &exports, &at(4), t0 + STREAM_LAG_LIMIT * 2).is_empty());
        assert!(lagging(
            &mut watching,
            &exports,
            &Heard::new(),
            t0 + STREAM_LAG_LIMIT * 2
        )
        .is_empty());
        // Behind: only once it has been behind for the limit.
        let later = t0 + STREAM_LAG_LIMIT * 2;
        assert!(lagging(&mut watching, &exports, &at(5), later).is_empty());
        assert!(lagging(
            &mut watching,
            &exports,
            &at(5),
            later + STREAM_LAG_LIMIT / 2
        )
        .is_empty());
        assert_eq!(
            lagging(&mut watching, &exports, &at(5), later + STREAM_LAG_LIMIT),
            vec!["y".to_string()]
        );
        // Catching up clears it.
        assert!(lagging(&mut watching, &exports, &at(4), later + STREAM_LAG_LIMIT).is_empty());
        assert!(watching["y"].behind_since.is_none());
        // Before the first whole export, the stream gets FIRST_EVENT_WAIT.
        let none = HashMap::new();
        assert!(lagging(&mut watching, &none, &at(5), t0 + STREAM_LAG_LIMIT).is_empty());
        assert!(lagging(&mut watching, &none, &at(5), t0 + STREAM_LAG_LIMIT * 2).is_empty());
        assert_eq!(
            lagging(
                &mut watching,
                &none,
                &at(5),
                t0 + STREAM_LAG_LIMIT + FIRST_EVENT_WAIT
            ),
            vec!["y".to_string()]
        );
    }
}
