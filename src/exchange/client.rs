//! The pulling side of the exchange: one lazily connected channel per peer address and
//! cluster, over mutual TLS naming that cluster when TLS is configured
//! ([`ExchangeClient::with_tls`], [`super::transport::channel`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use tonic::transport::Channel;

use super::convert::{snapshot_from_wire, InvalidData};
use super::proto::{
    sync_client::SyncClient, ExportEvent, IdentifyReply, IdentifyRequest, PullRequest, WatchRequest,
};
use super::transport;
use crate::errors::error_chain;
use crate::records::PeerExport;
use crate::tls::ExchangeTls;

/// Errors of a pull. None of them changes local state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer could not be reached, timed out, or answered an error status. Retry later or
    /// try another member of that cluster.
    #[error("call to {addr} failed: {status}")]
    Call {
        /// The peer's gRPC address.
        addr: SocketAddr,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The peer's address does not make a valid URI, or its cluster name a TLS server name.
    #[error("bad peer address {addr}: {reason}")]
    Address {
        /// The address.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
    /// The peer answered data that fails validation; nothing of it was used.
    #[error("peer {addr} sent invalid data")]
    Invalid {
        /// The peer's gRPC address.
        addr: SocketAddr,
        /// What was wrong.
        #[source]
        source: InvalidData,
    },
}

/// Largest export message accepted, in bytes (a whole export of 100,000 instances is tens of
/// megabytes; tonic's default of 4 MiB is too small).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Pulls peers' exports, caching one channel per address.
#[derive(Debug)]
pub struct ExchangeClient {
    /// Name of the local cluster, sent for the peer's logs.
    cluster: String,
    /// Deadline of one pull, connection included.
    timeout: Duration,
    /// Channels by peer address and cluster. A std mutex: only held to clone or insert a
    /// channel.
    channels: Mutex<HashMap<(SocketAddr, String), Channel>>,
    /// Mutual TLS; `None`: plaintext.
    tls: Option<Arc<ExchangeTls>>,
    /// This member's node name, sent with `Identify`.
    node: String,
    /// Where received bytes are counted (`syncer_exchange_bytes_total`).
    metrics: Option<Arc<crate::observe::metrics::Metrics>>,
}

impl ExchangeClient {
    /// A client for the local cluster `cluster`, with a per-pull deadline of `timeout`.
    pub fn new(cluster: String, timeout: Duration) -> Self {
        ExchangeClient {
            cluster,
            timeout,
            channels: Mutex::new(HashMap::new()),
            tls: None,
            node: String::new(),
            metrics: None,
        }
    }

    /// Counts the bytes of messages received in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::observe::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts `n` bytes of messages received (the watch stream's reader calls this).
    pub fn received(&self, n: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.exchange(false, n);
        }
    }

    /// Connects with mutual TLS (`Some`), or in plaintext (`None`).
    pub fn with_tls(mut self, tls: Option<Arc<ExchangeTls>>) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS state used, if any.
    pub fn tls(&self) -> Option<&Arc<ExchangeTls>> {
        self.tls.as_ref()
    }

    /// Sends `node` as this member's name with `Identify`.
    pub fn with_node(mut self, node: String) -> Self {
        self.node = node;
        self
    }

    fn channel(&self, addr: SocketAddr, cluster: &str) -> Result<Channel, Error> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (addr, cluster.to_owned());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let timeout = self.timeout;
        let channel = transport::channel(
            |e| e.connect_timeout(timeout).timeout(timeout),
            addr,
            cluster,
            self.tls.as_ref(),
        )
        .map_err(|reason| Error::Address { addr, reason })?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    fn forget(&self, addr: SocketAddr, cluster: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(addr, cluster.to_owned()));
    }

    /// Asks the member serving the exchange at `addr`, gossiped as a member of `cluster`,
    /// which node it is. With TLS the handshake has proved that its certificate names
    /// `cluster` (signed by the CA) before it answers.
    ///
    /// # Errors
    /// [`Error::Call`] when it cannot be reached, refuses, or fails the TLS handshake (the
    /// status then carries the TLS reason, e.g. the names its certificate carries).
    pub async fn identify(&self, addr: SocketAddr, cluster: &str) -> Result<IdentifyReply, Error> {
        let mut client = SyncClient::new(self.channel(addr, cluster)?);
        let request = IdentifyRequest {
            cluster: self.cluster.clone(),
            node: self.node.clone(),
        };
        match client.identify(request).await {
            Ok(reply) => Ok(reply.into_inner()),
            Err(status) => {
                self.forget(addr, cluster);
                Err(call_error(addr, status))
            }
        }
    }

    /// Opens the export stream of `cluster`, whose member serves gRPC at `addr`, from the
    /// whole export on (`epoch` and `revision` 0) or from what the caller holds.
    ///
    /// # Errors
    /// [`Error::Call`] when the stream cannot be opened.
    pub async fn watch(
        &self,
        addr: SocketAddr,
        cluster: &str,
        epoch: u64,
        revision: u64,
    ) -> Result<tonic::Streaming<ExportEvent>, Error> {
        // The stream lives on: no per-call deadline, only the connect timeout.
        let timeout = self.timeout;
        let channel = transport::channel(
            |e| {
                e.connect_timeout(timeout)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(timeout)
            },
            addr,
            cluster,
            self.tls.as_ref(),
        )
        .map_err(|reason| Error::Address { addr, reason })?;
        let mut client = SyncClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let request = WatchRequest {
            cluster: self.cluster.clone(),
            epoch,
            revision,
        };
        client
            .watch(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| call_error(addr, status))
    }

    /// Pulls the export of `cluster`, whose member serves gRPC at `addr`.
    ///
    /// # Errors
    /// [`Error::Call`] on transport or status errors (the cached channel is dropped so the
    /// next pull reconnects), [`Error::Invalid`] when the data fails validation.
    pub async fn pull(&self, addr: SocketAddr, cluster: &str) -> Result<PeerExport, Error> {
        let mut client = SyncClient::new(self.channel(addr, cluster)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let request = PullRequest {
            cluster: self.cluster.clone(),
            ..Default::default()
        };
        let data = match client.pull(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.forget(addr, cluster);
                return Err(call_error(addr, status));
            }
        };
        self.received(prost::Message::encoded_len(&data));
        let cluster = data.cluster.clone();
        let snapshot =
            snapshot_from_wire(data).map_err(|source| Error::Invalid { addr, source })?;
        Ok(PeerExport { cluster, snapshot })
    }
}

/// A call's error, with the transport's causes (a TLS refusal says why) in the message.
fn call_error(addr: SocketAddr, status: tonic::Status) -> Error {
    let status = match std::error::Error::source(&status) {
        Some(source) => {
            let reason = error_chain(source);
            if status.message().contains(&reason) {
                status
            } else {
                tonic::Status::new(status.code(), format!("{}: {reason}", status.message()))
            }
        }
        None => status,
    };
    Error::Call {
        addr,
        status: Box::new(status),
    }
}
