//! The dynamic resources received over xDS, with their versions, and how they combine with the
//! bootstrap's static resources into a [`Snapshot`].
//!
//! Each resource is kept compiled (what the data plane uses) and raw (what `/config_dump`
//! shows). A cluster waits in `warming_clusters` until its endpoints arrive, a listener in
//! `warming_listeners` until its route configurations do, or until their initial fetch timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use layer8_xds::pb::google::protobuf::Any;
use tokio::time::Instant;

use crate::model::cluster::{Discovery, EndpointConfig};
use crate::model::listener::{ListenerConfig, NetworkFilter, RouteSource};
use crate::model::route::RouteTable;
use crate::model::secret::{Secret, SecretRef};
use crate::model::Snapshot;
use crate::upstream::Cluster;

/// What `/config_dump` needs to know of a resource besides its compiled form.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The resource version (SotW: the response's `version_info`).
    pub version: String,
    /// When it was accepted.
    pub last_updated: SystemTime,
    /// The resource as received.
    pub raw: Any,
}

/// A compiled resource and its metadata.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    /// Compiled form.
    pub item: T,
    /// Version, time, raw form.
    pub meta: Meta,
}

/// A resource waiting for its dependencies.
#[derive(Debug, Clone)]
pub struct Warming<T> {
    /// The resource.
    pub entry: Entry<T>,
    /// When it stops waiting (`None`: never).
    pub deadline: Option<Instant>,
}

/// Dynamic configuration, plus the static resources it is combined with.
#[derive(Debug, Default)]
pub struct Dynamic {
    static_listeners: Vec<Arc<ListenerConfig>>,
    static_clusters: HashMap<Arc<str>, Arc<Cluster>>,
    static_routes: HashMap<String, Arc<RouteTable>>,
    static_secrets: HashMap<String, Arc<Secret>>,
    /// Active clusters.
    pub clusters: BTreeMap<String, Entry<Arc<Cluster>>>,
    /// Clusters waiting for their endpoints.
    pub warming_clusters: BTreeMap<String, Warming<Arc<Cluster>>>,
    /// Active listeners.
    pub listeners: BTreeMap<String, Entry<Arc<ListenerConfig>>>,
    /// Listeners waiting for their routes.
    pub warming_listeners: BTreeMap<String, Warming<Arc<ListenerConfig>>>,
    /// Route configurations by name.
    pub routes: BTreeMap<String, Entry<Arc<RouteTable>>>,
    /// Endpoint assignments by EDS service name.
    pub endpoints: BTreeMap<String, Entry<Arc<Vec<EndpointConfig>>>>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Entry<Arc<Secret>>>,
    /// Last accepted `version_info` per type (`lds`, `cds`, ...).
    pub version_info: HashMap<&'static str, String>,
    /// EDS service name -> clusters (active or warming) that use it.
    eds_index: HashMap<String, Vec<String>>,
}

impl Dynamic {
    /// Start from the static resources of the bootstrap's snapshot.
    pub fn new(base: &Snapshot) -> Dynamic {
        let mut d = Dynamic {
            static_listeners: base.listeners.clone(),
            static_clusters: base.clusters.clone(),
            static_routes: base.routes.clone(),
            static_secrets: base.secrets.clone(),
            ..Default::default()
        };
        // Static EDS clusters (istio's `local_cluster`) take their endpoints over ADS too.
        d.reindex_eds();
        d
    }

    /// A static (bootstrap) cluster by name.
    pub fn static_cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.static_clusters.get(name)
    }

    /// Whether a cluster of this name is static.
    pub fn is_static_cluster(&self, name: &str) -> bool {
        self.static_clusters.contains_key(name)
    }

    /// Whether a listener of this name is static.
    pub fn is_static_listener(&self, name: &str) -> bool {
        self.static_listeners.iter().any(|l| l.name == name)
    }

    /// The whole configuration as one snapshot: static resources, then active dynamic ones.
    pub fn compose(&self) -> Snapshot {
        let mut clusters = self.static_clusters.clone();
        clusters.reserve(self.clusters.len());
        for e in self.clusters.values() {
            clusters.insert(e.item.name.clone(), e.item.clone());
        }
        let mut routes = self.static_routes.clone();
        routes.reserve(self.routes.len());
        for (n, e) in &self.routes {
            routes.insert(n.clone(), e.item.clone());
        }
        let mut listeners = self.static_listeners.clone();
        listeners.extend(self.listeners.values().map(|e| e.item.clone()));
        Snapshot {
            version: 0,
            listeners,
            clusters,
            routes,
            secrets: self
                .static_secrets
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .chain(
                    self.secrets
                        .iter()
                        .map(|(n, e)| (n.clone(), e.item.clone())),
                )
                .collect(),
            built_at: None,
        }
    }

    /// Rebuild the EDS service name index after clusters changed.
    pub fn reindex_eds(&mut self) {
        let mut idx: HashMap<String, Vec<String>> = HashMap::new();
        let statics = self.static_clusters.values();
        let active = self.clusters.values().map(|e| &e.item);
        let warming = self.warming_clusters.values().map(|w| &w.entry.item);
        for c in statics.chain(active).chain(warming) {
            if c.config.discovery == Discovery::Eds {
                idx.entry(c.config.eds_name().to_string())
                    .or_default()
                    .push(c.config.name.clone());
            }
        }
        self.eds_index = idx;
    }

    /// Clusters (active or warming) fed by an EDS service name.
    pub fn clusters_for_eds(&self, eds_name: &str) -> &[String] {
        self.eds_index.get(eds_name).map_or(&[], Vec::as_slice)
    }

    /// EDS names to subscribe to.
    pub fn eds_interest(&self) -> BTreeSet<String> {
        self.eds_index.keys().cloned().collect()
    }

    /// Route configuration names to subscribe to: those of every listener, static or dynamic,
    /// active or warming.
    pub fn rds_interest(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let dynamic = self.listeners.values().map(|e| &e.item);
        let warming = self.warming_listeners.values().map(|w| &w.entry.item);
        for l in self.static_listeners.iter().chain(dynamic).chain(warming) {
            for (name, _) in rds_names(l) {
                out.insert(name.to_string());
            }
        }
        out
    }

    /// Secrets referenced by clusters and listeners (static and dynamic, active and warming).
    pub fn secret_refs(&self) -> BTreeSet<SecretRef> {
        let statics = self.static_clusters.values();
        let active = self.clusters.values().map(|e| &e.item);
        let warming = self.warming_clusters.values().map(|w| &w.entry.item);
        let mut out: BTreeSet<SecretRef> = statics
            .chain(active)
            .chain(warming)
            .flat_map(|c| c.config.secrets.iter().cloned())
            .collect();
        for l in self.all_listeners() {
            for t in l.tls_contexts() {
                out.extend(t.settings.secret_refs().cloned());
            }
        }
        out
    }

    /// Every listener held: static, active and warming.
    pub fn all_listeners(&self) -> impl Iterator<Item = &Arc<ListenerConfig>> {
        let dynamic = self.listeners.values().map(|e| &e.item);
        let warming = self.warming_listeners.values().map(|w| &w.entry.item);
        self.static_listeners.iter().chain(dynamic).chain(warming)
    }

    /// Build a listener's TLS contexts from the secrets held. `Ok(true)`: every context has its
    /// certificates (the listener need not warm for secrets).
    pub fn resolve_tls(&self, l: &ListenerConfig) -> Result<bool, crate::tls::TlsError> {
        let lookup = |name: &str| {
            self.secrets
                .get(name)
                .map(|e| e.item.clone())
                .or_else(|| self.static_secrets.get(name).cloned())
        };
        let mut ready = true;
        for t in l.tls_contexts() {
            ready &= crate::tls::server::resolve(t, &lookup)?;
        }
        Ok(ready)
    }

    /// Whether a listener's TLS contexts all have their certificates.
    pub fn tls_ready(&self, l: &ListenerConfig) -> bool {
        l.tls_contexts().all(|t| t.server.load().is_some())
    }

    /// Forget endpoint assignments and route configurations nothing references any more (the
    /// server will not say they were removed: their names were unsubscribed). Whether a route
    /// table went (the snapshot must be republished).
    pub fn prune_unreferenced(&mut self) -> bool {
        let eds = self.eds_interest();
        self.endpoints.retain(|n, _| eds.contains(n));
        let rds = self.rds_interest();
        let before = self.routes.len();
        self.routes.retain(|n, _| rds.contains(n));
        self.routes.len() != before
    }

    /// The earliest warming deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        let c = self.warming_clusters.values().filter_map(|w| w.deadline);
        let l = self.warming_listeners.values().filter_map(|w| w.deadline);
        c.chain(l).min()
    }

    /// Whether every route configuration a listener needs is here.
    pub fn routes_ready(&self, l: &ListenerConfig) -> bool {
        rds_names(l).all(|(n, _)| self.routes.contains_key(n) || self.static_routes.contains_key(n))
    }
}

/// The RDS route configuration names a listener's HTTP connection managers use, with each one's
/// initial fetch timeout.
pub fn rds_names(
    l: &ListenerConfig,
) -> impl Iterator<Item = (&str, Option<std::time::Duration>)> + '_ {
    l.filter_chains
        .iter()
        .chain(l.default_chain.iter())
        .filter_map(|c| match &c.terminal {
            NetworkFilter::Http(h) => match &h.routes {
                RouteSource::Rds(n) => Some((n.as_str(), h.rds_fetch_timeout)),
                RouteSource::Static(_) => None,
            },
            NetworkFilter::TcpProxy(_) | NetworkFilter::Runtime(_) | NetworkFilter::Actuator => {
                None
            }
        })
}
