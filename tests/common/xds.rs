//! xDS test helpers: bootstraps that point layer8 (or Envoy) at the in-repo control plane, and
//! resource builders.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use layer8_test_control_plane::files::resource_from_json;
use layer8_xds::pb::google::protobuf::Any;
use serde_json::{json, Value};

/// Where the control plane listens, as the bootstrap's `xds-grpc` cluster endpoint.
pub enum CpAddr<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

/// A bootstrap with an admin port, `dynamic_resources` over ADS (SotW `GRPC` or `DELTA_GRPC`)
/// and the `xds-grpc` cluster, as pilot-agent renders it.
pub fn ads_bootstrap(admin: u16, cp: CpAddr<'_>, delta: bool) -> String {
    let address = match cp {
        CpAddr::Tcp(a) => {
            json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
        }
        CpAddr::Unix(p) => json!({"pipe": {"path": p.display().to_string()}}),
    };
    let v = json!({
        "node": {"id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local", "cluster": "app.default",
                 "metadata": {"ISTIO_VERSION": "1.20.8", "NAMESPACE": "default"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "ads_config": {
                "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
                "set_node_on_first_message_only": true,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc",
                    "retry_policy": {"retry_back_off": {"base_interval": "0.05s", "max_interval": "0.5s"}}}}]
            }
        },
        "static_resources": {"clusters": [{
            "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}
        }]}
    });
    serde_json::to_string_pretty(&v).expect("bootstrap json")
}

pub fn any(v: Value) -> Any {
    resource_from_json(v).unwrap_or_else(|e| panic!("resource: {e}"))
}

/// An EDS cluster fed over ADS (waiting for its endpoints forever).
pub fn eds_cluster(name: &str) -> Any {
    eds_cluster_with_timeout(name, "0s")
}

/// An EDS cluster with this `initial_fetch_timeout`.
pub fn eds_cluster_with_timeout(name: &str, timeout: &str) -> Any {
    any(json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name, "type": "EDS", "connect_timeout": "1s",
        "eds_cluster_config": {"service_name": name, "eds_config": {"ads": {}, "initial_fetch_timeout": timeout, "resource_api_version": "V3"}}
    }))
}

/// The endpoints of an EDS service.
pub fn assignment(name: &str, addrs: &[SocketAddr]) -> Any {
    let eps: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}}))
        .collect();
    any(json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": eps}]
    }))
}

/// An HTTP listener on 127.0.0.1:`port` whose routes come over RDS as `route`.
pub fn rds_listener(name: &str, port: u16, route: &str) -> Any {
    rds_listener_with_timeout(name, port, route, "0s")
}

/// The same, with this RDS `initial_fetch_timeout`.
pub fn rds_listener_with_timeout(name: &str, port: u16, route: &str, timeout: &str) -> Any {
    any(json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"route_config_name": route, "config_source": {"ads": {}, "initial_fetch_timeout": timeout, "resource_api_version": "V3"}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }
        }]}]
    }))
}

/// A route configuration: one virtual host per `(domain, cluster)`, each routing `/` to its
/// cluster and adding `x-route: <name>/<domain>` to responses.
pub fn route_config(name: &str, hosts: &[(&str, &str)]) -> Any {
    let vhosts: Vec<Value> = hosts
        .iter()
        .map(|(domain, cluster)| json!({
            "name": domain, "domains": [domain],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster},
                        "response_headers_to_add": [{"header": {"key": "x-route", "value": format!("{name}/{domain}")}}]}]
        }))
        .collect();
    any(json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": name, "virtual_hosts": vhosts
    }))
}

/// A route configuration layer8 must reject: a regex that does not compile.
pub fn bad_route_config(name: &str) -> Any {
    any(json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": [{"name": "bad", "domains": ["*"],
            "routes": [{"match": {"safe_regex": {"regex": "(unclosed"}}, "route": {"cluster": "x"}}]}]
    }))
}

/// GET `path` with `Host: host` through 127.0.0.1:`port` with curl-like blocking HTTP/1.1.
pub fn admin_json(admin: u16, path: &str) -> Value {
    let (status, body) = super::blocking_get(admin, path).unwrap_or_else(|| panic!("GET {path}"));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A stat from the admin `/stats` text of a process (0 when absent).
pub fn admin_stat(admin: u16, name: &str) -> String {
    let (_, body) = super::blocking_get(admin, &format!("/stats?filter=^{}$", regex_escape(name)))
        .unwrap_or_else(|| panic!("GET /stats"));
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .unwrap_or_else(|| "0".into())
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".|()[]{}*+?^$\\".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}
