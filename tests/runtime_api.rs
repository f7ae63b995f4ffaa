//! The runtime API with in-memory components, through a real gRPC client against a running
//! layer8: hello and lifecycle, state, locks, sequencers, configuration, and Layotto's error
//! codes. (Pub/sub, files, secrets, bindings, service invocation, the actuator: `runtime_io.rs`.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::runtime::{client, item, memory_config, start, FIRST_WRITE, LAST_WRITE};
use common::*;
use layer8::runtime::proto::rt;
use serde_json::json;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_and_lifecycle() {
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let any = prost_types::Any {
        type_url: "t".into(),
        value: b"payload".to_vec(),
    };
    let h = c
        .say_hello(rt::SayHelloRequest {
            service_name: "helloworld".into(),
            name: "layer8".into(),
            data: Some(any.clone()),
        })
        .await
        .expect("SayHello");
    // As grpc-go's server (Layotto's), no `date` header.
    assert!(h.metadata().get("date").is_none(), "{:?}", h.metadata());
    let h = h.into_inner();
    assert_eq!(h.hello, "greeting, layer8");
    assert_eq!(h.data, Some(any));
    let e = c
        .say_hello(rt::SayHelloRequest {
            service_name: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unknown, "no instance found")
    );

    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", r.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut lc = rt::lifecycle_client::LifecycleClient::new(ch);
    lc.apply_configuration(rt::DynamicConfiguration {
        component_config: Some(rt::ComponentConfig {
            kind: "hello".into(),
            name: "helloworld".into(),
            metadata: HashMap::from([("hello".into(), "bonjour".into())]),
        }),
    })
    .await
    .expect("ApplyConfiguration");
    let h = c
        .say_hello(rt::SayHelloRequest {
            service_name: "helloworld".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.hello, "bonjour");
    let e = lc
        .apply_configuration(rt::DynamicConfiguration {
            component_config: Some(rt::ComponentConfig::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_api() {
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let save = |items: Vec<rt::StateItem>| rt::SaveStateRequest {
        store_name: "state_demo".into(),
        states: items,
    };
    c.save_state(save(vec![
        item("k1", "v1", None, 0),
        item("k2", "v2", None, 0),
    ]))
    .await
    .expect("save");
    let get = |k: &str| rt::GetStateRequest {
        store_name: "state_demo".into(),
        key: k.into(),
        ..Default::default()
    };
    let g = c.get_state(get("k1")).await.unwrap().into_inner();
    assert_eq!((g.data.as_slice(), g.etag.as_str()), (&b"v1"[..], "1"));
    // A missing key is an empty response, not an error.
    let g = c.get_state(get("missing")).await.unwrap().into_inner();
    assert_eq!((g.data.len(), g.etag.as_str()), (0, ""));

    // Etags: a matching etag writes, a stale one is Aborted; last-write ignores etags.
    c.save_state(save(vec![item("k1", "v1b", Some("1"), 0)]))
        .await
        .expect("matching etag");
    let e = c
        .save_state(save(vec![item("k1", "v1c", Some("1"), FIRST_WRITE)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let e = c
        .save_state(save(vec![item("k1", "x", Some("not-a-number"), 0)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    c.save_state(save(vec![item("k1", "v1d", Some("1"), LAST_WRITE)]))
        .await
        .expect("last-write ignores the etag");
    let g = c.get_state(get("k1")).await.unwrap().into_inner();
    assert_eq!((g.data.as_slice(), g.etag.as_str()), (&b"v1d"[..], "3"));
    // First-write without an etag only creates.
    let e = c
        .save_state(save(vec![item("k2", "again", None, FIRST_WRITE)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    c.save_state(save(vec![item("fresh", "new", None, FIRST_WRITE)]))
        .await
        .expect("first write of a new key");

    // Bulk get keeps request order and reports missing keys empty.
    let b = c
        .get_bulk_state(rt::GetBulkStateRequest {
            store_name: "state_demo".into(),
            keys: vec!["k2".into(), "missing".into(), "k1".into()],
            parallelism: 2,
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(String, String, String)> = b
        .items
        .into_iter()
        .map(|i| (i.key, String::from_utf8(i.data).unwrap(), i.etag))
        .collect();
    assert_eq!(
        got,
        vec![
            ("k2".into(), "v2".into(), "1".into()),
            ("missing".into(), String::new(), String::new()),
            ("k1".into(), "v1d".into(), "3".into()),
        ]
    );

    // Transactions are all-or-nothing.
    let op = |t: &str, i: rt::StateItem| rt::TransactionalStateOperation {
        operation_type: t.into(),
        request: Some(i),
    };
    let e = c
        .execute_state_transaction(rt::ExecuteStateTransactionRequest {
            store_name: "state_demo".into(),
            operations: vec![
                op("upsert", item("t1", "a", None, 0)),
                op("delete", item("k2", "", Some("99"), 0)),
            ],
            metadata: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(c
        .get_state(get("t1"))
        .await
        .unwrap()
        .into_inner()
        .data
        .is_empty());
    c.execute_state_transaction(rt::ExecuteStateTransactionRequest {
        store_name: "state_demo".into(),
        operations: vec![
            op("upsert", item("t1", "a", None, 0)),
            op("delete", item("k2", "", Some("1"), 0)),
        ],
        metadata: HashMap::new(),
    })
    .await
    .expect("transaction");
    assert_eq!(
        c.get_state(get("t1")).await.unwrap().into_inner().data,
        b"a"
    );
    assert!(c
        .get_state(get("k2"))
        .await
        .unwrap()
        .into_inner()
        .data
        .is_empty());
    let e = c
        .execute_state_transaction(rt::ExecuteStateTransactionRequest {
            store_name: "state_demo".into(),
            operations: vec![op("merge", item("t1", "a", None, 0))],
            metadata: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    // Delete with a stale etag is Aborted; DeleteBulk removes.
    let e = c
        .delete_state(rt::DeleteStateRequest {
            store_name: "state_demo".into(),
            key: "t1".into(),
            etag: Some(rt::Etag { value: "7".into() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    c.delete_bulk_state(rt::DeleteBulkStateRequest {
        store_name: "state_demo".into(),
        states: vec![item("t1", "", None, 0), item("fresh", "", None, 0)],
    })
    .await
    .expect("delete bulk");
    assert!(c
        .get_state(get("t1"))
        .await
        .unwrap()
        .into_inner()
        .data
        .is_empty());

    // Layotto's error codes.
    let e = c
        .get_state(rt::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "state store nope is not found")
    );
    let e = c.get_state(get("a||b")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // The runtime's calls are in the proxy's stats (other tests in this binary add to them).
    assert!(stat("runtime.rpc.GetState.rq_total") >= 9);
    assert!(stat("runtime.rpc.GetState.rq_error") >= 2);
    assert!(stat("runtime.rpc.ExecuteStateTransaction.rq_error") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_apis_are_failed_precondition() {
    let r = start(
        json!({"hellos": {"h": {"type": "helloworld"}}}),
        vec![],
        vec![],
    )
    .await;
    let mut c = client(r.grpc).await;
    let e = c
        .get_state(rt::GetStateRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "state store is not configured")
    );
    let e = c
        .try_lock(rt::TryLockRequest {
            store_name: "l".into(),
            resource_id: "r".into(),
            lock_owner: "o".into(),
            expire: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .publish_event(rt::PublishEventRequest {
            pubsub_name: "p".into(),
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .get_next_id(rt::GetNextIdRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_api() {
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let try_lock = |owner: &str, expire: i32| rt::TryLockRequest {
        store_name: "lock_demo".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
        expire,
    };
    let unlock = |owner: &str| rt::UnlockRequest {
        store_name: "lock_demo".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
    };
    use rt::unlock_response::Status as U;
    assert!(
        c.try_lock(try_lock("a", 10))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    assert!(
        !c.try_lock(try_lock("b", 10))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    assert!(
        !c.try_lock(try_lock("a", 10))
            .await
            .unwrap()
            .into_inner()
            .success,
        "not reentrant"
    );
    assert_eq!(
        c.unlock(unlock("b")).await.unwrap().into_inner().status(),
        U::LockBelongToOthers
    );
    assert_eq!(
        c.unlock(unlock("a")).await.unwrap().into_inner().status(),
        U::Success
    );
    assert_eq!(
        c.unlock(unlock("a")).await.unwrap().into_inner().status(),
        U::LockUnexist
    );

    // Expiry frees the lock.
    assert!(
        c.try_lock(try_lock("a", 1))
            .await
            .unwrap()
            .into_inner()
            .success
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        c.try_lock(try_lock("b", 2))
            .await
            .unwrap()
            .into_inner()
            .success
    );

    // KeepAlive extends it: b renews for 3 s at t=1 s, so at t=2.5 s a is still refused.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ka = |owner: &str, expire: i32| rt::LockKeepAliveRequest {
        store_name: "lock_demo".into(),
        resource_id: "res".into(),
        lock_owner: owner.into(),
        expire,
    };
    use rt::lock_keep_alive_response::Status as K;
    assert_eq!(
        c.lock_keep_alive(ka("a", 3))
            .await
            .unwrap()
            .into_inner()
            .status(),
        K::LockBelongToOthers
    );
    assert_eq!(
        c.lock_keep_alive(ka("b", 3))
            .await
            .unwrap()
            .into_inner()
            .status(),
        K::Success
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !c.try_lock(try_lock("a", 1))
            .await
            .unwrap()
            .into_inner()
            .success,
        "kept alive"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        c.try_lock(try_lock("a", 1))
            .await
            .unwrap()
            .into_inner()
            .success,
        "expired after the keep-alive"
    );
    assert_eq!(
        c.lock_keep_alive(ka("nobody", 3))
            .await
            .unwrap()
            .into_inner()
            .status(),
        K::LockBelongToOthers
    );

    let e = c.try_lock(try_lock("a", 0)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "Expire is not positive in lock store lock_demo"
        )
    );
    let mut req = try_lock("a", 1);
    req.resource_id.clear();
    assert_eq!(
        c.try_lock(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut req = try_lock("a", 1);
    req.store_name = "other".into();
    assert_eq!(
        c.try_lock(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequencer_api() {
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let next = |key: &str, strong: bool| rt::GetNextIdRequest {
        store_name: "sequencer_demo".into(),
        key: key.into(),
        options: Some(rt::SequencerOptions {
            increment: if strong { 1 } else { 0 },
        }),
        metadata: HashMap::new(),
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            c.get_next_id(next("strong", true))
                .await
                .unwrap()
                .into_inner()
                .next_id,
        );
    }
    assert_eq!(ids, vec![1, 2, 3]);
    let mut weak = Vec::new();
    for _ in 0..45 {
        weak.push(
            c.get_next_id(next("weak", false))
                .await
                .unwrap()
                .into_inner()
                .next_id,
        );
    }
    assert_eq!(
        weak,
        (1..=45).collect::<Vec<i64>>(),
        "one process hands out its segments in order"
    );
    // biggerThan: ids start above the floor.
    assert_eq!(
        c.get_next_id(next("floored", true))
            .await
            .unwrap()
            .into_inner()
            .next_id,
        101
    );
    let e = c.get_next_id(next("", true)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_api() {
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let cfg_item = |k: &str, v: &str| rt::ConfigurationItem {
        key: k.into(),
        content: v.into(),
        group: "g".into(),
        label: "prod".into(),
        tags: HashMap::from([("owner".into(), "team".into())]),
        metadata: HashMap::new(),
    };
    c.save_configuration(rt::SaveConfigurationRequest {
        store_name: "config_demo".into(),
        app_id: String::new(),
        items: vec![cfg_item("a", "1"), cfg_item("b", "2")],
        metadata: HashMap::new(),
    })
    .await
    .expect("save");
    let got = c
        .get_configuration(rt::GetConfigurationRequest {
            store_name: "config_demo".into(),
            group: "g".into(),
            label: "prod".into(),
            keys: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(got, vec![cfg_item("a", "1")]);

    // Subscribe, then change and delete: both arrive on the stream.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(rt::SubscribeConfigurationRequest {
        store_name: "config_demo".into(),
        group: "g".into(),
        label: "prod".into(),
        keys: vec!["a".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = c
        .subscribe_configuration(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.save_configuration(rt::SaveConfigurationRequest {
        store_name: "config_demo".into(),
        items: vec![cfg_item("b", "ignored"), cfg_item("a", "changed")],
        ..Default::default()
    })
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("change notification")
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.store_name.as_str(), m.app_id.as_str()),
        ("config_demo", "app1")
    );
    assert_eq!(m.items, vec![cfg_item("a", "changed")]);
    c.delete_configuration(rt::DeleteConfigurationRequest {
        store_name: "config_demo".into(),
        group: "g".into(),
        label: "prod".into(),
        keys: vec!["a".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("delete notification")
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.items[0].key.as_str(), m.items[0].content.as_str()),
        ("a", "")
    );
    drop(tx);
    let e = c
        .get_configuration(rt::GetConfigurationRequest {
            store_name: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}
