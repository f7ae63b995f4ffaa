//! The in-repo control plane proven with real Envoy: Envoy and layer8 each take the same
//! resources from their own instance of it (SotW over a Unix socket, Delta over TCP), ACK them,
//! serve the same routes, NACK the same invalid route configuration while the last good one keeps
//! serving, and follow the same updates and removals.

mod common;

use std::time::Duration;

use common::xds::*;
use common::*;
use layer8_test_control_plane::{ControlPlane, ServerHandle};
use layer8_xds::client::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use layer8_xds::pb::google::protobuf::Any;

struct Proxy {
    name: &'static str,
    cp: ControlPlane,
    server: ServerHandle,
    port: u16,
    _proc: Proc,
}

fn resources(port: u16, a: std::net::SocketAddr, b: std::net::SocketAddr) -> Vec<Any> {
    vec![
        eds_cluster("svc-a"),
        eds_cluster("svc-b"),
        assignment("svc-a", &[a]),
        assignment("svc-b", &[b]),
        rds_listener("http", port, "r1"),
        route_config("r1", &[("a.example", "svc-a"), ("b.example", "svc-b")]),
    ]
}

async fn start(
    name: &'static str,
    bin: String,
    delta: bool,
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    dir: &std::path::Path,
) -> Proxy {
    let port = free_port();
    let cp = ControlPlane::new();
    let v1 = cp.set(resources(port, a, b)).expect("resources");
    let sock = dir.join(format!("{name}.sock"));
    let server = if delta {
        cp.serve_tcp(([127, 0, 0, 1], 0).into()).await.expect("tcp")
    } else {
        cp.serve_unix(&sock).await.expect("unix")
    };
    let admin = free_port();
    let bootstrap = if delta {
        ads_bootstrap(admin, CpAddr::Tcp(server.addr()), true)
    } else {
        ads_bootstrap(admin, CpAddr::Unix(&sock), false)
    };
    let extra: &[&str] = if name == "envoy" {
        &["--disable-hot-restart", "-l", "error"]
    } else {
        &[]
    };
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let proc = tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        start_process(&bin, &bootstrap, "json", admin, &extra)
    })
    .await
    .expect("start");
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        cp.wait_ack(t, &v1)
            .await
            .unwrap_or_else(|e| panic!("{name}: initial ACK of {t}: {e}"));
    }
    Proxy {
        name,
        cp,
        server,
        port,
        _proc: proc,
    }
}

/// (status, upstream name or "") for a request with `host` through a proxy.
async fn route(p: &Proxy, host: &str) -> (u16, String) {
    let c = Clients::new();
    // Envoy binds its listener a little after it ACKs LDS; retry connection refusals briefly.
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", p.port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.get(p.port, host, "/").await;
    let upstream = if r.status == 200 {
        r.echo().upstream
    } else {
        String::new()
    };
    (r.status, upstream)
}

async fn same_routes(proxies: &[Proxy], expected: &[(&str, u16, &str)]) {
    for p in proxies {
        for (host, status, upstream) in expected {
            assert_eq!(
                route(p, host).await,
                (*status, upstream.to_string()),
                "{}: Host {host}",
                p.name
            );
        }
    }
}

async fn envoy_and_layer8(delta: bool) {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let dir = temp_dir("xds-envoy");
    let proxies = vec![
        start("envoy", envoy_bin(), delta, a.addr, b.addr, &dir).await,
        start(
            "layer8",
            layer8_bin().to_string(),
            delta,
            a.addr,
            b.addr,
            &dir,
        )
        .await,
    ];
    same_routes(
        &proxies,
        &[
            ("a.example", 200, "a"),
            ("b.example", 200, "b"),
            ("c.example", 404, ""),
        ],
    )
    .await;

    // The same invalid route configuration is NACKed by both; both keep the last good one.
    for p in &proxies {
        let v = p.cp.set([bad_route_config("r1")]).expect("set");
        let nack =
            p.cp.wait_nack(ROUTE, &v)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        assert!(
            nack.error.is_some_and(|m| m.contains("unclosed")),
            "{}",
            p.name
        );
    }
    same_routes(&proxies, &[("a.example", 200, "a")]).await;

    // An update after the NACK, then a cluster removal.
    for p in &proxies {
        let v =
            p.cp.set([route_config(
                "r1",
                &[("a.example", "svc-b"), ("b.example", "svc-a")],
            )])
            .expect("set");
        p.cp.wait_ack(ROUTE, &v)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    same_routes(
        &proxies,
        &[("a.example", 200, "b"), ("b.example", 200, "a")],
    )
    .await;
    for p in &proxies {
        let v = p.cp.remove(CLUSTER, &["svc-a"]);
        p.cp.wait_ack(CLUSTER, &v)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    same_routes(&proxies, &[("a.example", 200, "b"), ("b.example", 503, "")]).await;
    for p in proxies {
        p.server.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envoy_and_layer8_agree_over_sotw() {
    envoy_and_layer8(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envoy_and_layer8_agree_over_delta() {
    envoy_and_layer8(true).await;
}
