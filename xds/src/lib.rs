//! layer8's side of the xDS wire.
//!
//! - [`pb`]: every Envoy protobuf type layer8 reads: `xds-api`'s generated types plus the extension
//!   APIs vendored in `proto/envoy-ext` (tcp_proxy, inspectors, RBAC, ...), one module tree.
//! - [`json`]: proto3 JSON / YAML decoding of any of them, with `@type` in `Any`, as Envoy reads a
//!   bootstrap or a config dump.
//! - [`registry`]: the descriptor pool behind the JSON mapping and `/config_dump` rendering.
//! - [`client`]: the xDS client (ADS or SDS, SotW or Delta) that hands updates to its owner and
//!   ACKs or NACKs them by its verdict.

pub mod json;
pub mod registry;

/// Generated protobuf types: `xds-api`'s tree, plus the vendored extensions.
pub mod pb {
    pub use xds_api::pb::*;

    /// Extension types compiled from `proto/envoy-ext` (their core types are xds-api's).
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod ext {
        include!(concat!(env!("OUT_DIR"), "/ext.rs"));
    }
}
pub mod client;
