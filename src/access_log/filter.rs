//! `AccessLogFilter`: which streams get a log line.

use std::borrow::Cow;

use super::record::Record;
use crate::model::matcher::{HeaderKey, HeaderMatch};

/// A compiled access log filter.
#[derive(Debug)]
pub enum Filter {
    /// `status_code_filter`.
    Status(Compare),
    /// `duration_filter` (milliseconds).
    Duration(Compare),
    /// `not_health_check_filter`: layer8 has no health-check filter, so every request passes.
    NotHealthCheck,
    /// `traceable_filter`: layer8 makes no tracing decisions, so no request is traceable.
    Traceable,
    /// `runtime_filter`: its default percentage, sampled at random.
    Sample(u32),
    /// `and_filter`.
    And(Vec<Filter>),
    /// `or_filter`.
    Or(Vec<Filter>),
    /// `header_filter`, on the request headers.
    Header(HeaderMatch),
    /// `response_flag_filter`: any of these bits (`None`: any flag at all).
    ResponseFlags(Option<u16>),
    /// `grpc_status_filter`: statuses and `exclude`.
    GrpcStatus(Vec<u32>, bool),
}

/// `ComparisonFilter`.
#[derive(Debug, Clone, Copy)]
pub enum Compare {
    /// `EQ`.
    Eq(u64),
    /// `GE`.
    Ge(u64),
    /// `LE`.
    Le(u64),
}

impl Compare {
    fn test(self, v: u64) -> bool {
        match self {
            Compare::Eq(x) => v == x,
            Compare::Ge(x) => v >= x,
            Compare::Le(x) => v <= x,
        }
    }
}

/// The gRPC status of a response, as Envoy's filter reads it: `grpc-status` in trailers or
/// headers, else mapped from the HTTP status (`Grpc::Utility::httpToGrpcStatus`), else Unknown.
fn grpc_status(r: &Record) -> u32 {
    let parse = |v: &http::HeaderValue| std::str::from_utf8(v.as_bytes()).ok()?.parse().ok();
    let in_trailers = r
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .and_then(parse);
    let in_headers = || {
        r.response_headers
            .iter()
            .find(|(n, _)| n == "grpc-status")
            .and_then(|(_, v)| parse(v))
    };
    if let Some(s) = in_trailers.or_else(in_headers) {
        return s;
    }
    match r.status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

impl Filter {
    /// The request and response headers this filter reads.
    pub fn headers(&self, req: &mut Vec<http::HeaderName>, resp: &mut Vec<http::HeaderName>) {
        match self {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| f.headers(req, resp)),
            Filter::Header(h) => {
                if let HeaderKey::Regular(n) = &h.name {
                    req.push(n.clone());
                }
            }
            Filter::GrpcStatus(..) => resp.push(http::HeaderName::from_static("grpc-status")),
            _ => {}
        }
    }

    /// Whether a stream passes.
    pub fn allows(&self, r: &Record) -> bool {
        match self {
            Filter::Status(c) => c.test(u64::from(r.status)),
            Filter::Duration(c) => c.test(
                r.duration
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            Filter::NotHealthCheck => true,
            Filter::Traceable => false,
            Filter::Sample(per_million) => {
                *per_million >= 1_000_000 || rand::random_range(0..1_000_000) < *per_million
            }
            Filter::And(fs) => fs.iter().all(|f| f.allows(r)),
            Filter::Or(fs) => fs.iter().any(|f| f.allows(r)),
            Filter::Header(h) => {
                let one = |s: Option<String>| s.map(|s| vec![Cow::Owned(s)]);
                let values: Option<Vec<Cow<'_, str>>> = match &h.name {
                    HeaderKey::Method => one(r.method.as_ref().map(|m| m.to_string())),
                    HeaderKey::Path => one(r.path.clone()),
                    HeaderKey::Authority => one(r.authority.clone()),
                    HeaderKey::Scheme => one(Some(r.scheme.to_string())),
                    HeaderKey::Status => None,
                    HeaderKey::Regular(n) => {
                        let v: Vec<Cow<'_, str>> = r
                            .request_headers
                            .iter()
                            .filter(|(k, _)| k == n)
                            .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()))
                            .collect();
                        (!v.is_empty()).then_some(v)
                    }
                };
                crate::http::route::evaluate(h, values)
            }
            Filter::ResponseFlags(bits) => match bits {
                None => r.flags.any(),
                Some(b) => r.flags.intersects(*b),
            },
            Filter::GrpcStatus(statuses, exclude) => statuses.contains(&grpc_status(r)) != *exclude,
        }
    }
}
