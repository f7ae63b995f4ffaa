//! `RouteConfiguration` -> [`RouteTable`].

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use layer8_xds::pb::envoy::config::core::v3 as core;
use layer8_xds::pb::envoy::config::route::v3 as pb;
use layer8_xds::pb::envoy::r#type::matcher::v3 as pbm;

use super::route_action::{forward, redirect, retry_policy, Shared};
use super::{ConfigError, Ctx, Notes};
use crate::model::matcher::{
    full_regex, HeaderKey, HeaderMatch, HeaderValueMatch, QueryMatch, StringMatch,
};
use crate::model::route::*;

/// Compile a route configuration.
pub fn translate(
    rc: &pb::RouteConfiguration,
    notes: &mut Notes,
) -> Result<RouteTable, ConfigError> {
    let ctx = Ctx::new("route_configuration", &rc.name);
    let mut table = RouteTable {
        name: rc.name.clone(),
        ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
        request_headers: header_ops(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            &ctx.at("request_headers_to_add"),
        )?,
        response_headers: header_ops(
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            &ctx.at("response_headers_to_add"),
        )?,
        ..Default::default()
    };
    let mut suffix = Vec::new();
    let mut prefix = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut shared = Shared::default();
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let vctx = ctx.at(format!("virtual_hosts[{i}]"));
        let compiled = virtual_host(vh, &vctx, notes, &mut shared)?;
        let idx = table.virtual_hosts.len();
        for (j, d) in vh.domains.iter().enumerate() {
            let d = d.to_ascii_lowercase();
            if let Some(other) = seen.insert(d.clone(), vh.name.clone()) {
                return Err(vctx.at(format!("domains[{j}]")).err(format!(
                    "only unique values for domains are permitted: '{d}' is also in virtual host '{other}'"
                )));
            }
            if d == "*" {
                table.default = Some(idx);
            } else if let Some(s) = d.strip_prefix('*') {
                suffix.push((s.to_string(), idx));
            } else if let Some(p) = d.strip_suffix('*') {
                prefix.push((p.to_string(), idx));
            } else if d.contains('*') {
                return Err(vctx
                    .at(format!("domains[{j}]"))
                    .err("wildcards are only allowed at the start or end"));
            } else {
                table.exact.insert(d, idx);
            }
        }
        table.virtual_hosts.push(Arc::new(compiled));
    }
    suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    prefix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    table.suffix = suffix;
    table.prefix = prefix;
    Ok(table)
}

fn virtual_host(
    vh: &pb::VirtualHost,
    ctx: &Ctx,
    notes: &mut Notes,
    shared: &mut Shared,
) -> Result<VirtualHost, ConfigError> {
    let mut routes = Vec::with_capacity(vh.routes.len());
    for (i, r) in vh.routes.iter().enumerate() {
        routes.push(route(r, &ctx.at(format!("routes[{i}]")), notes, shared)?);
    }
    let index = (routes.len() >= INDEX_THRESHOLD).then(|| RouteIndex::build(&routes));
    Ok(VirtualHost {
        name: vh.name.clone(),
        index,
        routes,
        request_headers: header_ops(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &ctx.at("request_headers_to_add"),
        )?,
        response_headers: header_ops(
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            &ctx.at("response_headers_to_add"),
        )?,
        retry_policy: vh
            .retry_policy
            .as_ref()
            .map(|p| retry_policy(p, &ctx.at("retry_policy")))
            .transpose()?
            .map(|p| shared.retry_policy(p)),
    })
}

fn route(
    r: &pb::Route,
    ctx: &Ctx,
    notes: &mut Notes,
    shared: &mut Shared,
) -> Result<Route, ConfigError> {
    let m = r
        .r#match
        .as_ref()
        .ok_or_else(|| ctx.at("match").err("required"))?;
    let matcher = route_match(m, &ctx.at("match"))?;
    let actx = ctx.at("action");
    let action = match &r.action {
        Some(pb::route::Action::Route(ra)) => RouteAction::Forward(Box::new(forward(
            ra,
            &ctx.at("route"),
            &matcher,
            notes,
            shared,
        )?)),
        Some(pb::route::Action::Redirect(rd)) => {
            RouteAction::Redirect(redirect(rd, &ctx.at("redirect"))?)
        }
        Some(pb::route::Action::DirectResponse(dr)) => {
            let status = StatusCode::from_u16(dr.status as u16)
                .ok()
                .filter(|s| (200..600).contains(&s.as_u16()))
                .ok_or_else(|| {
                    ctx.at("direct_response.status")
                        .err("must be in [200, 600)")
                })?;
            let body = match dr.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => bytes::Bytes::new(),
                Some(core::data_source::Specifier::InlineString(s)) => {
                    bytes::Bytes::from(s.clone())
                }
                Some(core::data_source::Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
                Some(core::data_source::Specifier::Filename(f)) => {
                    std::fs::read(f).map(bytes::Bytes::from).map_err(|e| {
                        ctx.at("direct_response.body.filename")
                            .err(format!("{f}: {e}"))
                    })?
                }
                Some(_) => {
                    return Err(ctx
                        .at("direct_response.body")
                        .err("unsupported data source"))
                }
            };
            RouteAction::Direct { status, body }
        }
        Some(pb::route::Action::NonForwardingAction(_)) => RouteAction::NonForwarding,
        Some(_) => return Err(actx.err("unsupported route action")),
        None => return Err(actx.err("one of route, redirect or direct_response is required")),
    };
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        request_headers: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &ctx.at("request_headers_to_add"),
        )?,
        response_headers: header_ops(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            &ctx.at("response_headers_to_add"),
        )?,
    })
}

fn route_match(m: &pb::RouteMatch, ctx: &Ctx) -> Result<RouteMatch, ConfigError> {
    use pb::route_match::PathSpecifier as P;
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let path = match &m.path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(if case_sensitive {
            p.clone()
        } else {
            p.to_ascii_lowercase()
        }),
        Some(P::Path(p)) => PathMatch::Exact(if case_sensitive {
            p.clone()
        } else {
            p.to_ascii_lowercase()
        }),
        Some(P::SafeRegex(r)) => PathMatch::Regex(
            full_regex(&r.regex).map_err(|e| ctx.at("safe_regex.regex").err(e.to_string()))?,
        ),
        Some(P::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || (p.len() > 1 && p.ends_with('/')) {
                return Err(ctx
                    .at("path_separated_prefix")
                    .err("must not contain '?' or '#' nor end with '/'"));
            }
            PathMatch::SeparatedPrefix(p.clone())
        }
        Some(_) => return Err(ctx.at("path_specifier").err("unsupported path matcher")),
        None => {
            return Err(ctx
                .at("path_specifier")
                .err("one of prefix, path, safe_regex or path_separated_prefix is required"))
        }
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h, &ctx.at(format!("headers[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let qctx = ctx.at(format!("query_parameters[{i}]"));
            use pb::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            let value = match &q.query_parameter_match_specifier {
                Some(Q::StringMatch(s)) => Some(string_matcher(s, &qctx.at("string_match"))?),
                Some(Q::PresentMatch(_)) | None => None,
            };
            Ok(QueryMatch {
                name: q.name.clone(),
                value,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive,
        headers,
        query,
        grpc: m.grpc.is_some(),
    })
}

/// Compile a `StringMatcher`.
pub fn string_matcher(s: &pbm::StringMatcher, ctx: &Ctx) -> Result<StringMatch, ConfigError> {
    use pbm::string_matcher::MatchPattern as M;
    let ic = s.ignore_case;
    let norm = |v: &str| {
        if ic {
            v.to_ascii_lowercase()
        } else {
            v.to_string()
        }
    };
    Ok(match &s.match_pattern {
        Some(M::Exact(v)) => StringMatch::Exact(v.clone(), ic),
        Some(M::Prefix(v)) => StringMatch::Prefix(v.clone(), ic),
        Some(M::Suffix(v)) => StringMatch::Suffix(v.clone(), ic),
        Some(M::Contains(v)) => StringMatch::Contains(norm(v), ic),
        Some(M::SafeRegex(r)) => StringMatch::Regex(
            full_regex(&r.regex).map_err(|e| ctx.at("safe_regex.regex").err(e.to_string()))?,
        ),
        Some(M::Custom(_)) => {
            return Err(ctx
                .at("custom")
                .err("custom string matchers are not supported"))
        }
        None => return Err(ctx.err("match_pattern is required")),
    })
}

fn header_key(name: &str, ctx: &Ctx) -> Result<HeaderKey, ConfigError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        ":authority" | "host" => HeaderKey::Authority,
        ":path" => HeaderKey::Path,
        ":method" => HeaderKey::Method,
        ":scheme" => HeaderKey::Scheme,
        ":status" => HeaderKey::Status,
        other => HeaderKey::Regular(
            HeaderName::from_bytes(other.as_bytes())
                .map_err(|_| ctx.at("name").err(format!("invalid header name '{name}'")))?,
        ),
    })
}

pub(super) fn header_matcher(h: &pb::HeaderMatcher, ctx: &Ctx) -> Result<HeaderMatch, ConfigError> {
    use pb::header_matcher::HeaderMatchSpecifier as H;
    let value = match &h.header_match_specifier {
        None => HeaderValueMatch::Present(true),
        Some(H::PresentMatch(p)) => HeaderValueMatch::Present(*p),
        Some(H::ExactMatch(v)) => HeaderValueMatch::String(StringMatch::Exact(v.clone(), false)),
        Some(H::PrefixMatch(v)) => HeaderValueMatch::String(StringMatch::Prefix(v.clone(), false)),
        Some(H::SuffixMatch(v)) => HeaderValueMatch::String(StringMatch::Suffix(v.clone(), false)),
        Some(H::ContainsMatch(v)) => {
            HeaderValueMatch::String(StringMatch::Contains(v.clone(), false))
        }
        Some(H::SafeRegexMatch(r)) => HeaderValueMatch::String(StringMatch::Regex(
            full_regex(&r.regex)
                .map_err(|e| ctx.at("safe_regex_match.regex").err(e.to_string()))?,
        )),
        Some(H::RangeMatch(r)) => HeaderValueMatch::Range(r.start, r.end),
        Some(H::StringMatch(s)) => {
            HeaderValueMatch::String(string_matcher(s, &ctx.at("string_match"))?)
        }
    };
    Ok(HeaderMatch {
        name: header_key(&h.name, ctx)?,
        value,
        invert: h.invert_match,
        treat_missing_as_empty: h.treat_missing_header_as_empty,
    })
}

/// Compile header additions and removals.
pub fn header_ops(
    add: &[core::HeaderValueOption],
    remove: &[String],
    ctx: &Ctx,
) -> Result<HeaderOps, ConfigError> {
    let mut ops = HeaderOps::default();
    for (i, name) in remove.iter().enumerate() {
        ops.remove.push(
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                ctx.at(format!("[{i}]"))
                    .err(format!("invalid header name '{name}'"))
            })?,
        );
    }
    for (i, opt) in add.iter().enumerate() {
        let hctx = ctx.at(format!("[{i}]"));
        let hv = opt
            .header
            .as_ref()
            .ok_or_else(|| hctx.at("header").err("required"))?;
        let name =
            HeaderName::from_bytes(hv.key.to_ascii_lowercase().as_bytes()).map_err(|_| {
                hctx.at("header.key")
                    .err(format!("invalid header name '{}'", hv.key))
            })?;
        let raw = if hv.value.is_empty() {
            String::from_utf8_lossy(&hv.raw_value).into_owned()
        } else {
            hv.value.clone()
        };
        let value = header_format(&raw, &hctx.at("header.value"))?;
        use core::header_value_option::HeaderAppendAction as A;
        #[allow(deprecated)]
        let legacy_append = opt.append.as_ref().map(|b| b.value);
        let action = match legacy_append {
            Some(true) => AppendAction::Append,
            Some(false) => AppendAction::Overwrite,
            None => match A::try_from(opt.append_action).unwrap_or(A::AppendIfExistsOrAdd) {
                A::AppendIfExistsOrAdd => AppendAction::Append,
                A::AddIfAbsent => AppendAction::AddIfAbsent,
                A::OverwriteIfExistsOrAdd => AppendAction::Overwrite,
                A::OverwriteIfExists => AppendAction::OverwriteIfExists,
            },
        };
        ops.add.push(HeaderAdd {
            name,
            value,
            action,
        });
    }
    Ok(ops)
}

fn header_format(raw: &str, ctx: &Ctx) -> Result<HeaderFormat, ConfigError> {
    let lit = |s: &str| {
        HeaderValue::from_str(s).map_err(|_| ctx.err(format!("invalid header value '{s}'")))
    };
    Ok(match raw {
        "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" => {
            HeaderFormat::DownstreamRemoteAddressWithoutPort
        }
        "%DOWNSTREAM_REMOTE_ADDRESS%" => HeaderFormat::DownstreamRemoteAddress,
        "%DOWNSTREAM_LOCAL_ADDRESS%" => HeaderFormat::DownstreamLocalAddress,
        "%UPSTREAM_REMOTE_ADDRESS%" => HeaderFormat::UpstreamRemoteAddress,
        "%PROTOCOL%" => HeaderFormat::Protocol,
        "%HOSTNAME%" => HeaderFormat::Hostname(lit(&crate::server::hostname())?),
        s if s.starts_with("%REQ(") && s.ends_with(")%") => {
            let name = &s[5..s.len() - 2];
            HeaderFormat::RequestHeader(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| ctx.err(format!("invalid header name in '{s}'")))?,
            )
        }
        s => HeaderFormat::Literal(lit(&s.replace("%%", "%"))?),
    })
}
