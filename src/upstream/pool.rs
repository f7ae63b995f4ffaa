//! Per-host upstream connection pools: HTTP/1.1 keep-alive connections (a lock-free idle queue,
//! driven by the request that uses them: see [`super::http1`]) and one multiplexed HTTP/2
//! connection on hyper's client. Upgrade requests (websocket) get a hyper HTTP/1.1 connection of
//! their own, which hands over the upgraded socket.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::cluster::{Cluster, Host};
use super::http1::{self, Stream};
use crate::model::cluster::{EndpointAddr, UpstreamProtocol};

/// Request body sent upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    /// Complete before the attempt (empty, or collected for retries and mirrors).
    Buffered(Full<Bytes>),
    /// Streamed from downstream as it arrives.
    Stream(crate::http::stream_timeout::TrackedBody),
    /// Streamed from downstream while a copy is kept for retries.
    Replay(crate::http::replay::AttemptBody),
}

impl UpstreamBody {
    /// A complete body.
    pub fn full(data: Bytes) -> Self {
        UpstreamBody::Buffered(Full::new(data))
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        use std::pin::Pin;
        match self.get_mut() {
            UpstreamBody::Buffered(b) => Pin::new(b).poll_frame(cx).map_err(|e| match e {}),
            UpstreamBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Replay(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Buffered(b) => b.is_end_stream(),
            UpstreamBody::Stream(b) => b.is_end_stream(),
            UpstreamBody::Replay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            UpstreamBody::Buffered(b) => b.size_hint(),
            UpstreamBody::Stream(b) => b.size_hint(),
            UpstreamBody::Replay(b) => b.size_hint(),
        }
    }
}

const MAX_IDLE_H1: usize = 64;

/// Why an upstream exchange failed (maps to Envoy's response flags).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect (UF).
    #[error("connection failure: {0}")]
    ConnectFailure(String),
    /// Connect timed out (UF).
    #[error("connection timeout")]
    ConnectTimeout,
    /// Circuit breaker: too many connections (UO).
    #[error("overflow")]
    Overflow,
    /// The stream was reset / connection closed before headers (UR/UC).
    #[error("connection termination: {0}")]
    Reset(String),
    /// HTTP/2 REFUSED_STREAM.
    #[error("remote refused stream reset")]
    Refused,
    /// Upstream TLS is configured but not served yet.
    #[error("upstream TLS is not supported yet")]
    TlsUnsupported,
}

/// Connections to one host, one slot per worker so a connection is only used on the worker
/// (runtime) that drives it.
#[derive(Debug)]
pub struct HostPool {
    /// Allocated on first use: most hosts of a large mesh never see a request from this proxy.
    slots: std::sync::OnceLock<Box<[Slot]>>,
}

#[derive(Debug)]
struct Slot {
    idle: ArrayQueue<Box<http1::Conn>>,
    /// This host is in the slot's sweep list.
    swept: std::sync::atomic::AtomicBool,
    h2: ArcSwapOption<H2Conn>,
}

impl Default for HostPool {
    fn default() -> Self {
        HostPool {
            slots: std::sync::OnceLock::new(),
        }
    }
}

impl HostPool {
    fn slot(&self) -> &Slot {
        let slots = self.slots.get_or_init(|| {
            (0..crate::workers::slots())
                .map(|_| Slot {
                    idle: ArrayQueue::new(MAX_IDLE_H1),
                    swept: std::sync::atomic::AtomicBool::new(false),
                    h2: ArcSwapOption::empty(),
                })
                .collect()
        });
        let i = crate::workers::slot() % slots.len().max(1);
        &slots[i]
    }

    /// Close the idle HTTP/1.1 connections of slot `i` that the upstream closed (or wrote to)
    /// or that were idle longer than their cluster's `idle_timeout`; keep the others.
    fn sweep(&self, i: usize) {
        let Some(slot) = self.slots.get().and_then(|s| s.get(i)) else {
            return;
        };
        for _ in 0..slot.idle.len() {
            let Some(mut c) = slot.idle.pop() else { break };
            let limit = c.cluster().config.idle_timeout.unwrap_or(Duration::MAX);
            if c.idle_since.elapsed() < limit && c.idle_ok() {
                let _ = slot.idle.push(c);
            }
        }
    }
}

/// How often idle upstream connections are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Per slot: the hosts that have had idle connections there, and whether a sweeper runs.
#[derive(Default)]
struct SweepList {
    hosts: Vec<std::sync::Weak<Host>>,
    running: bool,
}

static SWEEP: std::sync::OnceLock<Box<[std::sync::Mutex<SweepList>]>> = std::sync::OnceLock::new();

fn sweep_list(i: usize) -> Option<std::sync::MutexGuard<'static, SweepList>> {
    let lists = SWEEP.get_or_init(|| {
        (0..crate::workers::slots())
            .map(|_| std::sync::Mutex::default())
            .collect()
    });
    Some(lists.get(i)?.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Add `host` to this slot's sweep list (once per host and slot, off the request path's
/// steady state) and start the slot's sweeper on this runtime if none runs. hyper's client
/// closed a connection as soon as its task saw the upstream close it; here a connection idle
/// in the pool is closed within [`SWEEP_EVERY`], as Envoy does with its event loop.
fn watch(host: &Arc<Host>, i: usize) {
    let Some(mut list) = sweep_list(i) else {
        return;
    };
    list.hosts.push(Arc::downgrade(host));
    if list.running || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    list.running = true;
    /// Marks the sweeper stopped when its runtime drops it (a test's runtime ends).
    struct Running(usize);
    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(mut list) = sweep_list(self.0) {
                list.running = false;
            }
        }
    }
    let sweeper = async move {
        let _running = Running(i);
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let hosts: Vec<Arc<Host>> = match sweep_list(i) {
                Some(mut list) => {
                    list.hosts.retain(|h| h.strong_count() > 0);
                    list.hosts.iter().filter_map(|h| h.upgrade()).collect()
                }
                None => return,
            };
            for h in hosts {
                h.pool.sweep(i);
            }
        }
    };
    // A worker's runtime lives as long as the process. The slot of all other threads is shared
    // by runtimes that may end (an embedding's, or each in-process test's): its sweeper runs on
    // a thread of its own, or it would stop with the first runtime that started it.
    match (i == crate::workers::count()).then(background).flatten() {
        Some(bg) => {
            bg.spawn(sweeper);
        }
        None => {
            tokio::spawn(sweeper);
        }
    }
}

/// A runtime on a thread of its own for the non-worker slot's sweeper.
fn background() -> Option<&'static tokio::runtime::Handle> {
    static BACKGROUND: std::sync::OnceLock<Option<tokio::runtime::Handle>> =
        std::sync::OnceLock::new();
    BACKGROUND
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("layer8-pool-sweeper".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Decrements the cluster's connection counters when a connection ends.
pub(super) struct ConnGuard(Arc<Cluster>);

impl std::fmt::Debug for ConnGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnGuard")
    }
}

impl ConnGuard {
    pub(super) fn cluster(&self) -> &Cluster {
        &self.0
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.circuit.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.cx_active.decrement(1.0);
    }
}

async fn connect(
    cluster: &Arc<Cluster>,
    host: &Host,
) -> Result<(Stream, ConnGuard), UpstreamError> {
    let circuit = &cluster.circuit;
    if circuit.connections.load(Ordering::Relaxed) >= cluster.config.thresholds.max_connections {
        cluster.stats.cx_overflow.increment(1);
        return Err(UpstreamError::Overflow);
    }
    if cluster.config.tls {
        return Err(UpstreamError::TlsUnsupported);
    }
    let timeout = cluster.config.connect_timeout;
    let io = match &host.addr {
        EndpointAddr::Ip(addr) => {
            let fut = async {
                let socket = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }?;
                if let Some(ip) = cluster.config.bind_addr {
                    socket.bind(std::net::SocketAddr::new(ip, 0))?;
                }
                let s = socket.connect(*addr).await?;
                s.set_nodelay(true)?;
                Ok::<TcpStream, std::io::Error>(s)
            };
            match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(s)) => Stream::Tcp(s),
                Ok(Err(e)) => {
                    cluster.stats.cx_connect_fail.increment(1);
                    return Err(UpstreamError::ConnectFailure(e.to_string()));
                }
                Err(_) => {
                    cluster.stats.cx_connect_fail.increment(1);
                    cluster.stats.cx_connect_timeout.increment(1);
                    return Err(UpstreamError::ConnectTimeout);
                }
            }
        }
        EndpointAddr::Unix(path) => {
            match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
                Ok(Ok(s)) => Stream::Unix(s),
                Ok(Err(e)) => {
                    cluster.stats.cx_connect_fail.increment(1);
                    return Err(UpstreamError::ConnectFailure(e.to_string()));
                }
                Err(_) => {
                    cluster.stats.cx_connect_fail.increment(1);
                    return Err(UpstreamError::ConnectTimeout);
                }
            }
        }
        EndpointAddr::Dns(h, _) => {
            return Err(UpstreamError::ConnectFailure(format!(
                "unresolved host {h}"
            )));
        }
    };
    circuit.connections.fetch_add(1, Ordering::Relaxed);
    cluster.stats.cx_total.increment(1);
    cluster.stats.cx_active.increment(1.0);
    Ok((io, ConnGuard(cluster.clone())))
}

fn classify(e: hyper::Error) -> UpstreamError {
    if let Some(h2) = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<h2::Error>()) {
        if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return UpstreamError::Refused;
        }
    }
    UpstreamError::Reset(e.to_string())
}

/// A shared HTTP/2 connection and how many streams it has been given.
#[derive(Debug)]
pub struct H2Conn {
    sender: http2::SendRequest<UpstreamBody>,
    streams: std::sync::atomic::AtomicU32,
    local: Option<std::net::SocketAddr>,
}

/// A connection ready to take one request.
pub enum Sender {
    /// HTTP/1.1: returned to the host's idle queue once the response body is read, unless it
    /// reached `max_requests_per_connection`.
    H1(Box<http1::Conn>, Arc<Host>, Option<u32>),
    /// HTTP/1.1 for an upgrade request, on hyper's client: never pooled.
    Upgrade(hyper::client::conn::http1::SendRequest<UpstreamBody>),
    /// HTTP/2: a clone of the host's multiplexed connection, and its local address.
    H2(
        http2::SendRequest<UpstreamBody>,
        Option<std::net::SocketAddr>,
    ),
}

/// A request extension asking [`Sender::send`] to report the connection's local address in
/// the response's [`UpstreamLocalAddr`] extension (set only by requests that are access-logged,
/// so others pay nothing).
#[derive(Debug, Clone, Copy)]
pub struct WantLocalAddr;

/// The local address of the upstream connection that carried a response.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLocalAddr(pub Option<std::net::SocketAddr>);

fn wants_h2(cluster: &Cluster, downstream_h2: bool) -> bool {
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::UseDownstream => downstream_h2,
    }
}

fn max_requests(cluster: &Cluster) -> Option<u32> {
    cluster
        .config
        .max_requests_per_connection
        .filter(|m| *m > 0)
}

/// Get a connection to `host` (pooled or new). Failing here consumes no request, so connect
/// failures can be retried.
///
/// A pooled connection is taken synchronously; only a new one awaits the connect, in a boxed
/// future, so the request's own future stays small (it is moved on every request).
pub async fn checkout(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    downstream_h2: bool,
) -> Result<Sender, UpstreamError> {
    match pooled(cluster, host, downstream_h2) {
        Some(s) => Ok(s),
        None => Box::pin(open(cluster, host, downstream_h2)).await,
    }
}

/// An idle HTTP/1.1 connection or the shared HTTP/2 one, if there is one to use.
fn pooled(cluster: &Arc<Cluster>, host: &Arc<Host>, downstream_h2: bool) -> Option<Sender> {
    let max = max_requests(cluster);
    if !wants_h2(cluster, downstream_h2) {
        let idle_timeout = cluster.config.idle_timeout.unwrap_or(Duration::MAX);
        while let Some(mut c) = host.pool.slot().idle.pop() {
            if c.idle_since.elapsed() >= idle_timeout {
                continue; // idle too long (`common_http_protocol_options.idle_timeout`): close
            }
            if c.idle_ok() {
                return Some(Sender::H1(c, host.clone(), max));
            }
        }
        return None;
    }
    let c = host.pool.slot().h2.load_full()?;
    let n = c.streams.fetch_add(1, Ordering::Relaxed) + 1;
    if !c.sender.is_closed() && max.is_none_or(|m| n <= m) {
        return Some(Sender::H2(c.sender.clone(), c.local));
    }
    None
}

/// Connect a new connection to `host` (HTTP/1.1 or HTTP/2 as the cluster says).
async fn open(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    downstream_h2: bool,
) -> Result<Sender, UpstreamError> {
    let max = max_requests(cluster);
    if !wants_h2(cluster, downstream_h2) {
        let (io, guard) = connect(cluster, host).await?;
        return Ok(Sender::H1(http1::Conn::new(io, guard), host.clone(), max));
    }
    let (io, guard) = connect(cluster, host).await?;
    let local = io.local_addr();
    let (s, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(classify)?;
    tokio::spawn(async move {
        let _guard = guard;
        let _ = conn.await;
    });
    host.pool.slot().h2.store(Some(Arc::new(H2Conn {
        sender: s.clone(),
        streams: std::sync::atomic::AtomicU32::new(1),
        local,
    })));
    Ok(Sender::H2(s, local))
}

/// A new HTTP/1.1 connection for an upgrade request (websocket), on hyper's client, which
/// hands over the upgraded socket.
pub async fn checkout_upgrade(
    cluster: &Arc<Cluster>,
    host: &Host,
) -> Result<Sender, UpstreamError> {
    let (io, guard) = connect(cluster, host).await?;
    let (s, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(classify)?;
    tokio::spawn(async move {
        let _guard = guard;
        let _ = conn.with_upgrades().await;
    });
    Ok(Sender::Upgrade(s))
}

/// Put a connection whose response was read to its end back in `host`'s idle queue (closed
/// instead when the queue is full).
pub(super) fn release(host: &Arc<Host>, mut conn: Box<http1::Conn>) {
    conn.idle_since = Instant::now();
    let slot = host.pool.slot();
    let _ = slot.idle.push(conn);
    if !slot.swept.load(Ordering::Relaxed) && !slot.swept.swap(true, Ordering::Relaxed) {
        watch(host, crate::workers::slot());
    }
}

impl Sender {
    /// Send the request and wait for response headers. An HTTP/1.1 connection goes back to the
    /// host's idle queue when the response body has been read to its end (see [`PooledBody`]).
    pub async fn send(
        self,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<PooledBody>, UpstreamError> {
        match self {
            Sender::H1(c, host, max) => c.send(req, host, max).await,
            Sender::Upgrade(mut s) => {
                let resp = s.send_request(req).await.map_err(classify)?;
                Ok(resp.map(|b| PooledBody(Kind::Hyper(b), None)))
            }
            Sender::H2(mut s, local) => {
                let want_local = req.extensions().get::<WantLocalAddr>().is_some();
                s.ready().await.map_err(classify)?;
                let mut resp = s.send_request(req).await.map_err(classify)?;
                if want_local {
                    resp.extensions_mut().insert(UpstreamLocalAddr(local));
                }
                Ok(resp.map(|b| PooledBody(Kind::Hyper(b), None)))
            }
        }
    }
}

/// An upstream response body: hyper's (HTTP/2, upgrades), one that arrived whole with its
/// head, or one still arriving on a pooled HTTP/1.1 connection, which goes back to the pool
/// once the body is read to its end (a body dropped early takes its connection with it).
#[derive(Debug)]
pub struct PooledBody(Kind, Option<Guard>);

/// Something kept alive as long as a response body (see [`PooledBody::hold`]).
type Guard = Box<dyn std::any::Any + Send + Sync>;

#[derive(Debug)]
enum Kind {
    Hyper(Incoming),
    Ready(Option<Bytes>),
    Stream(http1::BodyStream),
}

/// Errors reading an upstream response body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl PooledBody {
    pub(super) fn empty() -> Self {
        PooledBody(Kind::Ready(None), None)
    }

    pub(super) fn ready(data: Bytes) -> Self {
        PooledBody(Kind::Ready((!data.is_empty()).then_some(data)), None)
    }

    pub(super) fn stream(s: http1::BodyStream) -> Self {
        PooledBody(Kind::Stream(s), None)
    }

    /// Keep `guard` until the body has been read to its end or dropped (a connection's count
    /// of streams in progress, for its idle timeout).
    pub fn hold(&mut self, guard: Guard) {
        self.1 = Some(guard);
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let r = match &mut self.0 {
            Kind::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            Kind::Ready(d) => Poll::Ready(d.take().map(|d| Ok(hyper::body::Frame::data(d)))),
            Kind::Stream(s) => s.poll_frame(cx).map_err(Into::into),
        };
        if matches!(r, Poll::Ready(None)) {
            self.1 = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Hyper(b) => b.is_end_stream(),
            Kind::Ready(d) => d.is_none(),
            Kind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.0 {
            Kind::Hyper(b) => b.size_hint(),
            Kind::Ready(d) => {
                hyper::body::SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream(s) => s.size_hint(),
        }
    }
}
