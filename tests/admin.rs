//! Envoy-compatible admin endpoints.

mod common;
use common::*;

async fn admin_req(c: &Clients, port: u16, method: &str, path: &str) -> Resp {
    c.send(false, port, method, "admin", path, &[], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let up = echo_upstream("a").await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: admin_c }"#;
    let l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        vhosts,
        &static_cluster("admin_c", &[up.addr], ""),
        "",
    ))
    .await;
    let port = l8.admin.port();
    let c = Clients::new();
    assert_eq!(c.get(listen, "x", "/").await.status, 200);

    let r = admin_req(&c, port, "GET", "/ready").await;
    assert_eq!((r.status, r.text().as_str()), (200, "LIVE\n"));

    let info: serde_json::Value =
        serde_json::from_slice(&admin_req(&c, port, "GET", "/server_info").await.body)
            .expect("json");
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["command_line_options"]["concurrency"], 2);

    let dump: serde_json::Value =
        serde_json::from_slice(&admin_req(&c, port, "GET", "/config_dump").await.body)
            .expect("json");
    let types: Vec<&str> = dump["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| c["@type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
            "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        ]
    );
    let listener = &dump["configs"][2]["static_listeners"][0]["listener"];
    assert_eq!(
        listener["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(listener["name"], "http");
    assert_eq!(
        listener["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"], "ingress",
        "Any payloads render inline"
    );
    assert_eq!(
        dump["configs"][1]["static_clusters"][0]["cluster"]["name"],
        "admin_c"
    );
    assert_eq!(
        dump["configs"][3]["static_route_configs"][0]["route_config"]["name"],
        "local"
    );
    let only: serde_json::Value = serde_json::from_slice(
        &admin_req(&c, port, "GET", "/config_dump?resource=static_clusters")
            .await
            .body,
    )
    .expect("json");
    assert_eq!(only["configs"][0]["cluster"]["name"], "admin_c");

    let stats = admin_req(
        &c,
        port,
        "GET",
        "/stats?filter=cluster%5C.admin_c%5C.upstream_rq_2",
    )
    .await
    .text();
    assert_eq!(
        stats,
        "cluster.admin_c.upstream_rq_200: 1\ncluster.admin_c.upstream_rq_2xx: 1\n"
    );
    let used = admin_req(&c, port, "GET", "/stats?usedonly&filter=admin_c")
        .await
        .text();
    // Envoy's "used": written at least once. A counter never incremented is left out; a gauge
    // that went up and back to 0 stays (as `server.state: 0` must, for pilot-agent).
    assert!(!used.contains("upstream_rq_timeout"), "{used}");
    assert!(
        used.contains("cluster.admin_c.upstream_rq_active: 0\n"),
        "{used}"
    );
    assert!(
        used.contains("cluster.admin_c.upstream_cx_total: 1\n"),
        "{used}"
    );
    let all = admin_req(&c, port, "GET", "/stats").await.text();
    for needle in [
        "server.state: 0\n",
        "listener_manager.workers_started: 1\n",
        "listener_manager.lds.update_success: 0\n",
        "cluster_manager.cds.update_success: 0\n",
        "http.ingress.downstream_rq_total: ",
    ] {
        assert!(all.contains(needle), "missing {needle}");
    }
    assert_eq!(
        admin_req(&c, port, "GET", "/stats?filter=(").await.status,
        400
    );

    let prom = admin_req(&c, port, "GET", "/stats/prometheus").await.text();
    assert!(
        prom.contains("# TYPE envoy_cluster_upstream_rq counter\n"),
        "{prom}"
    );
    assert!(prom.contains("envoy_cluster_upstream_rq{envoy_cluster_name=\"admin_c\",envoy_response_code=\"200\"} 1\n"), "{prom}");
    assert!(prom.contains("envoy_server_state 0\n"), "{prom}");

    let clusters = admin_req(&c, port, "GET", "/clusters").await.text();
    assert!(
        clusters.contains(&format!("admin_c::{}::health_flags::healthy\n", up.addr)),
        "{clusters}"
    );
    assert!(
        clusters.contains("admin_c::default_priority::max_connections::1024\n"),
        "{clusters}"
    );
    let cj: serde_json::Value = serde_json::from_slice(
        &admin_req(&c, port, "GET", "/clusters?format=json")
            .await
            .body,
    )
    .expect("json");
    assert_eq!(
        cj["cluster_statuses"][0]["host_statuses"][0]["address"]["socket_address"]["port_value"],
        up.addr.port()
    );
    assert_eq!(
        admin_req(&c, port, "GET", "/listeners").await.text(),
        format!("http::127.0.0.1:{listen}\n")
    );

    // Mutating endpoints need POST.
    assert_eq!(
        admin_req(&c, port, "GET", "/healthcheck/fail").await.status,
        405
    );
    assert_eq!(
        admin_req(&c, port, "POST", "/healthcheck/fail")
            .await
            .text(),
        "OK\n"
    );
    assert!(admin_req(&c, port, "GET", "/stats")
        .await
        .text()
        .contains("server.live: 0\n"));
    assert_eq!(
        admin_req(&c, port, "POST", "/healthcheck/ok").await.text(),
        "OK\n"
    );
    assert_eq!(admin_req(&c, port, "GET", "/nope").await.status, 404);

    // drain_listeners: the listener stops accepting; admin still answers.
    assert_eq!(
        admin_req(&c, port, "POST", "/drain_listeners").await.text(),
        "OK\n"
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", listen))
            .await
            .is_err(),
        "listener still accepting"
    );
    assert_eq!(admin_req(&c, port, "GET", "/ready").await.status, 503);
}
