//! HCM and router features not covered by the differential corpus: request mirroring, EDS
//! clusters with an inline load assignment, x-forwarded-for with use_remote_address, path
//! normalisation, hash policies on source IP and cookies, observational filters skipped
//! visibly, and the admin /logging endpoint.

mod common;
use std::sync::atomic::Ordering;

use common::*;

fn vhosts(routes: &str) -> String {
    format!(
        "            - name: all\n              domains: [\"*\"]\n              routes:\n{routes}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_eds_inline_and_forwarding_headers() {
    let (main, shadow) = (echo_upstream("main").await, echo_upstream("shadow").await);
    let (admin, listen) = (free_port(), free_port());
    let routes = r#"              - match: { prefix: "/mirror" }
                route: { cluster: feat_main, request_mirror_policies: [ { cluster: feat_shadow } ] }
              - match: { prefix: "/" }
                route: { cluster: feat_eds }"#;
    let eds = format!(
        "  - name: feat_eds\n    type: EDS\n    eds_cluster_config: {{ eds_config: {{ ads: {{}} }} }}\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: feat_eds\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
        main.addr.port()
    );
    let clusters = static_cluster("feat_main", &[main.addr], "")
        + &static_cluster("feat_shadow", &[shadow.addr], "")
        + &eds;
    let hcm = "use_remote_address: true\n          normalize_path: true\n          merge_slashes: true\n          via: layer8-test";
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        &vhosts(routes),
        &clusters,
        hcm,
    ))
    .await;
    let c = Clients::new();
    for i in 0..5 {
        let r = c
            .send(
                false,
                listen,
                "POST",
                "svc.local",
                "/mirror",
                &[],
                &format!("body{i}"),
            )
            .await;
        assert_eq!(r.echo().upstream, "main");
    }
    // Mirrors are fire-and-forget: wait (bounded) for all five to land.
    for _ in 0..100 {
        // The upstream counts on arrival; layer8's stat once the mirrored response is back.
        if shadow.hits.load(Ordering::Relaxed) == 5
            && stat("cluster.feat_shadow.upstream_rq_200") == 5
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(shadow.hits.load(Ordering::Relaxed), 5);
    assert_eq!(stat("cluster.feat_shadow.upstream_rq_200"), 5);

    let e = c
        .send(
            false,
            listen,
            "GET",
            "svc.local",
            "/a/./b/../c//d",
            &[("x-forwarded-for", "10.1.2.3"), ("x-request-id", "keep-me")],
            "",
        )
        .await
        .echo();
    assert_eq!(
        e.upstream, "main",
        "EDS cluster serves its inline load_assignment"
    );
    assert_eq!(e.path, "/a/c/d");
    assert_eq!(e.headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(e.headers["x-forwarded-proto"], "http");
    assert_eq!(e.headers["via"], "layer8-test");
    assert_ne!(
        e.headers["x-request-id"], "keep-me",
        "an edge proxy regenerates x-request-id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_policies_source_ip_and_cookie() {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (admin, listen) = (free_port(), free_port());
    let routes = r#"              - match: { prefix: "/ip" }
                route: { cluster: hash_ring, hash_policy: [ { connection_properties: { source_ip: true } } ] }
              - match: { prefix: "/cookie" }
                route: { cluster: hash_ring, hash_policy: [ { cookie: { name: session } } ] }"#;
    let clusters = static_cluster("hash_ring", &[a.addr, b.addr], "    lb_policy: RING_HASH\n");
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        &vhosts(routes),
        &clusters,
        "",
    ))
    .await;
    let c = Clients::new();
    let first = c.get(listen, "h", "/ip").await.echo().upstream;
    for _ in 0..30 {
        assert_eq!(c.get(listen, "h", "/ip").await.echo().upstream, first);
    }
    let mut seen = std::collections::HashSet::new();
    for i in 0..60 {
        let cookie = format!("theme=dark; session=s{i}");
        let want = c
            .send(
                false,
                listen,
                "GET",
                "h",
                "/cookie",
                &[("cookie", &cookie)],
                "",
            )
            .await
            .echo()
            .upstream;
        for _ in 0..3 {
            let got = c
                .send(
                    false,
                    listen,
                    "GET",
                    "h",
                    "/cookie",
                    &[("cookie", &cookie)],
                    "",
                )
                .await
                .echo()
                .upstream;
            assert_eq!(got, want, "{cookie}");
        }
        seen.insert(want);
    }
    assert_eq!(seen.len(), 2, "sessions spread over both hosts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observational_filters_are_skipped_visibly_and_logging_changes_level() {
    let up = echo_upstream("a").await;
    let (admin, listen) = (free_port(), free_port());
    let before = stat("layer8.filters_skipped");
    let yaml = http_bootstrap(admin, listen, &vhosts("              - match: { prefix: \"/\" }\n                route: { cluster: obs }"), &static_cluster("obs", &[up.addr], ""), "")
        .replace(
            "          http_filters:\n",
            "          http_filters:\n          - name: istio.stats\n            typed_config:\n              \"@type\": type.googleapis.com/stats.PluginConfig\n          - name: envoy.filters.http.cors\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }\n",
        )
        .replace(
            "          route_config:\n",
            "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /dev/null }\n          route_config:\n",
        );
    let l8 = start_in_process(&yaml).await;
    assert!(stat("layer8.filters_skipped") >= before + 2);
    let notes = &l8.state.notes.skipped;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("observational HTTP filter 'istio.stats' skipped")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.contains("'envoy.filters.http.cors'")),
        "{notes:?}"
    );
    // The file access log is written (tests/access_log.rs): no note about it.
    assert!(!notes.iter().any(|n| n.contains("access_log")), "{notes:?}");
    let c = Clients::new();
    assert_eq!(c.get(listen, "h", "/").await.status, 200);
    // /logging without a reload hook (in-process) says so; level names are validated by the CLI.
    let r = c
        .send(
            false,
            l8.admin.port(),
            "POST",
            "admin",
            "/logging?level=debug",
            &[],
            "",
        )
        .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "logging is not reloadable\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_transformations_and_port_insensitive_hosts() {
    let up = echo_upstream("a").await;
    let (admin, l1) = (free_port(), free_port());
    let routes =
        "              - match: { prefix: \"/\" }\n                route: { cluster: srv }";
    let yaml = http_bootstrap(
        admin,
        l1,
        &vhosts(routes),
        &static_cluster("srv", &[up.addr], ""),
        "server_name: edge-proxy",
    )
    .replace(
        "            name: local\n",
        "            name: local\n            ignore_port_in_host_matching: true\n",
    )
    .replace("domains: [\"*\"]", "domains: [\"api.example.com\"]");
    let _l8 = start_in_process(&yaml).await;
    let c = Clients::new();
    let r = c.get(l1, "api.example.com:8443", "/").await;
    assert_eq!(
        (r.status, r.header("server")),
        (200, Some("edge-proxy")),
        "port ignored for host matching; server overwritten"
    );
    assert_eq!(
        r.echo().headers["host"],
        "api.example.com:8443",
        "the Host itself is forwarded unchanged"
    );
    assert_eq!(c.get(l1, "other.example.com", "/").await.status, 404);

    // PASS_THROUGH keeps the upstream's (absent) server header.
    let (admin2, l2) = (free_port(), free_port());
    let yaml = http_bootstrap(
        admin2,
        l2,
        &vhosts(routes),
        &static_cluster("srv2", &[up.addr], ""),
        "server_header_transformation: PASS_THROUGH",
    )
    .replace("cluster: srv }", "cluster: srv2 }");
    let _l8b = start_in_process(&yaml).await;
    assert_eq!(c.get(l2, "x", "/").await.header("server"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_and_stream_idle_timeout() {
    let up = echo_upstream("a").await;
    let (admin, l1, admin2, l2) = (free_port(), free_port(), free_port(), free_port());
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: tmo, timeout: 0s }";
    let _a = start_in_process(&http_bootstrap(
        admin,
        l1,
        &vhosts(routes),
        &static_cluster("tmo", &[up.addr], ""),
        "request_timeout: 0.3s",
    ))
    .await;
    let _b = start_in_process(
        &http_bootstrap(
            admin2,
            l2,
            &vhosts(routes),
            &static_cluster("tmo2", &[up.addr], ""),
            "stream_idle_timeout: 0.3s",
        )
        .replace("cluster: tmo,", "cluster: tmo2,"),
    )
    .await;
    // A body that never completes: 408 "request timeout" and the connection closes.
    let buf = stalled_post(l1).await;
    assert!(buf.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{buf}");
    assert!(buf.ends_with("\r\n\r\nrequest timeout"), "{buf}");
    // A complete request is not subject to request_timeout, however slow the upstream.
    let c = Clients::new();
    assert_eq!(c.get(l1, "x", "/delay/600").await.status, 200);
    assert!(stat("http.ingress.downstream_rq_timeout") >= 1);
    // No activity for longer than stream_idle_timeout while waiting for the upstream: 408 "stream timeout".
    let idle_before = stat("http.ingress.downstream_rq_idle_timeout");
    let r = c.get(l2, "x", "/delay/2000").await;
    assert_eq!((r.status, r.text().as_str()), (408, "stream timeout"));
    assert_eq!(c.get(l2, "x", "/delay/100").await.status, 200);
    // The same for a request body that stops arriving (the per-request watchdog).
    let buf = stalled_post(l2).await;
    assert!(buf.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{buf}");
    assert!(buf.ends_with("\r\n\r\nstream timeout"), "{buf}");
    assert!(stat("http.ingress.downstream_rq_idle_timeout") >= idle_before + 2);
}

/// Sends a POST whose body stops halfway and returns everything the proxy answers until it
/// closes the connection.
async fn stalled_post(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    buf
}

/// Reads one HTTP/1.1 response (headers and a `content-length` body) from `s`.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let n = s.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed mid-response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_idle_timeout_closes_only_idle_http1_connections() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = echo_upstream("a").await;
    let (admin, l) = (free_port(), free_port());
    let routes = "              - match: { prefix: \"/\" }\n                route: { cluster: idle, timeout: 0s }";
    let _a = start_in_process(&http_bootstrap(
        admin,
        l,
        &vhosts(routes),
        &static_cluster("idle", &[up.addr], ""),
        "common_http_protocol_options: { idle_timeout: 0.4s }",
    ))
    .await;
    let before = stat("http.ingress.downstream_cx_idle_timeout");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", l))
        .await
        .expect("connect");
    // A request slower than the idle timeout keeps the connection busy, not idle.
    s.write_all(b"GET /delay/900 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    // Requests keep it alive while they come sooner than the timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let resp = read_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    }
    assert_eq!(stat("http.ingress.downstream_cx_idle_timeout"), before);
    // Then idle: the proxy closes it.
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout")
        .expect("read");
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
    assert!(idle_from.elapsed() >= Duration::from_millis(350));
    assert_eq!(stat("http.ingress.downstream_cx_idle_timeout"), before + 1);
}

/// An upstream whose response body takes `ms` milliseconds: five chunks, evenly spaced.
async fn slow_body_upstream(ms: u64) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw_upstream(move |mut s| async move {
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            while let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                got.drain(..i + 4);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for _ in 0..5 {
                    tokio::time::sleep(std::time::Duration::from_millis(ms / 5)).await;
                    let _ = s.write_all(b"1\r\nx\r\n").await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

/// An h2c connection to 127.0.0.1:`port`: its sender and its driving task.
async fn h2_connect(
    port: u16,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    (sender, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_idle_timeout_drains_only_idle_http2_connections() {
    use http_body_util::BodyExt;
    use std::time::{Duration, Instant};
    let up = slow_body_upstream(1000).await;
    // An upstream that never answers.
    let hang = raw_upstream(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let (admin, l) = (free_port(), free_port());
    let routes = "              - match: { prefix: \"/hang\" }\n                route: { cluster: hang2, timeout: 0s }\n              - match: { prefix: \"/\" }\n                route: { cluster: idle2, timeout: 0s }";
    let _a = start_in_process(
        &http_bootstrap(
            admin,
            l,
            &vhosts(routes),
            &format!(
                "{}{}",
                static_cluster("idle2", &[up], ""),
                static_cluster("hang2", &[hang], "")
            ),
            "common_http_protocol_options: { idle_timeout: 0.4s }\n          drain_timeout: 0.2s",
        )
        .replace("stat_prefix: ingress", "stat_prefix: idle2"),
    )
    .await;
    let (mut sender, conn) = h2_connect(l).await;
    let get = || {
        http::Request::get(format!("http://127.0.0.1:{l}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request")
    };
    // A response body that streams for longer than the idle timeout keeps the connection
    // active: a request right after it is still served on the same connection.
    let resp = sender.send_request(get()).await.expect("first response");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"xxxxx");
    sender
        .ready()
        .await
        .expect("connection still open after a long stream");
    let resp = sender.send_request(get()).await.expect("second response");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"xxxxx");
    assert_eq!(stat("http.idle2.downstream_cx_idle_timeout"), 0);
    // Then idle: GOAWAY, and the connection ends.
    let idle_from = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("closed by the idle timeout")
        .expect("join")
        .expect("clean close");
    assert!(idle_from.elapsed() >= Duration::from_millis(350));
    assert_eq!(stat("http.idle2.downstream_cx_idle_timeout"), 1);

    // A stream the client resets before any response is no longer active: the connection
    // still times out.
    let (mut sender, conn) = h2_connect(l).await;
    let hung = http::Request::get(format!("http://127.0.0.1:{l}/hang"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let waiting = tokio::time::timeout(Duration::from_millis(300), sender.send_request(hung)).await;
    assert!(waiting.is_err(), "the upstream never answers");
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("closed by the idle timeout after the reset stream")
        .expect("join")
        .expect("clean close");
    assert_eq!(stat("http.idle2.downstream_cx_idle_timeout"), 2);
}
