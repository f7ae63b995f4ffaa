//! `Cluster` -> [`ClusterConfig`].

use std::time::Duration;

use layer8_xds::pb::envoy::config::cluster::v3 as pb;
use layer8_xds::pb::envoy::config::core::v3 as core;
use layer8_xds::pb::envoy::config::endpoint::v3 as ep;
use layer8_xds::pb::ext::envoy::extensions::upstreams::http::v3 as httpopts;

use super::{config_hash, duration, timeout, ConfigError, Ctx, Notes};
use crate::model::cluster::*;

/// Compile a cluster.
pub fn translate(c: &pb::Cluster, notes: &mut Notes) -> Result<ClusterConfig, ConfigError> {
    let ctx = Ctx::new("cluster", &c.name);
    if c.name.is_empty() {
        return Err(ctx.at("name").err("must not be empty"));
    }
    use pb::cluster::{ClusterDiscoveryType as CDT, DiscoveryType as DT, LbPolicy as LP};
    let discovery = match &c.cluster_discovery_type {
        None => Discovery::Static,
        Some(CDT::Type(t)) => match DT::try_from(*t) {
            Ok(DT::Static) => Discovery::Static,
            Ok(DT::StrictDns) => Discovery::StrictDns,
            Ok(DT::LogicalDns) => Discovery::LogicalDns,
            Ok(DT::OriginalDst) => Discovery::OriginalDst,
            Ok(DT::Eds) => Discovery::Eds,
            Err(_) => return Err(ctx.at("type").err(format!("unknown discovery type {t}"))),
        },
        Some(CDT::ClusterType(ct)) => {
            return Err(ctx.at("cluster_type").err(format!(
                "custom cluster type '{}' is not supported",
                ct.name
            )))
        }
    };
    let lb = match LP::try_from(c.lb_policy) {
        Ok(LP::RoundRobin) => LbPolicy::RoundRobin,
        Ok(LP::LeastRequest) => {
            let choices = match &c.lb_config {
                Some(pb::cluster::LbConfig::LeastRequestLbConfig(l)) => {
                    l.choice_count.as_ref().map_or(2, |v| v.value)
                }
                _ => 2,
            };
            LbPolicy::LeastRequest { choices }
        }
        Ok(LP::Random) => LbPolicy::Random,
        Ok(LP::RingHash) => {
            let (min_ring, max_ring) = match &c.lb_config {
                Some(pb::cluster::LbConfig::RingHashLbConfig(r)) => (
                    r.minimum_ring_size.as_ref().map_or(1024, |v| v.value),
                    r.maximum_ring_size.as_ref().map_or(8 << 20, |v| v.value),
                ),
                _ => (1024, 8 << 20),
            };
            if min_ring > max_ring {
                return Err(ctx
                    .at("ring_hash_lb_config")
                    .err("minimum_ring_size exceeds maximum_ring_size"));
            }
            LbPolicy::RingHash { min_ring, max_ring }
        }
        Ok(LP::Maglev) => {
            let table_size = match &c.lb_config {
                Some(pb::cluster::LbConfig::MaglevLbConfig(m)) => {
                    m.table_size.as_ref().map_or(65537, |v| v.value)
                }
                _ => 65537,
            };
            if !is_prime(table_size) {
                return Err(ctx
                    .at("maglev_lb_config.table_size")
                    .err("must be a prime number"));
            }
            LbPolicy::Maglev { table_size }
        }
        Ok(LP::ClusterProvided) => LbPolicy::ClusterProvided,
        _ => {
            return Err(ctx
                .at("lb_policy")
                .err(format!("unsupported lb_policy {}", c.lb_policy)))
        }
    };
    if discovery == Discovery::OriginalDst
        && lb != LbPolicy::ClusterProvided
        && lb != LbPolicy::RoundRobin
    {
        return Err(ctx
            .at("lb_policy")
            .err("ORIGINAL_DST clusters must use CLUSTER_PROVIDED"));
    }
    let mut endpoints = Vec::new();
    if let Some(la) = &c.load_assignment {
        endpoints = load_assignment(
            la,
            &ctx.at("load_assignment"),
            discovery == Discovery::StrictDns || discovery == Discovery::LogicalDns,
        )?;
    }
    // Envoy accepts STATIC and STRICT_DNS clusters without members (Istio's `BlackHoleCluster`
    // is a STATIC cluster with no load_assignment); LOGICAL_DNS needs its one host.
    if discovery == Discovery::LogicalDns && c.load_assignment.is_none() {
        return Err(ctx
            .at("load_assignment")
            .err("required for LOGICAL_DNS clusters"));
    }
    let mut thresholds = Thresholds::default();
    if let Some(cb) = &c.circuit_breakers {
        for t in &cb.thresholds {
            if t.priority != core::RoutingPriority::Default as i32 {
                continue;
            }
            if let Some(v) = &t.max_connections {
                thresholds.max_connections = u64::from(v.value);
            }
            if let Some(v) = &t.max_pending_requests {
                thresholds.max_pending_requests = u64::from(v.value);
            }
            if let Some(v) = &t.max_requests {
                thresholds.max_requests = u64::from(v.value);
            }
            if let Some(v) = &t.max_retries {
                thresholds.max_retries = u64::from(v.value);
            }
        }
    }
    #[allow(deprecated)]
    let mut protocol = if c.http2_protocol_options.is_some() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    let mut idle_timeout = Some(Duration::from_secs(3600));
    #[allow(deprecated)]
    let mut max_requests_per_connection = c.max_requests_per_connection.as_ref().map(|v| v.value);
    for (key, any) in &c.typed_extension_protocol_options {
        let octx = ctx.at(format!("typed_extension_protocol_options.{key}"));
        if any
            .type_url
            .ends_with("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        {
            let opts: httpopts::HttpProtocolOptions =
                any.to_msg().map_err(|e| octx.err(e.to_string()))?;
            use httpopts::http_protocol_options::{
                explicit_http_config::ProtocolConfig as PC, UpstreamProtocolOptions as U,
            };
            match &opts.upstream_protocol_options {
                Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                    Some(PC::Http2ProtocolOptions(_)) => protocol = UpstreamProtocol::Http2,
                    Some(PC::HttpProtocolOptions(_)) => protocol = UpstreamProtocol::Http1,
                    Some(PC::Http3ProtocolOptions(_)) => {
                        return Err(octx.err("HTTP/3 upstreams are not supported"))
                    }
                    None => {}
                },
                Some(U::UseDownstreamProtocolConfig(_)) => {
                    protocol = UpstreamProtocol::UseDownstream
                }
                Some(U::AutoConfig(_)) => protocol = UpstreamProtocol::Http1,
                None => {}
            }
            if let Some(common) = &opts.common_http_protocol_options {
                idle_timeout = timeout(
                    common.idle_timeout.as_ref(),
                    idle_timeout,
                    &octx.at("common_http_protocol_options.idle_timeout"),
                )?;
                if let Some(m) = &common.max_requests_per_connection {
                    max_requests_per_connection = Some(m.value);
                }
            }
        } else {
            notes.skip(&octx, format!("protocol options {}", any.type_url));
        }
    }
    let bind_addr = match &c.upstream_bind_config {
        Some(b) => match b.source_address.as_ref() {
            Some(sa) => Some(sa.address.parse().map_err(|_| {
                ctx.at("upstream_bind_config.source_address.address")
                    .err("not an IP address")
            })?),
            None => None,
        },
        None => None,
    };
    let tls = c
        .transport_socket
        .as_ref()
        .is_some_and(super::is_tls_transport);
    if tls {
        notes.skip(
            &ctx.at("transport_socket"),
            "upstream TLS (requests to this cluster fail with UF until mTLS lands)",
        );
    }
    let mut secrets = Vec::new();
    if let Some(ts) = &c.transport_socket {
        secrets.extend(super::secret::refs(ts, &ctx.at("transport_socket"))?);
    }
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        if let Some(ts) = &m.transport_socket {
            secrets.extend(super::secret::refs(
                ts,
                &ctx.at(format!("transport_socket_matches[{i}].transport_socket")),
            )?);
        }
    }
    secrets.sort();
    secrets.dedup();
    let mut eds_fetch_timeout = None;
    if discovery == Discovery::Eds {
        eds_fetch_timeout = super::config_source::ads_only(
            c.eds_cluster_config
                .as_ref()
                .and_then(|e| e.eds_config.as_ref()),
            "EDS",
            &ctx.at("eds_cluster_config.eds_config"),
        )?;
    }
    if !c.transport_socket_matches.is_empty() {
        notes.skip(
            &ctx.at("transport_socket_matches"),
            "transport socket matches (plaintext is used)",
        );
    }
    if !c.health_checks.is_empty() {
        notes.skip(&ctx.at("health_checks"), "active health checking");
    }
    if c.outlier_detection.is_some() {
        notes.skip(&ctx.at("outlier_detection"), "outlier detection");
    }
    Ok(ClusterConfig {
        name: c.name.clone(),
        discovery,
        eds_service_name: c
            .eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.clone())
            .filter(|s| !s.is_empty()),
        eds_fetch_timeout,
        secrets,
        lb,
        endpoints,
        connect_timeout: match &c.connect_timeout {
            Some(d) => duration(d, &ctx.at("connect_timeout"))?,
            None => Duration::from_secs(5),
        },
        dns_refresh: match &c.dns_refresh_rate {
            Some(d) => duration(d, &ctx.at("dns_refresh_rate"))?.max(Duration::from_millis(1)),
            None => Duration::from_secs(5),
        },
        dns_family: {
            use pb::cluster::DnsLookupFamily as F;
            match F::try_from(c.dns_lookup_family) {
                Ok(F::V4Only) => DnsFamily::V4Only,
                Ok(F::V6Only) => DnsFamily::V6Only,
                Ok(F::V4Preferred) => DnsFamily::V4Preferred,
                Ok(F::All) => DnsFamily::All,
                _ => DnsFamily::Auto,
            }
        },
        thresholds,
        protocol,
        idle_timeout,
        max_requests_per_connection,
        bind_addr,
        tls,
        buffer_limit: c
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map_or(1 << 20, |v| v.value),
        config_hash: config_hash(c),
    })
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|i| i * i <= n).all(|i| n % i != 0)
}

/// Compile a `ClusterLoadAssignment` (inline or from EDS).
pub fn load_assignment(
    la: &ep::ClusterLoadAssignment,
    ctx: &Ctx,
    dns: bool,
) -> Result<Vec<EndpointConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, lep) in la.endpoints.iter().enumerate() {
        let lctx = ctx.at(format!("endpoints[{i}]"));
        let locality_weight = lep.load_balancing_weight.as_ref().map_or(1, |w| w.value);
        for (j, lb) in lep.lb_endpoints.iter().enumerate() {
            let ectx = lctx.at(format!("lb_endpoints[{j}]"));
            let Some(ep::lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                return Err(ectx
                    .at("endpoint")
                    .err("endpoint is required (named endpoints are not supported)"));
            };
            let addr = e
                .address
                .as_ref()
                .ok_or_else(|| ectx.at("endpoint.address").err("required"))?;
            let addr = endpoint_addr(addr, &ectx.at("endpoint.address"), dns)?;
            let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
            if weight == 0 {
                return Err(ectx.at("load_balancing_weight").err("must be at least 1"));
            }
            use core::HealthStatus as HS;
            let unhealthy = matches!(
                HS::try_from(lb.health_status),
                Ok(HS::Unhealthy | HS::Draining | HS::Timeout)
            );
            out.push(EndpointConfig {
                addr,
                weight,
                locality_weight,
                priority: lep.priority,
                hostname: e.hostname.clone(),
                unhealthy,
            });
        }
    }
    Ok(out)
}

fn endpoint_addr(a: &core::Address, ctx: &Ctx, dns: bool) -> Result<EndpointAddr, ConfigError> {
    match &a.address {
        Some(core::address::Address::SocketAddress(sa)) => {
            let port = match sa.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .map_err(|_| ctx.at("socket_address.port_value").err("out of range"))?,
                _ => return Err(ctx.at("socket_address.port_value").err("required")),
            };
            match sa.address.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(EndpointAddr::Ip(std::net::SocketAddr::new(ip, port))),
                Err(_) if dns => Ok(EndpointAddr::Dns(sa.address.clone(), port)),
                Err(_) => Err(ctx.at("socket_address.address").err(format!(
                    "'{}' is not an IP address (use a DNS cluster type for host names)",
                    sa.address
                ))),
            }
        }
        Some(core::address::Address::Pipe(p)) => Ok(EndpointAddr::Unix(p.path.clone().into())),
        Some(core::address::Address::EnvoyInternalAddress(_)) => Err(ctx
            .at("envoy_internal_address")
            .err("internal listeners are not supported yet")),
        _ => Err(ctx.err("unsupported address type")),
    }
}
