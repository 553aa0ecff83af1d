//! The `Pull` side of the exchange: serves this cluster's export to peers' leaders.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::convert::snapshot_to_wire;
use super::proto::{self, sync_server::SyncServer};
use crate::sync::exporter::Exporter;

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

/// Serves `/proto.Sync/Pull` from an [`Exporter`].
#[derive(Debug, Clone)]
pub struct ExchangeServer {
    cluster: String,
    plugin_name: &'static str,
    exporter: Arc<Exporter>,
}

impl ExchangeServer {
    /// A server exporting `cluster`'s data through `exporter`, labelled with the plugin's name.
    pub fn new(cluster: String, plugin_name: &'static str, exporter: Arc<Exporter>) -> Self {
        ExchangeServer {
            cluster,
            plugin_name,
            exporter,
        }
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
        info!(%addr, "exchange (grpc) listening");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(SyncServer::new(self))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

#[tonic::async_trait]
impl proto::sync_server::Sync for ExchangeServer {
    async fn pull(
        &self,
        request: Request<proto::PullRequest>,
    ) -> Result<Response<proto::SyncData>, Status> {
        let peer = request.get_ref().cluster.clone();
        match self.exporter.export().await {
            Ok(snapshot) => {
                debug!(peer = %peer, instances = snapshot.instances.len(), "served pull");
                Ok(Response::new(snapshot_to_wire(
                    &self.cluster,
                    self.plugin_name,
                    &snapshot,
                )))
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
