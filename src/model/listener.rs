//! Compiled listeners: address, listener filters, filter chains with their match criteria and
//! terminal network filter.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::route::RouteTable;

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// TCP on an IP and port.
    Tcp(SocketAddr),
    /// A Unix stream socket (`pipe.path`); `@name` is the abstract namespace.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A compiled `Listener`.
#[derive(Debug)]
pub struct ListenerConfig {
    /// Name.
    pub name: String,
    /// Address.
    pub address: ListenAddr,
    /// Whether to bind a socket (false: only reachable by original-dst handoff).
    pub bind_to_port: bool,
    /// Hand connections whose original destination differs to the listener bound there.
    pub use_original_dst: bool,
    /// Listener filters to run before filter-chain selection.
    pub inspectors: Inspectors,
    /// Filter chains, in config order.
    pub filter_chains: Vec<Arc<FilterChain>>,
    /// The chain used when none matches.
    pub default_chain: Option<Arc<FilterChain>>,
    /// How long listener filters may wait for data.
    pub listener_filters_timeout: Duration,
    /// Whether to run the default chain when listener filters time out.
    pub continue_on_listener_filters_timeout: bool,
    /// Stats prefix: `listener.<address>.`.
    pub stat_prefix: String,
    /// Hash of the source config; equal hashes = unchanged listener.
    pub config_hash: u64,
    /// `access_log`: a line per connection no filter chain accepted (flag `NR`).
    pub access_logs: Arc<crate::access_log::AccessLogs>,
    /// Which worker serves each accepted connection.
    pub placement: WorkerPlacement,
}

/// Which worker serves a listener's connections (see `listener::balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPlacement {
    /// The worker with the fewest active connections of the listener (Envoy's `exact_balance`).
    Spread,
    /// All on the first worker: a listener that only serves the runtime API and has no
    /// `connection_balance_config`. Its calls then share that worker's store connections (one
    /// Redis pipeline instead of one per worker) and wake one thread instead of several.
    FirstWorker,
}

impl ListenerConfig {
    /// The TLS contexts of its filter chains (default chain included).
    pub fn tls_contexts(&self) -> impl Iterator<Item = &Arc<super::tls::DownstreamTls>> {
        self.filter_chains
            .iter()
            .chain(self.default_chain.iter())
            .filter_map(|c| c.tls.as_ref())
    }
}

/// Which listener filters run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inspectors {
    /// `envoy.filters.listener.tls_inspector`.
    pub tls: bool,
    /// `envoy.filters.listener.http_inspector`.
    pub http: bool,
    /// `envoy.filters.listener.original_dst`.
    pub original_dst: bool,
}

/// A CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range (IPv4-mapped IPv6 addresses compare as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let len = u32::from(self.len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let len = u32::from(self.len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Source type criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceType {
    /// Any.
    #[default]
    Any,
    /// Same IP as the local address, or loopback.
    Local,
    /// Not local.
    External,
}

/// A compiled `FilterChainMatch`. Empty fields match anything.
#[derive(Debug, Clone, Default)]
pub struct ChainMatch {
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Destination IP ranges.
    pub prefix_ranges: Vec<Cidr>,
    /// SNI names (exact or `*.suffix`), lower-cased.
    pub server_names: Vec<String>,
    /// `raw_buffer` or `tls`.
    pub transport_protocol: Option<String>,
    /// ALPN / http_inspector protocols.
    pub application_protocols: Vec<String>,
    /// Directly connected source ranges.
    pub direct_source_prefix_ranges: Vec<Cidr>,
    /// Source type.
    pub source_type: SourceType,
    /// Source ranges.
    pub source_prefix_ranges: Vec<Cidr>,
    /// Source ports.
    pub source_ports: Vec<u16>,
}

/// A compiled `FilterChain`.
#[derive(Debug)]
pub struct FilterChain {
    /// Name (may be empty).
    pub name: String,
    /// Match criteria.
    pub matcher: ChainMatch,
    /// The terminal network filter.
    pub terminal: NetworkFilter,
    /// The chain's TLS transport socket (a `transport_socket` with a DownstreamTlsContext).
    pub tls: Option<Arc<super::tls::DownstreamTls>>,
    /// `transport_socket_connect_timeout`: how long the TLS handshake may take (none: no limit).
    pub handshake_timeout: Option<Duration>,
}

/// `forward_client_cert_details`: what happens to `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XfccMode {
    /// Removed (Envoy's default).
    #[default]
    Sanitize,
    /// Kept as is on mutual-TLS connections, removed on others.
    ForwardOnly,
    /// On mutual TLS: this hop's details appended; otherwise removed.
    AppendForward,
    /// On mutual TLS: replaced by this hop's details; otherwise removed.
    SanitizeSet,
    /// Always kept as is.
    AlwaysForwardOnly,
}

/// `x-forwarded-client-cert` settings: the mode and which peer details to add
/// (`set_current_client_cert_details`; `By` and `Hash` are always added).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xfcc {
    /// Mode.
    pub mode: XfccMode,
    /// Add `Subject="..."`.
    pub subject: bool,
    /// Add `URI=...`.
    pub uri: bool,
    /// Add `DNS=...`.
    pub dns: bool,
}

/// The terminal network filter of a chain.
#[derive(Debug)]
pub enum NetworkFilter {
    /// `envoy.filters.network.tcp_proxy`.
    TcpProxy(Arc<TcpProxyConfig>),
    /// `envoy.filters.network.http_connection_manager`.
    Http(Arc<HcmConfig>),
    /// `layer8.runtime`: the application runtime's gRPC API.
    Runtime(Arc<RuntimeFilter>),
    /// `layer8.actuator`: the runtime's health and info endpoints.
    Actuator,
}

/// A compiled `layer8.runtime` filter: which runtime serves the listener's connections.
#[derive(Debug)]
pub struct RuntimeFilter {
    /// Identity of the runtime config (listeners with equal configs share one runtime).
    pub id: u64,
    /// The parsed runtime config.
    pub config: Arc<crate::runtime::config::RuntimeConfig>,
}

/// A compiled `TcpProxy`.
#[derive(Debug)]
pub struct TcpProxyConfig {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `access_log`: one line per connection.
    pub access_logs: Arc<crate::access_log::AccessLogs>,
    /// Cluster or weighted clusters: (cumulative upper bound, cluster).
    pub clusters: Vec<(u32, Arc<str>)>,
    /// Sum of weights.
    pub total_weight: u32,
    /// Idle timeout (default 1 h; `None` = disabled).
    pub idle_timeout: Option<Duration>,
    /// Counters.
    pub stats: TcpStats,
}

/// tcp_proxy counters (`tcp.<stat_prefix>.*`).
#[derive(Debug, Clone)]
pub struct TcpStats {
    /// `downstream_cx_total`.
    pub cx_total: metrics::Counter,
    /// `downstream_cx_rx_bytes_total`.
    pub rx_bytes: metrics::Counter,
    /// `downstream_cx_tx_bytes_total`.
    pub tx_bytes: metrics::Counter,
    /// `idle_timeout`.
    pub idle_timeout: metrics::Counter,
    /// `downstream_cx_no_route`.
    pub no_route: metrics::Counter,
    /// `upstream_flush_total`... connect failures go to the cluster.
    pub cx_active: metrics::Gauge,
}

/// Codec selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Detect HTTP/1.1 vs HTTP/2 (prior knowledge preface).
    Auto,
    /// HTTP/1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// How the HCM finds its routes.
#[derive(Debug, Clone)]
pub enum RouteSource {
    /// `route_config` inline.
    Static(Arc<RouteTable>),
    /// `rds.route_config_name` (resolved through the snapshot's route tables).
    Rds(String),
}

/// A compiled `HttpConnectionManager`.
#[derive(Debug)]
pub struct HcmConfig {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// `access_log`: one line per request (empty: no record is kept).
    pub access_logs: Arc<crate::access_log::AccessLogs>,
    /// Codec.
    pub codec: Codec,
    /// Routes.
    pub routes: RouteSource,
    /// For RDS: how long the listener warms waiting for its routes (`None`: forever).
    pub rds_fetch_timeout: Option<Duration>,
    /// `stream_idle_timeout` (default 5 min; `None` = disabled).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout` (default disabled).
    pub request_timeout: Option<Duration>,
    /// `request_headers_timeout`.
    pub request_headers_timeout: Option<Duration>,
    /// Connection idle timeout (`common_http_protocol_options.idle_timeout`, default 1 h).
    pub idle_timeout: Option<Duration>,
    /// `max_request_headers_kb` in bytes (default 60 KiB).
    pub max_request_headers_bytes: usize,
    /// `drain_timeout` (default 5 s): how long a draining connection keeps serving (HTTP/2:
    /// between the GOAWAY notice and the final GOAWAY; HTTP/1: before an idle one is closed).
    pub drain_timeout: Duration,
    /// `normalize_path`.
    pub normalize_path: bool,
    /// `merge_slashes`.
    pub merge_slashes: bool,
    /// `http_protocol_options.accept_http_10` (otherwise HTTP/1.0 gets 426).
    pub accept_http_10: bool,
    /// `server_name` (default `envoy`).
    pub server_name: http::HeaderValue,
    /// `server_header_transformation`.
    pub server_header: ServerHeader,
    /// `generate_request_id` (default true).
    pub generate_request_id: bool,
    /// `preserve_external_request_id`.
    pub preserve_external_request_id: bool,
    /// `use_remote_address`.
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`.
    pub xff_num_trusted_hops: u32,
    /// `skip_xff_append`.
    pub skip_xff_append: bool,
    /// `via` header value to append.
    pub via: Option<http::HeaderValue>,
    /// Upgrade types allowed by `upgrade_configs` (lower-cased, e.g. `websocket`).
    pub upgrades: Vec<String>,
    /// HTTP filters that run before the router (names, for logs; all are observational today).
    pub skipped_filters: Vec<String>,
    /// Istio's `istio_authn` peer authentication, when the chain has it.
    pub peer_authn: Option<super::authn::PeerAuthn>,
    /// `x-forwarded-client-cert` handling.
    pub xfcc: Xfcc,
    /// Stats.
    pub stats: HcmStats,
}

/// `server_header_transformation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    /// Overwrite with `server_name`.
    Overwrite,
    /// Append only if absent.
    AppendIfAbsent,
    /// Pass the upstream's through untouched.
    PassThrough,
}

/// HCM counters (`http.<stat_prefix>.*`).
#[derive(Debug, Clone)]
pub struct HcmStats {
    /// `downstream_cx_total`.
    pub cx_total: metrics::Counter,
    /// `downstream_cx_active`.
    pub cx_active: metrics::Gauge,
    /// `downstream_rq_total`.
    pub rq_total: metrics::Counter,
    /// `downstream_rq_active`.
    pub rq_active: metrics::Gauge,
    /// `downstream_rq_1xx` .. `downstream_rq_5xx`.
    pub rq_class: [metrics::Counter; 5],
    /// `no_route`.
    pub no_route: metrics::Counter,
    /// `no_cluster`.
    pub no_cluster: metrics::Counter,
    /// `rq_redirect`.
    pub rq_redirect: metrics::Counter,
    /// `rq_direct_response`.
    pub rq_direct_response: metrics::Counter,
    /// `istio_authn.peer_authn_failed`: requests refused by `istio_authn` (401).
    pub rq_peer_authn_failed: metrics::Counter,
    /// `downstream_rq_timeout`.
    pub rq_timeout: metrics::Counter,
    /// `downstream_rq_idle_timeout`.
    pub rq_idle_timeout: metrics::Counter,
    /// `downstream_cx_idle_timeout`.
    pub cx_idle_timeout: metrics::Counter,
    /// `downstream_rq_http1_total` / `http2`.
    pub rq_http1: metrics::Counter,
    /// `downstream_rq_http2_total`.
    pub rq_http2: metrics::Counter,
}
