//! Where dynamic configuration comes from: the bootstrap's `dynamic_resources` (the ADS stream
//! and its server) and the `ConfigSource`s inside resources (RDS, EDS, SDS).

use std::path::PathBuf;
use std::time::Duration;

use layer8_xds::client::{Backoff, Protocol, Target};
use layer8_xds::pb::envoy::config::bootstrap::v3::Bootstrap;
use layer8_xds::pb::envoy::config::core::v3 as core;

use super::{duration, ConfigError, Ctx};

/// A resolved config source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The ADS stream.
    Ads,
    /// A stream of its own to the bootstrap cluster of this name.
    Cluster(String),
}

/// Resolve a `ConfigSource` specifier. Only gRPC sources are supported: ADS, `self`, or an
/// `api_config_source` naming one `envoy_grpc` cluster.
pub fn source(
    spec: &core::config_source::ConfigSourceSpecifier,
    ctx: &Ctx,
) -> Result<Source, ConfigError> {
    use core::config_source::ConfigSourceSpecifier as S;
    match spec {
        S::Ads(_) | S::Self_(_) => Ok(Source::Ads),
        S::ApiConfigSource(a) => {
            let ctx = ctx.at("api_config_source");
            api_type(a, &ctx)?;
            let gs = only_service(a, &ctx)?;
            match &gs.target_specifier {
                Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(e)) => {
                    Ok(Source::Cluster(e.cluster_name.clone()))
                }
                _ => Err(ctx
                    .at("grpc_services[0]")
                    .err("only envoy_grpc is supported for this config source")),
            }
        }
        S::Path(_) | S::PathConfigSource(_) => Err(ctx
            .at("path_config_source")
            .err("filesystem config sources are not supported")),
    }
}

/// A resource's reference to a source that must be the ADS stream (RDS, EDS): checks it and
/// returns its initial fetch timeout.
pub fn ads_only(
    cs: Option<&core::ConfigSource>,
    what: &str,
    ctx: &Ctx,
) -> Result<Option<Duration>, ConfigError> {
    let cs = cs.ok_or_else(|| ctx.err("required"))?;
    let spec = cs
        .config_source_specifier
        .as_ref()
        .ok_or_else(|| ctx.err("a config source is required"))?;
    if source(spec, ctx)? != Source::Ads {
        return Err(ctx.err(format!("{what} is supported over ADS only")));
    }
    initial_fetch_timeout(cs, ctx)
}

/// `initial_fetch_timeout`: `None` waits forever (`0s`); unset is Envoy's 15 s.
pub fn initial_fetch_timeout(
    cs: &core::ConfigSource,
    ctx: &Ctx,
) -> Result<Option<Duration>, ConfigError> {
    match &cs.initial_fetch_timeout {
        None => Ok(Some(Duration::from_secs(15))),
        Some(d) => {
            let d = duration(d, &ctx.at("initial_fetch_timeout"))?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

fn api_type(a: &core::ApiConfigSource, ctx: &Ctx) -> Result<Protocol, ConfigError> {
    use core::api_config_source::ApiType;
    match ApiType::try_from(a.api_type) {
        Ok(ApiType::Grpc) => Ok(Protocol::Sotw),
        Ok(ApiType::DeltaGrpc) => Ok(Protocol::Delta),
        _ => Err(ctx
            .at("api_type")
            .err("only GRPC and DELTA_GRPC are supported")),
    }
}

fn only_service<'a>(
    a: &'a core::ApiConfigSource,
    ctx: &Ctx,
) -> Result<&'a core::GrpcService, ConfigError> {
    match a.grpc_services.as_slice() {
        [gs] => Ok(gs),
        [] => Err(ctx.at("grpc_services").err("one gRPC service is required")),
        _ => Err(ctx
            .at("grpc_services")
            .err("only one gRPC service is supported")),
    }
}

/// How to reach a management server.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address.
    pub target: Target,
    /// TLS to it (the cluster's `UpstreamTlsContext`).
    pub tls: Option<layer8_xds::client::Tls>,
    /// SotW or Delta.
    pub protocol: Protocol,
    /// `set_node_on_first_message_only`.
    pub node_first_only: bool,
    /// Reconnect backoff (`retry_policy.retry_back_off`, else Envoy's 500 ms .. 30 s).
    pub backoff: Backoff,
}

/// The ADS server of a bootstrap, if it has `dynamic_resources.ads_config`; LDS and CDS must
/// come over it.
pub fn ads(b: &Bootstrap) -> Result<Option<Server>, ConfigError> {
    let Some(dr) = &b.dynamic_resources else {
        return Ok(None);
    };
    let ctx = Ctx::new("bootstrap", "dynamic_resources");
    for (field, cs) in [
        ("lds_config", &dr.lds_config),
        ("cds_config", &dr.cds_config),
    ] {
        let Some(cs) = cs else { continue };
        let ctx = ctx.at(field);
        match &cs.config_source_specifier {
            Some(core::config_source::ConfigSourceSpecifier::Ads(_)) => {}
            _ => return Err(ctx.err("only ads is supported")),
        }
        if dr.ads_config.is_none() {
            return Err(ctx.err("ads requires dynamic_resources.ads_config"));
        }
    }
    let Some(a) = &dr.ads_config else {
        return Ok(None);
    };
    server(b, a, &ctx.at("ads_config")).map(Some)
}

/// The server behind an `api_config_source` (ADS, or the SDS cluster of a `Source::Cluster`).
pub fn server(b: &Bootstrap, a: &core::ApiConfigSource, ctx: &Ctx) -> Result<Server, ConfigError> {
    let protocol = api_type(a, ctx)?;
    let gs = only_service(a, ctx)?;
    let ctx = ctx.at("grpc_services[0]");
    let ((target, tls), retry) = match &gs.target_specifier {
        Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(e)) => (
            cluster_target(b, &e.cluster_name, &ctx.at("envoy_grpc.cluster_name"))?,
            e.retry_policy.as_ref(),
        ),
        Some(core::grpc_service::TargetSpecifier::GoogleGrpc(g)) => {
            if g.channel_credentials.is_some() {
                return Err(ctx.at("google_grpc.channel_credentials").err(
                    "google_grpc credentials are not supported; use envoy_grpc with a TLS cluster",
                ));
            }
            (
                (
                    google_target(&g.target_uri, &ctx.at("google_grpc.target_uri"))?,
                    None,
                ),
                None,
            )
        }
        None => return Err(ctx.err("envoy_grpc or google_grpc is required")),
    };
    let mut backoff = Backoff::default();
    if let Some(bo) = retry.and_then(|r| r.retry_back_off.as_ref()) {
        let ctx = ctx.at("envoy_grpc.retry_policy.retry_back_off");
        if let Some(d) = &bo.base_interval {
            backoff.base = duration(d, &ctx.at("base_interval"))?;
        }
        backoff.max = match &bo.max_interval {
            Some(d) => duration(d, &ctx.at("max_interval"))?,
            None => backoff.base * 10,
        };
        if backoff.base.is_zero() || backoff.max < backoff.base {
            return Err(ctx.err("base_interval must be positive and not above max_interval"));
        }
    }
    Ok(Server {
        target,
        tls,
        protocol,
        node_first_only: a.set_node_on_first_message_only,
        backoff,
    })
}

/// A gRPC server for a `Source::Cluster`: SotW `StreamSecrets` on the named bootstrap cluster.
pub fn cluster_server(b: &Bootstrap, cluster: &str, ctx: &Ctx) -> Result<Server, ConfigError> {
    let (target, tls) = cluster_target(b, cluster, ctx)?;
    Ok(Server {
        target,
        tls,
        protocol: Protocol::Sotw,
        node_first_only: true,
        backoff: Backoff::default(),
    })
}

/// The first endpoint of a static bootstrap cluster (a Unix `pipe` or an IP socket address), and
/// the TLS to speak to it when the cluster has a TLS transport socket.
fn cluster_target(
    b: &Bootstrap,
    name: &str,
    ctx: &Ctx,
) -> Result<(Target, Option<layer8_xds::client::Tls>), ConfigError> {
    let cluster = b
        .static_resources
        .as_ref()
        .and_then(|s| s.clusters.iter().find(|c| c.name == name))
        .ok_or_else(|| ctx.err(format!("no static cluster named '{name}'")))?;
    let tls_socket = cluster
        .transport_socket
        .as_ref()
        .filter(|ts| super::is_tls_transport(ts));
    let addr = cluster
        .load_assignment
        .as_ref()
        .and_then(|la| la.endpoints.first())
        .and_then(|l| l.lb_endpoints.first())
        .and_then(|e| match &e.host_identifier {
            Some(
                layer8_xds::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    ep,
                ),
            ) => ep.address.as_ref(),
            _ => None,
        })
        .and_then(|a| a.address.as_ref())
        .ok_or_else(|| ctx.err(format!("cluster '{name}' has no endpoint")))?;
    match addr {
        core::address::Address::Pipe(p) => {
            if tls_socket.is_some() {
                return Err(ctx.err(format!(
                    "cluster '{name}': TLS to a management server on a Unix socket is not supported"
                )));
            }
            Ok((Target::Unix(PathBuf::from(&p.path)), None))
        }
        core::address::Address::SocketAddress(sa) => {
            let port = match sa.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => p,
                _ => return Err(ctx.err(format!("cluster '{name}': endpoint needs a port_value"))),
            };
            let host = if sa.address.contains(':') {
                format!("[{}]", sa.address)
            } else {
                sa.address.clone()
            };
            let tls = tls_socket
                .map(|ts| {
                    super::tls::management_client(ts, &sa.address, &Ctx::new("cluster", name))
                })
                .transpose()?;
            Ok((Target::Tcp(format!("{host}:{port}")), tls))
        }
        _ => Err(ctx.err(format!("cluster '{name}': unsupported endpoint address"))),
    }
}

/// `google_grpc.target_uri`: `unix:PATH`, `unix://PATH`, `dns:///HOST:PORT` or `HOST:PORT`.
fn google_target(uri: &str, ctx: &Ctx) -> Result<Target, ConfigError> {
    if let Some(p) = uri
        .strip_prefix("unix://")
        .or_else(|| uri.strip_prefix("unix:"))
    {
        return Ok(Target::Unix(PathBuf::from(p)));
    }
    let hostport = uri
        .strip_prefix("dns:///")
        .or_else(|| uri.strip_prefix("ipv4:"))
        .or_else(|| uri.strip_prefix("ipv6:"))
        .unwrap_or(uri);
    if hostport
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        return Err(ctx.err(format!("'{uri}' is not unix:PATH or HOST:PORT")));
    }
    Ok(Target::Tcp(hostport.to_string()))
}
