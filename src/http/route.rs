//! Route selection: the first route of a virtual host whose match accepts the request.
//!
//! Large virtual hosts carry a [`RouteIndex`](crate::model::route::RouteIndex) built at config
//! time: routes are keyed by their prefix or exact path and found by hash lookups per distinct
//! prefix length; only those candidates (plus regex routes) are evaluated in full, lowest index
//! first, so first-match semantics hold without scanning thousands of routes.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::Request;

use crate::model::matcher::{HeaderKey, HeaderMatch, HeaderValueMatch};
use crate::model::route::{PathMatch, Route, RouteMatch, VirtualHost};

/// The route for `req` in `vh`, honouring config order.
pub fn select<'a, B>(vh: &'a VirtualHost, req: &Request<B>, host: &str) -> Option<&'a Route> {
    let Some(index) = &vh.index else {
        return vh.routes.iter().find(|r| matches(&r.matcher, req, host));
    };
    let path = req.uri().path();
    let mut best: Option<usize> = None;
    // The lowest candidate in `ids` (ascending) that is below `best` and matches in full.
    let consider = |ids: &[usize], best: &mut Option<usize>| {
        for &i in ids {
            if best.is_some_and(|b| i >= b) {
                return;
            }
            if vh
                .routes
                .get(i)
                .is_some_and(|r| matches(&r.matcher, req, host))
            {
                *best = Some(i);
                return;
            }
        }
    };
    if let Some(ids) = index.exact.get(path) {
        consider(ids, &mut best);
    }
    for &len in &index.prefix_lens {
        let Some(prefix) = path.get(..len) else { break };
        if let Some(ids) = index.prefix.get(prefix) {
            consider(ids, &mut best);
        }
        if let Some(ids) = index.separated.get(prefix) {
            consider(ids, &mut best);
        }
    }
    consider(&index.scan, &mut best);
    best.and_then(|b| vh.routes.get(b))
}

/// Every value of the header a matcher names (pseudo-headers have one), `None` when absent.
fn header_values<'a, B>(
    req: &'a Request<B>,
    key: &HeaderKey,
    host: &'a str,
) -> Option<Vec<Cow<'a, str>>> {
    let one = |s: &'a str| Some(vec![Cow::Borrowed(s)]);
    match key {
        HeaderKey::Authority => one(host),
        HeaderKey::Path => one(req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")),
        HeaderKey::Method => one(req.method().as_str()),
        HeaderKey::Scheme => one(req.uri().scheme_str().unwrap_or("http")),
        HeaderKey::Status => None,
        HeaderKey::Regular(n) => {
            let values: Vec<Cow<'a, str>> = req
                .headers()
                .get_all(n)
                .iter()
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            (!values.is_empty()).then_some(values)
        }
    }
}

/// One `HeaderMatcher`, as Envoy 1.40 evaluates it: a missing header fails every matcher but
/// `present_match` whatever `invert_match` says (unless `treat_missing_header_as_empty`), and a
/// header sent several times matches when any one of its values does.
pub(crate) fn evaluate(h: &HeaderMatch, values: Option<Vec<Cow<'_, str>>>) -> bool {
    let test = |v: &str| match &h.value {
        HeaderValueMatch::Present(want) => *want,
        HeaderValueMatch::String(s) => s.matches(v),
        HeaderValueMatch::Range(a, b) => v.trim().parse::<i64>().is_ok_and(|n| n >= *a && n < *b),
    };
    let result = match (values, &h.value) {
        (None, HeaderValueMatch::Present(want)) => !*want,
        (None, _) if h.treat_missing_as_empty => test(""),
        (None, _) => return false,
        (Some(values), _) => values.iter().any(|v| test(v)),
    };
    result != h.invert
}

fn header_matches<B>(h: &HeaderMatch, req: &Request<B>, host: &str) -> bool {
    evaluate(h, header_values(req, &h.name, host))
}

/// Whether a `retriable_headers` matcher accepts an upstream response (`:status` is its
/// status; request pseudo-headers are absent).
pub fn response_header_matches(
    h: &HeaderMatch,
    status: http::StatusCode,
    headers: &http::HeaderMap,
) -> bool {
    let values: Vec<Cow<'_, str>> = match &h.name {
        HeaderKey::Status => vec![Cow::Borrowed(status.as_str())],
        HeaderKey::Regular(n) => headers
            .get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect(),
        _ => Vec::new(),
    };
    evaluate(h, (!values.is_empty()).then_some(values))
}

/// Whether a route's match criteria accept the request.
pub fn matches<B>(m: &RouteMatch, req: &Request<B>, host: &str) -> bool {
    let path = req.uri().path();
    let ok = match &m.path {
        PathMatch::Prefix(p) => {
            if m.case_sensitive {
                path.starts_with(p.as_str())
            } else {
                path.get(..p.len())
                    .is_some_and(|x| x.eq_ignore_ascii_case(p))
            }
        }
        PathMatch::Exact(p) => {
            if m.case_sensitive {
                path == p
            } else {
                path.eq_ignore_ascii_case(p)
            }
        }
        PathMatch::Regex(r) => r.is_match(path),
        PathMatch::SeparatedPrefix(p) => {
            path.starts_with(p.as_str())
                && (path.len() == p.len() || path.as_bytes().get(p.len()) == Some(&b'/'))
        }
    };
    if !ok {
        return false;
    }
    if m.grpc
        && !req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        return false;
    }
    if !m.headers.iter().all(|h| header_matches(h, req, host)) {
        return false;
    }
    if !m.query.is_empty() {
        let q = req.uri().query().unwrap_or("");
        for qm in &m.query {
            let found = q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == qm.name).then_some(v)
            });
            let ok = match (&qm.value, found) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(s), Some(v)) => s.matches(v),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::{HeaderOps, RouteAction, INDEX_THRESHOLD};

    fn route(path: PathMatch, headers: bool) -> Route {
        Route {
            name: String::new(),
            matcher: RouteMatch {
                path,
                case_sensitive: true,
                headers: if headers {
                    vec![crate::model::matcher::HeaderMatch {
                        name: HeaderKey::Regular(http::HeaderName::from_static("x-canary")),
                        value: HeaderValueMatch::Present(true),
                        invert: false,
                        treat_missing_as_empty: false,
                    }]
                } else {
                    Vec::new()
                },
                query: Vec::new(),
                grpc: false,
            },
            action: RouteAction::NonForwarding,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
        }
    }

    #[test]
    fn index_keeps_first_match_order() {
        let mut routes = Vec::new();
        for i in 0..40 {
            routes.push(match i % 5 {
                0 => route(PathMatch::Prefix(format!("/s{i}")), false),
                1 => route(PathMatch::Exact(format!("/s{}/x", i - 1)), false),
                2 => route(PathMatch::Prefix(format!("/s{}", i - 2)), true),
                3 => route(PathMatch::SeparatedPrefix(format!("/s{}", i % 7)), false),
                _ => route(
                    PathMatch::Regex(regex::Regex::new(&format!("^/r{i}.*$")).unwrap()),
                    false,
                ),
            });
        }
        routes.push(route(PathMatch::Prefix("/".into()), false));
        assert!(routes.len() >= INDEX_THRESHOLD);
        let plain = VirtualHost {
            routes,
            ..Default::default()
        };
        let indexed = VirtualHost {
            index: Some(crate::model::route::RouteIndex::build(&plain.routes)),
            routes: plain
                .routes
                .iter()
                .map(|r| route(r.matcher.path.clone(), !r.matcher.headers.is_empty()))
                .collect(),
            ..Default::default()
        };
        let paths = [
            "/s0", "/s0/x", "/s5/x", "/s1", "/s3", "/s3/y", "/s30zz", "/r4abc", "/r9", "/nothing",
            "/s10", "/s2x", "/",
        ];
        for p in paths {
            for canary in [false, true] {
                let mut b = Request::builder().uri(p);
                if canary {
                    b = b.header("x-canary", "1");
                }
                let req = b.body(()).unwrap();
                let want = plain
                    .routes
                    .iter()
                    .position(|r| matches(&r.matcher, &req, "h"));
                let got = select(&indexed, &req, "h").map(|r| {
                    indexed
                        .routes
                        .iter()
                        .position(|x| std::ptr::eq(x, r))
                        .unwrap()
                });
                assert_eq!(got, want, "{p} canary={canary}");
            }
        }
    }
}
