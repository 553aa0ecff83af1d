//! The pulling side of the exchange: one lazily connected channel per peer address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::convert::{snapshot_from_wire, InvalidData};
use super::proto::{sync_client::SyncClient, ExportEvent, PullRequest, WatchRequest};
use crate::sync::importer::PeerExport;

/// Errors of a pull. None of them changes local state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer could not be reached, timed out, or answered an error status. Retry later or
    /// try another member of that cluster.
    #[error("pull from {addr} failed: {status}")]
    Call {
        /// The peer's gRPC address.
        addr: SocketAddr,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The peer's address does not make a valid URI.
    #[error("bad peer address {addr}")]
    Address {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
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
    /// Channels by peer address. A std mutex: only held to clone or insert a channel.
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl ExchangeClient {
    /// A client for the local cluster `cluster`, with a per-pull deadline of `timeout`.
    pub fn new(cluster: String, timeout: Duration) -> Self {
        ExchangeClient {
            cluster,
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, addr: SocketAddr) -> Result<Channel, Error> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(&addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| Error::Address { addr, source })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_lazy();
        channels.insert(addr, channel.clone());
        Ok(channel)
    }

    /// Opens the export stream of the cluster whose member serves gRPC at `addr`, from the
    /// whole export on (`epoch` and `revision` 0) or from what the caller holds.
    ///
    /// # Errors
    /// [`Error::Call`] when the stream cannot be opened.
    pub async fn watch(
        &self,
        addr: SocketAddr,
        epoch: u64,
        revision: u64,
    ) -> Result<tonic::Streaming<ExportEvent>, Error> {
        // The stream lives on: no per-call deadline, only the connect timeout.
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| Error::Address { addr, source })?
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(self.timeout)
            .connect_lazy();
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
            .map_err(|status| Error::Call {
                addr,
                status: Box::new(status),
            })
    }

    /// Pulls the export of the cluster whose member serves gRPC at `addr`.
    ///
    /// # Errors
    /// [`Error::Call`] on transport or status errors (the cached channel is dropped so the
    /// next pull reconnects), [`Error::Invalid`] when the data fails validation.
    pub async fn pull(&self, addr: SocketAddr) -> Result<PeerExport, Error> {
        let mut client =
            SyncClient::new(self.channel(addr)?).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let request = PullRequest {
            cluster: self.cluster.clone(),
            ..Default::default()
        };
        let data = match client.pull(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.channels
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&addr);
                return Err(Error::Call {
                    addr,
                    status: Box::new(status),
                });
            }
        };
        let cluster = data.cluster.clone();
        let snapshot =
            snapshot_from_wire(data).map_err(|source| Error::Invalid { addr, source })?;
        Ok(PeerExport { cluster, snapshot })
    }
}
