//! Envoy-named statistics on the `metrics` crate.
//!
//! layer8 installs one global recorder ([`Store`]) whose counters and gauges are plain atomics.
//! Stats are named as Envoy names them (`cluster.<name>.upstream_rq_200`); each name is split once,
//! at registration, into a Prometheus name and tags the way Envoy's default tag extractors do
//! (`envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="<name>"}`). Hot-path
//! code holds [`metrics::Counter`] handles resolved at config time; an increment is one atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// What kind of stat a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Gauge (a whole number, as in Envoy).
    Gauge,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    value: Arc<Value>,
    prom_name: String,
    tags: Vec<(String, String)>,
}

/// The registry behind the global recorder.
#[derive(Debug, Default)]
pub struct Store {
    entries: DashMap<String, Entry>,
    /// Text readouts (`listener_manager.lds.version_text`): shown by `/stats`, not Prometheus.
    texts: DashMap<String, String>,
}

/// `stats_config.stats_matcher`: which stats exist at all. A rejected stat is a no-op handle that
/// takes no memory and never shows, as Envoy's null stats.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `reject_all: true`.
    RejectAll,
    /// Only names matching one of these.
    Include(Vec<crate::model::matcher::StringMatch>),
    /// Every name but those matching one of these.
    Exclude(Vec<crate::model::matcher::StringMatch>),
}

static MATCHER: OnceLock<Matcher> = OnceLock::new();

/// Install the stats matcher (first call wins: Envoy reads it from the bootstrap once). Stats
/// registered before stay.
pub fn set_matcher(m: Matcher) {
    let _ = MATCHER.set(m);
}

fn accepts_name(name: &str) -> bool {
    match MATCHER.get() {
        None => true,
        Some(Matcher::RejectAll) => false,
        Some(Matcher::Include(list)) => list.iter().any(|p| p.matches(name)),
        Some(Matcher::Exclude(list)) => !list.iter().any(|p| p.matches(name)),
    }
}

impl Store {
    fn accepts(&self, key: &Key) -> bool {
        accepts_name(key.name())
    }

    fn entry(&self, key: &Key, kind: Kind) -> Arc<Value> {
        let name = flat_name(key);
        if let Some(e) = self.entries.get(&name) {
            return e.value.clone();
        }
        self.entries
            .entry(name.clone())
            .or_insert_with(|| {
                let (prom_name, mut tags) = extract_tags(&name);
                tags.extend(
                    key.labels()
                        .map(|l| (l.key().to_string(), l.value().to_string())),
                );
                Entry {
                    kind,
                    value: Arc::new(Value::default()),
                    prom_name,
                    tags,
                }
            })
            .value
            .clone()
    }

    /// Value of a stat by its Envoy name (gauges as integers), if it exists.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.entries.get(name).map(|e| read(e.kind, &e.value))
    }

    /// Set a text readout.
    pub fn set_text(&self, name: &str, value: &str) {
        if !accepts_name(name) {
            return;
        }
        self.texts.insert(name.to_string(), value.to_string());
    }

    /// A text readout, if set.
    pub fn text(&self, name: &str) -> Option<String> {
        self.texts.get(name).map(|v| v.clone())
    }

    /// Envoy's `/stats` text: `name: value` lines sorted by name (text readouts quoted).
    pub fn render_envoy(&self, filter: Option<&regex::Regex>, used_only: bool) -> String {
        let keep = |name: &str| filter.is_none_or(|f| f.is_match(name));
        let mut rows: Vec<(String, String)> = self
            .entries
            .iter()
            .filter(|e| keep(e.key()))
            .filter(|e| {
                !used_only || e.value.used.load(Ordering::Relaxed) || read(e.kind, &e.value) != 0
            })
            .map(|e| (e.key().clone(), read(e.kind, &e.value).to_string()))
            .collect();
        rows.extend(
            self.texts
                .iter()
                .filter(|e| keep(e.key()) && (!used_only || !e.value().is_empty()))
                .map(|e| (e.key().clone(), format!("{:?}", e.value()))),
        );
        rows.sort();
        let mut out = String::with_capacity(rows.len() * 48);
        for (name, value) in rows {
            let _ = writeln!(out, "{name}: {value}");
        }
        out
    }

    /// Prometheus text exposition of every stat, grouped by metric name.
    pub fn render_prometheus(&self, used_only: bool) -> String {
        let mut rows: Vec<PromRow> = self
            .entries
            .iter()
            .map(|e| {
                (
                    e.prom_name.clone(),
                    e.kind,
                    e.tags.clone(),
                    read(e.kind, &e.value),
                )
            })
            .filter(|r| !used_only || r.3 != 0)
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        let mut out = String::new();
        let mut last = String::new();
        for (name, kind, tags, value) in rows {
            if name != last {
                let ty = match kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# TYPE {name} {ty}");
                last.clone_from(&name);
            }
            let labels: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            metrics_exporter_prometheus::formatting::write_metric_line::<&str, u64>(
                &mut out, &name, None, &labels, None, value, None,
            );
        }
        out
    }
}

type PromRow = (String, Kind, Vec<(String, String)>, u64);

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One stat's value, sharded per data-plane worker so that workers counting the same stat never
/// contend for one cache line; reads sum the shards. Counters are `u64`; gauges are whole numbers
/// in Envoy, kept as `i64` bits so an increment is one `fetch_add` (the `metrics` default for
/// `AtomicU64` gauges is an f64 compare-and-swap loop).
#[derive(Debug)]
pub struct Value {
    shards: Box<[CachePadded<AtomicU64>]>,
    /// Written at least once (Envoy's "used", which `?usedonly` filters on: a gauge set to 0,
    /// like `server.state` when LIVE, is used).
    used: std::sync::atomic::AtomicBool,
}

impl Default for Value {
    fn default() -> Self {
        Value {
            shards: (0..crate::workers::count())
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            used: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Value {
    fn shard(&self) -> &AtomicU64 {
        &self.shards[crate::workers::current() % self.shards.len()]
    }

    fn mark_used(&self) {
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
    }

    fn sum(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

impl metrics::CounterFn for Value {
    fn increment(&self, value: u64) {
        self.shard().fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.mark_used();
        // Absolute values come from one place at a time: keep them in shard 0 alone.
        for (i, s) in self.shards.iter().enumerate() {
            s.store(if i == 0 { value } else { 0 }, Ordering::Relaxed);
        }
    }
}

impl metrics::GaugeFn for Value {
    fn increment(&self, value: f64) {
        self.mark_used();
        self.shard()
            .fetch_add(value as i64 as u64, Ordering::Relaxed);
    }

    fn decrement(&self, value: f64) {
        self.mark_used();
        self.shard()
            .fetch_sub(value as i64 as u64, Ordering::Relaxed);
    }

    /// `set` is used for gauges that are only ever set (membership, server state), never for
    /// ones that are incremented concurrently.
    fn set(&self, value: f64) {
        self.mark_used();
        for (i, s) in self.shards.iter().enumerate() {
            s.store(
                if i == 0 { value as i64 as u64 } else { 0 },
                Ordering::Relaxed,
            );
        }
    }
}

fn read(kind: Kind, v: &Value) -> u64 {
    let raw = v.sum();
    match kind {
        Kind::Counter => raw,
        Kind::Gauge => (raw as i64).max(0) as u64,
    }
}

fn flat_name(key: &Key) -> String {
    key.name().to_string()
}

/// Envoy's default tag extraction for the stat families layer8 emits.
fn extract_tags(name: &str) -> (String, Vec<(String, String)>) {
    let mut tags = Vec::new();
    let mut rest = name.to_string();
    // Scoped families: the second segment is the scope's name.
    for (prefix, tag) in [
        ("cluster.", "envoy_cluster_name"),
        ("http.", "envoy_http_conn_manager_prefix"),
        ("tcp.", "envoy_tcp_prefix"),
        ("listener.", "envoy_listener_address"),
    ] {
        if let Some(tail) = name.strip_prefix(prefix) {
            // Cluster and listener names may contain dots; the stat suffix is the last segment(s)
            // after a known name, so split at the last dot.
            if let Some((scope, stat)) = tail.rsplit_once('.') {
                // Per-worker listener stats: `listener.<address>.worker_<id>.<stat>`.
                let worker = (prefix == "listener.")
                    .then(|| scope.rsplit_once(".worker_"))
                    .flatten()
                    .filter(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
                if let Some((address, id)) = worker {
                    tags.push(("envoy_worker_id".to_string(), id.to_string()));
                    tags.push((tag.to_string(), address.to_string()));
                    rest = format!("listener.worker_{stat}");
                } else if !(prefix == "http." && stat.starts_with("rds")) {
                    tags.push((tag.to_string(), scope.to_string()));
                    rest = format!("{}{stat}", prefix);
                }
            }
            break;
        }
    }
    // Response codes: upstream_rq_200 / downstream_rq_2xx.
    if let Some((head, code)) = rest.rsplit_once('_') {
        if code.len() == 3
            && (code.chars().all(|c| c.is_ascii_digit()) || code.ends_with("xx"))
            && (head.ends_with("_rq") || head.ends_with("_rq_completed"))
        {
            let tag = if code.ends_with("xx") {
                "envoy_response_code_class"
            } else {
                "envoy_response_code"
            };
            tags.push((tag.to_string(), code.trim_end_matches("xx").to_string()));
            rest = head.to_string();
        }
    }
    let prom = format!("envoy_{}", rest.replace(['.', '-'], "_"));
    (prom, tags)
}

impl Recorder for Store {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if !self.accepts(key) {
            return Counter::noop();
        }
        Counter::from_arc(self.entry(key, Kind::Counter))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if !self.accepts(key) {
            return Gauge::noop();
        }
        Gauge::from_arc(self.entry(key, Kind::Gauge))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

struct Shared(&'static Store);

impl Recorder for Shared {
    fn describe_counter(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_counter(k, u, d)
    }
    fn describe_gauge(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_gauge(k, u, d)
    }
    fn describe_histogram(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_histogram(k, u, d)
    }
    fn register_counter(&self, key: &Key, m: &Metadata<'_>) -> Counter {
        self.0.register_counter(key, m)
    }
    fn register_gauge(&self, key: &Key, m: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(key, m)
    }
    fn register_histogram(&self, key: &Key, m: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(key, m)
    }
}

/// The process-wide stat store; installs itself as the `metrics` recorder on first use.
pub fn store() -> &'static Store {
    static STORE: OnceLock<&'static Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let s: &'static Store = Box::leak(Box::default());
        // Fails only if another recorder was installed first (tests); stats still work through
        // the direct helpers below.
        let _ = metrics::set_global_recorder(Shared(s));
        s
    })
}

/// A counter handle by Envoy name (config time; keep the handle for the hot path).
pub fn counter(name: impl Into<String>) -> Counter {
    store().register_counter(&Key::from_name(name.into()), &metadata())
}

/// A gauge handle by Envoy name.
pub fn gauge(name: impl Into<String>) -> Gauge {
    store().register_gauge(&Key::from_name(name.into()), &metadata())
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_tag_extraction() {
        assert_eq!(
            extract_tags("cluster.outbound|80||a.b.svc.upstream_rq_200"),
            (
                "envoy_cluster_upstream_rq".into(),
                vec![
                    ("envoy_cluster_name".into(), "outbound|80||a.b.svc".into()),
                    ("envoy_response_code".into(), "200".into())
                ]
            )
        );
        assert_eq!(
            extract_tags("listener.127.0.0.1_15001.worker_1.downstream_cx_active"),
            (
                "envoy_listener_worker_downstream_cx_active".into(),
                vec![
                    ("envoy_worker_id".into(), "1".into()),
                    ("envoy_listener_address".into(), "127.0.0.1_15001".into())
                ]
            )
        );
        assert_eq!(
            extract_tags("listener.127.0.0.1_15001.downstream_cx_active").1,
            vec![("envoy_listener_address".into(), "127.0.0.1_15001".into())]
        );
        assert_eq!(
            extract_tags("server.state"),
            ("envoy_server_state".into(), vec![])
        );
        assert_eq!(
            extract_tags("http.ingress.downstream_rq_2xx").1,
            vec![
                ("envoy_http_conn_manager_prefix".into(), "ingress".into()),
                ("envoy_response_code_class".into(), "2".into())
            ]
        );
    }

    #[test]
    fn counters_render_in_both_formats() {
        let c = counter("cluster.test_render.upstream_rq_503");
        c.increment(3);
        let s = store();
        assert_eq!(s.get("cluster.test_render.upstream_rq_503"), Some(3));
        let text = s.render_envoy(Some(&regex::Regex::new("test_render").unwrap()), false);
        assert_eq!(text, "cluster.test_render.upstream_rq_503: 3\n");
        let prom = s.render_prometheus(false);
        assert!(prom.contains(
            "envoy_cluster_upstream_rq{envoy_cluster_name=\"test_render\",envoy_response_code=\"503\"} 3"
        ), "{prom}");
    }
}
