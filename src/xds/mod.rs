//! Dynamic configuration over xDS: stream -> decode/validate -> translate -> snapshot -> swap.
//!
//! [`start`] opens the ADS stream the bootstrap's `dynamic_resources` names (and one SotW SDS
//! stream per SDS cluster referenced by a resource, e.g. istio's `sds-grpc`). One task, the
//! applier, owns the [`Dynamic`](store::Dynamic) store: it takes each update from the clients,
//! applies it ([`apply`]), publishes a new snapshot when the composed configuration changed, has
//! the listener manager follow, and answers with a verdict the client turns into an ACK or NACK
//! together with the names to subscribe to next (RDS from listeners, EDS from clusters, SDS from
//! transport sockets). None of this runs on the request path: workers only load snapshots, and
//! an EDS update only swaps one cluster's endpoint set.

pub mod apply;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use layer8_xds::client::{
    self, types, ClientConfig, ClientHandle, Event, Interest, Service, Update, Verdict,
};
use tokio::sync::mpsc;

use crate::config::config_source::{self, Server};
use crate::config::{ConfigError, Ctx};
use crate::model::secret::SecretSource;
use crate::server::State;
use crate::stats;
use apply::Outcome;
use store::Dynamic;

/// The xDS side of the process, reachable from the admin API.
#[derive(Debug)]
pub struct Xds {
    store: Mutex<Dynamic>,
}

impl Xds {
    /// The dynamic resources (for `/config_dump`); not for the request path.
    pub fn store(&self) -> MutexGuard<'_, Dynamic> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which stream an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stream {
    Ads,
    Sds(String),
}

/// Start xDS if the bootstrap asks for it. Errors name the bootstrap field at fault.
pub fn start(state: &Arc<State>) -> Result<bool, ConfigError> {
    let b = &state.bootstrap;
    let Some(server) = config_source::ads(b)? else {
        return Ok(false);
    };
    let dr = b.dynamic_resources.clone().unwrap_or_default();
    let base = state.snapshots.load();
    let xds = Arc::new(Xds {
        store: Mutex::new(Dynamic::new(&base)),
    });
    let _ = state.xds.set(xds.clone());
    for s in [
        "listener_manager.lds.update_attempt",
        "cluster_manager.cds.update_attempt",
        "cluster_manager.cluster_added",
        "cluster_manager.cluster_modified",
        "cluster_manager.cluster_removed",
        "listener_manager.listener_added",
        "listener_manager.listener_modified",
        "listener_manager.listener_removed",
    ] {
        let _ = stats::counter(s);
    }
    stats::gauge("control_plane.connected_state").set(0.0);
    let (tx, rx) = mpsc::channel(64);
    let mut initial = Vec::new();
    if dr.cds_config.is_some() {
        initial.push((types::CLUSTER.to_string(), Interest::Wildcard));
    }
    if dr.lds_config.is_some() {
        initial.push((types::LISTENER.to_string(), Interest::Wildcard));
    }
    let mut applier = Applier {
        state: state.clone(),
        xds,
        tx,
        ads: None,
        sds: BTreeMap::new(),
        awaiting_initial: initial.iter().map(|(t, _)| t.clone()).collect(),
        release_at: None,
    };
    // Names the static resources already need.
    let (rds, eds, secrets) = {
        let d = applier.xds.store();
        (d.rds_interest(), d.eds_interest(), d.secret_refs())
    };
    let ads_secrets: BTreeSet<String> = secrets
        .iter()
        .filter(|r| r.source == SecretSource::Ads)
        .map(|r| r.name.clone())
        .collect();
    for (t, names) in [
        (types::ROUTE, rds),
        (types::ENDPOINT, eds),
        (types::SECRET, ads_secrets),
    ] {
        if !names.is_empty() {
            initial.push((t.to_string(), Interest::Names(names)));
        }
    }
    if !applier.awaiting_initial.is_empty() {
        stats::gauge("server.state").set(2.0); // INITIALIZING until LDS and CDS answer
    }
    applier.ads = Some(applier.open(Stream::Ads, server, Service::Ads, initial));
    applier.sync_sds_streams();
    tokio::spawn(applier.run(rx));
    Ok(true)
}

/// How long after the last large update config-time memory is given back.
const RELEASE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

async fn until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Applier {
    state: Arc<State>,
    xds: Arc<Xds>,
    tx: mpsc::Sender<(Stream, Event)>,
    ads: Option<ClientHandle>,
    sds: BTreeMap<String, ClientHandle>,
    /// Types whose first response is still awaited (server.state is INITIALIZING meanwhile).
    awaiting_initial: BTreeSet<String>,
    /// When to give config-time memory back (a moment after the last large update).
    release_at: Option<tokio::time::Instant>,
}

impl Applier {
    /// Start a client whose events reach the applier tagged with `stream`.
    fn open(
        &self,
        stream: Stream,
        server: Server,
        service: Service,
        initial: Vec<(String, Interest)>,
    ) -> ClientHandle {
        let name = match &stream {
            Stream::Ads => "ads".to_string(),
            Stream::Sds(c) => format!("sds:{c}"),
        };
        let mut node = self.state.bootstrap.node.clone().unwrap_or_default();
        let o = &self.state.options;
        if !o.service_node.is_empty() {
            node.id.clone_from(&o.service_node);
        }
        if !o.service_cluster.is_empty() {
            node.cluster.clone_from(&o.service_cluster);
        }
        let cfg = ClientConfig {
            name,
            target: server.target,
            tls: server.tls,
            protocol: server.protocol,
            service,
            node: Some(node),
            node_on_first_message_only: server.node_first_only,
            backoff: server.backoff,
            type_order: types::ads_order(),
        };
        let (etx, mut erx) = mpsc::channel(16);
        let handle = client::spawn(cfg, initial, etx);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = erx.recv().await {
                if tx.send((stream.clone(), ev)).await.is_err() {
                    break;
                }
            }
        });
        handle
    }

    async fn run(mut self, mut rx: mpsc::Receiver<(Stream, Event)>) {
        loop {
            let deadline = self.xds.store().next_deadline();
            let sleep = until(deadline);
            let release = until(self.release_at);
            tokio::select! {
                ev = rx.recv() => match ev {
                    None => return,
                    Some((stream, ev)) => self.event(stream, ev).await,
                },
                _ = release => {
                    self.release_at = None;
                    crate::server::release_config_memory();
                }
                _ = sleep => {
                    let out = apply::expire_warming(&mut self.xds.store(), tokio::time::Instant::now());
                    let _ = self.commit(&out).await;
                    self.record_gauges();
                }
            }
        }
    }

    async fn event(&mut self, stream: Stream, ev: Event) {
        match ev {
            Event::Connected => {
                if stream == Stream::Ads {
                    stats::gauge("control_plane.connected_state").set(1.0);
                }
                tracing::info!(?stream, "xDS stream connected");
            }
            Event::Disconnected(e) => {
                if stream == Stream::Ads {
                    stats::gauge("control_plane.connected_state").set(0.0);
                }
                tracing::warn!(?stream, error = %e, "xDS stream disconnected; serving the last good configuration");
            }
            Event::Update { update, reply } => {
                let verdict = self.update(&update).await;
                let _ = reply.send(verdict);
            }
        }
    }

    async fn update(&mut self, u: &Update) -> Verdict {
        let short = types::short(&u.type_url);
        let (attempt_prefix, is_global) = match u.type_url.as_str() {
            types::LISTENER => ("listener_manager.lds.", true),
            types::CLUSTER => ("cluster_manager.cds.", true),
            _ => ("", false),
        };
        if is_global {
            stats::counter(format!("{attempt_prefix}update_attempt")).increment(1);
        }
        // Only clusters and listeners decide what else to subscribe to.
        let shapes_interest = matches!(u.type_url.as_str(), types::CLUSTER | types::LISTENER);
        let before = if shapes_interest {
            self.interest_now()
        } else {
            Vec::new()
        };
        let mut out = {
            let mut d = self.xds.store();
            match u.type_url.as_str() {
                types::CLUSTER => apply::clusters(&mut d, u),
                types::ENDPOINT => apply::endpoints(&mut d, u),
                types::LISTENER => apply::listeners(&mut d, u),
                types::ROUTE => apply::routes(&mut d, u),
                types::SECRET => apply::secrets(&mut d, u),
                other => {
                    let mut o = Outcome::default();
                    for r in &u.resources {
                        o.rejected
                            .push((r.name.clone(), format!("unsupported resource type {other}")));
                    }
                    o
                }
            }
        };
        let bind_failures = self.commit(&out).await;
        if u.type_url == types::LISTENER {
            out.rejected.extend(bind_failures);
        } else {
            for (_, m) in bind_failures {
                tracing::warn!("listener could not start: {m}");
            }
        }
        // Decoding and translating leaves free heap behind; return it once updates pause.
        self.release_at = Some(tokio::time::Instant::now() + RELEASE_DELAY);
        if out.rejected.is_empty() {
            self.xds
                .store()
                .version_info
                .insert(short, u.version_info.clone());
            if is_global {
                stats::counter(format!("{attempt_prefix}update_success")).increment(1);
                stats::store().set_text(&format!("{attempt_prefix}version_text"), &u.version_info);
            }
        } else {
            for (_, m) in &out.rejected {
                tracing::warn!(type_url = %u.type_url, "rejected: {m}");
            }
            if is_global {
                stats::counter(format!("{attempt_prefix}update_rejected")).increment(1);
            }
        }
        if self.awaiting_initial.remove(&u.type_url) && self.awaiting_initial.is_empty() {
            stats::gauge("server.state").set(0.0);
        }
        self.record_gauges();
        let after = if shapes_interest {
            self.sync_sds_streams();
            if self.xds.store().prune_unreferenced() {
                let _ = self
                    .commit(&Outcome {
                        publish: true,
                        ..Default::default()
                    })
                    .await;
            }
            self.interest_now()
        } else {
            Vec::new()
        };
        Verdict {
            rejected: out.rejected,
            interest: after
                .into_iter()
                .zip(before)
                .filter(|(a, b)| a != b)
                .map(|(a, _)| a)
                .collect(),
        }
    }

    /// What the ADS stream should subscribe to for the named types.
    fn interest_now(&self) -> Vec<(String, Interest)> {
        let d = self.xds.store();
        let ads_secrets = d
            .secret_refs()
            .into_iter()
            .filter(|r| r.source == SecretSource::Ads)
            .map(|r| r.name)
            .collect();
        let names = |n: BTreeSet<String>| {
            if n.is_empty() {
                Interest::None
            } else {
                Interest::Names(n)
            }
        };
        vec![
            (types::ENDPOINT.to_string(), names(d.eds_interest())),
            (types::ROUTE.to_string(), names(d.rds_interest())),
            (types::SECRET.to_string(), names(ads_secrets)),
        ]
    }

    /// Open (or update) one SDS stream per SDS cluster that resources reference.
    fn sync_sds_streams(&mut self) {
        let refs = self.xds.store().secret_refs();
        let mut by_cluster: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in refs {
            if let SecretSource::Cluster(c) = r.source {
                by_cluster.entry(c).or_default().insert(r.name);
            }
        }
        // Streams whose secrets nobody references any more unsubscribe (and stay open, idle).
        for (cluster, h) in &self.sds {
            if !by_cluster.contains_key(cluster) {
                h.set_interest(types::SECRET, Interest::None);
            }
        }
        for (cluster, names) in by_cluster {
            if let Some(h) = self.sds.get(&cluster) {
                h.set_interest(types::SECRET, Interest::Names(names));
                continue;
            }
            let ctx = Ctx::new("sds_config", &cluster);
            match config_source::cluster_server(&self.state.bootstrap, &cluster, &ctx) {
                Ok(server) => {
                    let initial = vec![(types::SECRET.to_string(), Interest::Names(names))];
                    let h = self.open(Stream::Sds(cluster.clone()), server, Service::Sds, initial);
                    self.sds.insert(cluster, h);
                }
                Err(e) => tracing::warn!("cannot open SDS stream: {e}"),
            }
        }
    }

    /// Publish what changed and have the listener manager follow. Listeners that cannot bind are
    /// dropped again and returned as rejections.
    async fn commit(&self, out: &Outcome) -> Vec<(String, String)> {
        if !out.publish {
            return Vec::new();
        }
        let snap = self.state.snapshots.publish(self.xds.store().compose());
        stats::gauge("cluster_manager.active_clusters").set(snap.clusters.len() as f64);
        if !out.listeners_changed {
            return Vec::new();
        }
        let mut mgr = self.state.listeners.lock().await;
        let failed = mgr.apply(&snap.listeners, &self.state).await;
        if failed.is_empty() {
            return Vec::new();
        }
        let mut rejected = Vec::new();
        {
            let mut d = self.xds.store();
            for e in failed {
                // Envoy keeps the last good version of a listener whose update cannot bind.
                match out.replaced_listeners.iter().find(|(n, _)| *n == e.name) {
                    Some((n, prev)) => {
                        d.listeners.insert(n.clone(), prev.clone());
                    }
                    None => {
                        d.listeners.remove(&e.name);
                    }
                }
                rejected.push((e.name.clone(), e.to_string()));
            }
        }
        let snap = self.state.snapshots.publish(self.xds.store().compose());
        let _ = mgr.apply(&snap.listeners, &self.state).await;
        rejected
    }

    fn record_gauges(&self) {
        let d = self.xds.store();
        stats::gauge("cluster_manager.warming_clusters").set(d.warming_clusters.len() as f64);
        stats::gauge("listener_manager.total_listeners_warming")
            .set(d.warming_listeners.len() as f64);
        stats::gauge("listener_manager.total_listeners_active")
            .set((self.state.snapshots.load().listeners.len()) as f64);
    }
}
