//! Listener features: filter-chain matching (destination port, destination IP, SNI via
//! tls_inspector, transport protocol, ALPN, http_inspector, source IP/port), default chain,
//! Unix-socket listeners, tcp_proxy (weighted, idle timeout, byte counters).

mod common;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn direct_chain(matcher: &str, body: &str) -> String {
    format!(
        r#"    - filter_chain_match: {matcher}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: chain
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{body}" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

fn tcp_chain(matcher: &str, cluster: &str) -> String {
    format!(
        r#"    - filter_chain_match: {matcher}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {cluster}
          cluster: {cluster}
"#
    )
}

fn listener(name: &str, addr: &str, port: u16, filters: &str, chains: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    address: {{ socket_address: {{ address: {addr}, port_value: {port} }} }}\n{filters}{extra}    filter_chains:\n{chains}"
    )
}

fn bootstrap(admin: u16, listeners: &str, clusters: &str) -> String {
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}"
    )
}

async fn raw_get(addr: SocketAddr, source: Option<SocketAddr>) -> String {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(s) = source {
        // The same source may be reused while an earlier connection from it is in TIME_WAIT.
        sock.set_reuseaddr(true).expect("SO_REUSEADDR");
        sock.bind(s).expect("bind source");
    }
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    // A connection no chain accepts is closed unread, which the kernel reports as a reset.
    let _ = s.read_to_string(&mut buf).await;
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_chain_match_by_destination_and_source() {
    let (admin, port) = (free_port(), free_port());
    let src_port = free_port();
    let chains = [
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.2, prefix_len: 32 }} ] }}"), "dst-127.0.0.2"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.0, prefix_len: 8 }} ] }}"), "dst-127/8"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.4, prefix_len: 32 }} ], source_prefix_ranges: [ {{ address_prefix: 127.0.0.7, prefix_len: 32 }} ] }}"), "src-127.0.0.7"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.4, prefix_len: 32 }} ], source_ports: [ {src_port} ] }}"), "src-port"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.4, prefix_len: 32 }} ] }}"), "dst-127.0.0.4"),
        direct_chain(&format!("{{ destination_port: {} }}", port + 1), "other-port"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.5, prefix_len: 32 }} ], direct_source_prefix_ranges: [ {{ address_prefix: 127.0.0.8, prefix_len: 32 }} ] }}"), "direct-src-127.0.0.8"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.5, prefix_len: 32 }} ], source_type: SAME_IP_OR_LOOPBACK }}"), "local-source"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.6, prefix_len: 32 }} ], source_type: EXTERNAL }}"), "external-only"),
        direct_chain(&format!("{{ destination_port: {port}, prefix_ranges: [ {{ address_prefix: 127.0.0.6, prefix_len: 32 }} ], source_ports: [ 1 ] }}"), "unreachable"),
    ]
    .join("");
    let l = listener("multi", "0.0.0.0", port, "", &chains, "");
    let _l8 = start_in_process(&bootstrap(admin, &l, "    []\n")).await;
    let at = |ip: [u8; 4]| SocketAddr::from((ip, port));
    assert_eq!(raw_get(at([127, 0, 0, 2]), None).await, "dst-127.0.0.2");
    assert_eq!(raw_get(at([127, 0, 0, 3]), None).await, "dst-127/8");
    assert_eq!(
        raw_get(
            at([127, 0, 0, 4]),
            Some(SocketAddr::from(([127, 0, 0, 7], 0)))
        )
        .await,
        "src-127.0.0.7"
    );
    assert_eq!(
        raw_get(
            at([127, 0, 0, 4]),
            Some(SocketAddr::from(([127, 0, 0, 1], src_port)))
        )
        .await,
        "src-port"
    );
    assert_eq!(raw_get(at([127, 0, 0, 4]), None).await, "dst-127.0.0.4");
    assert_eq!(
        raw_get(
            at([127, 0, 0, 5]),
            Some(SocketAddr::from(([127, 0, 0, 8], 0)))
        )
        .await,
        "direct-src-127.0.0.8"
    );
    assert_eq!(
        raw_get(at([127, 0, 0, 5]), None).await,
        "local-source",
        "loopback peers are SAME_IP_OR_LOOPBACK"
    );
    // 127.0.0.6: neither the EXTERNAL chain (loopback peer) nor the source-port chain matches,
    // and there is no default chain: the connection is closed without a response.
    assert_eq!(raw_get(at([127, 0, 0, 6]), None).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_chain_and_no_match_closes() {
    let (admin, p1, p2) = (free_port(), free_port(), free_port());
    let only = direct_chain("{ source_ports: [ 1 ] }", "never");
    // The default chain is the same shape as a chain, under `default_filter_chain:` (no match).
    let default_chain = direct_chain("{}", "unused").replace(
        "    - filter_chain_match: {}\n      filters:",
        "    default_filter_chain:\n      filters:",
    );
    let with_default = listener("with_default", "127.0.0.1", p1, "", &only, "") + &default_chain;
    let without = listener("without_default", "127.0.0.1", p2, "", &only, "");
    let _l8 = start_in_process(&bootstrap(admin, &(with_default + &without), "    []\n")).await;
    assert_eq!(
        raw_get(SocketAddr::from(([127, 0, 0, 1], p1)), None).await,
        "unused"
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p2))
        .await
        .expect("connect");
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(
        n, 0,
        "no matching chain: connection closed without a response"
    );
    assert_eq!(
        layer8::stats::store().get(&format!("listener.127.0.0.1_{p2}.no_filter_chain_match")),
        Some(1)
    );
}

/// A raw TCP upstream that records the first bytes of each connection and answers its name.
async fn tcp_upstream(name: &'static str) -> (SocketAddr, Arc<tokio::sync::Mutex<Vec<Vec<u8>>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                seen.lock().await.push(buf[..n].to_vec());
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let roots = rustls::RootCertStore::empty();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

async fn send_and_read(port: u16, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf).await;
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_inspector_sni_alpn_and_transport_protocol() {
    let (exact, exact_seen) = tcp_upstream("exact").await;
    let (wild, _) = tcp_upstream("wildcard").await;
    let (h2, _) = tcp_upstream("tls-h2").await;
    let (tls, _) = tcp_upstream("tls-any").await;
    let (raw, _) = tcp_upstream("raw").await;
    let (admin, port) = (free_port(), free_port());
    let chains = [
        tcp_chain(r#"{ server_names: ["api.example.com"] }"#, "sni_exact"),
        tcp_chain(r#"{ server_names: ["*.example.com"] }"#, "sni_wild"),
        tcp_chain(
            r#"{ transport_protocol: tls, application_protocols: ["h2"] }"#,
            "tls_h2",
        ),
        tcp_chain(r#"{ transport_protocol: tls }"#, "tls_any"),
        tcp_chain(r#"{ transport_protocol: raw_buffer }"#, "raw_any"),
    ]
    .join("");
    let filters = "    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }\n";
    let l = listener("tls", "127.0.0.1", port, filters, &chains, "");
    let clusters = [
        static_cluster("sni_exact", &[exact], ""),
        static_cluster("sni_wild", &[wild], ""),
        static_cluster("tls_h2", &[h2], ""),
        static_cluster("tls_any", &[tls], ""),
        static_cluster("raw_any", &[raw], ""),
    ]
    .join("");
    let _l8 = start_in_process(&bootstrap(admin, &l, &clusters)).await;
    let hello = client_hello("api.example.com", &[]);
    assert_eq!(send_and_read(port, &hello).await, "exact");
    assert_eq!(
        exact_seen.lock().await[0],
        hello,
        "tcp_proxy forwards the ClientHello untouched"
    );
    assert_eq!(
        send_and_read(port, &client_hello("www.example.com", &["h2"])).await,
        "wildcard"
    );
    assert_eq!(
        send_and_read(port, &client_hello("other.org", &["h2", "http/1.1"])).await,
        "tls-h2"
    );
    assert_eq!(
        send_and_read(port, &client_hello("other.org", &["http/1.1"])).await,
        "tls-any"
    );
    assert_eq!(send_and_read(port, b"plain bytes\r\n").await, "raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_inspector_routes_h1_and_h2c_to_different_chains() {
    let (admin, port) = (free_port(), free_port());
    let chains = [
        direct_chain(r#"{ application_protocols: ["http/1.1"] }"#, "chain-h1"),
        direct_chain(r#"{ application_protocols: ["h2c"] }"#, "chain-h2c"),
    ]
    .join("");
    let filters = "    listener_filters:\n    - name: envoy.filters.listener.http_inspector\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector }\n";
    let _l8 = start_in_process(&bootstrap(
        admin,
        &listener("insp", "127.0.0.1", port, filters, &chains, ""),
        "    []\n",
    ))
    .await;
    let c = Clients::new();
    assert_eq!(
        c.send(false, port, "GET", "x", "/", &[], "").await.text(),
        "chain-h1"
    );
    assert_eq!(
        c.send(true, port, "GET", "x", "/", &[], "").await.text(),
        "chain-h2c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener() {
    let admin = free_port();
    let dir = temp_dir("uds");
    let path = dir.join("l8.sock");
    let chains = direct_chain("{}", "over-unix");
    let l = format!(
        "  - name: uds\n    address: {{ pipe: {{ path: {} }} }}\n    filter_chains:\n{chains}",
        path.display()
    );
    let _l8 = start_in_process(&bootstrap(admin, &l, "    []\n")).await;
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect unix");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    assert!(buf.starts_with("HTTP/1.1 200 OK\r\n"), "{buf}");
    assert!(buf.ends_with("over-unix"), "{buf}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_weighted_idle_timeout_and_byte_counters() {
    // Echo servers that prefix their name.
    async fn echo_tcp(name: &'static str) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut out = name.as_bytes().to_vec();
                        out.extend_from_slice(&buf[..n]);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        a
    }
    let (a, b) = (echo_tcp("A:").await, echo_tcp("B:").await);
    let (admin, p_weighted, p_idle) = (free_port(), free_port(), free_port());
    let weighted = r#"    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: weighted
          weighted_clusters: { clusters: [ { name: tcp_a, weight: 1 }, { name: tcp_b, weight: 3 } ] }
"#;
    let idle = r#"    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: idle_test
          cluster: tcp_a
          idle_timeout: 0.2s
"#;
    let ls = listener("tw", "127.0.0.1", p_weighted, "", weighted, "")
        + &listener("ti", "127.0.0.1", p_idle, "", idle, "");
    let clusters = static_cluster("tcp_a", &[a], "") + &static_cluster("tcp_b", &[b], "");
    let _l8 = start_in_process(&bootstrap(admin, &ls, &clusters)).await;
    let (mut na, mut nb) = (0, 0);
    for _ in 0..400 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p_weighted))
            .await
            .expect("connect");
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.expect("read");
        match &buf {
            b"A:ping" => na += 1,
            b"B:ping" => nb += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((60..=140).contains(&na) && na + nb == 400, "A {na} B {nb}");
    // Idle timeout closes a silent connection; bytes are counted both ways.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p_idle))
        .await
        .expect("connect");
    s.write_all(&[7u8; 1000]).await.expect("write");
    let mut buf = vec![0u8; 1002];
    s.read_exact(&mut buf).await.expect("echo");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed by idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(stat("tcp.idle_test.idle_timeout"), 1);
    assert_eq!(stat("tcp.idle_test.downstream_cx_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_and_upstream() {
    let up6 = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind v6 upstream");
    let up_addr = up6.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = up6.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let _ = s.write_all(&buf[..n]).await;
            });
        }
    });
    let (admin, port) = (free_port(), free_port());
    let chain = tcp_chain("{}", "v6_up");
    let l = listener("v6", "::1", port, "", &chain, "");
    let cluster = format!(
        "  - name: v6_up\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: v6_up\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: \"::1\", port_value: {} }} }} }}\n",
        up_addr.port()
    );
    let _l8 = start_in_process(&bootstrap(
        admin,
        &l.replace("address: ::1,", "address: \"::1\","),
        &cluster,
    ))
    .await;
    let mut s =
        tokio::net::TcpStream::connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))
            .await
            .expect("connect v6");
    s.write_all(b"over ipv6").await.expect("write");
    let mut got = [0u8; 9];
    s.read_exact(&mut got).await.expect("echo");
    assert_eq!(&got, b"over ipv6");
}

/// One keep-alive request on `s`, which stays open; the response body.
async fn keep_alive_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // The body is short and announced by content-length: read until it is all there.
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
                return body.to_string();
            }
        }
    }
}

/// The admin `/stats` of a layer8 process, as a lookup by stat name (0 when absent).
async fn admin_stats(admin: u16) -> impl Fn(&str) -> u64 {
    let stats = tokio::task::spawn_blocking(move || blocking_get(admin, "/stats"))
        .await
        .expect("join")
        .expect("stats")
        .1;
    move |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    }
}

/// Per-worker `downstream_cx_active` of listener `addr` (its stat name) and the listener's
/// total.
async fn worker_active(admin: u16, addr: &str) -> (Vec<u64>, u64) {
    let get = admin_stats(admin).await;
    let per = (0..2)
        .map(|i| get(&format!("listener.{addr}.worker_{i}.downstream_cx_active")))
        .collect();
    (per, get(&format!("listener.{addr}.downstream_cx_active")))
}

/// With two workers, connections go to the worker with the fewest active ones (Envoy's
/// `exact_balance`), whatever worker's socket the kernel hashed them to: eight keep-alive
/// connections opened one after another split 4/4 (the kernel's hash alone does that about one
/// time in four), on TCP and on a Unix socket (whose one accept loop runs on the first worker),
/// and every moved connection keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_balanced_over_workers() {
    let (admin, port) = (free_port(), free_port());
    let dir = temp_dir("balance");
    let path = dir.join("l8.sock");
    let tcp = listener(
        "tcp",
        "127.0.0.1",
        port,
        "",
        &direct_chain("{}", "balanced"),
        "    connection_balance_config: { exact_balance: {} }\n",
    );
    let uds = format!(
        "  - name: uds\n    address: {{ pipe: {{ path: {} }} }}\n    filter_chains:\n{}",
        path.display(),
        direct_chain("{}", "balanced-unix")
    );
    let _l8 = start_process(
        layer8_bin(),
        &bootstrap(admin, &format!("{tcp}{uds}"), "    []\n"),
        "yaml",
        admin,
        &["--concurrency", "2"],
    );
    let tcp_stat = format!("127.0.0.1_{port}");
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        assert_eq!(keep_alive_get(&mut s).await, "balanced");
        conns.push(s);
    }
    assert_eq!(worker_active(admin, &tcp_stat).await, (vec![4, 4], 8));
    let prom = tokio::task::spawn_blocking(move || blocking_get(admin, "/stats/prometheus"))
        .await
        .expect("join")
        .expect("prometheus")
        .1;
    for w in 0..2 {
        let line = format!(
            "envoy_listener_worker_downstream_cx_active{{envoy_worker_id=\"{w}\",envoy_listener_address=\"{tcp_stat}\"}} 4"
        );
        assert!(prom.lines().any(|l| l == line), "no `{line}` in:\n{prom}");
    }
    for s in &mut conns {
        assert_eq!(keep_alive_get(s).await, "balanced");
    }
    conns.truncate(3);
    // The closes reach layer8 asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (per, total) = worker_active(admin, &tcp_stat).await;
        if total == 3 {
            assert_eq!(per.iter().sum::<u64>(), 3, "{per:?}");
            let get = admin_stats(admin).await;
            assert_eq!(
                get(&format!("listener.{tcp_stat}.downstream_cx_destroy")),
                5
            );
            let per_total: Vec<u64> = (0..2)
                .map(|i| {
                    get(&format!(
                        "listener.{tcp_stat}.worker_{i}.downstream_cx_total"
                    ))
                })
                .collect();
            assert_eq!(per_total, [4, 4]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {total} active");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let uds_stat = path.display().to_string();
    let mut unix = Vec::new();
    for _ in 0..6 {
        let mut s = tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect unix");
        assert_eq!(keep_alive_get(&mut s).await, "balanced-unix");
        unix.push(s);
    }
    let (per, total) = worker_active(admin, &uds_stat).await;
    assert_eq!(
        (per, total),
        (vec![3, 3], 6),
        "unix listener stat {uds_stat}"
    );
    for s in &mut unix {
        assert_eq!(keep_alive_get(s).await, "balanced-unix");
    }
}

/// A listener that only serves the runtime API keeps its connections on the first worker (its
/// calls then share that worker's store connections); with `connection_balance_config` it spreads
/// them as a proxy listener does. Two workers, six gRPC channels to each, opened one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_listener_keeps_its_connections_on_one_worker() {
    use common::runtime::{client, memory_config, runtime_listener};
    use layer8::runtime::proto::rt;
    let (admin, grpc, actuator, spread) = (free_port(), free_port(), free_port(), free_port());
    let mut balanced = runtime_listener(
        "runtime_spread",
        serde_json::json!({"socket_address": {"address": "127.0.0.1", "port_value": spread}}),
        memory_config(serde_json::json!({})),
    );
    balanced["connection_balance_config"] = serde_json::json!({"exact_balance": {}});
    let config = common::runtime::bootstrap(
        admin,
        grpc,
        actuator,
        memory_config(serde_json::json!({})),
        vec![balanced],
        vec![],
    );
    let _l8 = start_process(
        layer8_bin(),
        &config,
        "json",
        admin,
        &["--concurrency", "2"],
    );
    let hello = |name: String| rt::SayHelloRequest {
        service_name: "helloworld".into(),
        name,
        data: None,
    };
    for (port, expect) in [(grpc, [6, 0]), (spread, [3, 3])] {
        let mut clients = Vec::new();
        for i in 0..6 {
            let mut c = client(port).await;
            let r = c.say_hello(hello(format!("app {i}"))).await;
            assert_eq!(
                r.expect("SayHello").into_inner().hello,
                format!("greeting, app {i}")
            );
            clients.push(c);
        }
        let stat = format!("127.0.0.1_{port}");
        let active = worker_active(admin, &stat).await;
        assert_eq!(active, (expect.to_vec(), 6), "listener {stat}");
        for c in &mut clients {
            let r = c.say_hello(hello("again".into())).await;
            assert_eq!(
                r.expect("SayHello again").into_inner().hello,
                "greeting, again"
            );
        }
    }
}

/// `connection_balance_config`: `exact_balance` is what layer8 does anyway (no note);
/// `extend_balance` (a balancer extension) is noted with its field path, and the listener serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_balance_config_exact_is_silent_extend_is_noted() {
    let (admin, exact, extend) = (free_port(), free_port(), free_port());
    let listeners = format!(
        "{}{}",
        listener(
            "exact",
            "127.0.0.1",
            exact,
            "",
            &direct_chain("{}", "exact"),
            "    connection_balance_config: { exact_balance: {} }\n",
        ),
        listener(
            "extend",
            "127.0.0.1",
            extend,
            "",
            &direct_chain("{}", "extend"),
            "    connection_balance_config:\n      extend_balance:\n        name: envoy.network.connection_balance.dlb\n        typed_config: { \"@type\": type.googleapis.com/xds.type.v3.TypedStruct }\n",
        ),
    );
    let l8 = start_in_process(&bootstrap(admin, &listeners, "    []\n")).await;
    let notes: Vec<&String> = l8
        .state
        .notes
        .skipped
        .iter()
        .filter(|n| n.contains("connection_balance_config"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("listener 'extend': connection_balance_config.extend_balance: ")
            && notes[0].contains("'envoy.network.connection_balance.dlb'"),
        "{}",
        notes[0]
    );
    for (port, body) in [(exact, "exact"), (extend, "extend")] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        assert_eq!(keep_alive_get(&mut s).await, body);
    }
}
