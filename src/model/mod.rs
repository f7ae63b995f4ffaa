//! layer8's compiled configuration: immutable, protobuf-free, ready for the hot path.
//!
//! [`config`](crate::config) builds these types once per update; the data plane only reads them.
//! A [`Snapshot`] is the whole world at one version; it is published through
//! [`SnapshotStore`](snapshot::SnapshotStore) (arc-swap) and never mutated.

pub mod authn;
pub mod cluster;
pub mod listener;
pub mod matcher;
pub mod route;
pub mod secret;
pub mod snapshot;
pub mod tls;

pub use snapshot::{Snapshot, SnapshotStore};
