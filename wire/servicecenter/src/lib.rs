//! The service-center v4 wire contract, in one place for syncer's built-in core, its
//! `servicecenter` plugin and the sample apps: the records ([`model`]), the request and reply
//! envelopes ([`envelope`]), the error codes and body ([`error`]), the compact string map
//! of their `properties` ([`props`]) and their timestamps ([`stamp`]).
//!
//! The shapes are service-center 1.3.0's (`server/core/proto/services.pb.go`,
//! `server/error/error.go`) with the RBAC codes of service-center 2.x (go-chassis/cari);
//! `../shared/reference/` has the official description and our notes.

pub mod envelope;
pub mod error;
pub mod model;
pub mod props;
pub mod stamp;

pub use envelope::*;
pub use error::ErrorBody;
pub use model::*;
pub use props::Props;
pub use stamp::Stamp;
