//! Snapshot replacement under load: 200 `apply_bootstrap` swaps between two configurations that
//! differ in the route's cluster, a response header and a listener-level field (so the listener's
//! config hash changes and every connection accepted under the old generation is drained), while
//! HTTP/1.1 keep-alive and HTTP/2 clients send requests continuously. Zero requests may fail.
//!
//! What counts as a failed request is what a real client would see as one: a request that was
//! written to the proxy and then got no complete response (error, reset, truncated body) or a
//! response other than 200. A request the client never sent is not a failure: a connection the
//! proxy closed or told to go away (`Connection: close` on the previous response, HTTP/2 GOAWAY)
//! is not used again, and the request goes on a new connection. The hyper legacy client does that
//! itself for HTTP/1.1 (it only re-sends requests hyper hands back as unsent); the HTTP/2 client
//! (the `h2` crate, see [`h2_client`]) opens a new connection when the old one can no longer
//! open streams.
//!
//! The two other tests walk the drain protocol on single raw connections: HTTP/1.1 answers with
//! `Connection: close` and closes idle connections after `drain_timeout`; HTTP/2 sends the
//! GOAWAY notice at once, still serves a stream that raced it, and sends the final GOAWAY after
//! `drain_timeout`.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SWAPS: usize = 200;
const H1_TASKS: usize = 4;
const H2_CONNS: usize = 2;
/// Concurrent streams per HTTP/2 connection.
const H2_STREAMS: usize = 3;

/// Configuration `which` (0 or 1): cluster `swap_a`/`swap_b`, `x-config: one`/`two`, and a
/// different `per_connection_buffer_limit_bytes` on the listener.
fn config(admin: u16, listen: u16, a: SocketAddr, b: SocketAddr, which: usize) -> String {
    let (cluster, tag, limit) = [("swap_a", "one", 32768), ("swap_b", "two", 65536)][which];
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    per_connection_buffer_limit_bytes: {limit}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: swap
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              response_headers_to_add:
              - header: {{ key: x-config, value: {tag} }}
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{ca}{cb}"#,
        ca = static_cluster("swap_a", &[a], ""),
        cb = static_cluster("swap_b", &[b], ""),
    )
}

/// Outcomes, shared by all clients.
#[derive(Default)]
struct Tally {
    /// Successes by [protocol h1=0/h2=1][config one=0/two=1].
    ok: [[AtomicU64; 2]; 2],
    /// HTTP/2 requests not sent (the connection was going away) and sent on a new connection.
    resent: AtomicU64,
    /// HTTP/2 connections opened.
    h2_connections: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
    fn ok(&self, proto: usize, which: usize) -> u64 {
        self.ok[proto][which].load(Ordering::SeqCst)
    }
}

/// Check one HTTP/1.1 response: 200, the config tag and the upstream agree. Returns the config
/// index.
async fn check(resp: http::Response<hyper::body::Incoming>) -> Result<usize, String> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    check_parts(parts, &body)
}

fn check_parts(parts: http::response::Parts, body: &[u8]) -> Result<usize, String> {
    if parts.status != 200 {
        return Err(format!(
            "status {}: {}",
            parts.status,
            String::from_utf8_lossy(body)
        ));
    }
    let tag = parts
        .headers
        .get("x-config")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let upstream = parts
        .headers
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (tag, upstream) {
        ("one", "a") => Ok(0),
        ("two", "b") => Ok(1),
        other => Err(format!(
            "inconsistent response: x-config/x-upstream = {other:?}"
        )),
    }
}

/// Paths: mostly immediate, some held at the upstream so swaps land on in-flight requests.
fn path(n: u64) -> &'static str {
    if n % 4 == 0 {
        "/delay/3"
    } else {
        "/swap"
    }
}

async fn h1_client(listen: u16, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    // A pooled connection is never kept idle longer than layer8's drain timeout (Envoy's
    // default 5 s), as Envoy recommends for clients of a proxy that closes idle connections.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(1))
        .build_http();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let req = Request::get(format!("http://127.0.0.1:{listen}{}", path(n)))
            .header("host", "swap.test")
            .body(Full::new(Bytes::new()))
            .expect("request");
        match client.request(req).await {
            Ok(resp) => match check(resp).await {
                Ok(which) => {
                    tally.ok[0][which].fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => tally.fail(format!("h1: {e}")),
            },
            Err(e) => tally.fail(format!("h1: request failed: {e:?}")),
        }
    }
}

async fn h2_connect(listen: u16, tally: &Tally) -> h2::client::SendRequest<Bytes> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .expect("connect");
    let (sender, conn) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tally.h2_connections.fetch_add(1, Ordering::SeqCst);
    sender
}

/// Check one HTTP/2 response (reading the whole body). Returns the config index.
async fn check_h2(resp: http::Response<h2::RecvStream>) -> Result<usize, String> {
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    check_parts(parts, &data)
}

/// One long-lived HTTP/2 connection carrying `H2_STREAMS` concurrent requests at a time, and a
/// new connection once the proxy sends GOAWAY (or closes).
///
/// This client is the `h2` crate, not hyper's HTTP/2 client: hyper fails requests it has already
/// handed to `h2` when a GOAWAY arrives, even a graceful one announcing that every stream will
/// be processed (hyperium/hyper#2500), which no proxy can prevent. `h2`, like nghttp2 (curl) and
/// Envoy's codec, keeps those streams and refuses only new ones, so "not sent" is exact:
/// `ready()`/`send_request` fail before anything is written.
async fn h2_client(listen: u16, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut sender = h2_connect(listen, &tally).await;
    let mut n = 0u64;
    // Paths of requests that were not sent (the connection was going away): sent again first.
    let mut unsent: Vec<&'static str> = Vec::new();
    while !stop.load(Ordering::SeqCst) || !unsent.is_empty() {
        let mut batch = std::mem::take(&mut unsent);
        while batch.len() < H2_STREAMS && !stop.load(Ordering::SeqCst) {
            n += 1;
            batch.push(path(n));
        }
        let mut in_flight = Vec::new();
        let mut going_away = false;
        for p in batch {
            if going_away {
                unsent.push(p);
                continue;
            }
            let req = Request::get(format!("http://swap.test{p}"))
                .body(())
                .expect("request");
            let sent = match sender.clone().ready().await {
                Ok(mut s) => s.send_request(req, true).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match sent {
                Ok((resp, _)) => in_flight.push(resp),
                Err(_) => {
                    // GOAWAY received or connection closed: nothing was written for this one.
                    tally.resent.fetch_add(1, Ordering::SeqCst);
                    unsent.push(p);
                    going_away = true;
                }
            }
        }
        for r in futures_util::future::join_all(in_flight).await {
            let outcome = match r {
                Ok(resp) => check_h2(resp).await,
                Err(e) => Err(format!("request failed: {e}")),
            };
            match outcome {
                Ok(which) => {
                    tally.ok[1][which].fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => tally.fail(format!("h2: {e}")),
            }
        }
        if going_away {
            sender = h2_connect(listen, &tally).await;
        }
    }
}

/// Wait until both protocols have seen a response from config `which` beyond `since`.
async fn observed(tally: &Tally, which: usize, since: [u64; 2]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally.ok(0, which) <= since[0] || tally.ok(1, which) <= since[1] {
        let failures = tally.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
        assert!(
            Instant::now() < deadline,
            "no response from config {which} within 20s (safety bound)"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_lose_no_requests() {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (admin, listen) = (free_port(), free_port());
    let boots: Vec<_> = (0..2)
        .map(|w| {
            layer8::config::bootstrap::load(
                None,
                Some(&config(admin, listen, a.addr, b.addr, w)),
                false,
            )
            .unwrap_or_else(|e| panic!("load config {w}: {e}"))
        })
        .collect();
    let running = layer8::server::start(
        layer8::config::bootstrap::load(
            None,
            Some(&config(admin, listen, a.addr, b.addr, 0)),
            false,
        )
        .expect("load"),
        layer8::server::Options {
            concurrency: 2,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    let state = running.state;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..H1_TASKS {
        clients.push(tokio::spawn(h1_client(listen, tally.clone(), stop.clone())));
    }
    for _ in 0..H2_CONNS {
        clients.push(tokio::spawn(h2_client(listen, tally.clone(), stop.clone())));
    }

    observed(&tally, 0, [0, 0]).await;
    let mut hashes = std::collections::HashSet::new();
    for i in 1..=SWAPS {
        let which = i % 2;
        let since = [tally.ok(0, which), tally.ok(1, which)];
        let snap = layer8::server::apply_bootstrap(&state, &boots[which].bootstrap)
            .await
            .unwrap_or_else(|e| panic!("swap {i}: {e}"));
        hashes.insert(snap.listeners[0].config_hash);
        // Both protocols get through the new configuration before the next swap, so every swap
        // drains connections that are carrying traffic.
        observed(&tally, which, since).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(20), c)
            .await
            .expect("client stops (safety bound)")
            .expect("client task");
    }

    let failures = tally.failures.lock().unwrap().clone();
    assert_eq!(failures, Vec::<String>::new(), "failed requests");
    assert_eq!(
        hashes.len(),
        2,
        "the two configurations have different listener hashes"
    );
    for proto in 0..2 {
        for which in 0..2 {
            // Each swap was followed by responses from the new config on both protocols.
            assert!(
                tally.ok(proto, which) >= (SWAPS / 2) as u64,
                "proto {proto} config {which}"
            );
        }
    }
    // Every swap drained the HTTP/2 connections: the clients had to reconnect.
    assert!(tally.h2_connections.load(Ordering::SeqCst) > SWAPS as u64);
    let total: u64 = (0..2)
        .flat_map(|p| (0..2).map(move |w| (p, w)))
        .map(|(p, w)| tally.ok(p, w))
        .sum();
    eprintln!(
        "swap: {total} requests ok (h1 {}+{}, h2 {}+{}), {} resent unsent, {} h2 connections",
        tally.ok(0, 0),
        tally.ok(0, 1),
        tally.ok(1, 0),
        tally.ok(1, 1),
        tally.resent.load(Ordering::SeqCst),
        tally.h2_connections.load(Ordering::SeqCst)
    );
}

// --- The drain protocol on single connections, step by step over raw sockets. ---

const SAFETY: Duration = Duration::from_secs(30);

async fn start_config0() -> (
    Arc<layer8::server::State>,
    u16,
    [layer8::config::bootstrap::Loaded; 2],
) {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (admin, listen) = (free_port(), free_port());
    let load = |w| {
        layer8::config::bootstrap::load(
            None,
            Some(&config(admin, listen, a.addr, b.addr, w)),
            false,
        )
        .expect("load")
    };
    let running = layer8::server::start(
        load(0),
        layer8::server::Options {
            concurrency: 2,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    (running.state, listen, [load(0), load(1)])
}

/// Read one HTTP/1.1 response: (status line, lower-cased headers, body).
async fn read_h1(
    s: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> (String, Vec<(String, String)>, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut status = String::new();
    s.read_line(&mut status).await.expect("status line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        s.read_line(&mut line).await.expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.expect("body");
    (
        status.trim_end().to_string(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Bytes until the peer closes (an error other than EOF fails the test).
async fn read_to_eof<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    tokio::time::timeout(SAFETY, s.read_to_end(&mut rest))
        .await
        .expect("closed (safety bound)")
        .expect("clean close");
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_drain_answers_with_connection_close_and_closes_idle_connections() {
    use tokio::io::AsyncWriteExt;
    let (state, listen, boots) = start_config0().await;
    let connect = || async {
        tokio::io::BufReader::new(
            tokio::net::TcpStream::connect(("127.0.0.1", listen))
                .await
                .expect("connect"),
        )
    };
    let (mut busy, mut idle) = (connect().await, connect().await);
    for s in [&mut busy, &mut idle] {
        s.get_mut()
            .write_all(b"GET /before HTTP/1.1\r\nHost: swap.test\r\n\r\n")
            .await
            .expect("write");
        let (status, headers, _) = read_h1(s).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            (header(&headers, "x-config"), header(&headers, "connection")),
            (Some("one"), None)
        );
    }

    layer8::server::apply_bootstrap(&state, &boots[1].bootstrap)
        .await
        .expect("swap");

    // New connections get the new config. (This round trip also gives the old connections' tasks
    // time to see the drain, so the next step really exercises a drained idle connection.)
    let mut fresh = connect().await;
    fresh
        .get_mut()
        .write_all(b"GET /new HTTP/1.1\r\nHost: swap.test\r\n\r\n")
        .await
        .expect("write");
    let (status, headers, _) = read_h1(&mut fresh).await;
    assert_eq!(
        (status.as_str(), header(&headers, "x-config")),
        ("HTTP/1.1 200 OK", Some("two"))
    );

    // A request on a kept-alive connection of the old generation is served (old config), with
    // `Connection: close`, and then the connection closes.
    busy.get_mut()
        .write_all(b"GET /after HTTP/1.1\r\nHost: swap.test\r\n\r\n")
        .await
        .expect("write");
    let (status, headers, _) = read_h1(&mut busy).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        (header(&headers, "x-config"), header(&headers, "connection")),
        (Some("one"), Some("close"))
    );
    assert_eq!(read_to_eof(&mut busy).await, b"");
    // An idle one is closed after drain_timeout without a byte.
    assert_eq!(read_to_eof(&mut idle).await, b"");
}

/// One HTTP/2 frame: (type, flags, stream id, payload).
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> (u8, u8, u32, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 9];
    tokio::time::timeout(SAFETY, s.read_exact(&mut h))
        .await
        .expect("frame (safety bound)")
        .expect("frame header");
    let mut payload = vec![0u8; u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize];
    s.read_exact(&mut payload).await.expect("frame payload");
    (
        h[3],
        h[4],
        u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        payload,
    )
}

fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HEADERS (END_STREAM | END_HEADERS) for `GET http://swap.test/` (HPACK static table only).
fn h2_get(stream: u32) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"swap.test");
    h2_frame(0x1, 0x5, stream, &block)
}

/// Read frames, acknowledging SETTINGS and PINGs as a client does, until `want` matches one;
/// returns the frames seen (the matching one last).
async fn h2_until<R, W>(
    r: &mut R,
    w: &mut W,
    want: impl Fn(&(u8, u8, u32, Vec<u8>)) -> bool,
) -> Vec<(u8, u8, u32, Vec<u8>)>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut seen = Vec::new();
    loop {
        let f = read_frame(r).await;
        match (f.0, f.1 & 0x1) {
            (0x4, 0) => w
                .write_all(&h2_frame(0x4, 0x1, 0, &[]))
                .await
                .expect("SETTINGS ACK"),
            (0x6, 0) => w
                .write_all(&h2_frame(0x6, 0x1, 0, &f.3))
                .await
                .expect("PING ACK"),
            _ => {}
        }
        let done = want(&f);
        seen.push(f);
        if done {
            return seen;
        }
    }
}

fn goaway_of(f: &(u8, u8, u32, Vec<u8>)) -> Option<(u32, u32)> {
    (f.0 == 0x7).then(|| {
        (
            u32::from_be_bytes([f.3[0], f.3[1], f.3[2], f.3[3]]) & 0x7fff_ffff,
            u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_drain_sends_a_notice_and_serves_streams_racing_it() {
    use tokio::io::AsyncWriteExt;
    let (state, listen, boots) = start_config0().await;
    let (mut r, mut w) = tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .expect("connect")
        .into_split();
    w.write_all(
        &[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
            &h2_frame(0x4, 0, 0, &[]),
            &h2_get(1),
        ]
        .concat(),
    )
    .await
    .expect("write");
    let end_of = |id: u32| {
        move |f: &(u8, u8, u32, Vec<u8>)| f.2 == id && f.1 & 0x1 == 1 && (f.0 == 0x0 || f.0 == 0x1)
    };
    let seen = h2_until(&mut r, &mut w, end_of(1)).await;
    assert!(
        seen.iter()
            .any(|f| f.0 == 0x1 && f.2 == 1 && f.3.first() == Some(&0x88)),
        "stream 1: :status 200"
    );

    layer8::server::apply_bootstrap(&state, &boots[1].bootstrap)
        .await
        .expect("swap");

    // The notice: GOAWAY(2^31-1, NO_ERROR), sent right away.
    let seen = h2_until(&mut r, &mut w, |f| f.0 == 0x7).await;
    assert_eq!(goaway_of(seen.last().unwrap()), Some((0x7fff_ffff, 0)));
    // A request the client sent before it saw the notice is still served, even if the client
    // acknowledged any PING the server sent along with the notice first (a PING round trip of
    // our own flushes those out).
    w.write_all(&h2_frame(0x6, 0, 0, b"clientpg"))
        .await
        .expect("PING");
    h2_until(&mut r, &mut w, |f| {
        f.0 == 0x6 && f.1 & 0x1 == 1 && f.3 == b"clientpg"
    })
    .await;
    w.write_all(&h2_get(3)).await.expect("write stream 3");
    let seen = h2_until(&mut r, &mut w, end_of(3)).await;
    assert!(
        seen.iter().all(|f| goaway_of(f).is_none()),
        "no GOAWAY before stream 3 completed: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|f| f.0 == 0x1 && f.2 == 3 && f.3.first() == Some(&0x88)),
        "stream 3: :status 200"
    );
    // After drain_timeout: the final GOAWAY names stream 3 as the last one processed, then the
    // connection closes.
    let seen = h2_until(&mut r, &mut w, |f| {
        goaway_of(f).is_some_and(|g| g.0 != 0x7fff_ffff)
    })
    .await;
    assert_eq!(goaway_of(seen.last().unwrap()), Some((3, 0)));
    assert_eq!(read_to_eof(&mut r).await, b"");
}
