//! A small xDS management server for layer8's tests and benchmarks (never shipped).
//!
//! It holds resources by type and name, serves them over ADS (`StreamAggregatedResources`,
//! `DeltaAggregatedResources`) and SDS (`StreamSecrets`, `DeltaSecrets`) on TCP or a Unix socket,
//! follows the xDS protocol as istiod does (wildcard LDS/CDS, named RDS/EDS/SDS, stale nonces
//! ignored, NACKs not answered until the next change), and records every request so a test can
//! wait for an ACK or NACK of a given version. Tests push changes with [`ControlPlane::set`] and
//! [`ControlPlane::remove`] and cut streams with [`ControlPlane::drop_streams`].
//!
//! [`files`] turns files into resources: lists of `@type`-tagged resources, and the config dumps
//! istiod's sidecars produce.

pub mod files;
mod serve;
mod stream_delta;
mod stream_sotw;
pub mod synthetic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use layer8_xds::client::types;
use layer8_xds::pb::google::protobuf::Any;
use tokio::sync::watch;

pub use serve::ServerHandle;

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Stream number (1, 2, ... in order of arrival).
    pub stream: u64,
    /// Whether it came on a Delta stream.
    pub delta: bool,
    /// Type URL.
    pub type_url: String,
    /// SotW `version_info` (empty for Delta).
    pub version_info: String,
    /// `response_nonce`.
    pub nonce: String,
    /// The version of the response this request answers (looked up by nonce).
    pub response_version: Option<String>,
    /// SotW `resource_names`, or Delta `resource_names_subscribe`.
    pub names: Vec<String>,
    /// Delta `resource_names_unsubscribe`.
    pub unsubscribe: Vec<String>,
    /// Delta `initial_resource_versions`.
    pub initial_versions: BTreeMap<String, String>,
    /// `error_detail.message` of a NACK.
    pub error: Option<String>,
    /// `node.id`, when the request carried a node.
    pub node_id: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Request {
    /// An ACK: answers a response and carries no error.
    pub fn is_ack(&self) -> bool {
        !self.nonce.is_empty() && self.error.is_none()
    }

    /// A NACK.
    pub fn is_nack(&self) -> bool {
        self.error.is_some()
    }
}

#[derive(Debug, Default)]
struct TypeResources {
    /// Bumped on every change of this type.
    version: u64,
    /// name -> (resource version, resource).
    items: BTreeMap<String, (String, Any)>,
}

#[derive(Debug, Default)]
struct Store {
    counter: u64,
    types: BTreeMap<String, TypeResources>,
}

#[derive(Debug)]
struct Inner {
    store: Mutex<Store>,
    changed: watch::Sender<u64>,
    kill: watch::Sender<u64>,
    log: Mutex<Vec<Request>>,
    logged: watch::Sender<usize>,
    nonces: Mutex<HashMap<String, String>>,
    next_nonce: AtomicU64,
    next_stream: AtomicU64,
    active_streams: AtomicU64,
}

/// The management server's state; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ControlPlane {
    /// An empty control plane.
    pub fn new() -> ControlPlane {
        ControlPlane {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::default()),
                changed: watch::channel(0).0,
                kill: watch::channel(0).0,
                log: Mutex::new(Vec::new()),
                logged: watch::channel(0).0,
                nonces: Mutex::new(HashMap::new()),
                next_nonce: AtomicU64::new(1),
                next_stream: AtomicU64::new(1),
                active_streams: AtomicU64::new(0),
            }),
        }
    }

    /// Add or replace resources (named by their own `name`/`cluster_name`). Every type touched
    /// gets a new version, and open streams are told.
    pub fn set(&self, resources: impl IntoIterator<Item = Any>) -> Result<String, String> {
        let mut store = lock(&self.inner.store);
        store.counter += 1;
        let v = store.counter;
        for any in resources {
            let name = types::resource_name(&any)?;
            let t = store.types.entry(any.type_url.clone()).or_default();
            t.version = v;
            t.items.insert(name, (v.to_string(), any));
        }
        drop(store);
        self.inner.changed.send_modify(|c| *c += 1);
        Ok(v.to_string())
    }

    /// Replace every resource of `type_url` with `resources`.
    pub fn replace_type(&self, type_url: &str, resources: Vec<Any>) -> Result<String, String> {
        let mut items = BTreeMap::new();
        let mut store = lock(&self.inner.store);
        store.counter += 1;
        let v = store.counter;
        for any in resources {
            if any.type_url != type_url {
                return Err(format!("{} in a set of {type_url}", any.type_url));
            }
            let name = types::resource_name(&any)?;
            let same = store
                .types
                .get(type_url)
                .and_then(|t| t.items.get(&name))
                .filter(|(_, old)| *old == any)
                .map(|(ver, _)| ver.clone());
            items.insert(name, (same.unwrap_or_else(|| v.to_string()), any));
        }
        let t = store.types.entry(type_url.to_string()).or_default();
        t.version = v;
        t.items = items;
        drop(store);
        self.inner.changed.send_modify(|c| *c += 1);
        Ok(v.to_string())
    }

    /// Remove resources by name.
    pub fn remove(&self, type_url: &str, names: &[&str]) -> String {
        let mut store = lock(&self.inner.store);
        store.counter += 1;
        let v = store.counter;
        let t = store.types.entry(type_url.to_string()).or_default();
        t.version = v;
        for n in names {
            t.items.remove(*n);
        }
        drop(store);
        self.inner.changed.send_modify(|c| *c += 1);
        v.to_string()
    }

    /// The current version of a type (what the next response carries as `version_info`).
    pub fn version(&self, type_url: &str) -> String {
        let store = lock(&self.inner.store);
        store
            .types
            .get(type_url)
            .map_or(0, |t| t.version)
            .to_string()
    }

    /// Names of the resources of a type.
    pub fn names(&self, type_url: &str) -> BTreeSet<String> {
        let store = lock(&self.inner.store);
        store
            .types
            .get(type_url)
            .map(|t| t.items.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// End every open stream with UNAVAILABLE (the server keeps listening).
    pub fn drop_streams(&self) {
        self.inner.kill.send_modify(|k| *k += 1);
    }

    /// Streams currently open.
    pub fn active_streams(&self) -> u64 {
        self.inner.active_streams.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.inner.log).clone()
    }

    /// Wait until a request (already received or arriving within `timeout`) satisfies `pred`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Request) -> bool,
    ) -> Result<Request, String> {
        let mut rx = self.inner.logged.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            {
                let log = lock(&self.inner.log);
                if let Some(r) = log[seen..].iter().find(|r| pred(r)) {
                    return Ok(r.clone());
                }
                seen = log.len();
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let log = lock(&self.inner.log);
                let tail: Vec<String> =
                    log.iter().rev().take(8).map(|r| format!("{r:?}")).collect();
                return Err(format!(
                    "no matching request within {timeout:?}; last requests: {tail:#?}"
                ));
            }
        }
    }

    /// Wait for the ACK of `version` of `type_url`.
    pub async fn wait_ack(&self, type_url: &str, version: &str) -> Result<Request, String> {
        self.wait_for(Duration::from_secs(20), |r| {
            r.type_url == type_url && r.is_ack() && r.response_version.as_deref() == Some(version)
        })
        .await
    }

    /// Wait for a NACK of `version` of `type_url`.
    pub async fn wait_nack(&self, type_url: &str, version: &str) -> Result<Request, String> {
        self.wait_for(Duration::from_secs(20), |r| {
            r.type_url == type_url && r.is_nack() && r.response_version.as_deref() == Some(version)
        })
        .await
    }

    // --- used by the stream handlers ---

    fn record(&self, mut r: Request) {
        if !r.nonce.is_empty() {
            r.response_version = lock(&self.inner.nonces).get(&r.nonce).cloned();
        }
        let mut log = lock(&self.inner.log);
        log.push(r);
        let n = log.len();
        drop(log);
        self.inner.logged.send_replace(n);
    }

    fn nonce_for(&self, version: &str) -> String {
        let n = self
            .inner
            .next_nonce
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        lock(&self.inner.nonces).insert(n.clone(), version.to_string());
        n
    }

    /// Type version and the resources a subscription selects (`None` = wildcard).
    fn select(&self, type_url: &str, names: Option<&BTreeSet<String>>) -> (u64, Vec<Item>) {
        let store = lock(&self.inner.store);
        let Some(t) = store.types.get(type_url) else {
            return (0, Vec::new());
        };
        let items = t
            .items
            .iter()
            .filter(|(n, _)| names.is_none_or(|s| s.contains(*n)))
            .map(|(n, (v, a))| Item {
                name: n.clone(),
                version: v.clone(),
                body: a.clone(),
            })
            .collect();
        (t.version, items)
    }

    /// What a Delta client holding `known` lacks: the type version, the resources in scope whose
    /// version differs, and the known names no longer in scope. Clones only what changed.
    fn diff(
        &self,
        type_url: &str,
        names: Option<&BTreeSet<String>>,
        known: &BTreeMap<String, String>,
    ) -> (u64, Vec<Item>, Vec<String>) {
        let store = lock(&self.inner.store);
        let Some(t) = store.types.get(type_url) else {
            return (0, Vec::new(), known.keys().cloned().collect());
        };
        let in_scope = |n: &str| names.is_none_or(|s| s.contains(n));
        let changed = t
            .items
            .iter()
            .filter(|(n, (v, _))| in_scope(n) && known.get(*n) != Some(v))
            .map(|(n, (v, a))| Item {
                name: n.clone(),
                version: v.clone(),
                body: a.clone(),
            })
            .collect();
        let removed = known
            .keys()
            .filter(|n| !in_scope(n) || !t.items.contains_key(*n))
            .cloned()
            .collect();
        (t.version, changed, removed)
    }

    fn stream_opened(&self) -> u64 {
        self.inner.active_streams.fetch_add(1, Ordering::SeqCst);
        self.inner.next_stream.fetch_add(1, Ordering::SeqCst)
    }

    fn stream_closed(&self) {
        self.inner.active_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A resource as a stream sends it.
#[derive(Debug, Clone)]
struct Item {
    name: String,
    version: String,
    body: Any,
}

/// Whether a type is subscribed as a wildcard by an empty first request.
fn wildcard_type(type_url: &str) -> bool {
    type_url == types::LISTENER || type_url == types::CLUSTER
}
