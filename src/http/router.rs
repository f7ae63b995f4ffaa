//! `envoy.filters.http.router`: the per-request entry point. Validates the Host, normalises the
//! path, selects the route and runs its action: a direct response, a redirect, or forwarding
//! ([`super::forward`]).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};

use hyper::body::Incoming;

use super::forward::{forward, Upgrade};
use super::headers::{self, FormatCtx};
use super::local_reply::{self, Flag};
use super::path::{normalize, normalize_slashes, rebuild_uri, strip_port};
use super::redirect::redirect;
use super::stream_timeout::{watchdog, Expired, StreamTracker};
use super::{ConnCtx, RespBody};
use crate::access_log::Record;
use crate::model::listener::{HcmConfig, RouteSource, ServerHeader};
use crate::model::route::*;

/// Handle one downstream request. `log` is the request's access log record, when the
/// connection manager has access logs: the router fills in what it learns.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
    mut log: Option<&mut Record>,
) -> Response<RespBody> {
    let hcm = &ctx.hcm;
    let stats = &hcm.stats;
    stats.rq_total.increment(1);
    stats.rq_active.increment(1.0);
    let version = req.version();
    if version == Version::HTTP_2 {
        stats.rq_http2.increment(1);
    } else {
        stats.rq_http1.increment(1);
    }
    let timers = (hcm.request_timeout, hcm.stream_idle_timeout);
    // A request that arrived whole (most do) can only reach `stream_idle_timeout` while it is
    // forwarded: the forwarder folds that deadline into its attempt timeouts, so no watchdog
    // timer is armed for it. A request still sending its body gets the watchdog.
    let complete = hyper::body::Body::is_end_stream(req.body());
    let stream_deadline = timers
        .1
        .filter(|_| complete)
        .and_then(|idle| std::time::Instant::now().checked_add(idle));
    // The tracker also counts the body's bytes for an access log.
    let tracker =
        (!complete && (timers != (None, None) || log.is_some())).then(|| StreamTracker::new(false));
    if let Some(l) = log.as_deref_mut() {
        if complete {
            l.request_duration = Some(l.started.elapsed());
        }
        l.request_body = tracker.clone();
    }
    // Futures are pinned where they are made and awaited by reference: awaiting one by value
    // can store it twice in the caller's state, and that state is moved for every request.
    let routed = std::pin::pin!(route_and_forward(
        req,
        &ctx,
        tracker.clone(),
        stream_deadline,
        log,
    ));
    let mut resp = match tracker {
        None => routed.await,
        Some(tracker) => tokio::select! {
            resp = routed => resp,
            expired = watchdog(tracker, timers.0, timers.1) => {
                let body = match expired {
                    Expired::Request => {
                        stats.rq_timeout.increment(1);
                        "request timeout"
                    }
                    Expired::Idle => {
                        stats.rq_idle_timeout.increment(1);
                        "stream timeout"
                    }
                };
                closing(local_reply::reply(StatusCode::REQUEST_TIMEOUT, body), version)
            }
        },
    };
    // Answer in the downstream's protocol, whatever the upstream spoke (HTTP/1.0 upstreams).
    *resp.version_mut() = if version == Version::HTTP_2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    stats.rq_active.decrement(1.0);
    if let Some(c) = stats
        .rq_class
        .get(usize::from(resp.status().as_u16() / 100).wrapping_sub(1))
    {
        c.increment(1);
    }
    match hcm.server_header {
        ServerHeader::Overwrite => {
            resp.headers_mut()
                .insert(header::SERVER, hcm.server_name.clone());
        }
        ServerHeader::AppendIfAbsent => {
            if !resp.headers().contains_key(header::SERVER) {
                resp.headers_mut()
                    .insert(header::SERVER, hcm.server_name.clone());
            }
        }
        ServerHeader::PassThrough => {}
    }
    resp
}

/// The request's authority as sent (case kept: only virtual host lookup lower-cases it). Several
/// `Host` headers are joined with `,`, as Envoy's header map does.
pub(super) fn authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let mut s = String::from_utf8_lossy(hosts.next()?.as_bytes()).into_owned();
    for h in hosts {
        s.push(',');
        s.push_str(&String::from_utf8_lossy(h.as_bytes()));
    }
    Some(s)
}

/// nghttp2's authority check, as Envoy applies it (an empty Host is accepted and routed).
pub(super) fn valid_host(h: &str) -> bool {
    h.bytes().all(|b| HOST_CHARS[usize::from(b)])
}

/// The bytes [`valid_host`] allows, as a table (it runs on every request).
const HOST_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~:[]!$&'()*+,;=%@";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Envoy closes an HTTP/1 connection after rejecting a request's headers (HTTP/1.0 not
/// accepted, missing or invalid Host): the response carries `Connection: close`.
pub(super) fn closing(mut resp: Response<RespBody>, version: Version) -> Response<RespBody> {
    if version != Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Record the request line and the headers the access logs read.
fn log_request(l: &mut Record, req: &Request<Incoming>, host: &str, hcm: &HcmConfig) {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    l.request(
        req.method(),
        pq,
        host,
        req.headers(),
        &hcm.access_logs.request_headers,
    );
}

pub(super) async fn route_and_forward(
    mut req: Request<Incoming>,
    ctx: &Arc<ConnCtx>,
    tracker: Option<Arc<StreamTracker>>,
    stream_deadline: Option<std::time::Instant>,
    mut log: Option<&mut Record>,
) -> Response<RespBody> {
    let hcm = &ctx.hcm;
    if req.version() == Version::HTTP_10 && !hcm.accept_http_10 {
        return closing(
            local_reply::reply(StatusCode::UPGRADE_REQUIRED, "Upgrade Required"),
            req.version(),
        );
    }
    let Some(host) = authority(&req) else {
        // Envoy: 400 with an empty body (details `missing_host_header`).
        return closing(
            local_reply::reply(StatusCode::BAD_REQUEST, Bytes::new()),
            req.version(),
        );
    };
    if !valid_host(&host) {
        // Envoy's codec refuses this before its connection manager has a request: the access
        // log gets no request values, `DPE` and `http.invalid_authority`.
        if let Some(l) = log.as_deref_mut() {
            l.details = Some("http.invalid_authority".into());
        }
        return closing(
            local_reply::for_flag(Flag::ProtocolError, ""),
            req.version(),
        );
    }
    if hcm.normalize_path || hcm.merge_slashes {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let (path, query) = pq.split_once('?').map_or((pq, None), |(p, q)| (p, Some(q)));
        // Most paths have nothing to normalise: check before building a new one.
        let clean = path.starts_with('/')
            && !(hcm.normalize_path && path.contains("/."))
            && !(hcm.merge_slashes && path.contains("//"));
        let np = if clean {
            String::new()
        } else if hcm.normalize_path {
            normalize(path, hcm.merge_slashes)
        } else {
            normalize_slashes(path)
        };
        if !clean && np != path {
            let new = match query {
                Some(q) => format!("{np}?{q}"),
                None => np,
            };
            if let Ok(uri) = rebuild_uri(req.uri(), &new) {
                *req.uri_mut() = uri;
            }
        }
    }
    // As Envoy's connection manager does before it picks a route: hop-by-hop headers go and the
    // forwarding headers (x-forwarded-proto, x-request-id, ...) come, so that routes match, and
    // local replies and access logs see, the request as it will be forwarded.
    let upgrade = Upgrade::of(req.headers(), hcm);
    let h = req.headers_mut();
    h.reserve(4); // the usual additions: the map grows once, not per header
    headers::strip_hop_by_hop(h, upgrade == Upgrade::Allowed);
    headers::add_forwarding_headers(h, ctx);
    if let Some(l) = log.as_deref_mut() {
        log_request(l, &req, &host, hcm);
    }
    if !ctx.peer_authenticated {
        // istio_authn, the first HTTP filter (so after the connection manager's edits): Istio's
        // reply to a failed peer authentication.
        hcm.stats.rq_peer_authn_failed.increment(1);
        return local_reply::reply(StatusCode::UNAUTHORIZED, "Peer authentication failed.");
    }
    // The connection's snapshot while it is current; a newer one is loaded only after a publish.
    let fresh;
    let snapshot: &crate::model::Snapshot = if ctx.state.snapshots.version() == ctx.snapshot.version
    {
        &ctx.snapshot
    } else {
        fresh = ctx.state.snapshots.load();
        &fresh
    };
    let table: &RouteTable = match &hcm.routes {
        RouteSource::Static(t) => t,
        RouteSource::Rds(name) => match snapshot.routes.get(name) {
            Some(t) => t,
            None => {
                hcm.stats.no_route.increment(1);
                return local_reply::for_flag(Flag::NoRoute, "");
            }
        },
    };
    let host_lc = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host.as_str())
    };
    let host_for_match = if table.ignore_port_in_host_matching {
        strip_port(&host_lc)
    } else {
        &host_lc
    };
    let Some(vh) = table.find_virtual_host(host_for_match) else {
        hcm.stats.no_route.increment(1);
        return local_reply::for_flag(Flag::NoRoute, "");
    };
    let Some(route) = super::route::select(vh, &req, &host) else {
        hcm.stats.no_route.increment(1);
        return local_reply::for_flag(Flag::NoRoute, "");
    };
    let protocol = if req.version() == Version::HTTP_2 {
        "HTTP/2"
    } else {
        "HTTP/1.1"
    };
    if let Some(l) = log.as_deref_mut() {
        if !route.name.is_empty() {
            l.route_name = Some(route.name.clone());
        }
        if matches!(
            route.action,
            RouteAction::Direct { .. } | RouteAction::Redirect(_)
        ) {
            l.details = Some("direct_response".into());
        }
    }
    let mut resp = match &route.action {
        RouteAction::Direct { status, body } => {
            hcm.stats.rq_direct_response.increment(1);
            local_reply::reply(*status, body.clone())
        }
        RouteAction::Redirect(r) => {
            hcm.stats.rq_redirect.increment(1);
            redirect(r, &req, &host, &route.matcher)
        }
        RouteAction::NonForwarding => local_reply::for_flag(Flag::NoRoute, ""),
        RouteAction::Forward(fwd) => {
            // The router's own replies (no cluster, connect failure, overflow, ...) get the
            // route's response header mutations, as Envoy's do.
            let wants_request = headers::reads_request_headers(&[
                &route.response_headers,
                &vh.response_headers,
                &table.response_headers,
            ]);
            let request_headers = wants_request.then(|| req.headers().clone());
            let forwarded = std::pin::pin!(forward(
                req,
                (tracker, stream_deadline, upgrade),
                ctx,
                snapshot,
                table,
                vh,
                route,
                fwd,
                host,
                log
            ));
            let mut resp = forwarded.await;
            if resp.extensions().get::<Flag>().is_some() {
                let fctx = FormatCtx {
                    info: &ctx.info,
                    protocol,
                    request: request_headers.as_ref(),
                    upstream: None,
                };
                headers::apply(&route.response_headers, resp.headers_mut(), &fctx);
                headers::apply(&vh.response_headers, resp.headers_mut(), &fctx);
                headers::apply(&table.response_headers, resp.headers_mut(), &fctx);
            }
            return resp;
        }
    };
    let fctx = FormatCtx {
        info: &ctx.info,
        protocol,
        request: Some(req.headers()),
        upstream: None,
    };
    headers::apply(&route.response_headers, resp.headers_mut(), &fctx);
    headers::apply(&vh.response_headers, resp.headers_mut(), &fctx);
    headers::apply(&table.response_headers, resp.headers_mut(), &fctx);
    resp
}
