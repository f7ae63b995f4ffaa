//! The upstream HTTP/1.1 codec against a scripted upstream that writes exact bytes: response
//! framings (length, split, chunked with extensions and trailers, close-delimited, HEAD, 204,
//! 1xx), keep-alive and reuse rules, an upstream closing an idle connection, malformed and
//! truncated responses, and how request bodies are framed.

mod common;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers by path with scripted bytes and records every request as received.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    fn last_request(&self) -> String {
        self.requests
            .lock()
            .map(|r| r.last().cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

async fn scripted() -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = Scripted {
        addr: l.local_addr().expect("addr"),
        accepted: Arc::default(),
        requests: Arc::default(),
    };
    let (accepted, requests) = (up.accepted.clone(), up.requests.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s, requests.clone()));
        }
    });
    up
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read one request (head, then a content-length or chunked body, kept raw).
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, Vec<u8>)> {
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let length = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = lower.contains("transfer-encoding: chunked");
    if path == "/early" {
        return Some((head, path, Vec::new())); // answered without reading the body
    }
    loop {
        let done = if chunked {
            buf.starts_with(b"0\r\n\r\n") || find(buf, b"\r\n0\r\n\r\n").is_some()
        } else {
            buf.len() >= length.unwrap_or(0)
        };
        if done {
            break;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body_len = if chunked {
        find(buf, b"0\r\n\r\n").map_or(buf.len(), |i| i + 5)
    } else {
        length.unwrap_or(0)
    };
    let body: Vec<u8> = buf.drain(..body_len).collect();
    Some((head, path, body))
}

/// How many requests for `path` the upstream has received, this one included.
fn seen_before(log: &Mutex<Vec<String>>, path: &str) -> usize {
    let line = format!(" {path} HTTP/1.1\r\n");
    log.lock()
        .map(|l| {
            l.iter()
                .filter(|r| {
                    r.lines()
                        .next()
                        .is_some_and(|f| f.contains(line.trim_end()))
                })
                .count()
        })
        .unwrap_or(0)
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

async fn serve(mut s: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    while let Some((head, path, body)) = read_request(&mut s, &mut buf).await {
        if let Ok(mut l) = log.lock() {
            l.push(format!("{head}{}", String::from_utf8_lossy(&body)));
        }
        let w = |b: &'static [u8]| b;
        let ok = match path.as_str() {
            "/plain" => s.write_all(w(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nplain")).await,
            "/split" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n").await;
                pause().await;
                let _ = s.write_all(b"01234").await;
                pause().await;
                s.write_all(b"56789").await
            }
            "/chunked" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
                    .await;
                pause().await;
                let _ = s.write_all(b"lo\r\n6;ext=\"x\"\r\n world\r\n").await;
                pause().await;
                s.write_all(b"0\r\nx-trailer: t\r\n\r\n").await
            }
            "/head" => s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").await,
            "/nocontent" => s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await,
            "/continue" => {
                s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
            "/big" => {
                let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".to_vec();
                r.resize(r.len() + 1_000_000, b'x');
                s.write_all(&r).await
            }
            // The first request to each `/flaky...` path gets a 503, later ones the echo.
            p if p.starts_with("/flaky") && seen_before(&log, &path) == 1 => {
                s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    .await
            }
            p if p == "/echo" || p.starts_with("/flaky") => {
                let r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(r.as_bytes()).await;
                s.write_all(&body).await
            }
            // Keep-alive not allowed: the socket stays open, layer8 must not reuse it.
            "/http10" => s.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nold!").await,
            "/conn-close" => {
                s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye")
                    .await
            }
            // Answers before reading the body, then holds the connection without reading.
            "/early" => {
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!")
                    .await;
                tokio::time::sleep(Duration::from_secs(20)).await;
                return;
            }
            // These end the connection after the response.
            "/eof" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil-close").await;
                return;
            }
            "/close-after" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbye").await;
                return;
            }
            "/garbage" => {
                let _ = s.write_all(b"SMTP ready\r\n\r\n").await;
                return;
            }
            "/truncated" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345").await;
                return;
            }
            _ => s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await,
        };
        if ok.is_err() {
            return;
        }
    }
}

async fn start(up: &Scripted) -> u16 {
    start_with_cluster(up, "scripted").await
}

/// Start layer8 in front of `up`, its cluster named `cluster` (stats are per process).
async fn start_with_cluster(up: &Scripted, cluster: &str) -> u16 {
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/flaky-header" }
                route:
                  cluster: scripted
                  retry_policy:
                    retry_on: retriable-headers
                    retriable_headers: [ { name: ":status", string_match: { exact: "503" } } ]
              - match: { prefix: "/flaky-nomatch" }
                route:
                  cluster: scripted
                  retry_policy:
                    retry_on: retriable-headers
                    retriable_headers: [ { name: x-retry-me, present_match: true } ]
              - match: { prefix: "/flaky" }
                route:
                  cluster: scripted
                  retry_policy: { retry_on: retriable-status-codes, retriable_status_codes: [503], num_retries: 1 }
              - match: { prefix: "/" }
                route: { cluster: scripted }"#
        .replace("scripted", cluster);
    let yaml = http_bootstrap(
        admin,
        listen,
        &vhosts,
        &static_cluster(cluster, &[up.addr], ""),
        "",
    );
    // Leaked on purpose: the in-process server lives as long as the test's runtime.
    std::mem::forget(start_in_process(&yaml).await);
    listen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_framings_arrive_intact_and_connections_are_reused_only_when_allowed() {
    let up = scripted().await;
    let port = start(&up).await;
    let c = Clients::new();
    let get = |path: &'static str| c.send(false, port, "GET", "svc", path, &[], "");

    for _ in 0..3 {
        let r = get("/plain").await;
        assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    }
    assert_eq!(up.accepted(), 1, "keep-alive connection reused");

    // A body that arrives after its head, in pieces; a chunked body with an extension and a
    // trailer (dropped, as Envoy does without enable_trailers); HEAD; 204; an interim 100.
    let r = get("/split").await;
    assert_eq!((r.status, r.text().as_str()), (200, "0123456789"));
    assert_eq!(r.header("content-length"), Some("10"));
    let r = get("/chunked").await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    assert_eq!(r.header("x-trailer"), None);
    let r = c.send(false, port, "HEAD", "svc", "/head", &[], "").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some("5"));
    let r = get("/nocontent").await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    let r = get("/continue").await;
    assert_eq!((r.status, r.text().as_str()), (201, "ok"));
    let r = get("/big").await;
    assert_eq!((r.status, r.body.len()), (200, 1_000_000));
    assert!(r.body.iter().all(|b| *b == b'x'));
    assert_eq!(get("/plain").await.text(), "plain");
    assert_eq!(
        up.accepted(),
        1,
        "every response above left the connection reusable"
    );

    // Responses that forbid reuse: the next request opens a new connection.
    for (path, body) in [
        ("/eof", "until-close"),
        ("/http10", "old!"),
        ("/conn-close", "bye"),
    ] {
        let before = up.accepted();
        let r = get(path).await;
        assert_eq!((r.status, r.text().as_str()), (200, body), "{path}");
        assert_eq!(get("/plain").await.text(), "plain");
        assert_eq!(up.accepted(), before + 1, "{path}: not reused");
    }

    // The upstream closes a keep-alive connection while it is idle in the pool: layer8 notices
    // and connects again instead of failing the next request.
    let before = up.accepted();
    assert_eq!(get("/close-after").await.text(), "bye");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = get("/plain").await;
    assert_eq!((r.status, r.text().as_str()), (200, "plain"));
    assert_eq!(up.accepted(), before + 1);

    // A response that is not HTTP is a 503 (upstream reset before headers); the proxy keeps
    // serving.
    let r = get("/garbage").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    );
    assert_eq!(get("/plain").await.text(), "plain");

    // A body cut short: the client sees its connection end early, nothing else breaks.
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"GET /truncated HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "the client connection is closed");
    let got = String::from_utf8_lossy(&got);
    // hyper may not have flushed the head before the body failed: at most a prefix arrives.
    let full = "HTTP/1.1 200 OK\r\n";
    assert!(
        got.is_empty() || got.starts_with(full) && !got.ends_with("\r\n\r\n1234567890"),
        "{got}"
    );
    assert_eq!(get("/plain").await.text(), "plain");
}

/// Send raw request bytes in pieces (with pauses) and read one response with a
/// `content-length` body.
async fn raw(port: u16, pieces: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    for p in pieces {
        s.write_all(p).await.expect("write");
        pause().await;
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(0usize);
            if got.len() >= i + 4 + len {
                break;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_framed_as_received() {
    let up = scripted().await;
    let port = start(&up).await;

    // No body: neither content-length nor transfer-encoding goes upstream.
    let r = raw(port, &[b"GET /echo HTTP/1.1\r\nhost: svc\r\n\r\n"]).await;
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    let seen = up.last_request().to_ascii_lowercase();
    assert!(seen.starts_with("get /echo http/1.1\r\n"), "{seen}");
    assert!(
        !seen.contains("content-length") && !seen.contains("transfer-encoding"),
        "{seen}"
    );

    // A streamed body with a length keeps it.
    let r = raw(
        port,
        &[
            b"POST /echo HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhe",
            b"llo",
        ],
    )
    .await;
    assert!(r.ends_with("\r\n\r\nhello"), "{r}");
    let seen = up.last_request();
    assert!(seen.contains("content-length: 5\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");

    // A streamed chunked body goes upstream chunked, chunk by chunk.
    let r = raw(
        port,
        &[
            b"POST /echo HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
            b"2\r\nde\r\n",
            b"0\r\n\r\n",
        ],
    )
    .await;
    assert!(r.contains("200 OK"), "{r}");
    let seen = up.last_request();
    assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen}");
    assert!(!seen.contains("content-length"), "{seen}");
    assert!(
        seen.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_replay_streamed_bodies_and_follow_retriable_headers() {
    let up = scripted().await;
    let port = start(&up).await;
    let requests = |path: &str| -> Vec<String> {
        let first = format!("POST {path} HTTP/1.1\r\n");
        up.requests
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|r| r.starts_with(&first))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };

    // A chunked body streams to the first attempt (503) and is sent again, whole, to the
    // second: the copy kept as it streamed, now with its length known.
    let r = raw(
        port,
        &[
            b"POST /flaky-chunked HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
            b"2\r\nde\r\n0\r\n\r\n",
        ],
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nabcde"), "{r}");
    let seen = requests("/flaky-chunked");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[1].contains("content-length: 5\r\n"), "{}", seen[1]);
    assert!(seen[1].ends_with("\r\n\r\nabcde"), "{}", seen[1]);

    // retriable-headers: a matcher on the response (here `:status`) asks for the retry.
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: svc\r\n\r\n");
    let r = raw(port, &[get("/flaky-header").as_bytes()]).await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    let r = raw(port, &[get("/flaky-nomatch").as_bytes()]).await;
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    let count = |path: &str| {
        let first = format!("GET {path} HTTP/1.1\r\n");
        up.requests
            .lock()
            .map(|l| l.iter().filter(|r| r.starts_with(&first)).count())
            .unwrap_or(0)
    };
    assert_eq!((count("/flaky-header"), count("/flaky-nomatch")), (2, 1));

    // A body larger than the buffer limit (1 MiB) streams once and is not retried: the
    // upstream's 503 reaches the client.
    let big = vec![b'z'; 1536 * 1024];
    let head = format!(
        "POST /flaky-big HTTP/1.1\r\nhost: svc\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    let r = raw(port, &[head.as_bytes(), &big]).await;
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert_eq!(requests("/flaky-big").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_upstream_closed_leave_the_pool_without_a_request() {
    let up = scripted().await;
    let port = start_with_cluster(&up, "sweep").await;
    let c = Clients::new();
    assert_eq!(c.get(port, "svc", "/plain").await.text(), "plain");
    assert_eq!(stat("cluster.sweep.upstream_cx_active"), 1);
    // The upstream closes the connection after this response; no request follows.
    assert_eq!(c.get(port, "svc", "/close-after").await.text(), "bye");
    let t0 = std::time::Instant::now();
    while stat("cluster.sweep.upstream_cx_active") != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the closed connection is still counted active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.accepted(), 1);
    assert_eq!(c.get(port, "svc", "/plain").await.text(), "plain");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_before_the_whole_request_body_is_forwarded_at_once() {
    let up = scripted().await;
    let port = start(&up).await;
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let len = 32 << 20; // far more than the socket buffers hold
    s.write_all(
        format!("POST /early HTTP/1.1\r\nhost: svc\r\ncontent-length: {len}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write head");
    let (mut rd, mut wr) = s.into_split();
    // The client keeps sending; the upstream has answered 413 and reads nothing more.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'u'; 1 << 20];
        for _ in 0..32 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !got.ends_with(b"too big!") {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    let got = String::from_utf8_lossy(&got);
    assert!(
        read.is_ok(),
        "no response while the body was still being sent: {got}"
    );
    assert!(
        got.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{got}"
    );
    assert!(got.ends_with("\r\n\r\ntoo big!"), "{got}");
}
