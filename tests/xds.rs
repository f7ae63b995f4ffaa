//! layer8 against the in-repo control plane (`e2e/control-plane`), as a real process: initial
//! sync and ACK, NACK of an invalid resource while the last good config keeps serving, removal,
//! warming order, reconnect after the server restarts, over a Unix socket and TCP, SotW and Delta.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::xds::*;
use common::*;
use layer8_test_control_plane::{ControlPlane, ServerHandle};
use layer8_xds::client::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// Where the control plane runs in a test.
#[derive(Clone, Copy)]
enum Transport {
    Unix,
    Tcp,
}

struct Setup {
    cp: ControlPlane,
    server: Option<ServerHandle>,
    proc: Option<Proc>,
    admin: u16,
    dir: std::path::PathBuf,
    transport: Transport,
    tcp: Option<SocketAddr>,
}

impl Setup {
    async fn serve(&mut self) {
        self.server = Some(match self.transport {
            Transport::Unix => self
                .cp
                .serve_unix(&self.dir.join("XDS"))
                .await
                .expect("serve unix"),
            Transport::Tcp => {
                let addr = self
                    .tcp
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                let s = self.cp.serve_tcp(addr).await.expect("serve tcp");
                self.tcp = Some(s.addr());
                s
            }
        });
    }

    /// Start the control plane (with `resources`) and layer8, and wait until layer8 is ready.
    async fn start(
        transport: Transport,
        delta: bool,
        resources: Vec<layer8_xds::pb::google::protobuf::Any>,
    ) -> Setup {
        let cp = ControlPlane::new();
        cp.set(resources).expect("resources");
        let mut s = Setup {
            cp,
            server: None,
            proc: None,
            admin: free_port(),
            dir: temp_dir("xds"),
            transport,
            tcp: None,
        };
        s.serve().await;
        let sock = s.dir.join("XDS");
        let bootstrap = match transport {
            Transport::Unix => ads_bootstrap(s.admin, CpAddr::Unix(&sock), delta),
            Transport::Tcp => ads_bootstrap(s.admin, CpAddr::Tcp(s.tcp.expect("tcp")), delta),
        };
        let admin = s.admin;
        let p = tokio::task::spawn_blocking(move || {
            start_process(layer8_bin(), &bootstrap, "json", admin, &[])
        })
        .await
        .expect("start layer8");
        s.proc = Some(p);
        s
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll `f` until it returns true (10 s).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// (warming listeners, warming clusters) from `/stats`.
async fn warming(admin: u16) -> (String, String) {
    blocking(move || {
        (
            admin_stat(admin, "listener_manager.total_listeners_warming"),
            admin_stat(admin, "cluster_manager.warming_clusters"),
        )
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn sync_ack_nack_remove(transport: Transport, delta: bool) {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let port = free_port();
    let s = Setup::start(
        transport,
        delta,
        vec![
            eds_cluster("svc-a"),
            eds_cluster("svc-b"),
            assignment("svc-a", &[a.addr]),
            assignment("svc-b", &[b.addr]),
            rds_listener("http", port, "r1"),
            route_config("r1", &[("a.example", "svc-a"), ("b.example", "svc-b")]),
        ],
    )
    .await;
    let v1 = s.cp.version(LISTENER);
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        s.cp.wait_ack(t, &v1).await.expect("initial ACK");
    }
    // The node goes on the first request of the stream only.
    let reqs = s.cp.requests();
    assert_eq!(
        reqs[0].node_id.as_deref(),
        Some("sidecar~10.0.0.1~app.default~default.svc.cluster.local")
    );
    assert!(reqs[1..].iter().all(|r| r.node_id.is_none()), "{reqs:#?}");
    // EDS and RDS are subscribed by name.
    let eds_names: Vec<String> = reqs
        .iter()
        .filter(|r| r.type_url == ENDPOINT)
        .flat_map(|r| r.names.clone())
        .collect();
    assert!(eds_names.contains(&"svc-a".to_string()) && eds_names.contains(&"svc-b".to_string()));

    // What pilot-agent's readiness probe reads.
    let admin = s.admin;
    let (ready1, ready2) = blocking(move || {
        let q1 = r"/stats?usedonly&filter=^(cluster_manager\.cds|listener_manager\.lds)\.(update_success|update_rejected)$";
        let q2 = r"/stats?usedonly&filter=^(server\.state|listener_manager\.workers_started)";
        (blocking_get(admin, q1), blocking_get(admin, q2))
    })
    .await;
    assert_eq!(
        ready1.map(|r| r.1).as_deref(),
        Some("cluster_manager.cds.update_success: 1\nlistener_manager.lds.update_success: 1\n")
    );
    assert_eq!(
        ready2.map(|r| r.1).as_deref(),
        Some("listener_manager.workers_started: 1\nserver.state: 0\n")
    );

    let c = Clients::new();
    let r = c.get(port, "a.example", "/x").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "a"));
    assert_eq!(r.header("x-route"), Some("r1/a.example"));
    let r = c.get(port, "b.example", "/x").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "b"));

    // NACK: an invalid route configuration is rejected, naming resource and field; the last
    // good one keeps serving.
    let v2 = s.cp.set([bad_route_config("r1")]).expect("set");
    let nack = s.cp.wait_nack(ROUTE, &v2).await.expect("NACK");
    let msg = nack.error.expect("error_detail");
    assert!(msg.contains("'r1'") && msg.contains("safe_regex"), "{msg}");
    let r = c.get(port, "a.example", "/x").await;
    assert_eq!(r.header("x-route"), Some("r1/a.example"));
    // A bad listener next to a good one: the bad one is rejected, the update NACKed.
    let bad_port = free_port();
    let mut bad = rds_listener("bad", bad_port, "r1");
    let mut l: layer8_xds::pb::envoy::config::listener::v3::Listener =
        bad.to_msg().expect("listener");
    l.filter_chains[0].filters[0].name = "envoy.filters.network.rbac".into();
    l.filter_chains[0].filters[0].config_type = None;
    bad = layer8_xds::pb::google::protobuf::Any::from_msg(&l).expect("pack");
    let v3 = s.cp.set([bad]).expect("set");
    let nack = s.cp.wait_nack(LISTENER, &v3).await.expect("LDS NACK");
    let msg = nack.error.expect("error_detail");
    assert!(
        msg.contains("listener 'bad'") && msg.contains("filter_chains[0].filters[0]"),
        "{msg}"
    );
    let stats = blocking(move || {
        [
            "listener_manager.lds.update_rejected",
            "listener_manager.lds.update_success",
            "cluster_manager.cds.update_success",
            "rds.r1.update_rejected",
            "listener_manager.lds.version_text",
        ]
        .map(|n| admin_stat(admin, n))
    })
    .await;
    assert_eq!(stats[0], "1", "lds rejected");
    assert_eq!(stats[3], "1", "rds rejected");
    assert_eq!(
        stats[4],
        format!("{v1:?}"),
        "lds version_text stays at the last good version"
    );
    assert!(refused(bad_port));
    let r = c.get(port, "b.example", "/x").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "b"));

    // A good update after the NACKs is ACKed and served.
    s.cp.remove(LISTENER, &["bad"]);
    let v4 =
        s.cp.set([route_config("r1", &[("a.example", "svc-b")])])
            .expect("set");
    s.cp.wait_ack(ROUTE, &v4).await.expect("ACK");
    let r = c.get(port, "a.example", "/x").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "b"));

    // A runtime listener cannot come from the control plane: its components connect at startup.
    let mut rt_listener: layer8_xds::pb::envoy::config::listener::v3::Listener =
        rds_listener("rt", free_port(), "r1")
            .to_msg()
            .expect("listener");
    let ts = layer8_xds::pb::ext::udpa::r#type::v1::TypedStruct {
        type_url: "layer8.runtime.v1.Runtime".into(),
        value: None,
    };
    rt_listener.filter_chains[0].filters[0].name = "layer8.runtime".into();
    rt_listener.filter_chains[0].filters[0].config_type = Some(
        layer8_xds::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
            layer8_xds::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/udpa.type.v1.TypedStruct".into(),
                value: prost::Message::encode_to_vec(&ts),
            },
        ),
    );
    let rt_any = layer8_xds::pb::google::protobuf::Any::from_msg(&rt_listener).expect("pack");
    let v_rt = s.cp.set([rt_any]).expect("set");
    let nack =
        s.cp.wait_nack(LISTENER, &v_rt)
            .await
            .expect("NACK of a runtime listener");
    let msg = nack.error.expect("error_detail");
    assert!(
        msg.contains("listener 'rt'")
            && msg.contains("layer8.runtime is only served on static listeners"),
        "{msg}"
    );
    s.cp.remove(LISTENER, &["rt"]);

    // /config_dump shows the dynamic resources with their versions.
    let dump = blocking(move || admin_json(admin, "/config_dump?resource=dynamic_listeners")).await;
    let listeners = dump["configs"].as_array().expect("configs");
    assert_eq!(listeners.len(), 1, "{dump}");
    assert_eq!(listeners[0]["name"], "http");
    assert_eq!(listeners[0]["active_state"]["version_info"], v1.as_str());
    assert!(listeners[0]["active_state"]["last_updated"].is_string());
    let dump =
        blocking(move || admin_json(admin, "/config_dump?resource=dynamic_route_configs")).await;
    assert_eq!(dump["configs"][0]["version_info"], v4.as_str(), "{dump}");

    // Removal: the cluster goes (503 NC), then the listener (connection refused).
    let v5 = s.cp.remove(CLUSTER, &["svc-b"]);
    s.cp.wait_ack(CLUSTER, &v5).await.expect("ACK");
    let r = c.get(port, "a.example", "/x").await;
    assert_eq!(r.status, 503);
    // Its endpoints are no longer wanted: EDS is resubscribed without it.
    let unsub = |t: &'static str, name: &'static str| {
        move |r: &layer8_test_control_plane::Request| {
            r.type_url == t
                && if delta {
                    r.unsubscribe == [name]
                } else {
                    !r.nonce.is_empty()
                        && !r.names.iter().any(|n| n == name)
                        && r.response_version.is_some()
                }
        }
    };
    s.cp.wait_for(Duration::from_secs(10), unsub(ENDPOINT, "svc-b"))
        .await
        .expect("EDS unsubscription");
    let v6 = s.cp.remove(LISTENER, &["http"]);
    s.cp.wait_ack(LISTENER, &v6).await.expect("ACK");
    eventually("the removed listener to close", || refused(port)).await;
    // No listener references r1 any more: RDS is unsubscribed (SotW: an empty name list).
    s.cp.wait_for(Duration::from_secs(10), unsub(ROUTE, "r1"))
        .await
        .expect("RDS unsubscription");
    let removed = blocking(move || admin_stat(admin, "cluster_manager.cluster_removed")).await;
    assert_eq!(removed, "1");
    let _ = &s.proc;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sotw_over_unix_socket() {
    sync_ack_nack_remove(Transport::Unix, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delta_over_tcp() {
    sync_ack_nack_remove(Transport::Tcp, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sotw_over_tcp() {
    sync_ack_nack_remove(Transport::Tcp, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delta_over_unix_socket() {
    sync_ack_nack_remove(Transport::Unix, true).await;
}

async fn warming_order(transport: Transport, delta: bool) {
    let a = echo_upstream("a").await;
    let port = free_port();
    // A listener whose routes are not there yet, and a cluster whose endpoints are not.
    let s = Setup::start(
        transport,
        delta,
        vec![eds_cluster("svc-a"), rds_listener("http", port, "r1")],
    )
    .await;
    let v1 = s.cp.version(LISTENER);
    s.cp.wait_ack(LISTENER, &v1).await.expect("LDS ACK");
    s.cp.wait_ack(CLUSTER, &v1).await.expect("CDS ACK");
    let admin = s.admin;
    let (warming_l, warming_c) = warming(admin).await;
    assert_eq!((warming_l.as_str(), warming_c.as_str()), ("1", "1"));
    assert!(refused(port), "a warming listener must not accept");
    let dump = blocking(move || admin_json(admin, "/config_dump?resource=dynamic_listeners")).await;
    assert_eq!(dump["configs"][0]["name"], "http", "{dump}");
    assert!(dump["configs"][0]["active_state"].is_null(), "{dump}");
    assert_eq!(
        dump["configs"][0]["warming_state"]["version_info"],
        v1.as_str()
    );
    let dump =
        blocking(move || admin_json(admin, "/config_dump?resource=dynamic_warming_clusters")).await;
    assert_eq!(dump["configs"].as_array().map(Vec::len), Some(1), "{dump}");

    // Routes arrive: the listener goes active; its cluster still warms (503, no cluster).
    let v2 =
        s.cp.set([route_config("r1", &[("a.example", "svc-a")])])
            .expect("set");
    s.cp.wait_ack(ROUTE, &v2).await.expect("RDS ACK");
    let c = Clients::new();
    let r = c.get(port, "a.example", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::Relaxed), 0);

    // Endpoints arrive: the cluster goes active and traffic flows.
    let v3 = s.cp.set([assignment("svc-a", &[a.addr])]).expect("set");
    s.cp.wait_ack(ENDPOINT, &v3).await.expect("EDS ACK");
    let r = c.get(port, "a.example", "/").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "a"));
    let (warming_l, warming_c) = warming(admin).await;
    assert_eq!((warming_l.as_str(), warming_c.as_str()), ("0", "0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warming_order_sotw() {
    warming_order(Transport::Unix, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warming_order_delta() {
    warming_order(Transport::Tcp, true).await;
}

/// Requests in a loop until stopped: (successes, failures with their errors).
fn load(
    port: u16,
    host: &'static str,
) -> (
    tokio::task::JoinHandle<(u64, Vec<String>)>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let c = Clients::new();
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let r = c.get(port, host, "/load").await;
            if r.status == 200 {
                ok += 1;
            } else {
                failed.push(format!("{} {}", r.status, r.text()));
            }
        }
        (ok, failed)
    });
    (task, stop)
}

async fn reconnect(transport: Transport, delta: bool) {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let port = free_port();
    let mut s = Setup::start(
        transport,
        delta,
        vec![
            eds_cluster("svc-a"),
            eds_cluster("svc-b"),
            assignment("svc-a", &[a.addr]),
            assignment("svc-b", &[b.addr]),
            rds_listener("http", port, "r1"),
            route_config("r1", &[("a.example", "svc-a")]),
        ],
    )
    .await;
    let v1 = s.cp.version(LISTENER);
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        s.cp.wait_ack(t, &v1).await.expect("initial ACK");
    }
    let (task, stop) = load(port, "a.example");
    // The control plane goes away; layer8 keeps serving the last good configuration.
    s.server.take().expect("server").stop().await;
    let admin = s.admin;
    eventually("layer8 to notice the disconnect", || {
        admin_stat(admin, "control_plane.connected_state") == "0"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = s.cp.requests().len();
    s.serve().await;
    // A new stream resubscribes with what layer8 holds.
    let first =
        s.cp.wait_for(Duration::from_secs(20), |r| {
            r.stream >= 2 && r.type_url == CLUSTER
        })
        .await
        .expect("resubscription");
    if delta {
        assert_eq!(
            first.initial_versions.get("svc-a").map(String::as_str),
            Some(v1.as_str()),
            "{first:?}"
        );
    } else {
        assert_eq!(first.version_info, v1, "{first:?}");
        assert!(first.nonce.is_empty());
    }
    assert!(first.node_id.is_some() || s.cp.requests()[before].node_id.is_some());
    eventually("layer8 to reconnect", || {
        admin_stat(admin, "control_plane.connected_state") == "1"
    })
    .await;
    // Updates flow again.
    let v2 =
        s.cp.set([route_config("r1", &[("a.example", "svc-b")])])
            .expect("set");
    s.cp.wait_ack(ROUTE, &v2)
        .await
        .expect("ACK after reconnect");
    let c = Clients::new();
    let r = c.get(port, "a.example", "/").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "b"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = task.await.expect("load task");
    assert!(
        failed.is_empty(),
        "failed requests during the outage: {failed:?}"
    );
    assert!(ok > 10, "only {ok} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnect_sotw_unix() {
    reconnect(Transport::Unix, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnect_delta_tcp() {
    reconnect(Transport::Tcp, true).await;
}

/// `google_grpc` with a `target_uri` instead of an `envoy_grpc` cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn google_grpc_target() {
    let a = echo_upstream("a").await;
    let port = free_port();
    let cp = ControlPlane::new();
    let v1 = cp
        .set([
            eds_cluster("svc-a"),
            assignment("svc-a", &[a.addr]),
            rds_listener("http", port, "r1"),
            route_config("r1", &[("a.example", "svc-a")]),
        ])
        .expect("resources");
    let server = cp
        .serve_tcp(([127, 0, 0, 1], 0).into())
        .await
        .expect("serve");
    let admin = free_port();
    let mut bootstrap: serde_json::Value =
        serde_json::from_str(&ads_bootstrap(admin, CpAddr::Tcp(server.addr()), false))
            .expect("json");
    bootstrap["dynamic_resources"]["ads_config"]["grpc_services"] = serde_json::json!([
        {"google_grpc": {"target_uri": server.addr().to_string(), "stat_prefix": "xds"}}
    ]);
    let text = bootstrap.to_string();
    let _proc = blocking(move || start_process(layer8_bin(), &text, "json", admin, &[])).await;
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        cp.wait_ack(t, &v1).await.expect("ACK");
    }
    let r = Clients::new().get(port, "a.example", "/").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "a"));
    server.stop().await;
}

/// Warming ends at `initial_fetch_timeout` when nothing arrives: the cluster goes live without
/// endpoints (503), the listener without its routes (404), as in Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn initial_fetch_timeout_ends_warming() {
    let port = free_port();
    let s = Setup::start(
        Transport::Tcp,
        false,
        vec![
            eds_cluster_with_timeout("svc-a", "3s"),
            rds_listener_with_timeout("http", port, "r1", "3s"),
        ],
    )
    .await;
    let v1 = s.cp.version(LISTENER);
    s.cp.wait_ack(LISTENER, &v1).await.expect("LDS ACK");
    s.cp.wait_ack(CLUSTER, &v1).await.expect("CDS ACK");
    let acked = std::time::Instant::now();
    let admin = s.admin;
    let warming = warming(admin).await;
    assert!(
        acked.elapsed() < Duration::from_secs(3),
        "the check must run before the timeout"
    );
    assert_eq!((warming.0.as_str(), warming.1.as_str()), ("1", "1"));
    assert!(refused(port));
    // After the timeout: both live without what they waited for.
    eventually("the listener to go live", || !refused(port)).await;
    assert!(
        acked.elapsed() >= Duration::from_millis(2500),
        "not before the timeout"
    );
    eventually("the warming gauges to drop to 0", || {
        admin_stat(admin, "listener_manager.total_listeners_warming") == "0"
            && admin_stat(admin, "cluster_manager.warming_clusters") == "0"
    })
    .await;
    let r = Clients::new().get(port, "a.example", "/").await;
    assert_eq!(r.status, 404, "no route configuration yet");
    // Routes arrive late: requests reach the cluster, which has no endpoints.
    let v2 =
        s.cp.set([route_config("r1", &[("a.example", "svc-a")])])
            .expect("set");
    s.cp.wait_ack(ROUTE, &v2).await.expect("RDS ACK");
    let r = Clients::new().get(port, "a.example", "/").await;
    assert_eq!(r.status, 503, "a live cluster without endpoints");
    assert_eq!(r.text(), "no healthy upstream");
}

/// A listener update that cannot bind is NACKed and the last good version keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listener_update_that_cannot_bind_keeps_the_last_good_one() {
    let a = echo_upstream("a").await;
    let port = free_port();
    let s = Setup::start(
        Transport::Unix,
        true,
        vec![
            eds_cluster("svc-a"),
            assignment("svc-a", &[a.addr]),
            rds_listener("http", port, "r1"),
            route_config("r1", &[("a.example", "svc-a")]),
        ],
    )
    .await;
    let v1 = s.cp.version(LISTENER);
    s.cp.wait_ack(ROUTE, &v1).await.expect("ACK");
    // Something else holds the port the new version wants.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let v2 =
        s.cp.set([rds_listener("http", taken_port, "r1")])
            .expect("set");
    let nack = s.cp.wait_nack(LISTENER, &v2).await.expect("NACK");
    let msg = nack.error.expect("error_detail");
    assert!(
        msg.contains("listener 'http'") && msg.contains("cannot bind"),
        "{msg}"
    );
    let r = Clients::new().get(port, "a.example", "/").await;
    assert_eq!((r.status, r.echo().upstream.as_str()), (200, "a"));
    let admin = s.admin;
    let dump = blocking(move || admin_json(admin, "/config_dump?resource=dynamic_listeners")).await;
    assert_eq!(
        dump["configs"][0]["active_state"]["version_info"],
        v1.as_str(),
        "{dump}"
    );
    drop(taken);
}
