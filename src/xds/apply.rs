//! Applying one xDS update to the [`Dynamic`] store: decode each resource, translate it, and
//! keep it (or reject it, keeping the last good version), as Envoy does: resources are judged one
//! by one, the valid ones take effect, and any rejection NACKs the update.

use std::sync::Arc;
use std::time::SystemTime;

use layer8_xds::client::{Resource, Update};
use layer8_xds::pb::envoy::config::cluster::v3::Cluster as PbCluster;
use layer8_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use layer8_xds::pb::envoy::config::listener::v3::Listener as PbListener;
use layer8_xds::pb::envoy::config::route::v3::RouteConfiguration;
use layer8_xds::pb::envoy::extensions::transport_sockets::tls::v3::Secret as PbSecret;
use tokio::time::Instant;

use super::store::{rds_names, Dynamic, Entry, Meta, Warming};
use crate::config::{self, Ctx, Notes};
use crate::model::cluster::Discovery;
use crate::stats;
use crate::upstream::Cluster;

/// What applying an update did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Rejected resources: `(name, message)`.
    pub rejected: Vec<(String, String)>,
    /// The composed snapshot changed (publish a new one).
    pub publish: bool,
    /// The set of active listeners changed (the listener manager must follow).
    pub listeners_changed: bool,
    /// Clusters were added, changed or removed (EDS interest may change).
    pub clusters_changed: bool,
    /// Active listeners this update replaced: put back if the new version cannot bind.
    pub replaced_listeners: Vec<(String, Entry<Arc<crate::model::listener::ListenerConfig>>)>,
}

impl Outcome {
    fn reject(&mut self, name: &str, message: impl Into<String>) {
        self.rejected.push((name.to_string(), message.into()));
    }
}

fn meta(r: &Resource, now: SystemTime) -> Meta {
    Meta {
        version: r.version.clone(),
        last_updated: now,
        raw: r.body.clone(),
    }
}

/// Decode a resource, or record it as rejected (`kind 'name': malformed: ...`).
fn decode<M: prost::Message + prost::Name + Default>(
    r: &Resource,
    kind: &str,
    out: &mut Outcome,
) -> Option<M> {
    match r.body.to_msg() {
        Ok(m) => Some(m),
        Err(e) => {
            out.reject(&r.name, format!("{kind} '{}': malformed: {e}", r.name));
            None
        }
    }
}

/// Below this many encoded bytes an update is decoded and translated on the applier's thread
/// alone (an EDS or RDS push of a few resources: threads would cost more than they save).
const PARALLEL_MIN_BYTES: usize = 256 * 1024;

/// The cores to translate on (read once: it may read cgroup files).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` over `items`, in order: split across the machine's cores for big updates (a full
/// snapshot from istiod), where decoding and translating each resource is independent work.
fn par_map<R: Send>(items: &[Resource], f: impl Fn(&Resource) -> R + Sync) -> Vec<R> {
    let threads = cores().min(items.len());
    let bytes: usize = items.iter().map(|r| r.body.value.len()).sum();
    if threads < 2 || bytes < PARALLEL_MIN_BYTES {
        return items.iter().map(f).collect();
    }
    // Chunks of about equal bytes, not equal counts: one route configuration may hold most of
    // the routes.
    let per = bytes.div_ceil(threads);
    let mut bounds = vec![0];
    let mut acc = 0;
    for (i, r) in items.iter().enumerate() {
        acc += r.body.value.len();
        if acc >= per * bounds.len() && i + 1 < items.len() && bounds.len() < threads {
            bounds.push(i + 1);
        }
    }
    bounds.push(items.len());
    let chunks: Vec<&[Resource]> = bounds.windows(2).map(|w| &items[w[0]..w[1]]).collect();
    let f = &f;
    std::thread::scope(|s| {
        let rest: Vec<_> = chunks[1..]
            .iter()
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = chunks[0].iter().map(f).collect();
        for h in rest {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

fn deadline(timeout: Option<std::time::Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

fn log_skips(notes: &Notes) {
    for n in &notes.skipped {
        tracing::debug!("skipped: {n}");
    }
    if !notes.skipped.is_empty() {
        stats::counter("layer8.filters_skipped").increment(notes.skipped.len() as u64);
    }
}

/// CDS.
pub fn clusters(d: &mut Dynamic, u: &Update) -> Outcome {
    let mut out = Outcome::default();
    let now = SystemTime::now();
    let mut seen = std::collections::HashSet::new();
    let compiled = par_map(&u.resources, |r| {
        let pb = r
            .body
            .to_msg::<PbCluster>()
            .map_err(|e| format!("cluster '{}': malformed: {e}", r.name))?;
        let mut notes = Notes::default();
        let cfg = config::cluster::translate(&pb, &mut notes).map_err(|e| e.to_string())?;
        Ok::<_, String>((cfg, notes))
    });
    for (r, compiled) in u.resources.iter().zip(compiled) {
        if !seen.insert(r.name.as_str()) {
            out.reject(
                &r.name,
                format!("cluster '{}': name: duplicate in one update", r.name),
            );
            continue;
        }
        let (cfg, notes) = match compiled {
            Ok(c) => c,
            Err(e) => {
                out.reject(&r.name, e);
                continue;
            }
        };
        if d.is_static_cluster(&cfg.name) {
            out.reject(
                &r.name,
                format!(
                    "cluster '{}': name: a static cluster of this name exists",
                    cfg.name
                ),
            );
            continue;
        }
        log_skips(&notes);
        let hash = cfg.config_hash;
        // Unchanged resources keep their live state and the version they arrived with.
        if let Some(active) = d.clusters.get(&cfg.name) {
            if active.item.config.config_hash == hash {
                d.warming_clusters.remove(&cfg.name);
                continue;
            }
        }
        if let Some(w) = d.warming_clusters.get(&cfg.name) {
            if w.entry.item.config.config_hash == hash {
                continue;
            }
        }
        let existed = d.clusters.contains_key(&cfg.name);
        let live = Cluster::new(cfg);
        let entry = Entry {
            item: live.clone(),
            meta: meta(r, now),
        };
        out.clusters_changed = true;
        let known = (live.config.discovery == Discovery::Eds)
            .then(|| d.endpoints.get(live.config.eds_name()))
            .flatten();
        match (live.config.discovery == Discovery::Eds, known) {
            (true, None) => {
                let timeout = live.config.eds_fetch_timeout;
                d.warming_clusters.insert(
                    live.config.name.clone(),
                    Warming {
                        entry,
                        deadline: deadline(timeout),
                    },
                );
            }
            (is_eds, known) => {
                if let (true, Some(eps)) = (is_eds, known) {
                    live.update_endpoints(&eps.item);
                }
                d.warming_clusters.remove(&live.config.name);
                d.clusters.insert(live.config.name.clone(), entry);
                let stat = if existed {
                    "cluster_manager.cluster_modified"
                } else {
                    "cluster_manager.cluster_added"
                };
                stats::counter(stat).increment(1);
                out.publish = true;
            }
        }
    }
    for name in &u.removed {
        let was_active = d.clusters.remove(name).is_some();
        let was_warming = d.warming_clusters.remove(name).is_some();
        if was_active || was_warming {
            out.clusters_changed = true;
            stats::counter("cluster_manager.cluster_removed").increment(1);
        }
        out.publish |= was_active;
    }
    if out.clusters_changed {
        d.reindex_eds();
    }
    out
}

/// EDS: an assignment replaces the endpoint set of every cluster fed by it; a warming cluster
/// becomes active.
pub fn endpoints(d: &mut Dynamic, u: &Update) -> Outcome {
    let mut out = Outcome::default();
    let now = SystemTime::now();
    let compiled = par_map(&u.resources, |r| {
        let la = r.body.to_msg::<ClusterLoadAssignment>().map_err(|e| {
            (
                None,
                format!("cluster_load_assignment '{}': malformed: {e}", r.name),
            )
        })?;
        let ctx = Ctx::new("cluster_load_assignment", &la.cluster_name);
        match config::cluster::load_assignment(&la, &ctx, false) {
            Ok(e) => Ok((la.cluster_name, Arc::new(e))),
            Err(e) => Err((Some(la.cluster_name), e.to_string())),
        }
    });
    for (r, compiled) in u.resources.iter().zip(compiled) {
        let (cluster_name, eps) = match compiled {
            Ok(c) => c,
            Err((None, e)) => {
                out.reject(&r.name, e);
                continue;
            }
            Err((Some(cluster_name), e)) => {
                for c in d.clusters_for_eds(&cluster_name) {
                    stats::counter(format!("cluster.{c}.update_rejected")).increment(1);
                }
                out.reject(&r.name, e);
                continue;
            }
        };
        for name in d.clusters_for_eds(&cluster_name).to_vec() {
            stats::counter(format!("cluster.{name}.update_attempt")).increment(1);
            stats::counter(format!("cluster.{name}.update_success")).increment(1);
            if eps.is_empty() {
                stats::counter(format!("cluster.{name}.update_empty")).increment(1);
            }
            // A warming version fed by this assignment goes live with it; otherwise the active
            // version takes it, if this is its assignment (a warming update may have renamed it).
            let feeds = |c: &Cluster| c.config.eds_name() == cluster_name;
            if d.warming_clusters
                .get(&name)
                .is_some_and(|w| feeds(&w.entry.item))
            {
                if let Some(w) = d.warming_clusters.remove(&name) {
                    w.entry.item.update_endpoints(&eps);
                    d.clusters.insert(name, w.entry);
                    stats::counter("cluster_manager.cluster_added").increment(1);
                    out.publish = true;
                }
            } else if let Some(active) = d.clusters.get(&name).filter(|a| feeds(&a.item)) {
                active.item.update_endpoints(&eps);
            } else if let Some(c) = d.static_cluster(&name).filter(|c| feeds(c)) {
                c.update_endpoints(&eps);
            }
        }
        d.endpoints.insert(
            cluster_name.clone(),
            Entry {
                item: eps,
                meta: meta(r, now),
            },
        );
    }
    for name in &u.removed {
        if d.endpoints.remove(name).is_some() {
            for c in d.clusters_for_eds(name) {
                if let Some(active) = d.clusters.get(c) {
                    active.item.update_endpoints(&[]);
                }
            }
        }
    }
    out
}

/// LDS.
pub fn listeners(d: &mut Dynamic, u: &Update) -> Outcome {
    let mut out = Outcome::default();
    let now = SystemTime::now();
    let mut seen = std::collections::HashSet::new();
    let compiled = par_map(&u.resources, |r| {
        let pb = r
            .body
            .to_msg::<PbListener>()
            .map_err(|e| format!("listener '{}': malformed: {e}", r.name))?;
        let mut notes = Notes::default();
        let cfg = config::listener::translate(&pb, &mut notes).map_err(|e| e.to_string())?;
        Ok::<_, String>((Arc::new(cfg), notes))
    });
    for (r, compiled) in u.resources.iter().zip(compiled) {
        if !seen.insert(r.name.as_str()) {
            out.reject(
                &r.name,
                format!("listener '{}': name: duplicate in one update", r.name),
            );
            continue;
        }
        let (cfg, notes) = match compiled {
            Ok(c) => c,
            Err(e) => {
                out.reject(&r.name, e);
                continue;
            }
        };
        if d.is_static_listener(&cfg.name) {
            out.reject(
                &r.name,
                format!(
                    "listener '{}': name: a static listener of this name exists",
                    cfg.name
                ),
            );
            continue;
        }
        if crate::runtime::has_runtime_filter(&cfg) {
            // A runtime's components connect to their stores at startup; one cannot appear
            // from the control plane.
            out.reject(
                &r.name,
                format!(
                    "listener '{}': filters: layer8.runtime is only served on static listeners",
                    cfg.name
                ),
            );
            continue;
        }
        log_skips(&notes);
        if let Some(active) = d.listeners.get(&cfg.name) {
            if active.item.config_hash == cfg.config_hash {
                d.warming_listeners.remove(&cfg.name);
                continue;
            }
        }
        // Already warming as is: keep its deadline (SotW resends every listener on each push).
        if d.warming_listeners
            .get(&cfg.name)
            .is_some_and(|w| w.entry.item.config_hash == cfg.config_hash)
        {
            continue;
        }
        let tls_ready = match d.resolve_tls(&cfg) {
            Ok(ready) => ready,
            Err(e) => {
                out.reject(
                    &r.name,
                    format!("listener '{}': transport_socket: {e}", cfg.name),
                );
                continue;
            }
        };
        let entry = Entry {
            item: cfg.clone(),
            meta: meta(r, now),
        };
        if tls_ready && d.routes_ready(&cfg) {
            d.warming_listeners.remove(&cfg.name);
            let stat = if let Some(prev) = d.listeners.insert(cfg.name.clone(), entry) {
                out.replaced_listeners.push((cfg.name.clone(), prev));
                "listener_manager.listener_modified"
            } else {
                "listener_manager.listener_added"
            };
            stats::counter(stat).increment(1);
            out.publish = true;
            out.listeners_changed = true;
        } else {
            // Wait as long as the slowest route configuration or secret may take (forever if
            // any does).
            let secrets = cfg
                .tls_contexts()
                .filter(|t| t.server.load().is_none())
                .map(|t| t.settings.sds_fetch_timeout);
            let timeouts: Vec<_> = rds_names(&cfg).map(|(_, t)| t).chain(secrets).collect();
            let wait = if timeouts.iter().any(Option::is_none) {
                None
            } else {
                timeouts.into_iter().flatten().max()
            };
            d.warming_listeners.insert(
                cfg.name.clone(),
                Warming {
                    entry,
                    deadline: deadline(wait),
                },
            );
        }
    }
    for name in &u.removed {
        d.warming_listeners.remove(name);
        if d.listeners.remove(name).is_some() {
            stats::counter("listener_manager.listener_removed").increment(1);
            out.publish = true;
            out.listeners_changed = true;
        }
    }
    out
}

/// Move warming listeners whose routes and secrets are all here to active.
fn promote_listeners(d: &mut Dynamic, out: &mut Outcome) {
    let ready: Vec<String> = d
        .warming_listeners
        .iter()
        .filter(|(_, w)| d.routes_ready(&w.entry.item) && d.tls_ready(&w.entry.item))
        .map(|(n, _)| n.clone())
        .collect();
    for name in ready {
        if let Some(w) = d.warming_listeners.remove(&name) {
            activate_listener(d, name, w.entry);
            out.publish = true;
            out.listeners_changed = true;
        }
    }
}

fn activate_listener(
    d: &mut Dynamic,
    name: String,
    entry: Entry<Arc<crate::model::listener::ListenerConfig>>,
) {
    let stat = if d.listeners.insert(name, entry).is_some() {
        "listener_manager.listener_modified"
    } else {
        "listener_manager.listener_added"
    };
    stats::counter(stat).increment(1);
}

/// RDS: each route configuration replaces its table; listeners waiting for it become active.
pub fn routes(d: &mut Dynamic, u: &Update) -> Outcome {
    let mut out = Outcome::default();
    let now = SystemTime::now();
    let compiled = par_map(&u.resources, |r| {
        let pb = r
            .body
            .to_msg::<RouteConfiguration>()
            .map_err(|e| format!("route_configuration '{}': malformed: {e}", r.name))?;
        let mut notes = Notes::default();
        let table = config::route::translate(&pb, &mut notes).map_err(|e| e.to_string())?;
        Ok::<_, String>((pb.name, table, notes))
    });
    for (r, compiled) in u.resources.iter().zip(compiled) {
        let prefix = format!("rds.{}.", r.name);
        stats::counter(format!("{prefix}update_attempt")).increment(1);
        match compiled {
            Ok((name, table, notes)) => {
                log_skips(&notes);
                stats::counter(format!("{prefix}update_success")).increment(1);
                stats::store().set_text(&format!("{prefix}version_text"), &r.version);
                d.routes.insert(
                    name,
                    Entry {
                        item: Arc::new(table),
                        meta: meta(r, now),
                    },
                );
                out.publish = true;
            }
            Err(e) => {
                stats::counter(format!("{prefix}update_rejected")).increment(1);
                out.reject(&r.name, e);
            }
        }
    }
    for name in &u.removed {
        out.publish |= d.routes.remove(name).is_some();
    }
    promote_listeners(d, &mut out);
    out
}

/// SDS: a secret takes effect in every TLS context that uses it (rebuilt in place: listeners and
/// their connections stay); listeners warming for it become active.
pub fn secrets(d: &mut Dynamic, u: &Update) -> Outcome {
    let mut out = Outcome::default();
    let now = SystemTime::now();
    let mut changed = std::collections::BTreeSet::new();
    for r in &u.resources {
        let prefix = format!("sds.{}.", r.name);
        let Some(pb) = decode::<PbSecret>(r, "secret", &mut out) else {
            stats::counter(format!("{prefix}update_rejected")).increment(1);
            continue;
        };
        match config::secret::translate(&pb) {
            Ok(s) => {
                stats::counter(format!("{prefix}update_success")).increment(1);
                d.secrets.insert(
                    pb.name.clone(),
                    Entry {
                        item: Arc::new(s),
                        meta: meta(r, now),
                    },
                );
                changed.insert(pb.name.clone());
                out.publish = true;
            }
            Err(e) => {
                stats::counter(format!("{prefix}update_rejected")).increment(1);
                out.reject(&r.name, e.to_string());
            }
        }
    }
    for name in &u.removed {
        // Contexts built from a removed secret keep serving it, as Envoy's do.
        out.publish |= d.secrets.remove(name).is_some();
    }
    // Rebuild the contexts that use a changed secret. One that cannot be built with it keeps its
    // last good configs, and the update is NACKed naming both.
    let mut failed = Vec::new();
    for l in d.all_listeners() {
        let uses = |t: &&Arc<crate::model::tls::DownstreamTls>| {
            t.settings.secret_refs().any(|r| changed.contains(&r.name))
        };
        if !l.tls_contexts().any(|t| uses(&t)) {
            continue;
        }
        if let Err(e) = d.resolve_tls(l) {
            failed.push((l.name.clone(), e));
        }
    }
    for (listener, e) in failed {
        let secret = changed.iter().cloned().collect::<Vec<_>>().join(", ");
        out.reject(
            &secret,
            format!("listener '{listener}': transport_socket: {e} (secrets updated: {secret})"),
        );
    }
    promote_listeners(d, &mut out);
    out
}

/// End warming that ran past its initial fetch timeout: clusters become active without
/// endpoints, listeners without (some of) their routes, as in Envoy.
pub fn expire_warming(d: &mut Dynamic, now: Instant) -> Outcome {
    let mut out = Outcome::default();
    let due = |w: Option<Instant>| w.is_some_and(|t| t <= now);
    let clusters: Vec<String> = d
        .warming_clusters
        .iter()
        .filter(|(_, w)| due(w.deadline))
        .map(|(n, _)| n.clone())
        .collect();
    for name in clusters {
        if let Some(w) = d.warming_clusters.remove(&name) {
            match d.endpoints.get(w.entry.item.config.eds_name()) {
                Some(eps) => w.entry.item.update_endpoints(&eps.item),
                None => {
                    tracing::warn!(cluster = %name, "initial fetch timeout: cluster active without endpoints")
                }
            }
            stats::counter("cluster_manager.cluster_added").increment(1);
            d.clusters.insert(name, w.entry);
            out.publish = true;
        }
    }
    let listeners: Vec<String> = d
        .warming_listeners
        .iter()
        .filter(|(_, w)| due(w.deadline))
        .map(|(n, _)| n.clone())
        .collect();
    for name in listeners {
        if let Some(w) = d.warming_listeners.remove(&name) {
            tracing::warn!(listener = %name, "initial fetch timeout: listener active without all its routes");
            activate_listener(d, name, w.entry);
            out.publish = true;
            out.listeners_changed = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use layer8_xds::pb::google::protobuf::Any;

    fn resource(i: usize, size: usize) -> Resource {
        Resource {
            name: format!("r{i}"),
            version: String::new(),
            body: Any {
                type_url: String::new(),
                value: vec![0; size],
            },
        }
    }

    #[test]
    fn par_map_keeps_order_small_and_big() {
        for sizes in [vec![10; 5], vec![300_000, 10, 10, 200_000, 5, 90_000, 1]] {
            let items: Vec<Resource> = sizes
                .iter()
                .enumerate()
                .map(|(i, s)| resource(i, *s))
                .collect();
            let names = par_map(&items, |r| r.name.clone());
            let expected: Vec<String> = (0..sizes.len()).map(|i| format!("r{i}")).collect();
            assert_eq!(names, expected);
        }
    }
}
