//! A live cluster: its compiled config, the current endpoint set (swapped whole on EDS/DNS
//! updates), circuit-breaker counters and stats.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use super::lb::{self, Balancer};
use super::pool::HostPool;
use crate::model::cluster::{ClusterConfig, Discovery, EndpointAddr, EndpointConfig};
use crate::stats;

/// One upstream endpoint with its connection pool and live counters.
#[derive(Debug)]
pub struct Host {
    /// Address to connect to.
    pub addr: EndpointAddr,
    /// LB weight.
    pub weight: u32,
    /// Locality weight.
    pub locality_weight: u32,
    /// Hostname for `auto_host_rewrite`.
    pub hostname: String,
    active: AtomicU64,
    /// Connection pool.
    pub pool: HostPool,
    key: String,
}

impl Host {
    /// A host from its configuration.
    pub fn new(cfg: &EndpointConfig) -> Host {
        Host {
            addr: cfg.addr.clone(),
            weight: cfg.weight,
            locality_weight: cfg.locality_weight,
            hostname: cfg.hostname.clone(),
            active: AtomicU64::new(0),
            pool: HostPool::default(),
            key: match &cfg.addr {
                EndpointAddr::Ip(a) => a.to_string(),
                EndpointAddr::Dns(h, p) => format!("{h}:{p}"),
                EndpointAddr::Unix(p) => p.display().to_string(),
            },
        }
    }

    /// Stable key for hashing and logs (`ip:port`), computed once.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// In-flight requests on this host (least-request LB).
    pub fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Count a request in flight until the guard drops.
    pub fn start_request(&self) -> ActiveGuard<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }
}

/// Decrements a host's active request count on drop.
#[derive(Debug)]
pub struct ActiveGuard<'a>(&'a Host);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of a cluster at one moment, with the balancer built for them.
#[derive(Debug)]
pub struct EndpointSet {
    /// Healthy hosts of the best priority that has any.
    pub hosts: Vec<Arc<Host>>,
    /// Every host (for `/clusters`).
    pub all: Vec<Arc<Host>>,
    /// Balancer over `hosts`.
    pub balancer: Balancer,
    /// Healthy hosts across all priorities (`membership_healthy`).
    pub healthy: usize,
}

impl EndpointSet {
    /// Build a set, reusing hosts (and their pools) from `prev` where the address is unchanged.
    pub fn build(
        cfg: &ClusterConfig,
        endpoints: &[EndpointConfig],
        prev: Option<&EndpointSet>,
    ) -> EndpointSet {
        let all: Vec<Arc<Host>> = endpoints
            .iter()
            .map(|e| {
                prev.and_then(|p| {
                    p.all.iter().find(|h| {
                        h.addr == e.addr
                            && h.weight == e.weight
                            && h.locality_weight == e.locality_weight
                    })
                })
                .cloned()
                .unwrap_or_else(|| Arc::new(Host::new(e)))
            })
            .collect();
        let best = endpoints
            .iter()
            .filter(|e| !e.unhealthy)
            .map(|e| e.priority)
            .min();
        let hosts: Vec<Arc<Host>> = endpoints
            .iter()
            .zip(all.iter())
            .filter(|(e, _)| !e.unhealthy && Some(e.priority) == best)
            .map(|(_, h)| h.clone())
            .collect();
        let balancer = lb::build(cfg.lb, &hosts);
        let healthy = endpoints.iter().filter(|e| !e.unhealthy).count();
        EndpointSet {
            hosts,
            all,
            balancer,
            healthy,
        }
    }
}

/// `cluster.<name>.*` stats.
#[derive(Debug)]
pub struct ClusterStats {
    prefix: String,
    /// `upstream_rq_total`.
    pub rq_total: metrics::Counter,
    /// `upstream_rq_active` (set from `Circuit::requests` when stats are read).
    pub rq_active: metrics::Gauge,
    /// `upstream_rq_pending_overflow`.
    pub rq_pending_overflow: metrics::Counter,
    /// `upstream_rq_timeout`.
    pub rq_timeout: metrics::Counter,
    /// `upstream_rq_per_try_timeout`.
    pub rq_per_try_timeout: metrics::Counter,
    /// `upstream_rq_retry`.
    pub rq_retry: metrics::Counter,
    /// `upstream_rq_retry_overflow`.
    pub rq_retry_overflow: metrics::Counter,
    /// `upstream_rq_retry_success`.
    pub rq_retry_success: metrics::Counter,
    /// `upstream_cx_total`.
    pub cx_total: metrics::Counter,
    /// `upstream_cx_active`.
    pub cx_active: metrics::Gauge,
    /// `upstream_cx_connect_fail`.
    pub cx_connect_fail: metrics::Counter,
    /// `upstream_cx_connect_timeout`.
    pub cx_connect_timeout: metrics::Counter,
    /// `upstream_cx_overflow`.
    pub cx_overflow: metrics::Counter,
    /// `upstream_cx_none_healthy`.
    pub cx_none_healthy: metrics::Counter,
    /// `upstream_cx_rx_bytes_total`.
    pub cx_rx_bytes: metrics::Counter,
    /// `upstream_cx_tx_bytes_total`.
    pub cx_tx_bytes: metrics::Counter,
    /// `membership_total`.
    pub membership_total: metrics::Gauge,
    /// `membership_healthy`.
    pub membership_healthy: metrics::Gauge,
    classes: [metrics::Counter; 5],
    codes: OnceLock<Box<[OnceLock<metrics::Counter>]>>,
}

impl ClusterStats {
    fn new(name: &str) -> ClusterStats {
        let prefix = format!("cluster.{name}.");
        let c = |s: &str| stats::counter(format!("{prefix}{s}"));
        let g = |s: &str| stats::gauge(format!("{prefix}{s}"));
        ClusterStats {
            rq_total: c("upstream_rq_total"),
            rq_active: g("upstream_rq_active"),
            rq_pending_overflow: c("upstream_rq_pending_overflow"),
            rq_timeout: c("upstream_rq_timeout"),
            rq_per_try_timeout: c("upstream_rq_per_try_timeout"),
            rq_retry: c("upstream_rq_retry"),
            rq_retry_overflow: c("upstream_rq_retry_overflow"),
            rq_retry_success: c("upstream_rq_retry_success"),
            cx_total: c("upstream_cx_total"),
            cx_active: g("upstream_cx_active"),
            cx_connect_fail: c("upstream_cx_connect_fail"),
            cx_connect_timeout: c("upstream_cx_connect_timeout"),
            cx_overflow: c("upstream_cx_overflow"),
            cx_none_healthy: c("upstream_cx_none_healthy"),
            cx_rx_bytes: c("upstream_cx_rx_bytes_total"),
            cx_tx_bytes: c("upstream_cx_tx_bytes_total"),
            membership_total: g("membership_total"),
            membership_healthy: g("membership_healthy"),
            classes: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|k| c(&format!("upstream_rq_{k}"))),
            codes: OnceLock::new(),
            prefix,
        }
    }

    /// Count a completed upstream response code (`upstream_rq_<code>` and `_<class>xx`).
    pub fn response(&self, code: u16) {
        if let Some(c) = self.classes.get(usize::from(code / 100).wrapping_sub(1)) {
            c.increment(1);
        }
        let codes = self
            .codes
            .get_or_init(|| (100..600).map(|_| OnceLock::new()).collect());
        if let Some(slot) = codes.get(usize::from(code).wrapping_sub(100)) {
            slot.get_or_init(|| stats::counter(format!("{}upstream_rq_{code}", self.prefix)))
                .increment(1);
        }
    }
}

/// Circuit-breaker counters (DEFAULT priority).
#[derive(Debug, Default)]
pub struct Circuit {
    /// Open upstream connections.
    pub connections: AtomicU64,
    /// Requests waiting for a connection.
    pub pending: AtomicU64,
    /// Requests in flight.
    pub requests: AtomicU64,
    /// Retries in flight.
    pub retries: AtomicU64,
}

/// A live cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Name as `Arc<str>` (shared with routes).
    pub name: Arc<str>,
    /// Compiled config.
    pub config: Arc<ClusterConfig>,
    endpoints: ArcSwap<EndpointSet>,
    /// Stats.
    pub stats: ClusterStats,
    /// Circuit-breaker state.
    pub circuit: Circuit,
    /// Background DNS refresh task, aborted on drop.
    dns_task: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = self.dns_task.get() {
            t.abort();
        }
    }
}

impl Cluster {
    /// Build a live cluster. DNS clusters start resolving in the background (on the current
    /// tokio runtime, if any).
    pub fn new(config: ClusterConfig) -> Arc<Cluster> {
        let config = Arc::new(config);
        let initial: Vec<EndpointConfig> = match config.discovery {
            // DNS clusters have no usable hosts until the first resolution.
            Discovery::StrictDns | Discovery::LogicalDns => Vec::new(),
            _ => config.endpoints.clone(),
        };
        let set = EndpointSet::build(&config, &initial, None);
        let cluster = Arc::new(Cluster {
            name: Arc::from(config.name.as_str()),
            stats: ClusterStats::new(&config.name),
            endpoints: ArcSwap::from_pointee(set),
            circuit: Circuit::default(),
            dns_task: OnceLock::new(),
            config,
        });
        cluster.record_membership();
        if matches!(
            cluster.config.discovery,
            Discovery::StrictDns | Discovery::LogicalDns
        ) {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let task = handle.spawn(super::dns::refresh_loop(Arc::downgrade(&cluster)));
                let _ = cluster.dns_task.set(task.abort_handle());
            }
        }
        cluster
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// Replace the endpoint set (EDS or DNS); hosts with unchanged addresses keep their pools.
    pub fn update_endpoints(&self, endpoints: &[EndpointConfig]) {
        let prev = self.endpoints.load_full();
        let next = EndpointSet::build(&self.config, endpoints, Some(&prev));
        self.endpoints.store(Arc::new(next));
        self.record_membership();
    }

    fn record_membership(&self) {
        let set = self.endpoints.load();
        self.stats.membership_total.set(set.all.len() as f64);
        self.stats.membership_healthy.set(set.healthy as f64);
    }

    /// Pick a host, avoiding `avoid` when other hosts exist (retry `previous_hosts`).
    pub fn pick(&self, hash: Option<u64>, attempt: u32, avoid: &[Arc<Host>]) -> Option<Arc<Host>> {
        let set = self.endpoints.load();
        let tries = if avoid.is_empty() {
            1
        } else {
            1 + set.hosts.len() as u32 * 2
        };
        let mut chosen = None;
        for t in 0..tries {
            let idx = set.balancer.pick(&set.hosts, hash, attempt + t)?;
            let host = set.hosts.get(idx)?.clone();
            let avoided = avoid.iter().any(|a| Arc::ptr_eq(a, &host));
            chosen = Some(host);
            if !avoided {
                break;
            }
        }
        chosen
    }

    /// Host for an ORIGINAL_DST cluster: the connection's original destination.
    pub fn original_dst_host(&self, dst: SocketAddr) -> Arc<Host> {
        let set = self.endpoints.load();
        if let Some(h) = set.all.iter().find(|h| h.addr == EndpointAddr::Ip(dst)) {
            return h.clone();
        }
        let mut eps: Vec<EndpointConfig> = set
            .all
            .iter()
            .map(|h| EndpointConfig {
                addr: h.addr.clone(),
                weight: h.weight,
                locality_weight: h.locality_weight,
                priority: 0,
                hostname: h.hostname.clone(),
                unhealthy: false,
            })
            .collect();
        // Bound the cache of original destinations.
        if eps.len() >= 1024 {
            eps.clear();
        }
        eps.push(EndpointConfig {
            addr: EndpointAddr::Ip(dst),
            weight: 1,
            locality_weight: 1,
            priority: 0,
            hostname: String::new(),
            unhealthy: false,
        });
        self.update_endpoints(&eps);
        let set = self.endpoints.load();
        set.all
            .iter()
            .find(|h| h.addr == EndpointAddr::Ip(dst))
            .cloned()
            .unwrap_or_else(|| Arc::new(Host::new(&eps[eps.len() - 1])))
    }
}
