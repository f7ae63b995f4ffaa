//! The published configuration: one immutable [`Snapshot`] behind an arc-swap.
//!
//! Writers (bootstrap load, later xDS) build a whole new snapshot and [`SnapshotStore::publish`]
//! it; readers `load()` once per connection or request and keep that consistent view.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::listener::ListenerConfig;
use super::route::RouteTable;
use crate::upstream::Cluster;

/// The whole data-plane configuration at one version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Monotonic version, bumped on each publish.
    pub version: u64,
    /// Listeners by name, in config order.
    pub listeners: Vec<Arc<ListenerConfig>>,
    /// Live clusters by name.
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// Route tables by name (RDS and inline).
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// Secrets by name (SDS), ready for TLS.
    pub secrets: HashMap<String, Arc<super::secret::Secret>>,
    /// When this snapshot was built.
    pub built_at: Option<SystemTime>,
}

impl Snapshot {
    /// A cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

/// The arc-swap cell holding the current snapshot.
#[derive(Debug)]
pub struct SnapshotStore {
    current: ArcSwap<Snapshot>,
    /// The current snapshot's version, readable without touching its reference count.
    version: std::sync::atomic::AtomicU64,
}

impl Default for SnapshotStore {
    fn default() -> Self {
        SnapshotStore {
            current: ArcSwap::from_pointee(Snapshot::default()),
            version: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl SnapshotStore {
    /// The current snapshot (a cheap, lock-free load).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publish a new snapshot; its version is set to the previous one plus one.
    pub fn publish(&self, mut next: Snapshot) -> Arc<Snapshot> {
        next.version = self.current.load().version + 1;
        next.built_at = Some(SystemTime::now());
        let next = Arc::new(next);
        self.current.store(next.clone());
        self.version
            .store(next.version, std::sync::atomic::Ordering::Release);
        next
    }

    /// The current version (one atomic load): lets a connection keep using the snapshot it
    /// holds while nothing was published, instead of taking a new reference per request.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }
}
