//! Malformed input over raw TCP sockets, against layer8 and Envoy 1.40 on the same bootstrap:
//! HTTP/1.1 requests the codec or the connection manager must reject (status code, and the
//! connection closed) and HTTP/2 connection errors (GOAWAY with PROTOCOL_ERROR). After every case
//! the proxy still serves a normal request. Status codes match Envoy's; where the body or the
//! frames differ, layer8's behaviour is asserted exactly and the difference is listed in
//! `docs/compatibility.md` ("Malformed requests and draining").

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

/// Two HTTP listeners: `{small}` with `max_request_headers_kb: 8`, `{default}` with the default
/// (60 KiB); both route everything to the echo upstream.
fn bootstrap(admin: u16, small: u16, default: u16, upstream: std::net::SocketAddr) -> String {
    let listener = |name: &str, port: u16, extra: &str| {
        format!(
            r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          {extra}
          route_config:
            name: {name}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: bad_input_echo }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        )
    };
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:{}{}\n  clusters:\n{}",
        listener("small", small, "max_request_headers_kb: 8"),
        listener("default", default, ""),
        static_cluster("bad_input_echo", &[upstream], "")
    )
}

/// A proxy under test: its two listener ports.
struct Target {
    name: &'static str,
    small: u16,
    default: u16,
}

/// layer8 (in-process, on `rt`) and Envoy, on the same bootstrap. The guards keep them running.
fn start_both(rt: &tokio::runtime::Runtime) -> (Vec<Target>, InProcess, Proc) {
    let up = rt.block_on(echo_upstream("echo"));
    let (a1, s1, d1) = (free_port(), free_port(), free_port());
    let (a2, s2, d2) = (free_port(), free_port(), free_port());
    let l8 = rt.block_on(start_in_process(&bootstrap(a1, s1, d1, up.addr)));
    let envoy = start_process(
        &envoy_bin(),
        &bootstrap(a2, s2, d2, up.addr),
        "yaml",
        a2,
        &["--disable-hot-restart", "-l", "error"],
    );
    let targets = vec![
        Target {
            name: "layer8",
            small: s1,
            default: d1,
        },
        Target {
            name: "envoy",
            small: s2,
            default: d2,
        },
    ];
    (targets, l8, envoy)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Safety bound only: every case ends with the server closing the connection.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Everything the server sends until it closes the connection. Panics if it does not close.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "connection not closed by the server ({e}); got so far: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// A parsed HTTP/1.1 response; `date` is dropped from the headers.
#[derive(Debug, PartialEq)]
struct H1 {
    status_line: String,
    headers: BTreeMap<String, String>,
    body: String,
}

fn parse_h1(raw: &[u8]) -> H1 {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| k != "date")
        .collect();
    H1 {
        status_line,
        headers,
        body: body.to_string(),
    }
}

/// Send raw bytes, read the whole answer up to the server's close, parse it.
fn exchange_h1(port: u16, request: &[u8]) -> H1 {
    let mut s = connect(port);
    s.write_all(request).expect("write");
    parse_h1(&read_to_close(&mut s))
}

fn h1(status_line: &str, headers: &[(&str, &str)], body: &str) -> H1 {
    H1 {
        status_line: status_line.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.to_string(),
    }
}

/// A normal request still goes through (HTTP/1.1 on a new connection).
fn assert_serves(port: u16, who: &str, after: &str) {
    let r = exchange_h1(
        port,
        b"GET /ok HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        r.status_line, "HTTP/1.1 200 OK",
        "{who}: normal request after {after}"
    );
    assert_eq!(
        r.headers.get("x-upstream").map(String::as_str),
        Some("echo"),
        "{who} after {after}"
    );
}

#[test]
fn http1_malformed_requests_are_rejected_like_envoy() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (targets, _l8, _envoy) = start_both(&rt);
    let hyper_400 = h1(
        "HTTP/1.1 400 Bad Request",
        &[("connection", "close"), ("content-length", "0")],
        "",
    );
    let envoy_400 = h1(
        "HTTP/1.1 400 Bad Request",
        &[
            ("connection", "close"),
            ("content-length", "11"),
            ("content-type", "text/plain"),
            ("server", "envoy"),
        ],
        "Bad Request",
    );
    let hyper_431 = h1(
        "HTTP/1.1 431 Request Header Fields Too Large",
        &[("connection", "close"), ("content-length", "0")],
        "",
    );
    let envoy_431 = h1(
        "HTTP/1.1 431 Request Header Fields Too Large",
        &[
            ("connection", "close"),
            ("content-length", "31"),
            ("content-type", "text/plain"),
            ("server", "envoy"),
        ],
        "Request Header Fields Too Large",
    );
    let big = |n: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: big.test\r\nx-big: {}\r\n\r\n",
            "a".repeat(n)
        )
        .into_bytes()
    };

    // (case, listener is the 8 KiB one, request, layer8's answer, Envoy's answer)
    let cases: Vec<(&str, bool, Vec<u8>, &H1, &H1)> = vec![
        // The codec rejects these before any routing: same status, hyper's own bodyless 400.
        (
            "garbage request line",
            false,
            b"GARBAGE\r\n\r\n".to_vec(),
            &hyper_400,
            &envoy_400,
        ),
        (
            "extra token in request line",
            false,
            b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n".to_vec(),
            &hyper_400,
            &envoy_400,
        ),
        (
            "control character in Host",
            false,
            b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n".to_vec(),
            &hyper_400,
            &envoy_400,
        ),
        // Headers beyond max_request_headers_kb: 431 (8 KiB listener, then the 60 KiB default).
        (
            "9000-byte header, 8 KiB limit",
            true,
            big(9000),
            &hyper_431,
            &envoy_431,
        ),
        (
            "70000-byte header, 60 KiB default",
            false,
            big(70000),
            &hyper_431,
            &envoy_431,
        ),
        // The connection manager rejects these: identical responses.
        (
            "space in Host",
            false,
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
            &envoy_400,
            &envoy_400,
        ),
    ];
    for (case, small, request, want_l8, want_envoy) in &cases {
        for t in &targets {
            let port = if *small { t.small } else { t.default };
            let want = if t.name == "layer8" {
                want_l8
            } else {
                want_envoy
            };
            assert_eq!(&exchange_h1(port, request), *want, "{}: {case}", t.name);
            assert_serves(port, t.name, case);
        }
    }

    // HTTP/1.1 without Host: 400 with an empty body, connection closed; byte-identical to Envoy.
    let no_host = h1(
        "HTTP/1.1 400 Bad Request",
        &[
            ("connection", "close"),
            ("content-length", "0"),
            ("server", "envoy"),
        ],
        "",
    );
    for t in &targets {
        assert_eq!(
            exchange_h1(t.default, b"GET / HTTP/1.1\r\nx-test: 1\r\n\r\n"),
            no_host,
            "{}: no Host",
            t.name
        );
        assert_serves(t.default, t.name, "no Host");
    }

    // Just under the limits, the same header sizes are accepted by both.
    for t in &targets {
        for (port, n) in [(t.small, 7000), (t.default, 50000)] {
            let request = big(n);
            let request = [&request[..request.len() - 2], b"Connection: close\r\n\r\n"].concat();
            let r = exchange_h1(port, &request);
            assert_eq!(
                r.status_line, "HTTP/1.1 200 OK",
                "{}: {n}-byte header",
                t.name
            );
        }
    }
}

// HTTP/2 frames.
const MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM_AND_HEADERS: u8 = 0x5;
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[ty, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET http://h2.test/` using the static table only.
fn get_headers() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x41, 7];
    b.extend_from_slice(b"h2.test");
    b
}

#[derive(Debug, PartialEq)]
struct GoAway {
    last_stream_id: u32,
    error_code: u32,
    debug: String,
}

/// Frames received up to the close: (type, stream id, payload). Panics on a truncated frame.
fn frames(raw: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        assert!(rest.len() >= 9, "truncated frame header: {rest:?}");
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        assert!(rest.len() >= 9 + len, "truncated frame: {rest:?}");
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        out.push((rest[3], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    out
}

/// Send the client's bytes: the preface and first SETTINGS, then (once the server's SETTINGS
/// arrived, so the bad frame is not read together with the preface) the offending bytes.
/// Returns the frames received until the server closed and the GOAWAY among them, which must be
/// the last frame.
fn exchange_h2(port: u16, preface: &[u8], bad: &[u8]) -> (Vec<u8>, Option<GoAway>) {
    let mut s = connect(port);
    s.write_all(preface).expect("write preface");
    if !bad.is_empty() {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("server SETTINGS");
        assert_eq!(head[3], SETTINGS, "first server frame");
        let mut payload = vec![0u8; u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize];
        s.read_exact(&mut payload).expect("server SETTINGS payload");
        s.write_all(bad).expect("write bad frame");
    }
    let received = match read_all_frames(&mut s) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let fs = frames(&received);
    let types: Vec<u8> = fs.iter().map(|f| f.0).collect();
    let goaway = fs.iter().position(|f| f.0 == GOAWAY).map(|i| {
        assert_eq!(i, fs.len() - 1, "GOAWAY is the last frame: {types:?}");
        let (_, stream, p) = &fs[i];
        assert_eq!(*stream, 0, "GOAWAY on stream 0");
        GoAway {
            last_stream_id: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
            error_code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            debug: String::from_utf8_lossy(&p[8..]).into_owned(),
        }
    });
    (types, goaway)
}

fn read_all_frames(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // Envoy resets some connections after writing its frames.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => {
                return Err(format!(
                    "connection not closed by the server ({e}); got {out:?}"
                ))
            }
        }
    }
}

/// A normal HTTP/2 request still goes through on a new connection.
fn assert_serves_h2(rt: &tokio::runtime::Runtime, port: u16, who: &str, after: &str) {
    let req = http::Request::get("http://h2.test/ok")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = rt
        .block_on(send_h2_to(port, req))
        .unwrap_or_else(|e| panic!("{who}: h2 request after {after}: {e}"));
    assert_eq!(resp.status(), 200, "{who}: h2 request after {after}");
    assert_serves(port, who, after);
}

#[test]
fn http2_protocol_errors_get_goaway_protocol_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (targets, _l8, _envoy) = start_both(&rt);
    let settings = frame(SETTINGS, 0, 0, &[]);
    let preface = [MAGIC, &settings].concat();
    let goaway = |debug: &str| {
        Some(GoAway {
            last_stream_id: 0,
            error_code: PROTOCOL_ERROR,
            debug: debug.to_string(),
        })
    };

    // The preface must be followed by SETTINGS: both send their SETTINGS, then the same GOAWAY.
    let bad_prefaces: Vec<(&str, Vec<u8>)> = vec![
        (
            "PING before SETTINGS",
            [MAGIC, &frame(PING, 0, 0, &[0; 8])].concat(),
        ),
        (
            "HEADERS before SETTINGS",
            [
                MAGIC,
                &frame(HEADERS, END_STREAM_AND_HEADERS, 1, &get_headers()),
            ]
            .concat(),
        ),
        (
            "garbage after the magic",
            [MAGIC, b"this is not an HTTP/2 frame at all"].concat(),
        ),
    ];
    for (case, bytes) in &bad_prefaces {
        for t in &targets {
            let (types, g) = exchange_h2(t.default, bytes, b"");
            assert_eq!(types, [SETTINGS, GOAWAY], "{}: {case}", t.name);
            assert_eq!(g, goaway("SETTINGS expected"), "{}: {case}", t.name);
            assert_serves_h2(&rt, t.default, t.name, case);
        }
    }

    // Frames that are connection errors once the connection is up. layer8 (h2) answers each with
    // GOAWAY(PROTOCOL_ERROR) and no debug data. Envoy sends GOAWAY(PROTOCOL_ERROR) with debug
    // data for DATA on stream 0, and closes without a GOAWAY for the others.
    let bad_frames: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "DATA on stream 0",
            frame(DATA, 1, 0, b"abc"),
            Some("DATA: stream_id == 0"),
        ),
        (
            "HEADERS on stream 0",
            frame(HEADERS, END_STREAM_AND_HEADERS, 0, &get_headers()),
            None,
        ),
        (
            "HEADERS on an even stream id",
            frame(HEADERS, END_STREAM_AND_HEADERS, 2, &get_headers()),
            None,
        ),
        (
            "RST_STREAM on stream 0",
            frame(RST_STREAM, 0, 0, &[0, 0, 0, 8]),
            None,
        ),
        ("PING on stream 1", frame(PING, 0, 1, &[0; 8]), None),
        ("SETTINGS on stream 1", frame(SETTINGS, 0, 1, &[]), None),
    ];
    for (case, bad, envoy_debug) in &bad_frames {
        for t in &targets {
            let (types, g) = exchange_h2(t.default, &preface, bad);
            if t.name == "layer8" {
                assert_eq!(g, goaway(""), "{}: {case} (frames {types:?})", t.name);
            } else {
                assert_eq!(
                    g,
                    (*envoy_debug).and_then(goaway),
                    "{}: {case} (frames {types:?})",
                    t.name
                );
            }
            assert_serves_h2(&rt, t.default, t.name, case);
        }
    }
}
