//! syncer: a multi-registry syncer daemon.
//!
//! Per-site agents find each other by gossip ([`membership`]), elect a leader per site
//! (first alive member by node name, or an etcd election: [`leadership`]),
//! read their local registry through a plugin (`syncer-plugin-servicecenter`,
//! `syncer-plugin-eureka`), exchange what they found over gRPC ([`exchange`]), and
//! re-register the other sites' instances locally ([`sync`]); what crosses the wire between
//! them is in [`records`], which both use. [`servicecenter`] is the
//! built-in service-center core, so a site can run with nothing else. [`daemon`] wires it all
//! from the validated settings of [`config`], which [`cli`] parses.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod errors;
pub mod etcd;
pub mod exchange;
pub mod leadership;
pub mod listener;
pub mod live;
pub mod logging;
pub mod membership;
pub mod observe;
pub mod purge;
pub mod records;
pub mod registry_auth;
pub mod registry_tls;
pub mod reload;
pub mod servicecenter;
pub mod sync;
pub mod tls;
