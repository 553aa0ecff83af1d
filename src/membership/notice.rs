//! Revision notices: "cluster X's export is at revision N", gossiped as a foca custom
//! broadcast. Each member's exporter numbers its export ([`ExportRevision`]); the
//! membership task gossips every new number, and every member keeps the newest it heard per
//! member ([`Notices`]). The export itself travels over gRPC (the watch streams); a
//! notice is how an importer notices that its stream of a cluster has fallen behind (a stalled
//! connection delivers nothing and reports no error) and starts it again, instead of waiting
//! for the next periodic reconcile.

use std::collections::HashMap;

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::identity::NodeId;

/// Where an export is: the exporter's run (its epoch) and the revision within the run.
/// Ordered: a later run, then a higher revision, is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExportRevision {
    /// The exporter's run ([`crate::sync::exporter::ExportFeed::epoch`]).
    pub epoch: u64,
    /// The export's revision within the run.
    pub revision: u64,
}

/// One notice as gossiped (postcard): which member's export, and where it is. Every member
/// of a cluster runs an exporter (with its own epoch), so notices are per member: an
/// importer compares the one of the member it streams from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RevisionNotice {
    /// The member (`--node`) whose export it is.
    pub node: String,
    /// Its cluster.
    pub cluster: String,
    /// Where its export is.
    pub at: ExportRevision,
}

impl RevisionNotice {
    /// The gossiped bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

impl Invalidates for RevisionNotice {
    /// A newer notice of a member replaces an older one still being disseminated.
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.at >= other.at
    }
}

/// The newest export revision heard per member (`--node`).
pub type Heard = HashMap<String, ExportRevision>;

/// foca's handler of revision notices: keeps the newest per member, publishes them on a
/// watch, and has foca pass on only what was news.
#[derive(Debug)]
pub struct Notices {
    heard: watch::Sender<Heard>,
}

impl Notices {
    /// A handler publishing on `heard`.
    pub fn new(heard: watch::Sender<Heard>) -> Notices {
        Notices { heard }
    }
}

/// A gossiped notice that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable revision notice: {0}")]
pub struct BadNotice(#[from] postcard::Error);

impl BroadcastHandler<NodeId> for Notices {
    type Key = RevisionNotice;
    type Error = BadNotice;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<RevisionNotice>, BadNotice> {
        let notice: RevisionNotice = postcard::from_bytes(data)?;
        let mut news = false;
        self.heard.send_if_modified(|heard| {
            let held = heard.get(&notice.node);
            if held.is_some_and(|held| *held >= notice.at) {
                return false;
            }
            heard.insert(notice.node.clone(), notice.at);
            news = true;
            true
        });
        Ok(news.then_some(notice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(node: &str, epoch: u64, revision: u64) -> RevisionNotice {
        RevisionNotice {
            node: node.into(),
            cluster: "c".into(),
            at: ExportRevision { epoch, revision },
        }
    }

    #[test]
    fn only_news_is_kept_and_passed_on() {
        let (tx, rx) = watch::channel(Heard::new());
        let mut notices = Notices::new(tx);
        let first = notice("a", 1, 5);
        assert_eq!(
            notices
                .receive_item(&first.encode(), None)
                .expect("decodes"),
            Some(first.clone())
        );
        assert_eq!(
            notices
                .receive_item(&notice("a", 1, 4).encode(), None)
                .expect("decodes"),
            None,
            "older: not news"
        );
        assert!(
            notices
                .receive_item(&notice("a", 2, 1).encode(), None)
                .expect("decodes")
                .is_some(),
            "a new run is news even at a lower revision"
        );
        assert_eq!(
            rx.borrow()["a"],
            ExportRevision {
                epoch: 2,
                revision: 1
            }
        );
        assert!(notices.receive_item(b"\xff\xff", None).is_err());
        assert!(notice("a", 2, 1).invalidates(&first));
        assert!(!first.invalidates(&notice("a", 2, 1)));
        assert!(!notice("b", 9, 9).invalidates(&first));
    }
}
