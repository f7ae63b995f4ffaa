//! Forwarding a request upstream: cluster choice (single, weighted, header), request hashing,
//! request header preparation (`x-forwarded-*`, `x-request-id`, mutations, rewrites), the
//! attempt loop with timeouts and retries, and the response on its way back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::{Body, Incoming};
use xxhash_rust::xxh64::xxh64;

use super::headers::{self, names, FormatCtx};
use super::local_reply::{self, Flag};
use super::mirror::spawn_mirror;
use super::path::rewrite_path;
use super::replay::Replay;
use super::retry::{backoff, take_retry};
use super::stream_timeout::{StreamTracker, TrackedBody};
use super::{ConnCtx, RespBody};
use crate::access_log::Record;
use crate::model::cluster::Discovery;
use crate::model::route::*;
use crate::upstream::{pool, Cluster, Host, UpstreamBody, UpstreamError};

/// Largest request body buffered so it can be retried or mirrored.
pub(super) const MAX_REPLAY_BODY: usize = 64 * 1024;

pub(super) fn pick_cluster<'a>(
    fwd: &'a Forward,
    req: &Request<Incoming>,
) -> Result<(std::borrow::Cow<'a, str>, Option<&'a WeightedTarget>), ()> {
    use std::borrow::Cow;
    match &fwd.target {
        ClusterTarget::Single(c) => Ok((Cow::Borrowed(c), None)),
        ClusterTarget::Weighted { clusters, total } => {
            let r = rand::random_range(0..*total);
            let t = clusters.iter().find(|t| r < t.upper).ok_or(())?;
            Ok((Cow::Borrowed(&t.cluster), Some(t)))
        }
        ClusterTarget::Header(h) => req
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(|s| (Cow::Owned(s.to_string()), None))
            .ok_or(()),
    }
}

pub(super) fn request_hash(
    policies: &[HashPolicy],
    req: &Request<Incoming>,
    ctx: &ConnCtx,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        let (h, terminal) = match p {
            HashPolicy::Header(n, t) => (req.headers().get(n).map(|v| xxh64(v.as_bytes(), 0)), *t),
            HashPolicy::SourceIp(t) => (
                Some(xxh64(ctx.info.peer.ip().to_string().as_bytes(), 0)),
                *t,
            ),
            HashPolicy::Query(name, t) => (
                req.uri().query().and_then(|q| {
                    q.split('&').find_map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k == name).then(|| xxh64(v.as_bytes(), 0))
                    })
                }),
                *t,
            ),
            HashPolicy::Cookie(name, t) => (
                req.headers()
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(|c| {
                        c.split(';').find_map(|kv| {
                            let (k, v) = kv.trim().split_once('=')?;
                            (k == name).then(|| xxh64(v.as_bytes(), 0))
                        })
                    }),
                *t,
            ),
        };
        if let Some(h) = h {
            hash = Some(match hash {
                Some(prev) => prev.rotate_left(1) ^ h,
                None => h,
            });
            if terminal {
                break;
            }
        }
    }
    hash
}

pub(super) struct InFlight<'a>(&'a Cluster);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.circuit.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a request asks of a protocol upgrade (`Connection: upgrade` with `Upgrade`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upgrade {
    /// None asked.
    No,
    /// One of the connection manager's `upgrade_configs` allows.
    Allowed,
    /// One that no `upgrade_configs` entry allows: refused with 403 once routed, as Envoy does.
    Refused,
}

impl Upgrade {
    /// Read from the request headers as received.
    pub(super) fn of(h: &http::HeaderMap, hcm: &crate::model::listener::HcmConfig) -> Upgrade {
        if !headers::has(h, &header::UPGRADE) {
            return Upgrade::No;
        }
        let Some(wanted) = h.get(header::UPGRADE).filter(|_| {
            h.get(header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
        }) else {
            return Upgrade::No;
        };
        let wanted = wanted.to_str().unwrap_or("");
        if hcm.upgrades.iter().any(|u| wanted.eq_ignore_ascii_case(u)) {
            Upgrade::Allowed
        } else {
            Upgrade::Refused
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    req: Request<Incoming>,
    (tracker, stream_deadline, upgrade): (Option<Arc<StreamTracker>>, Option<Instant>, Upgrade),
    ctx: &Arc<ConnCtx>,
    snapshot: &crate::model::Snapshot,
    table: &RouteTable,
    vh: &VirtualHost,
    route: &Route,
    fwd: &Forward,
    host: String,
    mut log: Option<&mut Record>,
) -> Response<RespBody> {
    let hcm = &ctx.hcm;
    let started = Instant::now();
    let Ok((cluster_name, weighted)) = pick_cluster(fwd, &req) else {
        hcm.stats.no_cluster.increment(1);
        return local_reply::for_flag(Flag::NoCluster, "");
    };
    let Some(cluster) = snapshot.cluster(&cluster_name) else {
        hcm.stats.no_cluster.increment(1);
        return local_reply::for_flag(Flag::NoCluster, "");
    };
    if let Some(l) = log.as_deref_mut() {
        l.upstream_cluster = Some(cluster.name.clone());
    }
    let downstream_h2 = req.version() == Version::HTTP_2;
    let protocol = if downstream_h2 { "HTTP/2" } else { "HTTP/1.1" };
    let hash = if fwd.hash_policy.is_empty() {
        None
    } else {
        request_hash(&fwd.hash_policy, &req, ctx)
    };
    let retry = fwd
        .retry_policy
        .as_ref()
        .or(vh.retry_policy.as_ref())
        .cloned();

    // Circuit breaker: max_requests.
    if cluster.circuit.requests.load(Ordering::Relaxed) >= cluster.config.thresholds.max_requests {
        cluster.stats.rq_pending_overflow.increment(1);
        return local_reply::for_flag(Flag::Overflow, "");
    }
    cluster.circuit.requests.fetch_add(1, Ordering::Relaxed);
    let _inflight = InFlight(cluster);
    cluster.stats.rq_total.increment(1);

    let (mut parts, body) = req.into_parts();
    // Kept only for response mutations that read request headers (`%REQ(...)%`).
    let downstream_headers = (headers::reads_request_headers(&[
        &route.response_headers,
        &vh.response_headers,
        &table.response_headers,
    ]) || weighted
        .is_some_and(|w| headers::reads_request_headers(&[&w.response_headers])))
    .then(|| parts.headers.clone());
    if upgrade == Upgrade::Refused {
        // Envoy refuses upgrades that no `upgrade_configs` entry allows.
        return super::router::closing(
            local_reply::reply(StatusCode::FORBIDDEN, Bytes::new()),
            parts.version,
        );
    }
    let is_upgrade = upgrade == Upgrade::Allowed;
    let downstream_upgrade = if is_upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };

    // Request headers (hop-by-hop and forwarding headers were done before routing): the
    // route's expected timeout, then the configured mutations.
    if let Some(t) = fwd.timeout {
        parts
            .headers
            .insert(names::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, headers::millis(t));
    }
    let fctx = FormatCtx {
        info: &ctx.info,
        protocol,
        request: None,
        upstream: None,
    };
    headers::apply(&route.request_headers, &mut parts.headers, &fctx);
    if let Some(w) = weighted {
        headers::apply(&w.request_headers, &mut parts.headers, &fctx);
    }
    headers::apply(&vh.request_headers, &mut parts.headers, &fctx);
    headers::apply(&table.request_headers, &mut parts.headers, &fctx);

    // Path and host rewrites.
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let rewritten = fwd
        .rewrite
        .as_ref()
        .map(|_| rewrite_path(pq, &fwd.rewrite, &route.matcher));
    if fwd.rewrite.is_some() {
        // Envoy records the path before a configured rewrite, even one that did not change it.
        if let Ok(v) = HeaderValue::from_str(pq) {
            parts.headers.insert(names::X_ENVOY_ORIGINAL_PATH, v);
        }
    }
    let new_pq: &str = rewritten.as_deref().unwrap_or(pq);
    let authority: std::borrow::Cow<'_, str> = match &fwd.host_rewrite {
        Some(HostRewrite::Literal(v)) => v.to_str().unwrap_or(&host).to_string().into(),
        Some(HostRewrite::FromHeader(n)) => {
            match parts.headers.get(n).and_then(|v| v.to_str().ok()) {
                Some(v) => v.to_string().into(),
                None => host.as_str().into(),
            }
        }
        Some(HostRewrite::Auto) | None => host.as_str().into(),
    };
    if *authority != *host && !host.is_empty() {
        // Envoy's Utility::updateAuthority: keep the original in x-envoy-original-host, and
        // append it to x-forwarded-host only when the route asks for it.
        if let Ok(v) = HeaderValue::from_str(&host) {
            if fwd.append_x_forwarded_host {
                let xfh = match parts
                    .headers
                    .get(names::X_FORWARDED_HOST)
                    .and_then(|x| x.to_str().ok())
                {
                    Some(prev) => {
                        HeaderValue::from_str(&format!("{prev},{host}")).unwrap_or(v.clone())
                    }
                    None => v.clone(),
                };
                parts.headers.insert(names::X_FORWARDED_HOST, xfh);
            }
            parts.headers.insert(names::X_ENVOY_ORIGINAL_HOST, v);
        }
    }

    // Body: buffer small ones so they can be retried or mirrored.
    let replayable = body.is_end_stream()
        || (retry.is_some() || !fwd.mirrors.is_empty())
            && body
                .size_hint()
                .upper()
                .is_some_and(|u| u as usize <= MAX_REPLAY_BODY);
    let mut streaming: Option<Incoming> = None;
    let mut buffered: Option<Bytes> = None;
    // A streamed body on a route that retries keeps a copy as it goes (Envoy's retry buffer).
    let mut replay: Option<Replay> = None;
    if body.is_end_stream() {
        buffered = Some(Bytes::new());
    } else if replayable {
        match Limited::new(body, MAX_REPLAY_BODY).collect().await {
            Ok(c) => {
                if let Some(t) = &tracker {
                    t.complete();
                }
                let b = c.to_bytes();
                if let Some(l) = log.as_deref_mut() {
                    l.bytes_received = b.len() as u64;
                    l.request_duration = Some(l.started.elapsed());
                }
                buffered = Some(b)
            }
            Err(_) => return local_reply::for_flag(Flag::Reset, ""),
        }
    } else if retry.is_some() {
        replay = Some(Replay::new(TrackedBody::new(body, tracker.clone())));
    } else {
        streaming = Some(body);
    }

    for m in &fwd.mirrors {
        if let (Some(b), Some(mc)) = (&buffered, snapshot.cluster(&m.cluster)) {
            if m.per_million >= 1_000_000 || rand::random_range(0..1_000_000) < m.per_million {
                spawn_mirror(mc.clone(), &parts, new_pq, &authority, b.clone());
            }
        }
    }

    let deadline = fwd.timeout.map(|t| started + t);
    let max_attempts = 1 + retry.as_ref().map_or(0, |r| r.num_retries);
    let mut tried: Vec<Arc<Host>> = Vec::new();
    let mut attempt = 0u32;
    let mut last: Response<RespBody>;
    loop {
        attempt += 1;
        let avoid: &[Arc<Host>] = if retry.as_ref().is_some_and(|r| r.avoid_previous_hosts) {
            &tried
        } else {
            &[]
        };
        let target = if cluster.config.discovery == Discovery::OriginalDst {
            ctx.info.original_dst.map(|d| cluster.original_dst_host(d))
        } else {
            cluster.pick(hash, attempt - 1, avoid)
        };
        let Some(target) = target else {
            cluster.stats.cx_none_healthy.increment(1);
            return local_reply::for_flag(Flag::NoHealthyUpstream, "");
        };
        if retry.as_ref().is_some_and(|r| r.avoid_previous_hosts) {
            tried.push(target.clone());
        }
        let _active = target.start_request();

        let body = match (&buffered, &replay, streaming.take()) {
            (Some(b), _, _) => UpstreamBody::full(b.clone()),
            (None, Some(r), _) => match r.attempt() {
                Some(b) => UpstreamBody::Replay(b),
                None => break local_reply::for_flag(Flag::Reset, ""),
            },
            (None, None, Some(s)) => UpstreamBody::Stream(TrackedBody::new(s, tracker.clone())),
            (None, None, None) => break local_reply::for_flag(Flag::Reset, ""),
        };
        let uri = upstream_uri(
            cluster,
            downstream_h2,
            &authority,
            new_pq,
            rewritten.is_none().then_some(&parts.uri),
        );
        // Built in place: a `Request::builder()` chain moves its ~200-byte state per call.
        let mut upstream_req = Request::new(body);
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = uri;
        {
            let h = upstream_req.headers_mut();
            // The last possible attempt takes the headers; earlier ones copy them for a retry.
            *h = if attempt >= max_attempts {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            // Host as routed (an HTTP/1.1 request usually has it already).
            if h.get(header::HOST)
                .is_none_or(|v| v.as_bytes() != authority.as_bytes())
            {
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    h.insert(header::HOST, v);
                }
            }
            if matches!(fwd.host_rewrite, Some(HostRewrite::Auto)) && !target.hostname.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&target.hostname) {
                    h.insert(header::HOST, v);
                }
            }
        }
        if is_upgrade {
            *upstream_req.version_mut() = Version::HTTP_11;
        }
        if let Some(l) = log.as_deref_mut() {
            if attempt == 1 {
                let h = upstream_req.headers();
                let authority = h
                    .get(header::HOST)
                    .map_or(authority.as_ref(), |v| v.to_str().unwrap_or_default());
                l.request(
                    &parts.method,
                    new_pq,
                    authority,
                    h,
                    &hcm.access_logs.request_headers,
                );
                l.upstream_protocol = Some(match cluster.config.protocol {
                    crate::model::cluster::UpstreamProtocol::Http2 => "HTTP/2",
                    crate::model::cluster::UpstreamProtocol::Http1 => "HTTP/1.1",
                    crate::model::cluster::UpstreamProtocol::UseDownstream => protocol,
                });
            }
            l.attempts = attempt;
            l.upstream_host = Some(target.key().to_string());
        }

        // The attempt ends at the earliest of the per-try, route and stream deadlines.
        let per_try = retry
            .as_ref()
            .and_then(|r| r.per_try_timeout)
            .map(|t| Instant::now() + t);
        let limit = [per_try, deadline, stream_deadline]
            .into_iter()
            .flatten()
            .min();
        if log.is_some() {
            upstream_req.extensions_mut().insert(pool::WantLocalAddr);
        }
        let exchange = std::pin::pin!(async {
            let sender = if is_upgrade {
                pool::checkout_upgrade(cluster, &target).await?
            } else {
                pool::checkout(cluster, &target, downstream_h2).await?
            };
            sender.send(upstream_req).await
        });
        let outcome = match limit {
            Some(l) => tokio::time::timeout_at(l.into(), exchange)
                .await
                .map_err(|_| ()),
            None => Ok(exchange.await),
        };
        // Whether the body can be sent again (known after the attempt: a copy may overflow).
        let intact = buffered.is_some() || replay.as_ref().is_some_and(Replay::can_replay);
        let retries_left = attempt < max_attempts && intact;
        match outcome {
            Err(()) => {
                if stream_deadline.is_some_and(|d| Instant::now() >= d) {
                    // The HCM's stream_idle_timeout, as its watchdog would have answered.
                    hcm.stats.rq_idle_timeout.increment(1);
                    break super::router::closing(
                        local_reply::reply(StatusCode::REQUEST_TIMEOUT, "stream timeout"),
                        parts.version,
                    );
                }
                let global = deadline.is_some_and(|d| Instant::now() >= d);
                if global {
                    cluster.stats.rq_timeout.increment(1);
                    hcm.stats.rq_timeout.increment(0);
                    last = local_reply::for_flag(Flag::Timeout, "");
                    break last;
                }
                cluster.stats.rq_per_try_timeout.increment(1);
                last = local_reply::for_flag(Flag::Timeout, "");
                let r = retry.as_deref();
                let retriable = r.is_some_and(|r| r.on_5xx || r.on_gateway_error || r.on_reset);
                if retriable && retries_left && take_retry(cluster) {
                    backoff(r, attempt, deadline).await;
                    continue;
                }
                note_retry_limit(log.as_deref_mut(), retriable, attempt, max_attempts);
                break last;
            }
            Ok(Err(e)) => {
                // Envoy's reset reasons; a refused or failed TCP connect carries no transport
                // failure reason in its body.
                let (flag, reason, detail) = match &e {
                    UpstreamError::Overflow => (Flag::Overflow, "overflow", String::new()),
                    UpstreamError::ConnectFailure(_) => (
                        Flag::ConnectFailure,
                        "remote connection failure",
                        String::new(),
                    ),
                    UpstreamError::ConnectTimeout => {
                        (Flag::ConnectFailure, "connection timeout", String::new())
                    }
                    UpstreamError::TlsUnsupported => (
                        Flag::ConnectFailure,
                        "remote connection failure",
                        e.to_string(),
                    ),
                    UpstreamError::Reset(_) | UpstreamError::Refused => {
                        (Flag::Reset, "connection termination", String::new())
                    }
                };
                if let Some(l) = log.as_deref_mut() {
                    // Envoy's details: the reset reason and any transport failure, spaces as `_`.
                    let mut d = format!(
                        "upstream_reset_before_response_started{{{}",
                        reason.replace(' ', "_")
                    );
                    if matches!(&e, UpstreamError::ConnectFailure(m) if m.contains("refused")) {
                        d.push_str("|delayed_connect_error:_Connection_refused");
                    }
                    if !detail.is_empty() {
                        d.push('|');
                        d.push_str(&detail.replace(' ', "_"));
                        l.transport_failure = Some(detail.clone());
                    }
                    d.push('}');
                    l.details = Some(d.into());
                }
                last = local_reply::upstream_failure(flag, reason, &detail, attempt > 1);
                let r = retry.as_deref();
                let retriable = r.is_some_and(|r| match &e {
                    UpstreamError::ConnectFailure(_)
                    | UpstreamError::ConnectTimeout
                    | UpstreamError::TlsUnsupported => {
                        r.on_connect_failure || r.on_5xx || r.on_gateway_error
                    }
                    // Envoy counts a reset as a 5xx: `5xx` and `gateway-error` retry it.
                    UpstreamError::Refused => {
                        r.on_refused_stream || r.on_5xx || r.on_gateway_error || r.on_reset
                    }
                    UpstreamError::Reset(_) => r.on_reset || r.on_5xx || r.on_gateway_error,
                    UpstreamError::Overflow => false,
                });
                if retriable && retries_left && take_retry(cluster) {
                    backoff(r, attempt, deadline).await;
                    continue;
                }
                note_retry_limit(log.as_deref_mut(), retriable, attempt, max_attempts);
                break last;
            }
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                cluster.stats.response(status);
                if let Some(r) = retry.as_deref() {
                    let want = (r.on_5xx && status >= 500)
                        || (r.on_gateway_error && (502..=504).contains(&status))
                        || (r.on_retriable_4xx && status == 409)
                        || (r.on_retriable_headers
                            && r.retriable_headers.list.iter().any(|h| {
                                super::route::response_header_matches(
                                    h,
                                    resp.status(),
                                    resp.headers(),
                                )
                            }))
                        || (r.on_retriable_status && r.retriable_status_codes.contains(&status))
                        || (!r.grpc_statuses.is_empty()
                            && grpc_status(resp.headers())
                                .is_some_and(|g| r.grpc_statuses.contains(&g)));
                    if want && retries_left && take_retry(cluster) {
                        drop(resp);
                        backoff(Some(r), attempt, deadline).await;
                        continue;
                    }
                    note_retry_limit(log.as_deref_mut(), want, attempt, max_attempts);
                }
                if attempt > 1 {
                    cluster.stats.rq_retry_success.increment(1);
                }
                if let Some(r) = &replay {
                    r.commit();
                }
                if let Some(l) = log.as_deref_mut() {
                    l.upstream_local = resp
                        .extensions()
                        .get::<pool::UpstreamLocalAddr>()
                        .and_then(|a| a.0);
                }
                let upstream_addr = target.key();
                break finish_response(
                    resp,
                    ctx,
                    table,
                    vh,
                    route,
                    weighted,
                    started,
                    protocol,
                    downstream_headers.as_ref(),
                    upstream_addr,
                    downstream_upgrade,
                );
            }
        }
    }
}

/// Envoy's `URX`: the outcome called for a retry and none was left.
fn note_retry_limit(log: Option<&mut Record>, retriable: bool, attempt: u32, max: u32) {
    if let Some(l) = log {
        if retriable && attempt >= max {
            l.flags.set(crate::access_log::Flags::RETRY_LIMIT);
        }
    }
}

/// The `grpc-status` of a trailers-only gRPC response (the only place a retry can see it).
fn grpc_status(h: &http::HeaderMap) -> Option<u8> {
    std::str::from_utf8(h.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}

/// The upstream request's URI: origin-form for HTTP/1.1, absolute for HTTP/2. `unchanged` is
/// the downstream URI when `pq` is still its path: reused as is when it already has the form
/// needed.
pub(super) fn upstream_uri(
    cluster: &Cluster,
    downstream_h2: bool,
    authority: &str,
    pq: &str,
    unchanged: Option<&Uri>,
) -> Uri {
    use crate::model::cluster::UpstreamProtocol as P;
    let h2 = match cluster.config.protocol {
        P::Http2 => true,
        P::Http1 => false,
        P::UseDownstream => downstream_h2,
    };
    if let Some(u) = unchanged {
        if !h2 && u.scheme().is_none() && u.authority().is_none() {
            return u.clone();
        }
    }
    if h2 {
        if let Ok(u) = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
        {
            return u;
        }
    }
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn finish_response(
    resp: Response<crate::upstream::pool::PooledBody>,
    ctx: &ConnCtx,
    table: &RouteTable,
    vh: &VirtualHost,
    route: &Route,
    weighted: Option<&WeightedTarget>,
    started: Instant,
    protocol: &'static str,
    request_headers: Option<&http::HeaderMap>,
    upstream: &str,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let (mut parts, body) = resp.into_parts();
    if switching {
        if let (Some(down), Some(up)) = (
            downstream_upgrade,
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        ) {
            tokio::spawn(async move {
                if let (Ok(d), Ok(u)) = (down.await, up.await) {
                    let mut d = hyper_util::rt::TokioIo::new(d);
                    let mut u = hyper_util::rt::TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                }
            });
        }
    }
    headers::strip_hop_by_hop(&mut parts.headers, switching);
    parts.headers.insert(
        names::X_ENVOY_UPSTREAM_SERVICE_TIME,
        headers::millis(started.elapsed()),
    );
    let fctx = FormatCtx {
        info: &ctx.info,
        protocol,
        request: request_headers,
        upstream: Some(upstream),
    };
    headers::apply(&route.response_headers, &mut parts.headers, &fctx);
    if let Some(w) = weighted {
        headers::apply(&w.response_headers, &mut parts.headers, &fctx);
    }
    headers::apply(&vh.response_headers, &mut parts.headers, &fctx);
    headers::apply(&table.response_headers, &mut parts.headers, &fctx);
    Response::from_parts(parts, Either::Left(body))
}
