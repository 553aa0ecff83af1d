//! What the reconcile loop tells about itself: a [`SyncStatus`] published after every change
//! it applies, and [`Query`]s it answers on demand (per service, per instance), which would
//! cost too much to publish at every change with 100,000 instances.

use serde::Serialize;
use tokio::sync::oneshot;

/// The reconcile loop's state, as last published.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncStatus {
    /// The node that leads this cluster, when one is known.
    pub leader: Option<String>,
    /// Whether this member leads (only the leader imports).
    pub is_leader: bool,
    /// When the last full reconcile ended, in ms since the Unix epoch.
    pub reconciled_at_ms: Option<u64>,
    /// How long the last full reconcile took, in ms.
    pub reconcile_ms: Option<u64>,
    /// Full reconciles done by this member.
    pub reconciles: u64,
    /// The lease of copies in seconds (the ticker interval times 4): a copy whose leader
    /// stops heartbeating expires this long after its last heartbeat.
    pub lease_secs: u64,
    /// One entry per peer cluster known (alive members, copies held, or heard from).
    pub peers: Vec<PeerStatus>,
    /// Whether the daemon runs in dry run (`--dry-run`): it computes every write and makes
    /// none.
    pub dry_run: bool,
    /// In dry run, what the last full reconcile would have written (`None` otherwise, and
    /// until this member's first reconcile as leader).
    pub pending: Option<PendingWrites>,
    /// Set while imports are suspended (`POST /v1/syncer/suspend`).
    pub suspended: Option<Suspension>,
}

/// The writes a dry run would make, as its last full reconcile found them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PendingWrites {
    /// Copies it would register (a replaced copy counts here and in `unregister`).
    pub register: usize,
    /// Copies it would remove.
    pub unregister: usize,
    /// The first writes (at most 20: `sync::importer::PENDING_SHOWN`), removals first.
    pub items: Vec<PendingWrite>,
}

/// One write a dry run would make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingWrite {
    /// `register` or `unregister`.
    pub op: &'static str,
    /// Why.
    pub reason: super::events::Reason,
    /// The cluster the instance comes from.
    pub origin_cluster: String,
    /// `domain/project/appId/serviceName/version`.
    pub service: String,
    /// The copy's instance id in this registry.
    pub instance_id: String,
    /// The instance's id at its origin, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_instance_id: Option<String>,
}

/// Imports suspended by `POST /v1/syncer/suspend` until `POST /v1/syncer/resume`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suspension {
    /// Since when, in ms since the Unix epoch.
    pub since_ms: u64,
    /// What happens to the copies meanwhile.
    pub copies: CopiesWhileSuspended,
}

/// What a suspension does with the copies this member wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopiesWhileSuspended {
    /// They stay as they are and their heartbeats go on; nothing new is written, nothing
    /// removed.
    Keep,
    /// They are removed (an event each, reason `suspend`), and nothing is written until
    /// resume.
    Drop,
}

/// How this member sees one peer cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerStatus {
    /// The peer's cluster name.
    pub cluster: String,
    /// `following` (a watch stream delivers), `pulled` (its export was pulled this
    /// round), `connecting` (stream started, nothing yet), `unreachable` (alive members but
    /// nothing answers), `gone` (no alive member; its copies are kept for the grace period)
    /// or `idle` (this member does not lead, so it follows nobody).
    pub state: String,
    /// The peer's alive members.
    pub members: Vec<String>,
    /// The member whose export is followed.
    pub following: Option<String>,
    /// The export's run (epoch) and revision held here. The epoch is a string in JSON (it
    /// is above 2^53, which a JavaScript number cannot hold exactly).
    #[serde(serialize_with = "as_string")]
    pub epoch: u64,
    /// See `epoch`.
    pub revision_held: u64,
    /// The revision its member gossips (what it has), when known.
    pub revision_gossiped: Option<u64>,
    /// When it was last heard from (an event on its stream, or a pull), in ms since the
    /// Unix epoch.
    pub last_heard_ms: Option<u64>,
    /// Instances the peer exports, as held here.
    pub exported: usize,
    /// Copies of its instances in the local registry.
    pub copies: usize,
    /// When its members are gone: seconds left before its copies are removed.
    pub grace_left_secs: Option<u64>,
}

/// Serializes a number as a JSON string.
///
/// # Errors
/// The serializer's.
pub fn as_string<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// Questions the reconcile loop answers, and commands it carries out, between changes.
#[derive(Debug)]
pub enum Query {
    /// Per service of the peers: copies expected against present.
    Services {
        /// Most services in the answer.
        limit: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<ServicesReport>,
    },
    /// Per copied instance: origin ids and local id.
    Instances {
        /// Only instances of this origin cluster.
        cluster: Option<String>,
        /// Only instances of services whose name (as in [`ServiceStatus::service`])
        /// contains this.
        service: Option<String>,
        /// Most instances in the answer.
        limit: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<InstancesReport>,
    },
    /// A full reconcile now (`POST /v1/syncer/resync`); with `cluster`, that peer's whole
    /// export is also fetched again (its stream restarts from nothing).
    Resync {
        /// One peer cluster, or all.
        cluster: Option<String>,
        /// The outcome, once the reconcile ended.
        reply: oneshot::Sender<Result<ResyncReport, ResyncError>>,
    },
    /// Suspends imports (`POST /v1/syncer/suspend`).
    Suspend {
        /// What happens to the copies meanwhile.
        copies: CopiesWhileSuspended,
        /// The suspension as set, and the copies removed now (with `drop`).
        reply: oneshot::Sender<(Suspension, usize)>,
    },
    /// Ends a suspension (`POST /v1/syncer/resume`) with a full reconcile.
    Resume {
        /// The suspension that ended (`None` if there was none) and the reconcile's outcome.
        reply: oneshot::Sender<(Option<Suspension>, Option<ResyncReport>)>,
    },
}

/// Why a resync asked for by the admin API was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResyncError {
    /// No peer cluster of that name is known here (nor is it this cluster).
    #[error("no peer cluster named {0:?} is known here; see /v1/syncer/status for the peers")]
    UnknownCluster(String),
    /// Listing the local registry failed; the log says why.
    #[error("listing the local registry failed; see the log")]
    ListingFailed,
}

/// What a reconcile asked for by the admin API did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResyncReport {
    /// Whether this member leads its cluster; only the leader imports, so a follower
    /// reconciles nothing.
    pub is_leader: bool,
    /// Copies registered (new, or replaced because their origin changed).
    pub registered: usize,
    /// Copies removed.
    pub unregistered: usize,
    /// Copies heartbeated.
    pub heartbeated: usize,
    /// Registry writes that failed.
    pub failed: usize,
    /// How long it took, in ms.
    pub elapsed_ms: u64,
}

/// The answer to [`Query::Services`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServicesReport {
    /// Services in all (the answer holds at most the limit).
    pub total: usize,
    /// The services, sorted by origin cluster and name.
    pub services: Vec<ServiceStatus>,
}

/// One service of a peer cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// The cluster it comes from.
    pub origin_cluster: String,
    /// `domain/project/appId/serviceName/version`.
    pub service: String,
    /// Instances the origin exports (copies expected here).
    pub expected: usize,
    /// Copies present in the local registry.
    pub present: usize,
    /// `synced` (present = expected), `syncing` or `extra` (more copies than instances).
    pub status: String,
    /// The last write for it, in ms since the Unix epoch (from the event log).
    pub last_change_ms: Option<u64>,
    /// The last failed write's error.
    pub last_error: Option<String>,
}

/// The answer to [`Query::Instances`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstancesReport {
    /// Instances matching (the answer holds at most the limit).
    pub total: usize,
    /// The instances.
    pub instances: Vec<InstanceView>,
}

/// One instance of a peer cluster and its copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstanceView {
    /// The cluster it comes from.
    pub origin_cluster: String,
    /// `domain/project/appId/serviceName/version`.
    pub service: String,
    /// Its service id at the origin.
    pub origin_service_id: String,
    /// Its instance id at the origin.
    pub origin_instance_id: String,
    /// The copy's instance id here (deterministic, see `sync::mapping`).
    pub instance_id: String,
    /// Its status at the origin (`UP`, `DOWN`, ...).
    pub status: String,
    /// Its endpoints.
    pub endpoints: Vec<String>,
    /// Whether the copy is in the local registry.
    pub present: bool,
    /// Seconds left of the copy's lease, counted from the last full reconcile (which
    /// heartbeats every copy).
    pub lease_left_secs: Option<u64>,
}
