//! Redirect actions: the `Location` Envoy builds from the request and the `RedirectAction`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use super::local_reply::{self};
use super::RespBody;
use crate::model::route::*;

pub(super) fn redirect(
    r: &Redirect,
    req: &Request<Incoming>,
    host: &str,
    m: &RouteMatch,
) -> Response<RespBody> {
    let scheme = r
        .scheme
        .clone()
        .unwrap_or_else(|| req.uri().scheme_str().unwrap_or("http").to_string());
    let (orig_host, orig_port) = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (host.to_string(), None),
    };
    let new_host = r.host.clone().unwrap_or(orig_host);
    // Envoy's processRequestHost: host_redirect replaces host and port; otherwise the request's
    // port stays unless port_redirect replaces it, or the scheme changes away from the request's
    // protocol (x-forwarded-proto) while on that protocol's default port.
    let request_proto = req
        .headers()
        .get(super::headers::names::X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(req.uri().scheme_str().unwrap_or("http"));
    let port = match (r.port, &r.host, orig_port) {
        (Some(p), _, _) => Some(p.to_string()),
        (None, Some(_), _) => None,
        (None, None, Some(p))
            if scheme != request_proto
                && ((request_proto == "http" && p == "80")
                    || (request_proto == "https" && p == "443")) =>
        {
            None
        }
        (None, None, p) => p,
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
    let mut new_path = match &r.path {
        None => pq.to_string(),
        Some(RedirectPath::Replace(p)) => {
            if p.contains('?') || r.strip_query {
                p.clone()
            } else {
                match query {
                    Some(q) => format!("{p}?{q}"),
                    None => p.clone(),
                }
            }
        }
        Some(RedirectPath::Prefix(prefix)) => {
            let matched_len = match &m.path {
                PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len(),
                PathMatch::Exact(p) => p.len(),
                PathMatch::Regex(_) => 0,
            };
            let rest = path.get(matched_len..).unwrap_or("");
            match query {
                Some(q) => format!("{prefix}{rest}?{q}"),
                None => format!("{prefix}{rest}"),
            }
        }
        Some(RedirectPath::Regex(re, sub)) => {
            let p = re.replace_all(path, sub.as_str()).into_owned();
            match query {
                Some(q) => format!("{p}?{q}"),
                None => p,
            }
        }
    };
    if r.strip_query {
        if let Some(i) = new_path.find('?') {
            new_path.truncate(i);
        }
    }
    let location = match port {
        Some(p) => format!("{scheme}://{new_host}:{p}{new_path}"),
        None => format!("{scheme}://{new_host}{new_path}"),
    };
    let mut resp = local_reply::reply(r.status, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
