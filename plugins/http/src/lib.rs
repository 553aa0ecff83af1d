//! HTTP plumbing shared by the registry plugins: a [`client::Client`] that tries several
//! registry endpoints in order with failover and maps transport and status failures onto
//! [`syncer_plugin_api::Error`], and endpoint URL parsing ([`endpoint`]).
//!
//! Registry semantics stay in the plugin crates; this crate knows HTTP and URLs only.

pub mod client;
pub mod endpoint;
