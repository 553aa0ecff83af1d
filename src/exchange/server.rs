//! The serving side of the exchange: this cluster's export to peers' leaders (`Watch`,
//! `Pull`), and who this member is (`Identify`).
//!
//! With mutual TLS ([`ExchangeServer::with_tls`]), only callers whose certificate is signed by
//! the CA complete the handshake ([`super::transport::incoming`]), and `Watch` and `Pull`
//! answer only a caller whose certificate names the cluster its request claims; any other
//! gets `PERMISSION_DENIED` and a rate-limited warning names both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::convert::{change_event, full_events, to_wire};
use super::proto::{self, sync_server::SyncServer};
use super::transport::{incoming, LogLimit, PeerIdentity};
use crate::listener::{Activity, TrackRequestsLayer};
use crate::records::packed::{PackedInstance, PackedService};
use crate::sync::exporter::Exporter;
use crate::tls::ExchangeTls;

/// Errors of the exchange server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gRPC server failed while serving.
    #[error("grpc server on {addr} failed")]
    Serve {
        /// The listening address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Limits of the exchange server against hostile or broken peers (DESIGN.md decision 11).
/// Going over one is a gRPC status or a closed stream with a rate-limited warning, never
/// growth.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request decoded, in bytes: requests carry a cluster name and two numbers.
    /// Replies are as large as they need to be ([`super::client::MAX_MESSAGE_BYTES`]).
    pub max_request_bytes: usize,
    /// Largest HTTP/2 header list, in bytes.
    pub max_header_list_bytes: u32,
    /// Streams at once on one connection (HTTP/2 max concurrent streams).
    pub max_streams_per_connection: u32,
    /// Watch streams at once per peer: per name of its certificate with TLS, else per IP.
    pub max_watches_per_peer: usize,
    /// Watch streams at once from all peers together: a peer with many addresses (or many
    /// certificates) cannot open more than this, whatever the per-peer limit. Each site's
    /// leader follows this member with one stream, so this is about the sites it serves.
    pub max_watches: usize,
    /// A watch stream whose peer takes nothing for this long is ended and its peer's
    /// connection closed, with every stream and buffer on it (what it would be sent is not
    /// held meanwhile: [`WATCH_BUFFER`] events at most). A peer that wants it back reconnects
    /// and resumes.
    pub stall_timeout: Duration,
    /// HTTP/2 pings on idle connections, every this long; a ping unanswered within
    /// `keepalive_timeout` closes the connection.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
    /// Connections open at once ([`super::transport::MAX_CONNECTIONS`],
    /// `--rpc-max-connections`).
    pub max_connections: usize,
    /// A connection with no call in flight for this long is closed (a watch stream is a call
    /// in flight for as long as it streams); a peer's channel reconnects when it next calls.
    pub idle_timeout: Duration,
    /// A connection whose first call has not arrived this long after its (TLS) handshake is
    /// closed: a client that connects and sends nothing.
    pub first_request_timeout: Duration,
}

impl Default for Limits {
    /// 16 KiB requests, 16 KiB headers, 32 streams per connection, 8 watch streams per peer
    /// and 32 in all, 60 s stall timeout, pings every 20 s answered within 10 s, 256 connections, idle
    /// connections closed after 120 s (10 s before their first call).
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 * 1024,
            max_header_list_bytes: 16 * 1024,
            max_streams_per_connection: 32,
            max_watches_per_peer: 8,
            max_watches: 32,
            stall_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            max_connections: super::transport::MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(120),
            first_request_timeout: Duration::from_secs(10),
        }
    }
}

/// Watch streams open per peer; a [`WatchPlace`] gives its place back when dropped.
#[derive(Debug, Default)]
struct Watchers {
    by_peer: std::sync::Mutex<HashMap<String, usize>>,
}

/// One open watch stream's place in [`Watchers`].
#[derive(Debug)]
struct WatchPlace {
    watchers: Arc<Watchers>,
    peer: String,
}

impl Watchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.by_peer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for one more stream of `peer`, unless it has `max` already or all peers
    /// together have `max_total`.
    fn enter(self: &Arc<Self>, peer: String, max: usize, max_total: usize) -> Option<WatchPlace> {
        let mut by_peer = self.lock();
        if by_peer.values().sum::<usize>() >= max_total {
            return None;
        }
        let open = by_peer.entry(peer.clone()).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(WatchPlace {
            watchers: self.clone(),
            peer,
        })
    }

    fn total(&self) -> usize {
        self.lock().values().sum()
    }
}

impl Drop for WatchPlace {
    fn drop(&mut self) {
        let mut by_peer = self.watchers.lock();
        if let Some(open) = by_peer.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

/// Serves `/proto.Sync/Pull` from an [`Exporter`].
#[derive(Debug, Clone)]
pub struct ExchangeServer {
    cluster: String,
    /// `--node`, answered to `Identify`.
    node: String,
    plugin_name: &'static str,
    exporter: Arc<Exporter>,
    /// Mutual TLS; `None`: plaintext (loopback or `--insecure` only).
    tls: Option<Arc<ExchangeTls>>,
    /// Rate limit of the "certificate does not name the claimed cluster" warning.
    refused: Arc<LogLimit>,
    /// What one peer may hold.
    limits: Limits,
    /// Watch streams open, per peer.
    watchers: Arc<Watchers>,
    /// Where sent bytes are counted (`syncer_exchange_bytes_total`).
    metrics: Option<Arc<crate::observe::metrics::Metrics>>,
}

impl ExchangeServer {
    /// The current revision, and what brings `request`'s holder to it: nothing when it is
    /// current; the changes since its revision when it resumes a run (same epoch) whose
    /// changes the feed still holds; else the whole export, in parts of at most
    /// [`super::convert::FULL_PART`] records converted as they are sent.
    fn catch_up(
        &self,
        request: &proto::WatchRequest,
    ) -> (
        u64,
        Box<dyn Iterator<Item = proto::ExportEvent> + Send + '_>,
    ) {
        let feed = self.exporter.feed();
        let epoch = feed.epoch();
        if request.epoch == epoch {
            if let Some((revision, changes)) = feed.changes_since(request.revision) {
                let events = changes.into_iter().map(move |change| {
                    change_event(&self.cluster, self.plugin_name, epoch, &change)
                });
                return (revision, Box::new(events));
            }
        }
        let (revision, services, instances) = feed.current_packed();
        let events = full_events(
            &self.cluster,
            self.plugin_name,
            epoch,
            revision,
            services,
            instances,
        );
        (revision, Box::new(events))
    }

    /// A server exporting `cluster`'s data through `exporter`, labelled with the plugin's name.
    pub fn new(cluster: String, plugin_name: &'static str, exporter: Arc<Exporter>) -> Self {
        ExchangeServer {
            cluster,
            node: String::new(),
            plugin_name,
            exporter,
            tls: None,
            refused: Arc::new(LogLimit::default()),
            limits: Limits::default(),
            watchers: Arc::new(Watchers::default()),
            metrics: None,
        }
    }

    /// Serves within `limits` instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts the bytes of messages sent in `metrics` (`syncer_exchange_bytes_total`).
    pub fn with_metrics(mut self, metrics: Arc<crate::observe::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A handle that tells how many watch streams are open (for tests and status).
    pub fn watch_count(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let watchers = self.watchers.clone();
        move || watchers.total()
    }

    /// Answers `Identify` with this member's `node` name.
    pub fn with_node(mut self, node: String) -> Self {
        self.node = node;
        self
    }

    /// Serves over mutual TLS with `tls` (see the module doc).
    pub fn with_tls(mut self, tls: Option<Arc<ExchangeTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// Refuses a caller whose certificate does not name `claimed`.
    fn check_claim<T>(&self, request: &Request<T>, claimed: &str) -> Result<(), Status> {
        let Some(identity) = request.extensions().get::<PeerIdentity>() else {
            // Not from `incoming` (an in-process server in tests): no TLS.
            return if self.tls.is_some() {
                Err(Status::unauthenticated("no verified client certificate"))
            } else {
                Ok(())
            };
        };
        identity.may_speak_for(claimed).map_err(|names| {
            if self.refused.ready(claimed) {
                warn!(from = ?identity.remote, claimed_cluster = %claimed, certificate_names = ?names,
                    "exchange: refused a peer whose certificate does not name the cluster it claims");
            }
            Status::permission_denied(format!(
                "the client certificate names {names:?}, not the cluster {claimed:?} the request claims"
            ))
        })
    }

    /// Serves gRPC on `listener` until `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`Error::Serve`] when the transport fails.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        info!(%addr, tls = self.tls.is_some(), "exchange (grpc) listening");
        let limits = self.limits.clone();
        let incoming = incoming(
            listener,
            self.tls.clone(),
            limits.max_connections,
            (limits.first_request_timeout, limits.idle_timeout),
            shutdown.clone(),
        );
        tonic::transport::Server::builder()
            .layer(TrackRequestsLayer::new(|extensions| {
                extensions
                    .get::<PeerIdentity>()
                    .and_then(|identity| identity.activity.clone())
            }))
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_max_header_list_size(limits.max_header_list_bytes)
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .add_service(
                SyncServer::new(self)
                    .max_encoding_message_size(super::client::MAX_MESSAGE_BYTES)
                    .max_decoding_message_size(limits.max_request_bytes),
            )
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

/// Messages buffered per watch stream before the stream waits for its peer (whole exports
/// are converted a part at a time as the peer takes them, so this bounds what is held).
pub const WATCH_BUFFER: usize = 4;

impl ExchangeServer {
    /// Feeds one watch stream: first what brings the peer to the current revision (see
    /// [`ExchangeServer::catch_up`]: the changes since its revision when it resumes, else the
    /// whole export), then every change; the whole export again whenever the
    /// peer falls more than [`crate::sync::exporter::FEED_CAPACITY`] changes behind. Ends
    /// when the peer goes away.
    async fn stream_export(
        self,
        request: proto::WatchRequest,
        tx: tokio::sync::mpsc::Sender<Result<proto::ExportEvent, Status>>,
        place: WatchPlace,
        connection: Option<Arc<Activity>>,
    ) {
        let stall = self.limits.stall_timeout;
        // Sends one event; false when the peer went away or took nothing for `stall`.
        let send = |event: proto::ExportEvent| {
            let tx = &tx;
            let refused = &self.refused;
            let peer = &place.peer;
            let connection = &connection;
            if let Some(metrics) = &self.metrics {
                metrics.exchange(true, prost::Message::encoded_len(&event));
            }
            async move {
                match tokio::time::timeout(stall, tx.send(Ok(event))).await {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => {
                        if refused.ready(&format!("stall {peer}")) {
                            warn!(peer = %peer, stall_secs = stall.as_secs(),
                                "exchange: watch stream ended and its connection closed, its peer took nothing");
                        }
                        // What is queued for this stream (in the channel, tonic's encoder and
                        // HTTP/2's send buffer) goes only with the connection: a peer that
                        // grants no flow-control window never lets it drain.
                        if let Some(connection) = connection {
                            connection.close();
                        }
                        false
                    }
                }
            }
        };
        let feed = self.exporter.feed();
        let epoch = feed.epoch();
        let mut changes = feed.subscribe();
        // Wait for the first listing: revision 0 means "unknown", not "empty".
        let mut revisions = feed.revisions();
        if revisions.wait_for(|r| *r > 0).await.is_err() {
            return;
        }
        let mut sent = 0;
        let (revision, events) = self.catch_up(&request);
        for event in events {
            if !send(event).await {
                return;
            }
        }
        sent = sent.max(revision);
        loop {
            // A peer that went away ends the task now, not at the next change.
            let received = tokio::select! {
                _ = tx.closed() => return,
                received = changes.recv() => received,
            };
            let event = match received {
                Ok(change) if change.revision <= sent => continue,
                Ok(change) if change.revision == sent + 1 => {
                    sent = change.revision;
                    change_event(&self.cluster, self.plugin_name, epoch, &change)
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (revision, events) = self.catch_up(&proto::WatchRequest::default());
                    debug!(peer = %request.cluster, revision, "watcher behind, sending the whole export");
                    sent = revision;
                    for event in events {
                        if !send(event).await {
                            return;
                        }
                    }
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if !send(event).await {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl proto::sync_server::Sync for ExchangeServer {
    type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<proto::ExportEvent, Status>>;

    async fn watch(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.check_claim(&request, &request.get_ref().cluster)?;
        let identity = request.extensions().get::<PeerIdentity>();
        let connection = identity.and_then(|identity| identity.activity.clone());
        let peer = match identity {
            Some(PeerIdentity {
                names: Some(names), ..
            }) => names.first().cloned().unwrap_or_default(),
            Some(PeerIdentity {
                remote: Some(remote),
                ..
            }) => remote.ip().to_string(),
            _ => "local".to_owned(),
        };
        let Some(place) = self.watchers.enter(
            peer.clone(),
            self.limits.max_watches_per_peer,
            self.limits.max_watches,
        ) else {
            if self.refused.ready(&format!("watches {peer}")) {
                warn!(peer = %peer, limit_per_peer = self.limits.max_watches_per_peer,
                    limit = self.limits.max_watches,
                    "exchange: too many watch streams; refused");
            }
            return Err(Status::resource_exhausted(format!(
                "too many watch streams: at most {} from {peer}, {} in all",
                self.limits.max_watches_per_peer, self.limits.max_watches
            )));
        };
        let request = request.into_inner();
        debug!(peer = %request.cluster, epoch = request.epoch, revision = request.revision, "watch started");
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(self.clone().stream_export(request, tx, place, connection));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn identify(
        &self,
        request: Request<proto::IdentifyRequest>,
    ) -> Result<Response<proto::IdentifyReply>, Status> {
        debug!(peer = %request.get_ref().node, cluster = %request.get_ref().cluster, "identify");
        Ok(Response::new(proto::IdentifyReply {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
        }))
    }

    async fn pull(
        &self,
        request: Request<proto::PullRequest>,
    ) -> Result<Response<proto::SyncData>, Status> {
        let peer = request.get_ref().cluster.clone();
        self.check_claim(&request, &peer)?;
        match self.exporter.listed().await {
            Ok(()) => {
                // Unpacked one record at a time into the message: the export is held once.
                let (_, services, instances) = self.exporter.feed().current_packed();
                let data = to_wire(
                    &self.cluster,
                    self.plugin_name,
                    services.iter().map(PackedService::unpack),
                    instances.iter().map(PackedInstance::unpack),
                );
                debug!(peer = %peer, instances = data.instances.len(), "served pull");
                if let Some(metrics) = &self.metrics {
                    metrics.exchange(true, prost::Message::encoded_len(&data));
                }
                Ok(Response::new(data))
            }
            Err(e) => {
                warn!(peer = %peer, error = %e, "pull: listing the local registry failed");
                Err(Status::unavailable(format!(
                    "cluster {} cannot list its registry: {e}",
                    self.cluster
                )))
            }
        }
    }
}
