//! Route actions: `RouteAction` -> [`Forward`] (cluster, weighted clusters, timeouts, rewrites,
//! retry policy, hash policy, mirrors) and `RedirectAction` -> [`Redirect`]; values the routes of
//! one configuration repeat are compiled once ([`Shared`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use layer8_xds::pb::envoy::config::route::v3 as pb;

use super::route::header_ops;
use super::{timeout, ConfigError, Ctx, Notes};
use crate::model::route::*;

/// Values many routes of one configuration repeat (istiod gives every route of a service the same
/// cluster and retry policy): compiled once and shared.
#[derive(Default)]
pub(super) struct Shared {
    clusters: HashMap<String, Arc<str>>,
    retry_policies: HashMap<RetryPolicy, Arc<RetryPolicy>>,
}

impl Shared {
    fn cluster(&mut self, name: &str) -> Arc<str> {
        if let Some(c) = self.clusters.get(name) {
            return c.clone();
        }
        let c: Arc<str> = Arc::from(name);
        self.clusters.insert(name.to_string(), c.clone());
        c
    }

    pub(super) fn retry_policy(&mut self, p: RetryPolicy) -> Arc<RetryPolicy> {
        self.retry_policies
            .entry(p)
            .or_insert_with_key(|p| Arc::new(p.clone()))
            .clone()
    }
}

fn cluster_name(name: &str, ctx: &Ctx, shared: &mut Shared) -> Result<Arc<str>, ConfigError> {
    if name.is_empty() {
        return Err(ctx.err("cluster name must not be empty"));
    }
    Ok(shared.cluster(name))
}

/// Compile a `RouteAction` (`m`: the route's match, for rewrites that depend on it).
pub(super) fn forward(
    ra: &pb::RouteAction,
    ctx: &Ctx,
    m: &RouteMatch,
    notes: &mut Notes,
    shared: &mut Shared,
) -> Result<Forward, ConfigError> {
    use pb::route_action::ClusterSpecifier as C;
    let target = match &ra.cluster_specifier {
        Some(C::Cluster(c)) => ClusterTarget::Single(cluster_name(c, &ctx.at("cluster"), shared)?),
        Some(C::ClusterHeader(h)) => ClusterTarget::Header(
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| ctx.at("cluster_header").err("invalid header name"))?,
        ),
        Some(C::WeightedClusters(w)) => {
            let wctx = ctx.at("weighted_clusters");
            let mut clusters = Vec::new();
            let mut total = 0u32;
            for (i, c) in w.clusters.iter().enumerate() {
                let cctx = wctx.at(format!("clusters[{i}]"));
                let weight = c.weight.as_ref().map_or(0, |w| w.value);
                if weight == 0 {
                    continue;
                }
                total = total
                    .checked_add(weight)
                    .ok_or_else(|| cctx.at("weight").err("total weight overflows"))?;
                clusters.push(WeightedTarget {
                    upper: total,
                    cluster: cluster_name(&c.name, &cctx.at("name"), shared)?,
                    request_headers: header_ops(
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                        &cctx,
                    )?,
                    response_headers: header_ops(
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                        &cctx,
                    )?,
                });
            }
            if total == 0 {
                return Err(wctx
                    .at("clusters")
                    .err("sum of weights must be greater than 0"));
            }
            ClusterTarget::Weighted { clusters, total }
        }
        Some(_) => {
            return Err(ctx
                .at("cluster_specifier")
                .err("unsupported cluster specifier"))
        }
        None => {
            return Err(ctx.err("one of cluster, weighted_clusters or cluster_header is required"))
        }
    };
    let rewrite = if !ra.prefix_rewrite.is_empty() {
        if matches!(m.path, PathMatch::Regex(_)) {
            // Envoy accepts it but it only applies to prefix/path matches.
            notes.skip(ctx, "prefix_rewrite with a regex match");
        }
        Some(PathRewrite::Prefix(ra.prefix_rewrite.clone()))
    } else if let Some(rr) = &ra.regex_rewrite {
        let re = rr
            .pattern
            .as_ref()
            .ok_or_else(|| ctx.at("regex_rewrite.pattern").err("required"))?;
        Some(PathRewrite::Regex(
            regex::Regex::new(&re.regex)
                .map_err(|e| ctx.at("regex_rewrite.pattern.regex").err(e.to_string()))?,
            envoy_substitution(&rr.substitution),
        ))
    } else {
        None
    };
    use pb::route_action::HostRewriteSpecifier as HR;
    let host_rewrite = match &ra.host_rewrite_specifier {
        Some(HR::HostRewriteLiteral(h)) => Some(HostRewrite::Literal(
            HeaderValue::from_str(h)
                .map_err(|_| ctx.at("host_rewrite_literal").err("invalid header value"))?,
        )),
        Some(HR::AutoHostRewrite(b)) if b.value => Some(HostRewrite::Auto),
        Some(HR::HostRewriteHeader(h)) => Some(HostRewrite::FromHeader(
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| ctx.at("host_rewrite_header").err("invalid header name"))?,
        )),
        Some(HR::AutoHostRewrite(_)) | None => None,
        Some(_) => {
            return Err(ctx
                .at("host_rewrite_specifier")
                .err("unsupported host rewrite"))
        }
    };
    let hash_policy = ra
        .hash_policy
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            use pb::route_action::hash_policy::PolicySpecifier as PS;
            let hctx = ctx.at(format!("hash_policy[{i}]"));
            Some(match h.policy_specifier.as_ref()? {
                PS::Header(hd) => {
                    HeaderName::from_bytes(hd.header_name.to_ascii_lowercase().as_bytes())
                        .map(|n| HashPolicy::Header(n, h.terminal))
                        .map_err(|_| hctx.at("header.header_name").err("invalid header name"))
                }
                PS::ConnectionProperties(c) if c.source_ip => Ok(HashPolicy::SourceIp(h.terminal)),
                PS::QueryParameter(q) => Ok(HashPolicy::Query(q.name.clone(), h.terminal)),
                PS::Cookie(c) => Ok(HashPolicy::Cookie(c.name.clone(), h.terminal)),
                _ => {
                    notes.skip(&hctx, "unsupported hash policy");
                    return None;
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mirrors = ra
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mctx = ctx.at(format!("request_mirror_policies[{i}]"));
            let per_million = match m
                .runtime_fraction
                .as_ref()
                .and_then(|f| f.default_value.as_ref())
            {
                None => 1_000_000,
                Some(f) => fraction_per_million(f.numerator, f.denominator),
            };
            Ok(Mirror {
                cluster: cluster_name(&m.cluster, &mctx.at("cluster"), shared)?,
                per_million,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(Forward {
        target,
        timeout: timeout(
            ra.timeout.as_ref(),
            Some(Duration::from_secs(15)),
            &ctx.at("timeout"),
        )?,
        idle_timeout: timeout(ra.idle_timeout.as_ref(), None, &ctx.at("idle_timeout"))?,
        rewrite,
        host_rewrite,
        append_x_forwarded_host: ra.append_x_forwarded_host,
        retry_policy: ra
            .retry_policy
            .as_ref()
            .map(|p| retry_policy(p, &ctx.at("retry_policy")))
            .transpose()?
            .map(|p| shared.retry_policy(p)),
        hash_policy,
        mirrors,
        upgrades: true,
    })
}

/// Percent denominators: 0 = hundred, 1 = ten thousand, 2 = million.
pub fn fraction_per_million(numerator: u32, denominator: i32) -> u32 {
    let n = u64::from(numerator);
    let scaled = match denominator {
        0 => n * 10_000,
        1 => n * 100,
        _ => n,
    };
    scaled.min(1_000_000) as u32
}

/// Envoy regex substitutions use `\1`; the regex crate uses `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// Compile a `RetryPolicy`.
pub(super) fn retry_policy(p: &pb::RetryPolicy, ctx: &Ctx) -> Result<RetryPolicy, ConfigError> {
    let mut rp = RetryPolicy {
        num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
        per_try_timeout: timeout(p.per_try_timeout.as_ref(), None, &ctx.at("per_try_timeout"))?,
        retriable_status_codes: p.retriable_status_codes.iter().map(|c| *c as u16).collect(),
        host_selection_attempts: p.host_selection_retry_max_attempts.max(1) as u32,
        base_interval: Duration::from_millis(25),
        max_interval: Duration::from_millis(250),
        ..Default::default()
    };
    if let Some(b) = &p.retry_back_off {
        if let Some(base) = &b.base_interval {
            rp.base_interval = super::duration(base, &ctx.at("retry_back_off.base_interval"))?;
            rp.max_interval = rp.base_interval * 10;
        }
        if let Some(max) = &b.max_interval {
            rp.max_interval = super::duration(max, &ctx.at("retry_back_off.max_interval"))?;
        }
    }
    for cond in p
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match cond {
            "5xx" => rp.on_5xx = true,
            "gateway-error" => rp.on_gateway_error = true,
            "connect-failure" => rp.on_connect_failure = true,
            "refused-stream" => rp.on_refused_stream = true,
            "reset" | "reset-before-request" => rp.on_reset = true,
            "retriable-status-codes" => rp.on_retriable_status = true,
            "retriable-4xx" => rp.on_retriable_4xx = true,
            "retriable-headers" => rp.on_retriable_headers = true,
            "cancelled" => rp.grpc_statuses.push(1),
            "deadline-exceeded" => rp.grpc_statuses.push(4),
            "resource-exhausted" => rp.grpc_statuses.push(8),
            "internal" => rp.grpc_statuses.push(13),
            "unavailable" => rp.grpc_statuses.push(14),
            // Accepted; they do not trigger retries yet.
            "envoy-ratelimited" | "http3-post-connect-failure" => {}
            other => {
                return Err(ctx
                    .at("retry_on")
                    .err(format!("unknown retry condition '{other}'")))
            }
        }
    }
    for (i, h) in p.retriable_headers.iter().enumerate() {
        let m = super::route::header_matcher(h, &ctx.at(format!("retriable_headers[{i}]")))?;
        rp.retriable_headers.list.push(m);
    }
    if !p.retriable_headers.is_empty() {
        rp.retriable_headers.key = format!("{:?}", p.retriable_headers);
    }
    for (i, pred) in p.retry_host_predicate.iter().enumerate() {
        if pred.name.contains("previous_hosts")
            || type_url_of(&pred.config_type).contains("PreviousHostsPredicate")
        {
            rp.avoid_previous_hosts = true;
        } else {
            return Err(ctx
                .at(format!("retry_host_predicate[{i}]"))
                .err(format!("unsupported predicate '{}'", pred.name)));
        }
    }
    Ok(rp)
}

fn type_url_of(c: &Option<pb::retry_policy::retry_host_predicate::ConfigType>) -> &str {
    match c {
        Some(pb::retry_policy::retry_host_predicate::ConfigType::TypedConfig(a)) => &a.type_url,
        None => "",
    }
}

/// Compile a `RedirectAction`.
pub(super) fn redirect(rd: &pb::RedirectAction, ctx: &Ctx) -> Result<Redirect, ConfigError> {
    use pb::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as R, SchemeRewriteSpecifier as S,
    };
    let status = match R::try_from(rd.response_code).unwrap_or(R::MovedPermanently) {
        R::MovedPermanently => StatusCode::MOVED_PERMANENTLY,
        R::Found => StatusCode::FOUND,
        R::SeeOther => StatusCode::SEE_OTHER,
        R::TemporaryRedirect => StatusCode::TEMPORARY_REDIRECT,
        R::PermanentRedirect => StatusCode::PERMANENT_REDIRECT,
    };
    let scheme = match &rd.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(true)) => Some("https".to_string()),
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
        _ => None,
    };
    let path = match &rd.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => Some(RedirectPath::Replace(p.clone())),
        Some(P::PrefixRewrite(p)) => Some(RedirectPath::Prefix(p.clone())),
        Some(P::RegexRewrite(rr)) => {
            let re = rr
                .pattern
                .as_ref()
                .ok_or_else(|| ctx.at("regex_rewrite.pattern").err("required"))?;
            Some(RedirectPath::Regex(
                regex::Regex::new(&re.regex)
                    .map_err(|e| ctx.at("regex_rewrite.pattern.regex").err(e.to_string()))?,
                envoy_substitution(&rr.substitution),
            ))
        }
        None => None,
    };
    Ok(Redirect {
        status,
        scheme,
        host: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone()),
        port: (rd.port_redirect != 0).then_some(rd.port_redirect as u16),
        path,
        strip_query: rd.strip_query,
    })
}
