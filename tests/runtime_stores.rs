//! The runtime API on real stores: Redis (state, lock, sequencer, pub/sub on Streams) and etcd
//! (configuration with watch, lock on leases, sequencer), each a real server started here on a
//! free loopback port. Includes the fault test (Redis killed and restarted under a running layer8)
//! and 10,000 messages through Redis Streams with the subscriber app killed midway.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::runtime::{actuator, app, bootstrap, client, etcd, eventually, redis};
use common::*;
use layer8::runtime::proto::rt;
use serde_json::{json, Value};
use tonic::Code;

struct Rt {
    _l8: InProcess,
    grpc: u16,
    actuator: u16,
}

async fn start(config: Value) -> Rt {
    let (admin, grpc, act) = (free_port(), free_port(), free_port());
    let l8 = start_in_process(&bootstrap(admin, grpc, act, config, vec![], vec![])).await;
    Rt {
        _l8: l8,
        grpc,
        actuator: act,
    }
}

async fn redis_cmd(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

fn save(store: &str, key: &str, value: &str, etag: Option<&str>) -> rt::SaveStateRequest {
    rt::SaveStateRequest {
        store_name: store.into(),
        states: vec![rt::StateItem {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            etag: etag.map(|e| rt::Etag { value: e.into() }),
            metadata: HashMap::new(),
            options: None,
        }],
    }
}

fn get(store: &str, key: &str) -> rt::GetStateRequest {
    rt::GetStateRequest {
        store_name: store.into(),
        key: key.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_components_use_layotto_layouts() {
    let srv = redis(false);
    let meta = json!({"redisHost": srv.addr()});
    let r = start(json!({
        "state": {"redis_state": {"type": "redis", "metadata": {"redisHost": srv.addr(), "keyPrefix": "appid"}}},
        "lock": {"redis_lock": {"type": "redis", "metadata": meta}},
        "sequencer": {"redis_seq": {"type": "redis", "metadata": meta, "biggerThan": {"orders": 1000}}},
        "app": {"app_id": "app1"}
    }))
    .await;
    let mut c = client(r.grpc).await;
    let mut db = redis_cmd(&srv.addr()).await;

    // State: Dapr's hash layout under Layotto's `appid` key prefix; etags are versions.
    c.save_state(save("redis_state", "k", "v1", None))
        .await
        .unwrap();
    c.save_state(save("redis_state", "k", "v2", Some("1")))
        .await
        .unwrap();
    let stored: HashMap<String, String> = redis::cmd("HGETALL")
        .arg("app1||k")
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(
        stored,
        HashMap::from([("data".into(), "v2".into()), ("version".into(), "2".into())])
    );
    let g = c
        .get_state(get("redis_state", "k"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((g.data.as_slice(), g.etag.as_str()), (&b"v2"[..], "2"));
    let e = c
        .save_state(save("redis_state", "k", "v3", Some("1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let op = |t: &str, k: &str, v: &str, etag: Option<&str>| rt::TransactionalStateOperation {
        operation_type: t.into(),
        request: Some(save("", k, v, etag).states.remove(0)),
    };
    let tx = |ops| rt::ExecuteStateTransactionRequest {
        store_name: "redis_state".into(),
        operations: ops,
        metadata: HashMap::new(),
    };
    let e = c
        .execute_state_transaction(tx(vec![
            op("upsert", "t", "x", None),
            op("delete", "k", "", Some("9")),
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let exists: bool = redis::cmd("EXISTS")
        .arg("app1||t")
        .query_async(&mut db)
        .await
        .unwrap();
    assert!(!exists, "a failed transaction writes nothing");
    c.execute_state_transaction(tx(vec![
        op("upsert", "t", "x", None),
        op("delete", "k", "", Some("2")),
    ]))
    .await
    .unwrap();
    let b = c
        .get_bulk_state(rt::GetBulkStateRequest {
            store_name: "redis_state".into(),
            keys: vec!["t".into(), "k".into()],
            parallelism: 2,
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.items[0].data, b"x");
    assert!(b.items[1].data.is_empty());

    // Lock: SET NX EX on lock|||<appid>||<resource>.
    let lock = |owner: &str, expire: i32| rt::TryLockRequest {
        store_name: "redis_lock".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
        expire,
    };
    assert!(c.try_lock(lock("a", 2)).await.unwrap().into_inner().success);
    let owner: String = redis::cmd("GET")
        .arg("lock|||app1||res")
        .query_async(&mut db)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("lock|||app1||res")
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!((owner.as_str(), ttl > 0 && ttl <= 2), ("a", true));
    assert!(!c.try_lock(lock("b", 2)).await.unwrap().into_inner().success);
    let ka = rt::LockKeepAliveRequest {
        store_name: "redis_lock".into(),
        resource_id: "res".into(),
        lock_owner: "a".into(),
        expire: 30,
    };
    assert_eq!(c.lock_keep_alive(ka).await.unwrap().into_inner().status, 0);
    let ttl: i64 = redis::cmd("TTL")
        .arg("lock|||app1||res")
        .query_async(&mut db)
        .await
        .unwrap();
    assert!(ttl > 20, "keep-alive extended the TTL to 30 s, got {ttl}");
    let unlock = |owner: &str| rt::UnlockRequest {
        store_name: "redis_lock".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
    };
    assert_eq!(c.unlock(unlock("b")).await.unwrap().into_inner().status, 2);
    assert_eq!(c.unlock(unlock("a")).await.unwrap().into_inner().status, 0);
    assert_eq!(c.unlock(unlock("a")).await.unwrap().into_inner().status, 1);
    // Expiry frees it.
    assert!(c.try_lock(lock("a", 1)).await.unwrap().into_inner().success);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.try_lock(lock("b", 1)).await.unwrap().into_inner().success);

    // Sequencer: INCR on sequencer|||<appid>||<key>, above the biggerThan floor.
    let next = |strong: bool| rt::GetNextIdRequest {
        store_name: "redis_seq".into(),
        key: "orders".into(),
        options: Some(rt::SequencerOptions {
            increment: i32::from(strong),
        }),
        metadata: HashMap::new(),
    };
    assert_eq!(
        c.get_next_id(next(true))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        1001
    );
    assert_eq!(
        c.get_next_id(next(true))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        1002
    );
    let v: i64 = redis::cmd("GET")
        .arg("sequencer|||app1||orders")
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(v, 1002);
    // WEAK reserves a segment in one INCRBY.
    assert_eq!(
        c.get_next_id(next(false))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        1003
    );
    assert_eq!(
        c.get_next_id(next(false))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        1004
    );
    let v: i64 = redis::cmd("GET")
        .arg("sequencer|||app1||orders")
        .query_async(&mut db)
        .await
        .unwrap();
    assert_eq!(v, 1002 + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_configuration_lock_sequencer() {
    let srv = etcd();
    let meta = json!({"endpoints": srv.addr()});
    let config = json!({
        "config_store": {"etcd_config": {"type": "etcd", "metadata": meta}},
        "lock": {"etcd_lock": {"type": "etcd", "metadata": meta}},
        "sequencer": {"etcd_seq": {"type": "etcd", "metadata": meta, "biggerThan": {"k": 50}}},
        "app": {"app_id": "app1"}
    });
    let r1 = start(config.clone()).await;
    let r2 = start(config).await;
    let mut c1 = client(r1.grpc).await;
    let mut c2 = client(r2.grpc).await;

    // Configuration: a change saved through one layer8 reaches the other's subscription via
    // etcd's watch.
    let item = |k: &str, v: &str| rt::ConfigurationItem {
        key: k.into(),
        content: v.into(),
        group: "g".into(),
        label: "l".into(),
        tags: HashMap::from([("t".into(), "1".into())]),
        metadata: HashMap::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(rt::SubscribeConfigurationRequest {
        store_name: "etcd_config".into(),
        group: "g".into(),
        label: "l".into(),
        keys: vec!["feature".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = c1
        .subscribe_configuration(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c2.save_configuration(rt::SaveConfigurationRequest {
        store_name: "etcd_config".into(),
        items: vec![item("feature", "on"), item("other", "x")],
        ..Default::default()
    })
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("watch notification")
        .unwrap()
        .unwrap();
    assert_eq!(m.items, vec![item("feature", "on")]);
    let got = c1
        .get_configuration(rt::GetConfigurationRequest {
            store_name: "etcd_config".into(),
            group: "g".into(),
            label: "l".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    let mut keys: Vec<_> = got
        .iter()
        .map(|i| (i.key.clone(), i.content.clone()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("feature".into(), "on".into()),
            ("other".into(), "x".into())
        ]
    );
    c2.delete_configuration(rt::DeleteConfigurationRequest {
        store_name: "etcd_config".into(),
        group: "g".into(),
        label: "l".into(),
        keys: vec!["feature".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("delete notification")
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.items[0].key.as_str(), m.items[0].content.as_str()),
        ("feature", "")
    );

    // Lock: shared between the two layer8s through etcd.
    let lock = |owner: &str, expire: i32| rt::TryLockRequest {
        store_name: "etcd_lock".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
        expire,
    };
    assert!(
        c1.try_lock(lock("a", 2))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    assert!(
        !c2.try_lock(lock("b", 2))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    let unlock = |owner: &str| rt::UnlockRequest {
        store_name: "etcd_lock".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
    };
    assert_eq!(c2.unlock(unlock("b")).await.unwrap().into_inner().status, 2);
    // KeepAlive to 6 s, then after 3 s the lock is still held; it expires afterwards.
    let ka = rt::LockKeepAliveRequest {
        store_name: "etcd_lock".into(),
        resource_id: "res".into(),
        lock_owner: "a".into(),
        expire: 6,
    };
    assert_eq!(c1.lock_keep_alive(ka).await.unwrap().into_inner().status, 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !c2.try_lock(lock("b", 2))
            .await
            .unwrap()
            .into_inner()
            .success,
        "kept alive"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        c2.try_lock(lock("b", 2))
            .await
            .unwrap()
            .into_inner()
            .success,
        "expired"
    );
    assert_eq!(c1.unlock(unlock("a")).await.unwrap().into_inner().status, 2);
    assert_eq!(c2.unlock(unlock("b")).await.unwrap().into_inner().status, 0);
    assert_eq!(c2.unlock(unlock("b")).await.unwrap().into_inner().status, 1);

    // Sequencer: both layer8s draw from one counter, above the floor.
    let next = |strong: bool| rt::GetNextIdRequest {
        store_name: "etcd_seq".into(),
        key: "k".into(),
        options: Some(rt::SequencerOptions {
            increment: i32::from(strong),
        }),
        metadata: HashMap::new(),
    };
    assert_eq!(
        c1.get_next_id(next(true))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        51
    );
    assert_eq!(
        c2.get_next_id(next(true))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        52
    );
    assert_eq!(
        c1.get_next_id(next(false))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        53
    );
    // c1 reserved 53..=72; c2's WEAK segment starts after it.
    assert_eq!(
        c2.get_next_id(next(false))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        73
    );
}

/// Redis killed while layer8 serves: calls fail UNAVAILABLE with a clear message, readiness goes
/// DOWN; Redis restarted (with its append-only file): calls succeed again with no layer8
/// restart, and every write acknowledged before the kill is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_and_recovers() {
    let mut srv = redis(true);
    let r = start(json!({
        "state": {"redis_state": {"type": "redis", "metadata": {"redisHost": srv.addr(), "dialTimeout": "500ms", "readTimeout": "1s"}}},
        "lock": {"redis_lock": {"type": "redis", "metadata": {"redisHost": srv.addr()}}},
    }))
    .await;
    let mut c = client(r.grpc).await;
    for i in 0..200 {
        c.save_state(save(
            "redis_state",
            &format!("k{i}"),
            &format!("v{i}"),
            None,
        ))
        .await
        .expect("acknowledged write");
    }
    let (code, body) = actuator(r.actuator, "/actuator/health/readiness").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("UP")));

    srv.kill();
    let e = c.get_state(get("redis_state", "k1")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("redis"),
        "a clear message: {}",
        e.message()
    );
    let e = c
        .save_state(save("redis_state", "during", "x", None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = c
        .try_lock(rt::TryLockRequest {
            store_name: "redis_lock".into(),
            resource_id: "r".into(),
            lock_owner: "o".into(),
            expire: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let (code, body) = actuator(r.actuator, "/actuator/health/readiness").await;
    assert_eq!(
        (code, body["status"].as_str()),
        (503, Some("DOWN")),
        "{body}"
    );
    assert_eq!(body["components"]["state.redis_state"]["status"], "DOWN");
    // Liveness is about layer8 itself, not its stores.
    assert_eq!(
        actuator(r.actuator, "/actuator/health/liveness").await.0,
        200
    );

    srv.restart();
    let mut ok = false;
    for _ in 0..100 {
        if c.get_state(get("redis_state", "k0")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "calls succeed again after Redis restarts");
    for i in 0..200 {
        let g = c
            .get_state(get("redis_state", &format!("k{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            g.data,
            format!("v{i}").into_bytes(),
            "acknowledged write k{i} survived"
        );
    }
    c.save_state(save("redis_state", "after", "y", None))
        .await
        .unwrap();
    let mut up = false;
    for _ in 0..50 {
        if actuator(r.actuator, "/actuator/health/readiness").await.0 == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "readiness is UP again");
}

/// 10,000 messages through Redis Streams; the subscriber app is killed midway and restarted on
/// its port: every message arrives. RETRY answers are redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_lose_nothing_when_the_app_restarts() {
    const N: usize = 10_000;
    let srv = redis(false);
    let app_port = free_port();
    let mut a = app::App::new(&[("redis_pubsub", "orders")]);
    // Every 500th message is answered RETRY the first time.
    a.verdict = Arc::new(|ev, n| {
        let id: usize = std::str::from_utf8(&ev.data)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if id % 500 == 0 && n == 1 {
            1
        } else {
            0
        }
    });
    let running = app::serve(a.clone(), app_port).await;
    let r = start(json!({
        "pub_subs": {"redis_pubsub": {"type": "redis", "metadata": {
            "redisHost": srv.addr(),
            "processingTimeout": "1s", "redeliverInterval": "300ms", "concurrency": "16"}}},
        "app": {"app_id": "app1", "grpc_callback_port": app_port}
    }))
    .await;
    let publish = |c: &mut rt::runtime_client::RuntimeClient<tonic::transport::Channel>,
                   i: usize| {
        let mut c = c.clone();
        async move {
            c.publish_event(rt::PublishEventRequest {
                pubsub_name: "redis_pubsub".into(),
                topic: "orders".into(),
                data: i.to_string().into_bytes(),
                data_content_type: "text/plain".into(),
                metadata: HashMap::new(),
            })
            .await
            .expect("publish")
        }
    };
    let mut c = client(r.grpc).await;
    // Wait for the subscription (made once the app answers ListTopicSubscriptions). With no
    // `consumerID`, the consumer group is the app id, as in Layotto.
    eventually(10, "the app's subscription", || {
        std::process::Command::new("redis-cli")
            .args(["-p", &srv.port.to_string(), "XINFO", "GROUPS", "orders"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("app1"))
            .unwrap_or(false)
    })
    .await;
    use futures_util::StreamExt;
    futures_util::stream::iter(0..N / 2)
        .map(|i| publish(&mut c, i))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eventually(60, "some deliveries before the kill", || {
        a.distinct() >= N / 4
    })
    .await;
    running.stop().await;
    let at_kill = a.distinct();
    futures_util::stream::iter(N / 2..N)
        .map(|i| publish(&mut c, i))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        a.distinct() < N,
        "the app was down for part of the run ({at_kill} at the kill)"
    );
    let _running = app::serve(a.clone(), app_port).await;
    eventually(120, "all 10,000 messages", || a.distinct() == N).await;
    let seen = a.seen.lock().unwrap().clone();
    for i in 0..N {
        assert!(
            seen.contains_key(i.to_string().as_bytes()),
            "message {i} lost"
        );
    }
    // Answered RETRY at first sight: each comes back.
    eventually(60, "every RETRY redelivered", || {
        let seen = a.seen.lock().unwrap();
        (0..N)
            .step_by(500)
            .all(|i| seen.get(i.to_string().as_bytes()).is_some_and(|n| *n >= 2))
    })
    .await;
}

/// A component that cannot start stops layer8 with its name: never a half-started runtime.
#[test]
fn bad_component_fails_startup_naming_it() {
    let dead = free_port();
    let (admin, grpc, act) = (free_port(), free_port(), free_port());
    let cfg = bootstrap(
        admin,
        grpc,
        act,
        json!({"state": {"redis_bad": {"type": "redis", "metadata": {"redisHost": format!("127.0.0.1:{dead}"), "dialTimeout": "1s"}}}}),
        vec![],
        vec![],
    );
    let dir = temp_dir("badcomp");
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(layer8_bin())
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run layer8");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runtime component state.redis_bad (type 'redis'): cannot connect to redis at 127.0.0.1:"),
        "{err}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err(),
        "nothing left serving"
    );
    let cfg = bootstrap(
        admin,
        grpc,
        act,
        json!({"lock": {"l": {"type": "zookeeper", "metadata": {}}}}),
        vec![],
        vec![],
    );
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(layer8_bin())
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener 'runtime'")
            && err.contains("lock.l: unknown type 'zookeeper' (known: in-memory, redis, etcd)"),
        "{err}"
    );
    // `layer8 validate` catches it too, without connecting to anything.
    let out = std::process::Command::new(layer8_bin())
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock.l: unknown type 'zookeeper'"));
    let _ = std::fs::remove_dir_all(dir);
}
