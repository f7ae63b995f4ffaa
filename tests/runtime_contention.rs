//! Contention on each lock and sequencer component (in-memory, Redis, etcd): 16 concurrent
//! clients, each on its own gRPC connection to a running layer8.
//! Locks: 10 s of contention on one resource; the test checks that never two clients hold it.
//! Sequencers: ids unique across clients and strictly increasing per client, STRONG and WEAK.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::runtime::{bootstrap, client, etcd, redis, Server};
use common::*;
use layer8::runtime::proto::rt;
use serde_json::json;

const CLIENTS: usize = 16;

async fn start(lock: serde_json::Value, seq: serde_json::Value) -> (InProcess, u16) {
    let (admin, grpc, act) = (free_port(), free_port(), free_port());
    let cfg = json!({"lock": {"l": lock}, "sequencer": {"s": seq}, "app": {"app_id": "app1"}});
    let l8 = start_in_process(&bootstrap(admin, grpc, act, cfg, vec![], vec![])).await;
    (l8, grpc)
}

/// 16 clients loop TryLock / hold / Unlock on one resource for `secs`; a shared counter of
/// holders must never exceed one. Returns how many times the lock was taken.
async fn contend(grpc: u16, secs: u64) -> usize {
    let holders = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = client(grpc).await;
        let (holders, taken) = (holders.clone(), taken.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("owner-{i}");
            while Instant::now() < deadline {
                let got = c
                    .try_lock(rt::TryLockRequest {
                        store_name: "l".into(),
                        resource_id: "contended".into(),
                        lock_owner: owner.clone(),
                        expire: 10,
                    })
                    .await
                    .expect("TryLock")
                    .into_inner()
                    .success;
                if !got {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let before = holders.fetch_add(1, Ordering::SeqCst);
                assert_eq!(
                    before, 0,
                    "{owner} got the lock while another client held it"
                );
                taken.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                let st = c
                    .unlock(rt::UnlockRequest {
                        store_name: "l".into(),
                        resource_id: "contended".into(),
                        lock_owner: owner.clone(),
                    })
                    .await
                    .expect("Unlock")
                    .into_inner()
                    .status;
                assert_eq!(st, 0, "{owner} releases its own lock");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    taken.load(Ordering::SeqCst)
}

/// 16 clients each draw `per_client` ids; all unique, each client's strictly increasing.
async fn draw_ids(grpc: u16, per_client: usize, strong: bool) {
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = client(grpc).await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                ids.push(
                    c.get_next_id(rt::GetNextIdRequest {
                        store_name: "s".into(),
                        key: if strong { "strong" } else { "weak" }.into(),
                        options: Some(rt::SequencerOptions {
                            increment: i32::from(strong),
                        }),
                        metadata: HashMap::new(),
                    })
                    .await
                    .expect("GetNextId")
                    .into_inner()
                    .next_id,
                );
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        let ids = t.await.expect("client task");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "strictly increasing per client: {ids:?}"
        );
        for id in ids {
            assert!(all.insert(id), "id {id} handed out twice");
        }
    }
    assert_eq!(all.len(), CLIENTS * per_client);
}

async fn run(lock: serde_json::Value, seq: serde_json::Value, per_client: usize) {
    let (_l8, grpc) = start(lock, seq).await;
    let taken = contend(grpc, 10).await;
    assert!(
        taken > CLIENTS,
        "the lock changed hands: taken {taken} times"
    );
    draw_ids(grpc, per_client, true).await;
    draw_ids(grpc, per_client, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    let c = json!({"type": "in-memory", "metadata": {}});
    run(c.clone(), c, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_components() {
    let srv: Server = redis(false);
    let c = json!({"type": "redis", "metadata": {"redisHost": srv.addr()}});
    run(c.clone(), c, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_components() {
    let srv: Server = etcd();
    let c = json!({"type": "etcd", "metadata": {"endpoints": srv.addr()}});
    run(c.clone(), c, 60).await;
}
