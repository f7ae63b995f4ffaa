//! layer8: an Envoy-compatible data plane for Istio.
//!
//! Config path: [`config`] (bootstrap / xDS protos -> compiled [`model`]) -> [`model::SnapshotStore`]
//! (arc-swap). Request path: [`listener`] (accept, listener filters, filter-chain match) ->
//! [`tcp`] or [`http`] (connection manager -> router) -> [`upstream`] (cluster, load balancer,
//! connection pool). [`admin`] serves Envoy's admin API; [`server`] ties the lifecycle together.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod config;
pub mod http;
pub mod listener;
pub mod model;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod workers;
pub mod xds;

/// The embedded default bootstrap served when layer8 starts without `-c`/`--config-yaml`.
pub const DEFAULT_BOOTSTRAP: &str = include_str!("default-bootstrap.yaml");
