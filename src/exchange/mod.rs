//! The exchange between clusters' leaders over gRPC (tonic), defined in `proto/syncer.proto`.
//!
//! A leader serves `Pull` ([`server::ExchangeServer`]): its cluster's exported services and
//! instances. Other clusters' leaders pull it ([`client::ExchangeClient`]). Wire types are
//! converted to the plugin API's model in one place ([`convert`]). Connections are plain TCP
//! or mutual TLS ([`transport`]); with TLS, a gossiped member counts only once it has proved
//! its cluster ([`verify`]).

pub mod client;
pub mod convert;
pub mod server;
pub mod transport;
pub mod verify;

/// Generated wire types and service stubs of `proto/syncer.proto` (package `proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("proto");
}
