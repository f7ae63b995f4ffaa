//! Compiled cluster configuration (the live cluster with its endpoints and pools is
//! [`upstream::Cluster`](crate::upstream::Cluster)).

use std::net::SocketAddr;
use std::time::Duration;

/// Service discovery type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Fixed endpoints.
    Static,
    /// Resolve every host name, use all addresses; re-resolve periodically.
    StrictDns,
    /// Resolve, use the first address only for new connections.
    LogicalDns,
    /// Connect to the downstream connection's original destination.
    OriginalDst,
    /// Endpoints from EDS (or the inline `load_assignment` until EDS arrives).
    Eds,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    /// Weighted round robin.
    RoundRobin,
    /// Power of two choices by active requests.
    LeastRequest {
        /// `choice_count` (default 2).
        choices: u32,
    },
    /// Uniform random (weighted).
    Random,
    /// Ketama-style ring.
    RingHash {
        /// Minimum ring size (default 1024).
        min_ring: u64,
        /// Maximum ring size (default 8M).
        max_ring: u64,
    },
    /// Maglev table.
    Maglev {
        /// Table size (prime, default 65537).
        table_size: u64,
    },
    /// ORIGINAL_DST clusters (`CLUSTER_PROVIDED`).
    ClusterProvided,
}

/// An endpoint as configured (before DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddr {
    /// An IP address.
    Ip(SocketAddr),
    /// A host name to resolve (DNS clusters).
    Dns(String, u16),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

/// A configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Address.
    pub addr: EndpointAddr,
    /// `load_balancing_weight` (default 1).
    pub weight: u32,
    /// Locality weight of its group (default 1).
    pub locality_weight: u32,
    /// Priority.
    pub priority: u32,
    /// Endpoint hostname (for `auto_host_rewrite`).
    pub hostname: String,
    /// Health status from EDS: true when UNHEALTHY/DRAINING/TIMEOUT.
    pub unhealthy: bool,
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    /// IPv6 if any, else IPv4 (Envoy's AUTO).
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 if any, else IPv6.
    V4Preferred,
    /// Every address.
    All,
}

impl DnsFamily {
    /// Filter resolved addresses as Envoy does for this family.
    pub fn select(self, addrs: Vec<std::net::SocketAddr>) -> Vec<std::net::SocketAddr> {
        let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv4());
        match self {
            DnsFamily::V4Only => v4,
            DnsFamily::V6Only => v6,
            DnsFamily::Auto => {
                if v6.is_empty() {
                    v4
                } else {
                    v6
                }
            }
            DnsFamily::V4Preferred => {
                if v4.is_empty() {
                    v6
                } else {
                    v4
                }
            }
            DnsFamily::All => v4.into_iter().chain(v6).collect(),
        }
    }
}

/// Upstream HTTP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 keep-alive pool.
    Http1,
    /// HTTP/2 multiplexing.
    Http2,
    /// Same as downstream.
    UseDownstream,
}

/// Circuit-breaker thresholds (DEFAULT priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Max upstream connections (1024).
    pub max_connections: u64,
    /// Max pending requests (1024).
    pub max_pending_requests: u64,
    /// Max active requests (1024).
    pub max_requests: u64,
    /// Max active retries (3).
    pub max_retries: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// A compiled `Cluster`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Name.
    pub name: String,
    /// Discovery type.
    pub discovery: Discovery,
    /// EDS service name (defaults to the cluster name).
    pub eds_service_name: Option<String>,
    /// How long an EDS cluster warms waiting for its endpoints (`None`: forever).
    pub eds_fetch_timeout: Option<Duration>,
    /// Secrets its transport sockets fetch over SDS.
    pub secrets: Vec<crate::model::secret::SecretRef>,
    /// LB policy.
    pub lb: LbPolicy,
    /// Endpoints from `load_assignment`.
    pub endpoints: Vec<EndpointConfig>,
    /// `connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// DNS refresh rate (default 5 s).
    pub dns_refresh: Duration,
    /// Which address families DNS results may use.
    pub dns_family: DnsFamily,
    /// Circuit breakers.
    pub thresholds: Thresholds,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Idle timeout of pooled upstream connections (default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Max requests per upstream connection.
    pub max_requests_per_connection: Option<u32>,
    /// `upstream_bind_config` source address.
    pub bind_addr: Option<std::net::IpAddr>,
    /// Whether upstream TLS is configured (not yet served: the cluster is rejected).
    pub tls: bool,
    /// Per-connection buffer limit.
    pub buffer_limit: u32,
    /// Hash of the source config; equal hashes keep the live cluster (and its pools).
    pub config_hash: u64,
}

impl ClusterConfig {
    /// The name its endpoints are published under over EDS.
    pub fn eds_name(&self) -> &str {
        self.eds_service_name.as_deref().unwrap_or(&self.name)
    }
}
