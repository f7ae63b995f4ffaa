//! `Listener` -> [`ListenerConfig`], including filter chains, the HTTP connection manager and
//! tcp_proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use layer8_xds::pb::envoy::config::core::v3 as core;
use layer8_xds::pb::envoy::config::listener::v3 as pb;
use layer8_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use layer8_xds::pb::ext::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;

use super::extensions::{
    config_type_url, http_filter_kind, network_filter_kind, HttpFilterKind, NetworkFilterKind,
};
use super::{config_hash, timeout, ConfigError, Ctx, Notes};
use crate::model::listener::*;
use crate::stats;

/// Compile a listener.
pub fn translate(l: &pb::Listener, notes: &mut Notes) -> Result<ListenerConfig, ConfigError> {
    let ctx = Ctx::new("listener", &l.name);
    // Listener-wide features layer8 does not implement are checked first, so the error names
    // them rather than whatever their filter chains (selected by name under a
    // filter_chain_matcher) or their missing address trips over first.
    if l.filter_chain_matcher.is_some() {
        return Err(ctx
            .at("filter_chain_matcher")
            .err("filter_chain_matcher is not supported yet"));
    }
    if let Some(pb::listener::ListenerSpecifier::InternalListener(_)) = &l.listener_specifier {
        return Err(ctx
            .at("internal_listener")
            .err("internal listeners are not supported yet"));
    }
    let address = listen_addr(
        l.address
            .as_ref()
            .ok_or_else(|| ctx.at("address").err("required"))?,
        &ctx.at("address"),
    )?;
    let mut inspectors = Inspectors::default();
    for (i, f) in l.listener_filters.iter().enumerate() {
        let fctx = ctx.at(format!("listener_filters[{i}]"));
        let ty = match &f.config_type {
            Some(pb::listener_filter::ConfigType::TypedConfig(a)) => a.type_url.as_str(),
            _ => "",
        };
        let name = f.name.as_str();
        if ty.ends_with("TlsInspector")
            || name == "envoy.filters.listener.tls_inspector"
            || name == "envoy.listener.tls_inspector"
        {
            inspectors.tls = true;
        } else if ty.ends_with("HttpInspector")
            || name == "envoy.filters.listener.http_inspector"
            || name == "envoy.listener.http_inspector"
        {
            inspectors.http = true;
        } else if ty.ends_with("OriginalDst")
            || name == "envoy.filters.listener.original_dst"
            || name == "envoy.listener.original_dst"
        {
            inspectors.original_dst = true;
        } else {
            return Err(fctx.err(format!("unsupported listener filter '{name}' ({ty})")));
        }
        if f.filter_disabled.is_some() {
            notes.skip(
                &fctx.at("filter_disabled"),
                "filter_disabled (the inspector always runs)",
            );
        }
    }
    // With `connection_balance_config`, layer8 balances as `exact_balance` does (see
    // `listener::balance`).
    if let Some(pb::listener::connection_balance_config::BalanceType::ExtendBalance(e)) = l
        .connection_balance_config
        .as_ref()
        .and_then(|c| c.balance_type.as_ref())
    {
        notes.skip(
            &ctx.at("connection_balance_config.extend_balance"),
            format!(
                "connection balancer '{}' (connections go to the worker with the fewest, as exact_balance)",
                e.name
            ),
        );
    }
    #[allow(deprecated)]
    let use_original_dst = l.use_original_dst.as_ref().is_some_and(|b| b.value);
    let stat_prefix = format!("listener.{}", stat_address(&address));
    let access_logs = super::access_log::translate(&l.access_log, &ctx, notes)?;
    let mut chains = Vec::new();
    for (i, fc) in l.filter_chains.iter().enumerate() {
        chains.push(Arc::new(filter_chain(
            fc,
            &ctx.at(format!("filter_chains[{i}]")),
            &stat_prefix,
            notes,
        )?));
    }
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|fc| {
            filter_chain(fc, &ctx.at("default_filter_chain"), &stat_prefix, notes).map(Arc::new)
        })
        .transpose()?;
    // Envoy rejects two chains with identical match criteria.
    for i in 0..chains.len() {
        for j in 0..i {
            if same_match(&chains[i].matcher, &chains[j].matcher) {
                return Err(ctx.at(format!("filter_chains[{i}]")).err(format!(
                    "multiple filter chains with the same matching rules are defined (same as filter_chains[{j}])"
                )));
            }
        }
    }
    // Proxy listeners spread their connections over the workers; a listener that only serves
    // the runtime API keeps them on one worker unless `connection_balance_config` asks to spread.
    let mut terminals = chains
        .iter()
        .chain(default_chain.iter())
        .map(|c| &c.terminal);
    let runtime_only = terminals.clone().next().is_some()
        && terminals.all(|t| matches!(t, NetworkFilter::Runtime(_)));
    let placement = if runtime_only && l.connection_balance_config.is_none() {
        WorkerPlacement::FirstWorker
    } else {
        WorkerPlacement::Spread
    };
    Ok(ListenerConfig {
        placement,
        access_logs,
        name: l.name.clone(),
        stat_prefix,
        address,
        // `deprecated_v1.bind_to_port` is how istiod before 1.10 said `bind_to_port: false`.
        #[allow(deprecated)]
        bind_to_port: l
            .bind_to_port
            .as_ref()
            .or_else(|| {
                l.deprecated_v1
                    .as_ref()
                    .and_then(|d| d.bind_to_port.as_ref())
            })
            .is_none_or(|b| b.value),
        use_original_dst,
        inspectors,
        filter_chains: chains,
        default_chain,
        listener_filters_timeout: timeout(
            l.listener_filters_timeout.as_ref(),
            Some(Duration::from_secs(15)),
            &ctx.at("listener_filters_timeout"),
        )?
        .unwrap_or(Duration::from_secs(3600)),
        continue_on_listener_filters_timeout: l.continue_on_listener_filters_timeout,
        config_hash: config_hash(l),
    })
}

fn stat_address(a: &ListenAddr) -> String {
    match a {
        ListenAddr::Tcp(s) => format!("{}_{}", s.ip(), s.port()),
        ListenAddr::Unix(p) => p.display().to_string(),
    }
}

fn same_match(a: &ChainMatch, b: &ChainMatch) -> bool {
    a.destination_port == b.destination_port
        && a.prefix_ranges == b.prefix_ranges
        && a.server_names == b.server_names
        && a.transport_protocol == b.transport_protocol
        && a.application_protocols == b.application_protocols
        && a.direct_source_prefix_ranges == b.direct_source_prefix_ranges
        && a.source_type == b.source_type
        && a.source_prefix_ranges == b.source_prefix_ranges
        && a.source_ports == b.source_ports
}

/// Compile an `Address` a listener binds.
pub fn listen_addr(a: &core::Address, ctx: &Ctx) -> Result<ListenAddr, ConfigError> {
    match &a.address {
        Some(core::address::Address::SocketAddress(sa)) => {
            let port = match sa.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .map_err(|_| ctx.at("socket_address.port_value").err("out of range"))?,
                _ => return Err(ctx.at("socket_address.port_value").err("required")),
            };
            let ip: IpAddr = sa.address.parse().map_err(|_| {
                ctx.at("socket_address.address")
                    .err(format!("malformed IP address: {}", sa.address))
            })?;
            Ok(ListenAddr::Tcp(SocketAddr::new(ip, port)))
        }
        Some(core::address::Address::Pipe(p)) => Ok(ListenAddr::Unix(p.path.clone().into())),
        _ => Err(ctx.err("unsupported address type")),
    }
}

fn cidr(c: &core::CidrRange, ctx: &Ctx) -> Result<Cidr, ConfigError> {
    let addr: IpAddr = c.address_prefix.parse().map_err(|_| {
        ctx.at("address_prefix")
            .err(format!("malformed IP address: {}", c.address_prefix))
    })?;
    let len = c
        .prefix_len
        .as_ref()
        .map_or(if addr.is_ipv4() { 32 } else { 128 }, |v| v.value);
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(ctx.at("prefix_len").err(format!("must be at most {max}")));
    }
    Ok(Cidr {
        addr,
        len: len as u8,
    })
}

fn chain_match(m: &pb::FilterChainMatch, ctx: &Ctx) -> Result<ChainMatch, ConfigError> {
    let ranges = |v: &[core::CidrRange], f: &str| -> Result<Vec<Cidr>, ConfigError> {
        v.iter()
            .enumerate()
            .map(|(i, c)| cidr(c, &ctx.at(format!("{f}[{i}]"))))
            .collect()
    };
    use pb::filter_chain_match::ConnectionSourceType as S;
    Ok(ChainMatch {
        destination_port: m
            .destination_port
            .as_ref()
            .map(|p| {
                u16::try_from(p.value).map_err(|_| ctx.at("destination_port").err("out of range"))
            })
            .transpose()?,
        prefix_ranges: ranges(&m.prefix_ranges, "prefix_ranges")?,
        server_names: m
            .server_names
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        transport_protocol: (!m.transport_protocol.is_empty())
            .then(|| m.transport_protocol.clone()),
        application_protocols: m.application_protocols.clone(),
        direct_source_prefix_ranges: ranges(
            &m.direct_source_prefix_ranges,
            "direct_source_prefix_ranges",
        )?,
        source_type: match S::try_from(m.source_type) {
            Ok(S::SameIpOrLoopback) => SourceType::Local,
            Ok(S::External) => SourceType::External,
            _ => SourceType::Any,
        },
        source_prefix_ranges: ranges(&m.source_prefix_ranges, "source_prefix_ranges")?,
        source_ports: m
            .source_ports
            .iter()
            .map(|p| u16::try_from(*p).map_err(|_| ctx.at("source_ports").err("out of range")))
            .collect::<Result<_, _>>()?,
    })
}

fn filter_chain(
    fc: &pb::FilterChain,
    ctx: &Ctx,
    stat_prefix: &str,
    notes: &mut Notes,
) -> Result<FilterChain, ConfigError> {
    let matcher = match &fc.filter_chain_match {
        Some(m) => chain_match(m, &ctx.at("filter_chain_match"))?,
        None => ChainMatch::default(),
    };
    let tls = match &fc.transport_socket {
        Some(ts) => downstream_tls(ts, &ctx.at("transport_socket"), stat_prefix, notes)?,
        None => None,
    };
    let handshake_timeout = fc
        .transport_socket_connect_timeout
        .as_ref()
        .map(|d| super::duration(d, &ctx.at("transport_socket_connect_timeout")))
        .transpose()?
        .filter(|d| !d.is_zero());
    let mut terminal = None;
    for (i, f) in fc.filters.iter().enumerate() {
        let fctx = ctx.at(format!("filters[{i}]"));
        let any = match &f.config_type {
            Some(pb::filter::ConfigType::TypedConfig(a)) => Some(a),
            _ => None,
        };
        let ty = any.map_or_else(String::new, config_type_url);
        if terminal.is_some() {
            return Err(fctx.err(format!("filter '{}' follows the terminal filter", f.name)));
        }
        match network_filter_kind(&f.name, &ty) {
            NetworkFilterKind::Hcm => {
                let any = any.ok_or_else(|| fctx.at("typed_config").err("required"))?;
                let cfg: hcm::HttpConnectionManager = any
                    .to_msg()
                    .map_err(|e| fctx.at("typed_config").err(e.to_string()))?;
                terminal = Some(NetworkFilter::Http(Arc::new(http_connection_manager(
                    &cfg,
                    &fctx.at("typed_config"),
                    notes,
                )?)));
            }
            NetworkFilterKind::TcpProxy => {
                let any = any.ok_or_else(|| fctx.at("typed_config").err("required"))?;
                let cfg: tcp::TcpProxy = any
                    .to_msg()
                    .map_err(|e| fctx.at("typed_config").err(e.to_string()))?;
                terminal = Some(NetworkFilter::TcpProxy(Arc::new(tcp_proxy(
                    &cfg,
                    &fctx.at("typed_config"),
                    notes,
                )?)));
            }
            NetworkFilterKind::Runtime => {
                terminal = Some(NetworkFilter::Runtime(Arc::new(runtime_filter(
                    any,
                    &fctx.at("typed_config"),
                )?)));
            }
            NetworkFilterKind::Actuator => terminal = Some(NetworkFilter::Actuator),
            NetworkFilterKind::Observational => {
                notes.skip(
                    &fctx,
                    format!("observational network filter '{}' skipped", f.name),
                );
                stats::counter("layer8.filters_skipped").increment(1);
            }
            NetworkFilterKind::Security => {
                return Err(fctx.err(format!(
                    "security filter '{}' ({ty}) is not implemented; refusing to serve without it",
                    f.name
                )))
            }
            NetworkFilterKind::Unsupported => {
                return Err(fctx.err(format!("unsupported network filter '{}' ({ty})", f.name)))
            }
        }
    }
    let terminal = terminal.ok_or_else(|| {
        ctx.at("filters").err(
            "a terminal filter (http_connection_manager, tcp_proxy or layer8.runtime) is required",
        )
    })?;
    Ok(FilterChain {
        name: fc.name.clone(),
        matcher,
        terminal,
        tls,
        handshake_timeout,
    })
}

/// `forward_client_cert_details` and `set_current_client_cert_details`.
fn xfcc(h: &hcm::HttpConnectionManager, ctx: &Ctx, notes: &mut Notes) -> Result<Xfcc, ConfigError> {
    use hcm::http_connection_manager::ForwardClientCertDetails as F;
    let mode = match F::try_from(h.forward_client_cert_details) {
        Ok(F::Sanitize) => XfccMode::Sanitize,
        Ok(F::ForwardOnly) => XfccMode::ForwardOnly,
        Ok(F::AppendForward) => XfccMode::AppendForward,
        Ok(F::SanitizeSet) => XfccMode::SanitizeSet,
        Ok(F::AlwaysForwardOnly) => XfccMode::AlwaysForwardOnly,
        Err(_) => return Err(ctx.at("forward_client_cert_details").err("unknown value")),
    };
    let d = h.set_current_client_cert_details.unwrap_or_default();
    if d.cert || d.chain {
        notes.skip(
            &ctx.at("set_current_client_cert_details"),
            "Cert and Chain details (By, Hash, Subject, URI and DNS are set)",
        );
    }
    Ok(Xfcc {
        mode,
        subject: d.subject.is_some_and(|b| b.value),
        uri: d.uri,
        dns: d.dns,
    })
}

/// A chain's TLS transport socket. Contexts whose certificates are all inline are built now (a
/// bad certificate is a config error); those waiting for SDS secrets are built when they come.
fn downstream_tls(
    ts: &core::TransportSocket,
    ctx: &Ctx,
    stat_prefix: &str,
    notes: &mut Notes,
) -> Result<Option<Arc<crate::model::tls::DownstreamTls>>, ConfigError> {
    use crate::model::tls::{DownstreamTls, TlsStats};
    let Some(settings) = super::tls::downstream(ts, ctx, notes)? else {
        return Ok(None);
    };
    let c = |s: &str| stats::counter(format!("{stat_prefix}.ssl.{s}"));
    let tls = DownstreamTls {
        settings,
        server: Default::default(),
        stats: TlsStats {
            handshake: c("handshake"),
            connection_error: c("connection_error"),
            fail_verify_san: c("fail_verify_san"),
            no_certificate: c("no_certificate"),
            no_secret: c("no_secret"),
        },
    };
    crate::tls::server::resolve(&tls, &|_| None).map_err(|e| ctx.err(e.to_string()))?;
    Ok(Some(Arc::new(tls)))
}

/// The `layer8.runtime` filter: a `TypedStruct` whose `value` is Layotto's `grpc_config` (or
/// Layotto's whole grpc filter config `{server_name, grpc_config}`).
fn runtime_filter(
    any: Option<&layer8_xds::pb::google::protobuf::Any>,
    ctx: &Ctx,
) -> Result<RuntimeFilter, ConfigError> {
    use layer8_xds::pb::ext::udpa::r#type::v1::TypedStruct;
    use prost::Message;
    let any = any.ok_or_else(|| ctx.err("required (a TypedStruct with the runtime config)"))?;
    let ts = TypedStruct::decode(any.value.as_slice())
        .map_err(|e| ctx.err(format!("not a TypedStruct: {e}")))?;
    let json = ts
        .value
        .as_ref()
        .map(crate::runtime::config::struct_to_json)
        .unwrap_or_else(|| serde_json::json!({}));
    let config = crate::runtime::config::RuntimeConfig::from_json(&json)
        .map_err(|e| ctx.at("value").err(e.to_string()))?;
    Ok(RuntimeFilter {
        id: crate::runtime::config_id(&json),
        config: Arc::new(config),
    })
}

fn tcp_proxy(
    t: &tcp::TcpProxy,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<TcpProxyConfig, ConfigError> {
    use tcp::tcp_proxy::ClusterSpecifier as C;
    let mut clusters = Vec::new();
    let mut total = 0u32;
    match &t.cluster_specifier {
        Some(C::Cluster(c)) if !c.is_empty() => {
            total = 1;
            clusters.push((1, Arc::from(c.as_str())));
        }
        Some(C::WeightedClusters(w)) => {
            for (i, c) in w.clusters.iter().enumerate() {
                if c.weight == 0 {
                    continue;
                }
                if c.name.is_empty() {
                    return Err(ctx
                        .at(format!("weighted_clusters.clusters[{i}].name"))
                        .err("must not be empty"));
                }
                total += c.weight;
                clusters.push((total, Arc::from(c.name.as_str())));
            }
            if total == 0 {
                return Err(ctx
                    .at("weighted_clusters")
                    .err("sum of weights must be greater than 0"));
            }
        }
        _ => {
            return Err(ctx
                .at("cluster")
                .err("cluster or weighted_clusters is required"))
        }
    }
    if t.stat_prefix.is_empty() {
        return Err(ctx.at("stat_prefix").err("must not be empty"));
    }
    let p = format!("tcp.{}.", t.stat_prefix);
    Ok(TcpProxyConfig {
        access_logs: super::access_log::translate(&t.access_log, ctx, notes)?,
        stats: TcpStats {
            cx_total: stats::counter(format!("{p}downstream_cx_total")),
            rx_bytes: stats::counter(format!("{p}downstream_cx_rx_bytes_total")),
            tx_bytes: stats::counter(format!("{p}downstream_cx_tx_bytes_total")),
            idle_timeout: stats::counter(format!("{p}idle_timeout")),
            no_route: stats::counter(format!("{p}downstream_cx_no_route")),
            cx_active: stats::gauge(format!("{p}downstream_cx_active")),
        },
        stat_prefix: t.stat_prefix.clone(),
        clusters,
        total_weight: total,
        idle_timeout: timeout(
            t.idle_timeout.as_ref(),
            Some(Duration::from_secs(3600)),
            &ctx.at("idle_timeout"),
        )?,
    })
}

fn http_connection_manager(
    h: &hcm::HttpConnectionManager,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<HcmConfig, ConfigError> {
    use hcm::http_connection_manager::{
        CodecType, RouteSpecifier as R, ServerHeaderTransformation as SH,
    };
    if h.stat_prefix.is_empty() {
        return Err(ctx.at("stat_prefix").err("must not be empty"));
    }
    let access_logs = super::access_log::translate(&h.access_log, ctx, notes)?;
    let codec = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        _ => return Err(ctx.at("codec_type").err("HTTP/3 is not supported")),
    };
    let mut rds_fetch_timeout = None;
    let routes = match &h.route_specifier {
        Some(R::RouteConfig(rc)) => {
            RouteSource::Static(Arc::new(super::route::translate(rc, notes)?))
        }
        Some(R::Rds(rds)) => {
            if rds.route_config_name.is_empty() {
                return Err(ctx.at("rds.route_config_name").err("must not be empty"));
            }
            rds_fetch_timeout = super::config_source::ads_only(
                rds.config_source.as_ref(),
                "RDS",
                &ctx.at("rds.config_source"),
            )?;
            RouteSource::Rds(rds.route_config_name.clone())
        }
        Some(R::ScopedRoutes(_)) => {
            return Err(ctx
                .at("scoped_routes")
                .err("scoped routes are not supported"))
        }
        None => {
            return Err(ctx
                .at("route_specifier")
                .err("route_config or rds is required"))
        }
    };
    let mut saw_router = false;
    let mut skipped = Vec::new();
    let mut peer_authn = None;
    for (i, f) in h.http_filters.iter().enumerate() {
        let fctx = ctx.at(format!("http_filters[{i}]"));
        if saw_router {
            return Err(fctx.err(format!(
                "filter '{}' is after the terminal router filter",
                f.name
            )));
        }
        let ty = match &f.config_type {
            Some(hcm::http_filter::ConfigType::TypedConfig(a)) => config_type_url(a),
            _ => String::new(),
        };
        if ty.ends_with(super::authn::ISTIO_AUTHN_TYPE) {
            if peer_authn.is_some() {
                return Err(fctx.err("a second istio_authn filter"));
            }
            let Some(hcm::http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                return Err(fctx.at("typed_config").err("required"));
            };
            peer_authn = Some(super::authn::istio_authn(any, &fctx.at("typed_config"))?);
            continue;
        }
        match http_filter_kind(&f.name, &ty) {
            HttpFilterKind::Router => saw_router = true,
            HttpFilterKind::Observational => {
                notes.skip(
                    &fctx,
                    format!("observational HTTP filter '{}' skipped", f.name),
                );
                stats::counter("layer8.filters_skipped").increment(1);
                skipped.push(f.name.clone());
            }
            HttpFilterKind::Unsupported if f.is_optional => {
                notes.skip(&fctx, format!("optional HTTP filter '{}' skipped", f.name));
                skipped.push(f.name.clone());
            }
            HttpFilterKind::Security => {
                return Err(fctx.err(format!(
                    "security filter '{}' ({ty}) is not implemented; refusing to serve without it",
                    f.name
                )))
            }
            HttpFilterKind::Unsupported => {
                return Err(fctx.err(format!("unsupported HTTP filter '{}' ({ty})", f.name)))
            }
        }
    }
    if !saw_router {
        return Err(ctx
            .at("http_filters")
            .err("the last HTTP filter must be envoy.filters.http.router"));
    }
    let server_name = if h.server_name.is_empty() {
        "envoy"
    } else {
        h.server_name.as_str()
    };
    let p = format!("http.{}.", h.stat_prefix);
    let c = |s: &str| stats::counter(format!("{p}{s}"));
    let max_kb = h.max_request_headers_kb.as_ref().map_or(60, |v| v.value);
    if max_kb == 0 || max_kb > 8192 {
        return Err(ctx.at("max_request_headers_kb").err("must be in [1, 8192]"));
    }
    let common = h.common_http_protocol_options.as_ref();
    let upgrades = h
        .upgrade_configs
        .iter()
        .filter(|u| u.enabled.as_ref().is_none_or(|b| b.value))
        .map(|u| u.upgrade_type.to_ascii_lowercase())
        .collect();
    Ok(HcmConfig {
        access_logs,
        stat_prefix: h.stat_prefix.clone(),
        codec,
        routes,
        rds_fetch_timeout,
        stream_idle_timeout: timeout(
            h.stream_idle_timeout.as_ref(),
            Some(Duration::from_secs(300)),
            &ctx.at("stream_idle_timeout"),
        )?,
        request_timeout: timeout(h.request_timeout.as_ref(), None, &ctx.at("request_timeout"))?,
        request_headers_timeout: timeout(
            h.request_headers_timeout.as_ref(),
            None,
            &ctx.at("request_headers_timeout"),
        )?,
        idle_timeout: timeout(
            common.and_then(|c| c.idle_timeout.as_ref()),
            Some(Duration::from_secs(3600)),
            &ctx.at("common_http_protocol_options.idle_timeout"),
        )?,
        max_request_headers_bytes: max_kb as usize * 1024,
        drain_timeout: timeout(
            h.drain_timeout.as_ref(),
            Some(Duration::from_secs(5)),
            &ctx.at("drain_timeout"),
        )?
        .unwrap_or_default(),
        normalize_path: h.normalize_path.as_ref().is_some_and(|b| b.value),
        merge_slashes: h.merge_slashes,
        accept_http_10: h
            .http_protocol_options
            .as_ref()
            .is_some_and(|o| o.accept_http_10),
        server_name: HeaderValue::from_str(server_name)
            .map_err(|_| ctx.at("server_name").err("invalid header value"))?,
        server_header: match SH::try_from(h.server_header_transformation) {
            Ok(SH::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
            Ok(SH::PassThrough) => ServerHeader::PassThrough,
            _ => ServerHeader::Overwrite,
        },
        generate_request_id: h.generate_request_id.as_ref().is_none_or(|b| b.value),
        preserve_external_request_id: h.preserve_external_request_id,
        use_remote_address: h.use_remote_address.as_ref().is_some_and(|b| b.value),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        skip_xff_append: h.skip_xff_append,
        via: (!h.via.is_empty())
            .then(|| {
                HeaderValue::from_str(&h.via).map_err(|_| ctx.at("via").err("invalid header value"))
            })
            .transpose()?,
        upgrades,
        skipped_filters: skipped,
        peer_authn,
        xfcc: xfcc(h, ctx, notes)?,
        stats: HcmStats {
            cx_total: c("downstream_cx_total"),
            cx_active: stats::gauge(format!("{p}downstream_cx_active")),
            rq_total: c("downstream_rq_total"),
            rq_active: stats::gauge(format!("{p}downstream_rq_active")),
            rq_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|k| c(&format!("downstream_rq_{k}"))),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_redirect: c("rq_redirect"),
            rq_direct_response: c("rq_direct_response"),
            rq_peer_authn_failed: c("istio_authn.peer_authn_failed"),
            rq_timeout: c("downstream_rq_timeout"),
            rq_idle_timeout: c("downstream_rq_idle_timeout"),
            cx_idle_timeout: c("downstream_cx_idle_timeout"),
            rq_http1: c("downstream_rq_http1_total"),
            rq_http2: c("downstream_rq_http2_total"),
        },
    })
}
