//! A synthetic, istiod-shaped configuration of any size: what istiod sends a sidecar in a large
//! mesh (one EDS cluster and one service-address listener per service, per-port route
//! configurations with a virtual host per service).

use std::net::SocketAddr;

use layer8_xds::pb::google::protobuf::Any;
use serde_json::{json, Value};

use crate::files::resource_from_json;

/// Size of a synthetic mesh.
#[derive(Debug, Clone, Copy)]
pub struct Mesh {
    /// Services: one EDS cluster, one endpoint assignment and one listener each.
    pub services: usize,
    /// Route configurations (service ports) the services are spread over.
    pub route_configs: usize,
    /// Routes per virtual host (one virtual host per service).
    pub routes_per_service: usize,
    /// Endpoints per service.
    pub endpoints: usize,
}

/// The cluster name of service `i`.
pub fn cluster_name(i: usize) -> String {
    format!("outbound|8080||svc-{i}.ns-{}.svc.cluster.local", i % 10)
}

fn ads() -> Value {
    json!({"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"})
}

fn cluster(i: usize) -> Value {
    let name = cluster_name(i);
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name, "type": "EDS",
        "eds_cluster_config": {"eds_config": ads(), "service_name": name},
        "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{"max_connections": 4294967295u32, "max_pending_requests": 4294967295u32,
            "max_requests": 4294967295u32, "max_retries": 4294967295u32, "track_remaining": true}]},
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "metadata": {"filter_metadata": {"istio": {"services": [{"host": format!("svc-{i}.ns-{}.svc.cluster.local", i % 10), "name": format!("svc-{i}"), "namespace": format!("ns-{}", i % 10)}]}}}
    })
}

fn assignment(i: usize, m: &Mesh, upstream: SocketAddr) -> Value {
    let eps: Vec<Value> = (0..m.endpoints)
        .map(|_| json!({
            "endpoint": {"address": {"socket_address": {"address": upstream.ip().to_string(), "port_value": upstream.port()}}},
            "metadata": {"filter_metadata": {"istio": {"workload": format!("svc-{i};ns;svc-{i};v1;Kubernetes")}}},
            "load_balancing_weight": 1
        }))
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster_name(i),
        "endpoints": [{"locality": {"region": "r", "zone": "z"}, "lb_endpoints": eps, "load_balancing_weight": m.endpoints}]
    })
}

fn listener(i: usize, m: &Mesh) -> Value {
    let ip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
    let route = format!("{}", 8000 + i % m.route_configs);
    json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": format!("{ip}_8080"),
        "address": {"socket_address": {"address": ip, "port_value": 8080}},
        "bind_to_port": false,
        "traffic_direction": "OUTBOUND",
        "listener_filters": [
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}},
            {"name": "envoy.filters.listener.http_inspector", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}
        ],
        "listener_filters_timeout": "0s",
        "continue_on_listener_filters_timeout": true,
        "filter_chains": [{
            "filter_chain_match": {"transport_protocol": "raw_buffer", "application_protocols": ["http/1.1", "h2c"]},
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": format!("outbound_{ip}_8080"),
                "rds": {"config_source": ads(), "route_config_name": route},
                "use_remote_address": false,
                "upgrade_configs": [{"upgrade_type": "websocket"}],
                "stream_idle_timeout": "0s",
                "normalize_path": true,
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }}]
        }],
        "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": cluster_name(i), "cluster": cluster_name(i)}}]}
    })
}

fn route_config(r: usize, m: &Mesh) -> Value {
    let vhosts: Vec<Value> = (0..m.services)
        .filter(|i| i % m.route_configs == r)
        .map(|i| {
            let host = format!("svc-{i}.ns-{}.svc.cluster.local", i % 10);
            let routes: Vec<Value> = (0..m.routes_per_service)
                .map(|k| {
                    let matcher = if k + 1 == m.routes_per_service {
                        json!({"prefix": "/"})
                    } else {
                        json!({"prefix": format!("/api/v{k}/")})
                    };
                    json!({
                        "name": format!("r{k}"), "match": matcher,
                        "route": {"cluster": cluster_name(i), "timeout": "0s",
                            "retry_policy": {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                                "num_retries": 2, "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
                                "host_selection_retry_max_attempts": "5"},
                            "max_grpc_timeout": "0s"},
                        "decorator": {"operation": format!("{host}:8080/*")}
                    })
                })
                .collect();
            json!({"name": format!("{host}:8080"), "domains": [host.clone(), format!("{host}:8080"), format!("svc-{i}"), format!("svc-{i}:8080")],
                   "routes": routes, "include_request_attempt_count": true})
        })
        .collect();
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": format!("{}", 8000 + r),
        "virtual_hosts": vhosts,
        "validate_clusters": false
    })
}

/// Every resource of the mesh: clusters, endpoint assignments (all pointing at `upstream`),
/// listeners and route configurations.
pub fn mesh(m: &Mesh, upstream: SocketAddr) -> Result<Vec<Any>, String> {
    let mut out = Vec::with_capacity(m.services * 3 + m.route_configs);
    for i in 0..m.services {
        out.push(resource_from_json(cluster(i))?);
        out.push(resource_from_json(assignment(i, m, upstream))?);
        out.push(resource_from_json(listener(i, m))?);
    }
    for r in 0..m.route_configs {
        out.push(resource_from_json(route_config(r, m))?);
    }
    Ok(out)
}

/// The endpoint assignment of service `i` alone (for EDS update benchmarks).
pub fn assignment_of(i: usize, m: &Mesh, upstream: SocketAddr) -> Result<Any, String> {
    resource_from_json(assignment(i, m, upstream))
}
