//! The extension registry: what layer8 does with each Envoy extension it meets, by type URL or
//! (for untyped configs) by filter name.

use layer8_xds::pb::ext::udpa::r#type::v1::TypedStruct;
use layer8_xds::pb::google::protobuf::Any;
use prost::Message;

/// The type URL a filter config is classified by: the `Any`'s own or, for a `TypedStruct` wrapper
/// (how istiod sends Istio-private filters such as `istio_authn`), the wrapped one. Classifying
/// the wrapper itself would let any wrapped filter, security ones included, pass as observational.
pub fn config_type_url(any: &Any) -> String {
    let outer = any.type_url.rsplit('/').next().unwrap_or_default();
    if outer == "udpa.type.v1.TypedStruct" || outer == "xds.type.v3.TypedStruct" {
        // Both TypedStructs have the same wire layout (type_url = 1, value = 2).
        if let Ok(ts) = TypedStruct::decode(any.value.as_slice()) {
            if !ts.type_url.is_empty() {
                return ts.type_url;
            }
        }
    }
    any.type_url.clone()
}

/// What to do with an HTTP filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFilterKind {
    /// The terminal router.
    Router,
    /// Observes only (stats, metadata exchange, compression negotiation...): skipped visibly.
    Observational,
    /// Enforces security: must be implemented or the resource is rejected.
    Security,
    /// Changes traffic in ways layer8 does not implement yet: rejected unless `is_optional`.
    Unsupported,
}

/// Short names and type names of HTTP filters layer8 knows about.
pub fn http_filter_kind(name: &str, type_url: &str) -> HttpFilterKind {
    let ty = type_url.rsplit('/').next().unwrap_or(type_url);
    match ty {
        "envoy.extensions.filters.http.router.v3.Router" => return HttpFilterKind::Router,
        "envoy.extensions.filters.http.rbac.v3.RBAC"
        | "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
        | "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
        | "envoy.extensions.filters.http.oauth2.v3.OAuth2"
        | "envoy.extensions.filters.http.basic_auth.v3.BasicAuth"
        | "istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig" => {
            return HttpFilterKind::Security
        }
        "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"
        | "envoy.extensions.filters.http.cors.v3.Cors"
        | "envoy.extensions.filters.http.fault.v3.HTTPFault"
        | "envoy.extensions.filters.http.compressor.v3.Compressor"
        | "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
        | "stats.PluginConfig"
        | "io.istio.http.peer_metadata.Config" => return HttpFilterKind::Observational,
        // Wasm (and an undecodable TypedStruct) can be anything, authn/authz plugins included:
        // classified by filter name below.
        _ => {}
    }
    match name {
        "envoy.filters.http.router" | "envoy.router" | "router" => HttpFilterKind::Router,
        "envoy.filters.http.rbac"
        | "envoy.filters.http.jwt_authn"
        | "envoy.filters.http.ext_authz"
        | "istio_authn"
        | "istio.authn" => HttpFilterKind::Security,
        "istio.metadata_exchange"
        | "istio.stats"
        | "istio.alpn"
        | "envoy.filters.http.cors"
        | "envoy.filters.http.fault"
        | "envoy.filters.http.grpc_stats"
        | "envoy.cors"
        | "envoy.fault"
        | "envoy.filters.http.compressor"
        | "istio.peer_metadata" => HttpFilterKind::Observational,
        _ => HttpFilterKind::Unsupported,
    }
}

/// What to do with a network filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFilterKind {
    /// `http_connection_manager`.
    Hcm,
    /// `tcp_proxy`.
    TcpProxy,
    /// `layer8.runtime`: the application runtime's gRPC API.
    Runtime,
    /// `layer8.actuator`: the runtime's health endpoints.
    Actuator,
    /// Observational (metadata exchange, stats): skipped visibly.
    Observational,
    /// Enforces security (network RBAC, ext_authz): rejected until implemented.
    Security,
    /// Anything else: rejected.
    Unsupported,
}

/// Classify a network filter.
pub fn network_filter_kind(name: &str, type_url: &str) -> NetworkFilterKind {
    let ty = type_url.rsplit('/').next().unwrap_or(type_url);
    match ty {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" => {
            return NetworkFilterKind::Hcm
        }
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
            return NetworkFilterKind::TcpProxy
        }
        "envoy.extensions.filters.network.rbac.v3.RBAC"
        | "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
        | "io.istio.network.authn.Config" => return NetworkFilterKind::Security,
        crate::runtime::config::RUNTIME_TYPE => return NetworkFilterKind::Runtime,
        crate::runtime::config::ACTUATOR_TYPE => return NetworkFilterKind::Actuator,
        "envoy.tcp.metadataexchange.config.MetadataExchange" | "stats.PluginConfig" => {
            return NetworkFilterKind::Observational
        }
        // Wasm (and an undecodable TypedStruct): by filter name below.
        _ => {}
    }
    match name {
        "envoy.filters.network.http_connection_manager" | "envoy.http_connection_manager" => {
            NetworkFilterKind::Hcm
        }
        "envoy.filters.network.tcp_proxy" | "envoy.tcp_proxy" => NetworkFilterKind::TcpProxy,
        crate::runtime::config::FILTER_NAME => NetworkFilterKind::Runtime,
        crate::runtime::config::ACTUATOR_FILTER_NAME => NetworkFilterKind::Actuator,
        "envoy.filters.network.rbac"
        | "envoy.filters.network.ext_authz"
        | "istio_authn"
        | "istio.authn" => NetworkFilterKind::Security,
        "istio.metadata_exchange" | "istio.stats" | "envoy.filters.network.metadata_exchange" => {
            NetworkFilterKind::Observational
        }
        _ => NetworkFilterKind::Unsupported,
    }
}
