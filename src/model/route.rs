//! Compiled route tables: virtual hosts indexed by domain, routes with pre-built matchers and
//! actions. Lookup is allocation-free for the common cases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;

use super::matcher::{HeaderMatch, QueryMatch};

/// A `RouteConfiguration`, compiled.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The route configuration's name.
    pub name: String,
    /// All virtual hosts, in config order.
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
    /// Exact domain -> virtual host index.
    pub exact: HashMap<String, usize>,
    /// `*.suffix` / `*suffix` wildcards: (suffix, index), longest first.
    pub suffix: Vec<(String, usize)>,
    /// `prefix.*` / `prefix*` wildcards: (prefix, index), longest first.
    pub prefix: Vec<(String, usize)>,
    /// The `*` virtual host.
    pub default: Option<usize>,
    /// Strip the port from Host before matching.
    pub ignore_port_in_host_matching: bool,
    /// Headers added to every response.
    pub response_headers: HeaderOps,
    /// Headers added to every request.
    pub request_headers: HeaderOps,
}

impl RouteTable {
    /// Envoy's virtual host selection: exact, then longest suffix wildcard, then longest prefix
    /// wildcard, then `*`. `host` must already be lower-cased. A port in the Host is part of the
    /// name (Envoy does not retry without it; `ignore_port_in_host_matching` strips it first).
    pub fn find_virtual_host(&self, host: &str) -> Option<&Arc<VirtualHost>> {
        let idx = self.find_index(host)?;
        self.virtual_hosts.get(idx)
    }

    fn find_index(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        for (suffix, i) in &self.suffix {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        for (prefix, i) in &self.prefix {
            if host.len() > prefix.len() && host.starts_with(prefix.as_str()) {
                return Some(*i);
            }
        }
        self.default
    }
}

/// A compiled `VirtualHost`.
#[derive(Debug, Default)]
pub struct VirtualHost {
    /// Its name (for stats and logs).
    pub name: String,
    /// Routes in order; the first match wins.
    pub routes: Vec<Route>,
    /// Request header mutations of the virtual host.
    pub request_headers: HeaderOps,
    /// Response header mutations of the virtual host.
    pub response_headers: HeaderOps,
    /// Virtual-host level retry policy (a route's own policy replaces it).
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Lookup index for large route lists (`None` for short ones: a scan is faster).
    pub index: Option<RouteIndex>,
}

/// Index over a virtual host's routes that keeps first-match order.
///
/// Routes whose path is a plain prefix, exact path or separated prefix are keyed by that string;
/// per key the route indices are kept ascending. Routes with extra conditions (headers, query,
/// gRPC) are keyed the same way but still evaluated in full; regex and case-insensitive routes
/// are always evaluated (`scan`).
#[derive(Debug, Default)]
pub struct RouteIndex {
    /// Exact path -> route indices, ascending.
    pub exact: HashMap<String, Vec<usize>>,
    /// Prefix -> route indices, ascending.
    pub prefix: HashMap<String, Vec<usize>>,
    /// `path_separated_prefix` -> route indices, ascending.
    pub separated: HashMap<String, Vec<usize>>,
    /// Distinct prefix lengths, ascending.
    pub prefix_lens: Vec<usize>,
    /// Routes that must always be evaluated (regex, case-insensitive), ascending.
    pub scan: Vec<usize>,
}

/// Route lists at least this long get an index.
pub const INDEX_THRESHOLD: usize = 16;

impl RouteIndex {
    /// Build the index for `routes`.
    pub fn build(routes: &[Route]) -> RouteIndex {
        let mut ix = RouteIndex::default();
        let mut lens = std::collections::BTreeSet::new();
        for (i, r) in routes.iter().enumerate() {
            let m = &r.matcher;
            match &m.path {
                PathMatch::Exact(p) if m.case_sensitive => {
                    ix.exact.entry(p.clone()).or_default().push(i)
                }
                PathMatch::Prefix(p) if m.case_sensitive => {
                    ix.prefix.entry(p.clone()).or_default().push(i);
                    lens.insert(p.len());
                }
                PathMatch::SeparatedPrefix(p) => {
                    ix.separated.entry(p.clone()).or_default().push(i);
                    lens.insert(p.len());
                }
                _ => ix.scan.push(i),
            }
        }
        ix.prefix_lens = lens.into_iter().collect();
        ix
    }
}

/// Path part of a route match.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// `prefix`.
    Prefix(String),
    /// `path` (exact).
    Exact(String),
    /// `safe_regex` (whole path, query excluded).
    Regex(Regex),
    /// `path_separated_prefix`: prefix followed by end, `/`, `?` or `#`.
    SeparatedPrefix(String),
}

/// A compiled `RouteMatch`.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// Path test.
    pub path: PathMatch,
    /// `case_sensitive` (default true) for prefix/exact.
    pub case_sensitive: bool,
    /// All must match.
    pub headers: Vec<HeaderMatch>,
    /// All must match.
    pub query: Vec<QueryMatch>,
    /// Only gRPC requests (`content-type: application/grpc*`).
    pub grpc: bool,
}

/// A compiled `Route`.
#[derive(Debug)]
pub struct Route {
    /// Route name (may be empty).
    pub name: String,
    /// When it applies.
    pub matcher: RouteMatch,
    /// What it does.
    pub action: RouteAction,
    /// Request header mutations of the route.
    pub request_headers: HeaderOps,
    /// Response header mutations of the route.
    pub response_headers: HeaderOps,
}

/// What a route does.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward upstream.
    Forward(Box<Forward>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    Direct {
        /// Status.
        status: StatusCode,
        /// Body (may be empty).
        body: bytes::Bytes,
    },
    /// `non_forwarding_action`: the route exists for filters only; layer8 answers 404 (NR),
    /// as the router does when no filter handles the request.
    NonForwarding,
}

/// Which cluster(s) to send to.
#[derive(Debug)]
pub enum ClusterTarget {
    /// One cluster by name.
    Single(Arc<str>),
    /// A weighted split; weights summed into cumulative bounds.
    Weighted {
        /// (cumulative upper bound, cluster name, per-cluster header ops).
        clusters: Vec<WeightedTarget>,
        /// Sum of weights.
        total: u32,
    },
    /// Cluster named by a request header.
    Header(HeaderName),
}

/// One arm of a weighted split.
#[derive(Debug)]
pub struct WeightedTarget {
    /// Cumulative upper bound (exclusive).
    pub upper: u32,
    /// Cluster name.
    pub cluster: Arc<str>,
    /// Extra request header ops for this arm.
    pub request_headers: HeaderOps,
    /// Extra response header ops for this arm.
    pub response_headers: HeaderOps,
}

/// A compiled `RouteAction`.
#[derive(Debug)]
pub struct Forward {
    /// Destination.
    pub target: ClusterTarget,
    /// Whole-request timeout (`None` = disabled; Envoy's default is 15 s).
    pub timeout: Option<Duration>,
    /// Stream idle timeout override.
    pub idle_timeout: Option<Duration>,
    /// Path rewrite.
    pub rewrite: Option<PathRewrite>,
    /// Host rewrite.
    pub host_rewrite: Option<HostRewrite>,
    /// `append_x_forwarded_host`: on a host rewrite, append the original to `x-forwarded-host`.
    pub append_x_forwarded_host: bool,
    /// Retries.
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Hashing for ring hash / maglev.
    pub hash_policy: Vec<HashPolicy>,
    /// Shadowing.
    pub mirrors: Vec<Mirror>,
    /// Allow websocket (and other) upgrades.
    pub upgrades: bool,
}

/// `prefix_rewrite` or `regex_rewrite`.
#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replace the matched prefix (or whole path for exact matches).
    Prefix(String),
    /// Regex substitution on the path (query kept).
    Regex(Regex, String),
}

/// Host rewriting.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// `host_rewrite_literal`.
    Literal(HeaderValue),
    /// `auto_host_rewrite`: the upstream host's hostname (or address).
    Auto,
    /// `host_rewrite_header`.
    FromHeader(HeaderName),
}

/// A hash policy element.
#[derive(Debug, Clone)]
pub enum HashPolicy {
    /// Hash a header's value.
    Header(HeaderName, bool),
    /// Hash the downstream address.
    SourceIp(bool),
    /// Hash a query parameter.
    Query(String, bool),
    /// Hash a cookie's value.
    Cookie(String, bool),
}

/// A `request_mirror_policies` entry.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// Cluster to shadow to.
    pub cluster: Arc<str>,
    /// Fraction (per million) of requests to mirror.
    pub per_million: u32,
}

/// A compiled retry policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// Retry on 5xx.
    pub on_5xx: bool,
    /// Retry on 502/503/504.
    pub on_gateway_error: bool,
    /// Retry on connect failure.
    pub on_connect_failure: bool,
    /// Retry on h2 REFUSED_STREAM.
    pub on_refused_stream: bool,
    /// Retry on reset (disconnect/reset/timeout of the upstream before headers).
    pub on_reset: bool,
    /// Retry when the status is in `retriable_status_codes`.
    pub on_retriable_status: bool,
    /// Status codes for `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Retry on 409 (`retriable-4xx`).
    pub on_retriable_4xx: bool,
    /// `retriable-headers`: retry when any of `retriable_headers` matches the response.
    pub on_retriable_headers: bool,
    /// Response header matchers for `retriable-headers`.
    pub retriable_headers: ResponseMatchers,
    /// `grpc-status` values of a trailers-only response that retry (`cancelled` 1,
    /// `deadline-exceeded` 4, `resource-exhausted` 8, `internal` 13, `unavailable` 14).
    pub grpc_statuses: Vec<u8>,
    /// Max retries (default 1).
    pub num_retries: u32,
    /// Per-try timeout.
    pub per_try_timeout: Option<Duration>,
    /// Avoid previously attempted hosts (`previous_hosts` predicate).
    pub avoid_previous_hosts: bool,
    /// Max host selection attempts with the predicate.
    pub host_selection_attempts: u32,
    /// Base interval for backoff (default 25 ms).
    pub base_interval: Duration,
    /// Max interval (default 10 x base).
    pub max_interval: Duration,
}

/// Compiled response header matchers, compared by the configuration they came from (policies
/// are interned by value, and a compiled regex has no equality).
#[derive(Debug, Clone, Default)]
pub struct ResponseMatchers {
    /// The matchers.
    pub list: Vec<crate::model::matcher::HeaderMatch>,
    /// Their configuration, rendered: the identity used for equality and hashing.
    pub key: String,
}

impl PartialEq for ResponseMatchers {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ResponseMatchers {}

impl std::hash::Hash for ResponseMatchers {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// A redirect action.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// Status (301 by default).
    pub status: StatusCode,
    /// Scheme to use (`https_redirect` or `scheme_redirect`).
    pub scheme: Option<String>,
    /// Host to use.
    pub host: Option<String>,
    /// Port to use.
    pub port: Option<u16>,
    /// Path: whole replacement or prefix rewrite.
    pub path: Option<RedirectPath>,
    /// Drop the query string.
    pub strip_query: bool,
}

/// How a redirect rewrites the path.
#[derive(Debug, Clone)]
pub enum RedirectPath {
    /// `path_redirect`.
    Replace(String),
    /// `prefix_rewrite`.
    Prefix(String),
    /// `regex_rewrite`.
    Regex(Regex, String),
}

/// Header mutations (`*_headers_to_add`, `*_headers_to_remove`), pre-parsed.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    /// Names to remove.
    pub remove: Vec<HeaderName>,
    /// (name, value, append) to add.
    pub add: Vec<HeaderAdd>,
}

/// One header to add.
#[derive(Debug, Clone)]
pub struct HeaderAdd {
    /// Name.
    pub name: HeaderName,
    /// Value (formatters such as `%DOWNSTREAM_REMOTE_ADDRESS%` pre-parsed).
    pub value: HeaderFormat,
    /// What to do if the header exists.
    pub action: AppendAction,
}

/// Envoy's `HeaderValueOption.append_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Append another value.
    Append,
    /// Add only if absent.
    AddIfAbsent,
    /// Replace any existing value.
    Overwrite,
    /// Overwrite only if present.
    OverwriteIfExists,
}

/// A header value, either literal or one of the supported `%...%` command operators.
#[derive(Debug, Clone)]
pub enum HeaderFormat {
    /// Fixed value.
    Literal(HeaderValue),
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`.
    DownstreamRemoteAddressWithoutPort,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    DownstreamLocalAddress,
    /// `%UPSTREAM_REMOTE_ADDRESS%` (response headers only).
    UpstreamRemoteAddress,
    /// `%PROTOCOL%`.
    Protocol,
    /// `%REQ(x)%`.
    RequestHeader(HeaderName),
    /// `%HOSTNAME%`.
    Hostname(HeaderValue),
}

impl HeaderOps {
    /// True if there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}
