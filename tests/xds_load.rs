//! Config churn under traffic: while HTTP/1.1 and HTTP/2 clients send requests without pause,
//! the control plane pushes 1000 EDS updates and 100 RDS updates as fast as layer8 ACKs them
//! (SotW and Delta). Not one request may fail, and every update must be applied.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::xds::*;
use common::*;
use layer8_test_control_plane::ControlPlane;
use layer8_xds::client::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

const EDS_UPDATES: usize = 1000;
const RDS_EVERY: usize = 10;

/// Requests in a loop until `stop`: (successes, failures).
fn client(
    h2: bool,
    port: u16,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let c = Clients::new();
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let r = c
                .send(h2, port, "GET", "svc.example", "/churn", &[], "")
                .await;
            if r.status == 200 {
                ok += 1;
            } else {
                failed.push(format!("h2={h2}: {} {}", r.status, r.text()));
            }
        }
        (ok, failed)
    })
}

async fn churn(delta: bool) {
    let ups = [
        echo_upstream("a").await,
        echo_upstream("b").await,
        echo_upstream("c").await,
    ];
    let port = free_port();
    let cp = ControlPlane::new();
    let v1 = cp
        .set([
            eds_cluster("svc"),
            eds_cluster("svc2"),
            assignment("svc", &[ups[0].addr, ups[1].addr]),
            assignment("svc2", &[ups[2].addr]),
            rds_listener("http", port, "r1"),
            route_config("r1", &[("svc.example", "svc")]),
        ])
        .expect("resources");
    let server = cp
        .serve_tcp(([127, 0, 0, 1], 0).into())
        .await
        .expect("serve");
    let admin = free_port();
    let bootstrap = ads_bootstrap(admin, CpAddr::Tcp(server.addr()), delta);
    let proc = tokio::task::spawn_blocking(move || {
        start_process(
            layer8_bin(),
            &bootstrap,
            "json",
            admin,
            &["--concurrency", "2"],
        )
    })
    .await
    .expect("start");
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        cp.wait_ack(t, &v1).await.expect("initial ACK");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|h2| client(h2, port, stop.clone()))
        .collect();
    let sets = [[0, 1], [1, 2], [0, 2], [2, 0], [1, 0]];
    for i in 0..EDS_UPDATES {
        let set = sets[i % sets.len()];
        let v = cp
            .set([assignment("svc", &[ups[set[0]].addr, ups[set[1]].addr])])
            .expect("set");
        cp.wait_ack(ENDPOINT, &v).await.expect("EDS ACK");
        if i % RDS_EVERY == 0 {
            // Alternate the route between the two clusters (and a header that names the version).
            let cluster = if (i / RDS_EVERY) % 2 == 0 {
                "svc2"
            } else {
                "svc"
            };
            let v = cp
                .set([route_config("r1", &[("svc.example", cluster)])])
                .expect("set");
            cp.wait_ack(ROUTE, &v).await.expect("RDS ACK");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut failures = Vec::new();
    for c in clients {
        let (ok, failed) = c.await.expect("client");
        total += ok;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(total > 1000, "only {total} requests during the churn");
    let stats = tokio::task::spawn_blocking(move || {
        (
            admin_stat(admin, "cluster.svc.update_success"),
            admin_stat(admin, "rds.r1.update_success"),
            admin_stat(admin, "cluster.svc.upstream_rq_total"),
        )
    })
    .await
    .expect("stats");
    assert_eq!(
        stats.0,
        (EDS_UPDATES + 1).to_string(),
        "EDS updates applied"
    );
    assert_eq!(
        stats.1,
        (EDS_UPDATES / RDS_EVERY + 1).to_string(),
        "RDS updates applied"
    );
    println!(
        "delta={delta}: {total} requests, 0 failed, during {EDS_UPDATES} EDS and {} RDS updates; svc served {}",
        EDS_UPDATES / RDS_EVERY,
        stats.2
    );
    drop(proc);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eds_and_rds_churn_under_load_sotw() {
    churn(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eds_and_rds_churn_under_load_delta() {
    churn(true).await;
}
