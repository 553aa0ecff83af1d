//! The multi-servicecenters demo: two small apps that live in two different registries and
//! still find each other, because a `syncer` beside each registry copies instances across.
//!
//! - [`account`] is the Eureka-side app (the Spring Boot `account-server` of the original demo):
//!   it serves `GET /checkHealth` and `POST /login` and registers itself to Eureka through
//!   [`eureka`], a plain REST client of the Eureka v2 API.
//! - [`hello`] is the service-center-side app (the Go `hello-server`): it registers itself to a
//!   service-center through [`servicecenter`], discovers `account-server` there (an instance the
//!   syncer imported from Eureka) and forwards `POST /login` to it.
//! - [`lifecycle`] holds what both binaries share: tracing setup and the shutdown signal.
//!
//! The binaries in `src/bin/` only parse flags and call into these modules.

pub mod account;
pub mod eureka;
pub mod hello;
pub mod lifecycle;
pub mod servicecenter;
