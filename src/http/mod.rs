//! `envoy.filters.network.http_connection_manager`: HTTP/1.1 and HTTP/2 (h2c prior knowledge,
//! chosen per connection by the codec setting) on hyper, each request handed to the [`router`].

pub mod access_log;
pub mod authn;
pub mod conn_io;
pub mod forward;
pub mod headers;
pub mod local_reply;
pub mod mirror;
pub mod path;
pub mod redirect;
pub mod replay;
pub mod retry;
pub mod route;
pub mod router;
pub mod stream_timeout;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use self::conn_io::{ConnIo, Notice, Preface};
use crate::listener::ConnInfo;
use crate::model::listener::{Codec, HcmConfig};
use crate::server::State;

/// Response body sent downstream: streamed from upstream, a local reply, or (when the connection
/// manager has access logs) either of them wrapped to finish the request's log record.
pub type RespBody =
    Either<crate::upstream::pool::PooledBody, Either<Full<Bytes>, Box<access_log::LoggedBody>>>;

/// Per-connection context shared by its requests.
#[derive(Debug)]
pub struct ConnCtx {
    /// The HCM config this connection was accepted under.
    pub hcm: Arc<HcmConfig>,
    /// Connection facts.
    pub info: ConnInfo,
    /// Process state (snapshots, stats).
    pub state: Arc<State>,
    /// Set once the connection drains: HTTP/1 responses then carry `Connection: close`.
    pub draining: AtomicBool,
    /// The snapshot current when the connection started; requests use it while it is still
    /// the published one (no shared reference-count traffic per request).
    pub snapshot: Arc<crate::model::Snapshot>,
    /// Whether `istio_authn` (if configured) authenticated the peer; decided per connection.
    pub peer_authenticated: bool,
    /// This hop's `x-forwarded-client-cert` element (mutual TLS, APPEND_FORWARD/SANITIZE_SET).
    pub xfcc: Option<http::HeaderValue>,
    /// Requests in progress and when the last one ended, for the connection's `idle_timeout`.
    pub idle: IdleClock,
}

/// The HTTP/1 connection's idle clock: one timer per connection, not one per request.
#[derive(Debug)]
pub struct IdleClock {
    start: Instant,
    active: AtomicU32,
    /// Milliseconds from `start` to the end of the last request.
    since: AtomicU64,
}

impl IdleClock {
    fn new() -> IdleClock {
        IdleClock {
            start: Instant::now(),
            active: AtomicU32::new(0),
            since: AtomicU64::new(0),
        }
    }

    fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.since.store(ms, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Resolves once no request has been in progress for `timeout`.
    async fn expired(&self, timeout: Duration) {
        loop {
            let since = self.since.load(Ordering::Relaxed);
            let Some(deadline) = self
                .start
                .checked_add(Duration::from_millis(since))
                .and_then(|t| t.checked_add(timeout))
            else {
                return std::future::pending().await; // beyond any clock: never
            };
            tokio::time::sleep_until(deadline.into()).await;
            if self.active.load(Ordering::Relaxed) == 0
                && self.since.load(Ordering::Relaxed) == since
            {
                return;
            }
            if self.active.load(Ordering::Relaxed) > 0 {
                // Busy: look again a full timeout from now (the request's end moves `since`).
                tokio::time::sleep(timeout).await;
            }
        }
    }
}

/// Ends an HTTP/2 stream's activity on its connection's idle clock when dropped.
#[derive(Debug)]
struct StreamActive(Arc<ConnCtx>);

impl Drop for StreamActive {
    fn drop(&mut self) {
        self.0.idle.end();
    }
}

/// Wait until the connection's listener generation is drained.
async fn drained(drain: &mut watch::Receiver<bool>) {
    loop {
        if *drain.borrow_and_update() {
            return;
        }
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Serve HTTP on one downstream connection until it closes or is drained.
///
/// Draining follows Envoy: an HTTP/2 connection gets a GOAWAY notice (last stream id 2^31-1)
/// right away and the final GOAWAY after `drain_timeout`; an HTTP/1 connection answers its
/// requests with `Connection: close` and, if still idle after `drain_timeout`, is closed. A
/// request racing the drain is therefore served, never dropped.
pub async fn serve<S>(
    mut stream: S,
    hcm: Arc<HcmConfig>,
    info: ConnInfo,
    state: Arc<State>,
    mut drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    hcm.stats.cx_total.increment(1);
    hcm.stats.cx_active.increment(1.0);
    // Sniff the HTTP/2 preface (unless the codec is HTTP/1 only), bounded like a header read.
    let sniffed = match hcm.codec {
        Codec::Http1 => Some((Preface::Other, Bytes::new())),
        Codec::Http2 | Codec::Auto => {
            let limit = hcm.request_headers_timeout.or(hcm.idle_timeout);
            let sniff = async {
                match limit {
                    Some(l) => tokio::time::timeout(l, conn_io::sniff(&mut stream))
                        .await
                        .ok(),
                    None => Some(conn_io::sniff(&mut stream).await),
                }
            };
            let mut drain = drain.clone();
            tokio::select! {
                r = sniff => r.and_then(Result::ok),
                _ = async {
                    drained(&mut drain).await;
                    tokio::time::sleep(hcm.drain_timeout).await;
                } => None,
            }
        }
    };
    let (preface, replay) = match sniffed {
        Some((Preface::Rejected, _)) | None => {
            hcm.stats.cx_active.decrement(1.0);
            return;
        }
        Some(s) => s,
    };
    let h2 = hcm.codec == Codec::Http2 || preface == Preface::Http2;
    let notice = Arc::new(Notice::default());
    let io = ConnIo::new(stream, replay, h2.then(|| notice.clone()));
    let state_snapshot = state.snapshots.load();
    let peer_authenticated = hcm
        .peer_authn
        .as_ref()
        .is_none_or(|p| authn::allows(p, info.tls.as_ref()));
    let xfcc = match (&info.tls, hcm.xfcc.mode) {
        (
            Some(hs),
            crate::model::listener::XfccMode::AppendForward
            | crate::model::listener::XfccMode::SanitizeSet,
        ) => hs.peer.as_ref().and_then(|p| {
            http::HeaderValue::from_str(&p.xfcc(hs.local_id.as_deref(), &hcm.xfcc)).ok()
        }),
        _ => None,
    };
    let ctx = Arc::new(ConnCtx {
        peer_authenticated,
        xfcc,
        hcm: hcm.clone(),
        info,
        state,
        draining: AtomicBool::new(false),
        snapshot: state_snapshot,
        idle: IdleClock::new(),
    });
    let svc_ctx = ctx.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let ctx = svc_ctx.clone();
        async move {
            let version = req.version();
            let h1 = version != http::Version::HTTP_2;
            // Dropped when the request ends, also when hyper drops this future (a stream reset
            // before its response), so the idle clock never counts a dead stream as active.
            ctx.idle.begin();
            let active = StreamActive(ctx.clone());
            let mut record = if ctx.hcm.access_logs.is_empty() {
                None
            } else {
                Some(access_log::start(version, &ctx))
            };
            let mut resp =
                std::pin::pin!(router::handle(req, ctx.clone(), record.as_deref_mut())).await;
            match resp.body_mut() {
                // An HTTP/2 stream stays active while its response body streams; an HTTP/1
                // connection's response is always finished before it closes (graceful).
                Either::Left(body) if !h1 && !hyper::body::Body::is_end_stream(body) => {
                    body.hold(Box::new(active));
                }
                _ => drop(active),
            }
            if h1
                && ctx.draining.load(Ordering::SeqCst)
                && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
            {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            let resp = match record {
                None => resp,
                Some(r) => access_log::wrap(resp, r, ctx),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(hcm.max_request_headers_bytes.max(8192))
        .header_read_timeout(hcm.request_headers_timeout)
        .preserve_header_case(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(hcm.max_request_headers_bytes as u32)
        .max_concurrent_streams(2_147_483_647);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // The idle clock and the drain signal sit in a `FuturesUnordered`, which polls a future
    // only when its own waker fired: a `select!` would poll both on every wake of the
    // connection, about 700 instructions per request.
    let mut endings: FuturesUnordered<Pin<Box<dyn Future<Output = bool> + Send + '_>>> =
        FuturesUnordered::new();
    if let Some(timeout) = hcm.idle_timeout {
        let clock = &ctx.idle;
        endings.push(Box::pin(async move {
            clock.expired(timeout).await;
            true
        }));
    }
    endings.push(Box::pin(async {
        drained(&mut drain).await;
        false
    }));
    let idle = tokio::select! {
        _ = conn.as_mut() => None,
        Some(idle) = endings.next() => Some(idle),
    };
    drop(endings);
    match idle {
        None => {}
        // Envoy closes a connection with no request in progress for `idle_timeout`; on HTTP/1
        // a response still being written finishes first.
        Some(true) if !h2 => {
            hcm.stats.cx_idle_timeout.increment(1);
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(hcm.drain_timeout, conn.as_mut()).await;
        }
        // The drain sequence (listener drain, or an idle HTTP/2 connection): a GOAWAY notice
        // (HTTP/1: `Connection: close` on later responses), then after `drain_timeout` the
        // final GOAWAY, or for HTTP/1 a close once idle.
        Some(idle) => {
            if idle {
                hcm.stats.cx_idle_timeout.increment(1);
            } else {
                ctx.draining.store(true, Ordering::SeqCst);
            }
            notice.request();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(hcm.drain_timeout) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
        }
    }
    hcm.stats.cx_active.decrement(1.0);
}
