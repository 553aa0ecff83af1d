//! Built-in service-center core: an in-memory registry speaking the
//! service-center v4 REST API (under `/v4`) and the Eureka v2 REST API (under
//! `/eureka` and `/eureka/v2`), so a site needs no registry of its own.
//!
//! Layers (DESIGN.md decision 7), imports going one way, api → core → registry → store:
//! - [`api`]: the HTTP layer ([`api::v4`], [`api::eureka`], governance, watch, change log,
//!   RBAC routes): extract, check the shape, call the registry, render;
//! - [`core`]: [`Core`], the registry behind one lock plus the store and RBAC's
//!   runtime; [`Core::run`] owns the store writer, the etcd watch and lease expiry;
//! - [`registry`]: the model, validation, services, instances and leases, discovery, rules,
//!   tags, schemas, dependencies, the change log and feed, RBAC's accounts, the Eureka view;
//! - [`store`]: the storage adaptor (embedded redb file, or etcd) and service-center's key
//!   layout; it receives records and never sees the registry or `Core`. [`Core::new`] is
//!   memory only, [`Core::open`] loads from and writes to a store.
//!
//! One registry serves both APIs: an app registered through `/eureka` is the
//! microservice (`default`/`default`, appId `eureka`, lower-case serviceName,
//! version `0.0.1`), and every microservice of tenant `default/default` is
//! visible through `/eureka` as the app named by its upper-cased serviceName.
//! Eureka-only fields (ports, URLs, VIPs, dataCenterInfo, ...) are kept in a
//! private side record per instance ([`registry::EurekaSide`]); Eureka
//! `metadata` and SC `properties` are the same map.
//!
//! Main types: [`Core`] (shared state), [`router`] (the HTTP API), [`serve`] (over HTTPS:
//! [`serve_tls`] with [`tls::CoreTls`]).

pub mod api;
pub mod core;
pub mod error;
pub mod registry;
pub mod store;
pub mod tls;

pub use self::api::{router, router_with, serve, serve_tls, serve_with, HttpLimits};
pub use self::core::Core;
