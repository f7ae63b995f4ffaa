//! Cluster, load-balancer, retry, timeout and circuit-breaker behaviour over real sockets.

mod common;
use std::collections::HashMap;

use common::*;

fn vhost(route: &str) -> String {
    format!(
        r#"            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {route}"#
    )
}

async fn counts(
    c: &Clients,
    port: u16,
    n: usize,
    path: &str,
    header: Option<(&str, String)>,
) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in 0..n {
        let hv = header.as_ref().map(|(k, v)| (*k, format!("{v}{i}")));
        let hs: Vec<(&str, &str)> = hv.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.send(false, port, "GET", "svc", path, &hs, "").await;
        *m.entry(r.header("x-upstream").unwrap_or("local").to_string())
            .or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_10k_requests_within_tolerance() {
    let (a, b, c) = (
        echo_upstream("a").await,
        echo_upstream("b").await,
        echo_upstream("c").await,
    );
    let (admin, listen) = (free_port(), free_port());
    let route = "{ weighted_clusters: { clusters: [ { name: w_a, weight: 10 }, { name: w_b, weight: 30 }, { name: w_c, weight: 60 } ] } }";
    let clusters = [
        static_cluster("w_a", &[a.addr], ""),
        static_cluster("w_b", &[b.addr], ""),
        static_cluster("w_c", &[c.addr], ""),
    ]
    .join("");
    let _l8 = start_in_process(&http_bootstrap(admin, listen, &vhost(route), &clusters, "")).await;
    let m = counts(&Clients::new(), listen, 10_000, "/", None).await;
    // Binomial std-dev at n=10k is under 50 for each arm; allow 5 sigma.
    for (name, want) in [("a", 1000i64), ("b", 3000), ("c", 6000)] {
        let got = *m.get(name).unwrap_or(&0) as i64;
        assert!((got - want).abs() <= 250, "{name}: {got} vs {want}: {m:?}");
    }
    assert_eq!(m.values().sum::<usize>(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_honours_endpoint_and_locality_weights() {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (admin, listen) = (free_port(), free_port());
    let cluster = format!(
        r#"  - name: rr_w
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: rr_w
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
          load_balancing_weight: 1
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
          load_balancing_weight: 3
"#,
        a.addr.port(),
        b.addr.port()
    );
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        &vhost("{ cluster: rr_w }"),
        &cluster,
        "",
    ))
    .await;
    let m = counts(&Clients::new(), listen, 400, "/", None).await;
    assert_eq!((m["a"], m["b"]), (100, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_policies_random_least_request_ring_hash_maglev() {
    let (a, b) = (echo_upstream("a").await, echo_upstream("b").await);
    let (admin, listen) = (free_port(), free_port());
    let hash_route =
        r#"{ cluster: CLUSTER, hash_policy: [ { header: { header_name: x-user } } ] }"#;
    let vhosts = format!(
        r#"            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/random" }}
                route: {{ cluster: lb_random }}
              - match: {{ prefix: "/lr" }}
                route: {{ cluster: lb_lr }}
              - match: {{ prefix: "/ring" }}
                route: {ring}
              - match: {{ prefix: "/maglev" }}
                route: {maglev}"#,
        ring = hash_route.replace("CLUSTER", "lb_ring"),
        maglev = hash_route.replace("CLUSTER", "lb_maglev"),
    );
    let addrs = [a.addr, b.addr];
    let clusters = [
        static_cluster("lb_random", &addrs, "    lb_policy: RANDOM\n"),
        static_cluster("lb_lr", &addrs, "    lb_policy: LEAST_REQUEST\n"),
        static_cluster("lb_ring", &addrs, "    lb_policy: RING_HASH\n"),
        static_cluster("lb_maglev", &addrs, "    lb_policy: MAGLEV\n"),
    ]
    .join("");
    let _l8 = start_in_process(&http_bootstrap(admin, listen, &vhosts, &clusters, "")).await;
    let c = Clients::new();
    let m = counts(&c, listen, 2000, "/random", None).await;
    assert!(m["a"] > 800 && m["b"] > 800, "{m:?}");
    let m = counts(&c, listen, 400, "/lr", None).await;
    assert!(m["a"] > 100 && m["b"] > 100, "{m:?}");
    for path in ["/ring", "/maglev"] {
        // Same key -> same host, every time.
        for key in ["alice", "bob", "carol", "dave"] {
            let first = c
                .send(false, listen, "GET", "svc", path, &[("x-user", key)], "")
                .await;
            for _ in 0..20 {
                let r = c
                    .send(false, listen, "GET", "svc", path, &[("x-user", key)], "")
                    .await;
                assert_eq!(
                    r.header("x-upstream"),
                    first.header("x-upstream"),
                    "{path} {key}"
                );
            }
        }
        // Many keys spread over both hosts.
        let m = counts(&c, listen, 200, path, Some(("x-user", "user-".into()))).await;
        assert!(
            m.get("a").copied().unwrap_or(0) > 40 && m.get("b").copied().unwrap_or(0) > 40,
            "{path}: {m:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_a_busy_host() {
    // Host "hang" accepts requests and never answers, so its active requests pile up; host "b"
    // answers at once. Round robin would send exactly half the requests to each.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            acc.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.push(s);
        }
    });
    let b = echo_upstream("b").await;
    let (admin, listen) = (free_port(), free_port());
    let clusters = static_cluster(
        "lr_busy",
        &[hang_addr, b.addr],
        "    lb_policy: LEAST_REQUEST\n",
    );
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        &vhost("{ cluster: lr_busy, timeout: 5s }"),
        &clusters,
        "",
    ))
    .await;
    let c = Clients::new();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.get(listen, "svc", "/").await.status
        }));
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.expect("task") == 200 {
            ok += 1;
        }
    }
    let to_hang = accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        ok + to_hang,
        200,
        "every request went to one of the two hosts"
    );
    assert!(
        to_hang < 80,
        "least request sent {to_hang}/200 to the stuck host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_a_different_host() {
    let good = echo_upstream("good").await;
    let bad = status_upstream("bad", 503).await;
    let (admin, listen) = (free_port(), free_port());
    let route = r#"{ cluster: retry_c, retry_policy: { retry_on: 5xx, num_retries: 1, retry_host_predicate: [ { name: envoy.retry_host_predicates.previous_hosts, typed_config: { "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } } ], host_selection_retry_max_attempts: 5 } }"#;
    let clusters = static_cluster("retry_c", &[good.addr, bad.addr], "");
    let _l8 = start_in_process(&http_bootstrap(admin, listen, &vhost(route), &clusters, "")).await;
    let c = Clients::new();
    for _ in 0..50 {
        let r = c.get(listen, "svc", "/").await;
        assert_eq!((r.status, r.header("x-upstream")), (200, Some("good")));
    }
    let bad_hits = bad.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(bad_hits > 0, "round robin must have tried the bad host");
    assert_eq!(stat("cluster.retry_c.upstream_rq_retry"), bad_hits);
    assert_eq!(stat("cluster.retry_c.upstream_rq_503"), bad_hits);
    assert_eq!(stat("cluster.retry_c.upstream_rq_200"), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_connect_failure_and_exhausted_retries() {
    let good = echo_upstream("good").await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/cf" }
                route: { cluster: cf_mixed, retry_policy: { retry_on: connect-failure, num_retries: 3 } }
              - match: { prefix: "/dead" }
                route: { cluster: cf_dead, retry_policy: { retry_on: connect-failure, num_retries: 2 } }
              - match: { prefix: "/status" }
                route: { cluster: cf_status, retry_policy: { retry_on: retriable-status-codes, retriable_status_codes: [418], num_retries: 2 } }"#;
    let teapot = status_upstream("teapot", 418).await;
    let clusters = [
        static_cluster("cf_mixed", &[dead, good.addr], ""),
        static_cluster("cf_dead", &[dead], ""),
        static_cluster("cf_status", &[teapot.addr], ""),
    ]
    .join("");
    let _l8 = start_in_process(&http_bootstrap(admin, listen, vhosts, &clusters, "")).await;
    let c = Clients::new();
    for _ in 0..10 {
        assert_eq!(c.get(listen, "svc", "/cf").await.status, 200);
    }
    let r = c.get(listen, "svc", "/dead").await;
    assert_eq!(r.status, 503);
    assert!(
        r.text()
            .starts_with("upstream connect error or disconnect/reset before headers."),
        "{}",
        r.text()
    );
    assert_eq!(stat("cluster.cf_dead.upstream_rq_retry"), 2);
    assert_eq!(stat("cluster.cf_dead.upstream_cx_connect_fail"), 3);
    let r = c.get(listen, "svc", "/status").await;
    assert_eq!(r.status, 418);
    assert_eq!(teapot.hits.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_returns_503_uo() {
    let up = echo_upstream("slow").await;
    let (admin, listen) = (free_port(), free_port());
    let clusters = static_cluster("cb", &[up.addr], "    circuit_breakers: { thresholds: [ { max_requests: 1, max_pending_requests: 1, max_connections: 1 } ] }\n");
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        &vhost("{ cluster: cb }"),
        &clusters,
        "",
    ))
    .await;
    let c = Clients::new();
    let c2 = c.clone();
    let slow = tokio::spawn(async move { c2.get(listen, "svc", "/delay/1500").await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = c.get(listen, "svc", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
    assert_eq!(
        r.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    assert_eq!(stat("cluster.cb.upstream_rq_pending_overflow"), 1);
    // The slow request is still in flight: the admin view of upstream_rq_active shows it.
    let active = c
        .get(
            admin,
            "admin",
            "/stats?filter=cluster.cb.upstream_rq_active",
        )
        .await
        .text();
    assert_eq!(active, "cluster.cb.upstream_rq_active: 1\n");
    assert_eq!(slow.await.expect("slow").status, 200);
    assert_eq!(c.get(listen, "svc", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_and_per_try_timeout() {
    let up = echo_upstream("slow").await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/t" }
                route: { cluster: to, timeout: 0.3s, prefix_rewrite: "/" }
              - match: { prefix: "/p" }
                route: { cluster: to, timeout: 5s, prefix_rewrite: "/", retry_policy: { retry_on: 5xx, num_retries: 2, per_try_timeout: 0.2s } }"#;
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        vhosts,
        &static_cluster("to", &[up.addr], ""),
        "",
    ))
    .await;
    let c = Clients::new();
    let r = c.get(listen, "svc", "/tdelay/2000").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (504, "upstream request timeout")
    );
    let r = c.get(listen, "svc", "/pdelay/2000").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert_eq!(stat("cluster.to.upstream_rq_timeout"), 1);
    assert_eq!(stat("cluster.to.upstream_rq_per_try_timeout"), 3);
    let e = c.get(listen, "svc", "/t").await.echo();
    assert_eq!(e.headers["x-envoy-expected-rq-timeout-ms"], "300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keepalive_h2_protocol_options_and_bind_config() {
    let up = echo_upstream("u").await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/h2" }
                route: { cluster: up_h2 }
              - match: { prefix: "/bind" }
                route: { cluster: up_bind }
              - match: { prefix: "/" }
                route: { cluster: up_h1 }"#;
    let h2opts = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
"#;
    let clusters = [
        static_cluster("up_h1", &[up.addr], ""),
        static_cluster("up_h2", &[up.addr], h2opts),
        static_cluster(
            "up_bind",
            &[up.addr],
            "    upstream_bind_config: { source_address: { address: 127.0.0.9, port_value: 0 } }\n",
        ),
    ]
    .join("");
    let _l8 = start_in_process(&http_bootstrap(admin, listen, vhosts, &clusters, "")).await;
    let c = Clients::new();
    for _ in 0..50 {
        assert_eq!(c.get(listen, "svc", "/").await.echo().version, "HTTP/1.1");
    }
    assert_eq!(
        stat("cluster.up_h1.upstream_cx_total"),
        1,
        "HTTP/1.1 keep-alive reuses one connection"
    );
    for _ in 0..20 {
        assert_eq!(c.get(listen, "svc", "/h2").await.echo().version, "HTTP/2.0");
    }
    assert_eq!(
        stat("cluster.up_h2.upstream_cx_total"),
        1,
        "HTTP/2 multiplexes on one connection"
    );
    let e = c.get(listen, "svc", "/bind").await.echo();
    assert!(e.peer.starts_with("127.0.0.9:"), "{}", e.peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_clusters_resolve_localhost() {
    let up = echo_upstream("dns").await;
    let (admin, listen) = (free_port(), free_port());
    let dns = |name: &str, ty: &str| {
        format!(
            "  - name: {name}\n    type: {ty}\n    dns_lookup_family: V4_ONLY\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: localhost, port_value: {} }} }} }}\n",
            up.addr.port()
        )
    };
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/logical" }
                route: { cluster: dns_logical }
              - match: { prefix: "/" }
                route: { cluster: dns_strict }"#;
    let clusters = dns("dns_strict", "STRICT_DNS") + &dns("dns_logical", "LOGICAL_DNS");
    let _l8 = start_in_process(&http_bootstrap(admin, listen, vhosts, &clusters, "")).await;
    let c = Clients::new();
    // Resolution runs in the background; the first requests may find no host yet (503 UH).
    let mut ok = false;
    for _ in 0..100 {
        let r = c.get(listen, "svc", "/").await;
        if r.status == 200 {
            ok = true;
            break;
        }
        assert_eq!(r.text(), "no healthy upstream");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "STRICT_DNS never resolved");
    assert_eq!(c.get(listen, "svc", "/logical").await.status, 200);
    assert_eq!(stat("cluster.dns_strict.membership_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_and_idle_timeout() {
    let up = echo_upstream("u").await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/idle" }
                route: { cluster: pool_idle }
              - match: { prefix: "/" }
                route: { cluster: pool_max }"#;
    let opts = |common: &str| {
        format!(
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{ {common} }}
        explicit_http_config: {{ http_protocol_options: {{}} }}
"#
        )
    };
    let clusters = static_cluster(
        "pool_max",
        &[up.addr],
        &opts("max_requests_per_connection: 3"),
    ) + &static_cluster("pool_idle", &[up.addr], &opts("idle_timeout: 0.2s"));
    let _l8 = start_in_process(&http_bootstrap(admin, listen, vhosts, &clusters, "")).await;
    let c = Clients::new();
    for _ in 0..9 {
        assert_eq!(c.get(listen, "svc", "/").await.status, 200);
    }
    assert_eq!(
        stat("cluster.pool_max.upstream_cx_total"),
        3,
        "3 requests per connection"
    );
    assert_eq!(c.get(listen, "svc", "/idle").await.status, 200);
    assert_eq!(c.get(listen, "svc", "/idle").await.status, 200);
    assert_eq!(stat("cluster.pool_idle.upstream_cx_total"), 1);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(c.get(listen, "svc", "/idle").await.status, 200);
    assert_eq!(
        stat("cluster.pool_idle.upstream_cx_total"),
        2,
        "idle connection not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_weights_and_priorities() {
    let (a, b, c) = (
        echo_upstream("a").await,
        echo_upstream("b").await,
        echo_upstream("c").await,
    );
    let (admin, listen) = (free_port(), free_port());
    // Two localities weighted 1:3 at priority 0; host c sits at priority 1 and gets nothing while
    // priority 0 has healthy hosts.
    let cluster = format!(
        r#"  - name: loc_w
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: loc_w
      endpoints:
      - locality: {{ zone: z1 }}
        load_balancing_weight: 1
        lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
      - locality: {{ zone: z2 }}
        load_balancing_weight: 3
        lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
      - locality: {{ zone: z3 }}
        priority: 1
        lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        a.addr.port(),
        b.addr.port(),
        c.addr.port()
    );
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        &vhost("{ cluster: loc_w }"),
        &cluster,
        "",
    ))
    .await;
    let m = counts(&Clients::new(), listen, 400, "/", None).await;
    assert_eq!(
        (
            m.get("a").copied(),
            m.get("b").copied(),
            m.get("c").copied()
        ),
        (Some(100), Some(300), None)
    );
    assert_eq!(stat("cluster.loc_w.membership_total"), 3);
    assert_eq!(stat("cluster.loc_w.membership_healthy"), 3);
}

/// Envoy counts an upstream reset as a 5xx: `gateway-error` (and `5xx`) retry a connection the
/// upstream closes without answering, `retriable-status-codes` alone does not. Checked against
/// real Envoy with the same bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_error_retries_resets_like_envoy() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let up = raw_upstream(move |mut s| {
        let counter = counter.clone();
        async move {
            // Read the request head, then hang up without a response.
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    let policy = |on: &str| {
        format!("{{ cluster: rst, retry_policy: {{ retry_on: \"{on}\", num_retries: 2, retriable_status_codes: [503], retry_back_off: {{ base_interval: 0.001s }} }} }}")
    };
    let vhosts = format!(
        "            - name: all\n              domains: [\"*\"]\n              routes:\n              - match: {{ prefix: \"/gw\" }}\n                route: {}\n              - match: {{ prefix: \"/5xx\" }}\n                route: {}\n              - match: {{ prefix: \"/codes\" }}\n                route: {}\n",
        policy("gateway-error"),
        policy("5xx"),
        policy("retriable-status-codes")
    );
    let c = Clients::new();
    for bin in [envoy_bin(), layer8_bin().to_string()] {
        let (admin, listen) = (free_port(), free_port());
        let yaml = http_bootstrap(
            admin,
            listen,
            &vhosts,
            &static_cluster("rst", &[up], ""),
            "",
        );
        let _p = tokio::task::block_in_place(|| {
            start_process(&bin, &yaml, "yaml", admin, &["--disable-hot-restart"])
        });
        for (path, attempts) in [("/gw", 3), ("/5xx", 3), ("/codes", 1)] {
            let before = seen.load(Ordering::Relaxed);
            let r = c.get(listen, "svc", path).await;
            assert_eq!(r.status, 503, "{bin} {path}");
            assert_eq!(
                seen.load(Ordering::Relaxed) - before,
                attempts,
                "{bin} {path}: attempts"
            );
        }
    }
}
