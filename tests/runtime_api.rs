//! The runtime API with in-memory components, through a real gRPC client against a running
//! layer8: every API, Layotto's error codes, the app callback, the actuator, a Unix socket.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::runtime::{actuator, bootstrap, client, runtime_listener};
use common::*;
use layer8::runtime::proto::rt;
use serde_json::{json, Value};
use tonic::Code;

fn memory_config(extra: Value) -> Value {
    let mut c = json!({
        "hellos": {"helloworld": {"type": "helloworld", "hello": "greeting"}},
        "state": {"state_demo": {"type": "in-memory", "metadata": {}}},
        "lock": {"lock_demo": {"type": "in-memory", "metadata": {}}},
        "pub_subs": {"pub_subs_demo": {"type": "in-memory", "metadata": {"consumerID": "1", "redeliverInterval": "100ms"}}},
        "sequencer": {"sequencer_demo": {"type": "in-memory", "metadata": {}, "biggerThan": {"floored": 100}}},
        "config_store": {"config_demo": {"type": "in-memory", "metadata": {}}},
        "app": {"app_id": "app1", "grpc_callback_port": 0}
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

struct Rt {
    _l8: InProcess,
    grpc: u16,
    actuator: u16,
}

async fn start(config: Value, listeners: Vec<Value>, clusters: Vec<Value>) -> Rt {
    let (admin, grpc, act) = (free_port(), free_port(), free_port());
    let yaml = bootstrap(admin, grpc, act, config, listeners, clusters);
    let l8 = start_in_process(&yaml).await;
    Rt {
        _l8: l8,
        grpc,
        actuator: act,
    }
}

fn item(key: &str, value: &str, etag: Option<&str>, concurrency: i32) -> rt::StateItem {
    rt::StateItem {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        etag: etag.map(|e| rt::Etag { value: e.into() }),
        metadata: HashMap::new(),
        options: Some(rt::StateOptions {
            concurrency,
            consistency: 0,
        }),
    }
}

const FIRST_WRITE: i32 = rt::state_options::StateConcurrency::ConcurrencyFirstWrite as i32;
const LAST_WRITE: i32 = rt::state_options::StateConcurrency::ConcurrencyLastWrite as i32;

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
        .expect("SayHello")
        .into_inner();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_to_app_callback() {
    use common::runtime::{app, eventually};
    let app_port = free_port();
    let mut a = app::App::new(&[("pub_subs_demo", "orders")]);
    // Retry the first delivery of "retry-me"; drop "drop-me"; everything else succeeds.
    a.verdict = Arc::new(|ev, n| match (ev.data.as_slice(), n) {
        (b"\"retry-me\"", 1) => 1,
        (b"\"drop-me\"", _) => 2,
        _ => 0,
    });
    let _app = app::serve(a.clone(), app_port).await;
    let cfg = memory_config(json!({"app": {"app_id": "app1", "grpc_callback_port": app_port}}));
    let r = start(cfg, vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    // The subscription is made in the background once the app answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publish = |data: &str| rt::PublishEventRequest {
        pubsub_name: "pub_subs_demo".into(),
        topic: "orders".into(),
        data: data.as_bytes().to_vec(),
        data_content_type: "application/json".into(),
        metadata: HashMap::from([("k".into(), "v".into())]),
    };
    for i in 0..50 {
        c.publish_event(publish(&format!("{{\"n\":{i}}}")))
            .await
            .expect("publish");
    }
    c.publish_event(publish("\"retry-me\"")).await.unwrap();
    c.publish_event(publish("\"drop-me\"")).await.unwrap();
    eventually(10, "52 distinct events", || a.distinct() == 52).await;
    eventually(10, "the retried event twice", || {
        a.seen.lock().unwrap().get(&b"\"retry-me\""[..]) == Some(&2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = a.seen.lock().unwrap().clone();
    assert_eq!(seen[&b"\"drop-me\""[..]], 1, "DROP is never redelivered");
    for i in 0..50 {
        assert_eq!(
            seen[format!("{{\"n\":{i}}}").as_bytes()],
            1,
            "event {i} delivered once"
        );
    }
    let events = a.events.lock().unwrap().clone();
    // In publish order (the in-memory broker delivers one at a time).
    let first: Vec<Vec<u8>> = events.iter().take(50).map(|e| e.data.clone()).collect();
    let want: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    assert_eq!(first, want);
    let e = &events[0];
    assert_eq!(e.topic, "orders");
    assert_eq!(e.pubsub_name, "pub_subs_demo");
    assert_eq!(e.spec_version, "1.0");
    assert_eq!(e.r#type, "com.runtime.event.sent");
    assert_eq!(e.source, "runtime");
    assert_eq!(e.data_content_type, "application/json");
    assert_eq!(
        e.metadata.get("pubsubName").map(String::as_str),
        Some("pub_subs_demo")
    );
    assert_eq!(e.id.len(), 36, "a uuid id");

    let e = c
        .publish_event(rt::PublishEventRequest {
            pubsub_name: "nope".into(),
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .publish_event(rt::PublishEventRequest {
            pubsub_name: "pub_subs_demo".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_topic_events_stream() {
    use rt::subscribe_topic_events_request::SubscribeTopicEventsRequestType as Q;
    use rt::subscribe_topic_events_response::SubscribeTopicEventsResponseType as R;
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(rt::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(Q::InitialRequest(
            rt::SubscribeTopicEventsRequestInitial {
                pubsub_name: "pub_subs_demo".into(),
                topic: "stream".into(),
                metadata: HashMap::new(),
                dead_letter_topic: None,
            },
        )),
    })
    .await
    .unwrap();
    let mut s = c
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    assert!(matches!(
        first.subscribe_topic_events_response_type,
        Some(R::InitialResponse(_))
    ));
    for d in ["one", "two"] {
        c.publish_event(rt::PublishEventRequest {
            pubsub_name: "pub_subs_demo".into(),
            topic: "stream".into(),
            data: d.as_bytes().to_vec(),
            data_content_type: "text/plain".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    let mut retried = false;
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        let Some(R::EventMessage(ev)) = m.subscribe_topic_events_response_type else {
            panic!("expected an event");
        };
        got.push(String::from_utf8(ev.data.clone()).unwrap());
        // RETRY "one" the first time: it comes back.
        let status = if ev.data == b"one" && !retried {
            retried = true;
            1
        } else {
            0
        };
        tx.send(rt::SubscribeTopicEventsRequest {
            subscribe_topic_events_request_type: Some(Q::EventProcessed(
                rt::SubscribeTopicEventsRequestProcessed {
                    id: ev.id,
                    status: Some(rt::TopicEventResponse { status }),
                },
            )),
        })
        .await
        .unwrap();
    }
    got.sort();
    assert_eq!(got, vec!["one", "one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_api() {
    let root = temp_dir("files");
    let cfg = memory_config(
        json!({"file": {"file_demo": {"type": "local", "metadata": {"root": root.display().to_string()}}}}),
    );
    let r = start(cfg, vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<rt::PutFileRequest> = content
        .chunks(64 * 1024)
        .enumerate()
        .map(|(i, d)| rt::PutFileRequest {
            store_name: if i == 0 {
                "file_demo".into()
            } else {
                String::new()
            },
            name: if i == 0 {
                "dir/a.bin".into()
            } else {
                String::new()
            },
            data: d.to_vec(),
            metadata: HashMap::new(),
        })
        .collect();
    c.put_file(tokio_stream::iter(chunks))
        .await
        .expect("PutFile");
    assert_eq!(std::fs::read(root.join("dir/a.bin")).unwrap(), content);
    let mut s = c
        .get_file(rt::GetFileRequest {
            store_name: "file_demo".into(),
            name: "dir/a.bin".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        sizes.push(m.data.len());
        got.extend(m.data);
    }
    assert_eq!(got, content);
    assert_eq!(sizes, vec![102_400, 102_400, 95_200]);

    c.put_file(tokio_stream::iter(vec![rt::PutFileRequest {
        store_name: "file_demo".into(),
        name: "dir/b.txt".into(),
        data: b"bee".to_vec(),
        metadata: HashMap::new(),
    }]))
    .await
    .unwrap();
    let req = |name: &str| rt::FileRequest {
        store_name: "file_demo".into(),
        name: name.into(),
        metadata: HashMap::new(),
    };
    let l = c
        .list_file(rt::ListFileRequest {
            request: Some(req("dir")),
            page_size: 1,
            marker: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.files.len(), 1);
    assert_eq!(
        (l.files[0].file_name.as_str(), l.files[0].size),
        ("dir/a.bin", 300_000)
    );
    assert!(l.is_truncated);
    let l2 = c
        .list_file(rt::ListFileRequest {
            request: Some(req("dir")),
            page_size: 10,
            marker: l.marker,
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = l2.files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(names, vec!["dir/b.txt"]);
    assert!(!l2.is_truncated);
    let m = c
        .get_file_meta(rt::GetFileMetaRequest {
            request: Some(req("dir/b.txt")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.size, 3);
    assert!(
        m.last_modified.ends_with('Z') && m.last_modified.len() == 20,
        "{}",
        m.last_modified
    );
    c.del_file(rt::DelFileRequest {
        request: Some(req("dir/b.txt")),
    })
    .await
    .unwrap();
    let e = c
        .get_file_meta(rt::GetFileMetaRequest {
            request: Some(req("dir/b.txt")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .get_file(rt::GetFileRequest {
            store_name: "file_demo".into(),
            name: "../escape".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_bindings() {
    let dir = temp_dir("secrets");
    let file = dir.join("secrets.json");
    std::fs::write(
        &file,
        r#"{"db": {"user": "admin", "password": "s3cret"}, "token": "t"}"#,
    )
    .unwrap();
    std::env::set_var("LAYER8_TEST_SECRET", "from-env");
    let up = echo_upstream("hook").await;
    let cfg = memory_config(json!({
        "secret_store": {
            "secret_demo": {"type": "local.env", "metadata": {}},
            "secret_file": {"type": "local.file", "metadata": {"secretsFile": file.display().to_string()}}
        },
        "bindings": {"hook": {"type": "http", "metadata": {"url": format!("http://{}/base", up.addr)}}}
    }));
    let r = start(cfg, vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let s = c
        .get_secret(rt::GetSecretRequest {
            store_name: "secret_demo".into(),
            key: "LAYER8_TEST_SECRET".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.data,
        HashMap::from([("LAYER8_TEST_SECRET".into(), "from-env".into())])
    );
    let s = c
        .get_secret(rt::GetSecretRequest {
            store_name: "secret_file".into(),
            key: "db:password".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.data,
        HashMap::from([("db:password".into(), "s3cret".into())])
    );
    let b = c
        .get_bulk_secret(rt::GetBulkSecretRequest {
            store_name: "secret_file".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut keys: Vec<_> = b.data.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["db:password", "db:user", "token"]);
    assert_eq!(b.data["db:user"].secrets["db:user"], "admin");
    let e = c
        .get_secret(rt::GetSecretRequest {
            store_name: "secret_file".into(),
            key: "nope".into(),
            metadata: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let resp = c
        .invoke_binding(rt::InvokeBindingRequest {
            name: "hook".into(),
            data: b"{\"x\":1}".to_vec(),
            metadata: HashMap::from([
                ("path".into(), "orders/7".into()),
                ("x-trace".into(), "abc".into()),
            ]),
            operation: "create".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.metadata["statusCode"], "200");
    let echo: Echo = serde_json::from_slice(&resp.data).unwrap();
    assert_eq!(
        (echo.method.as_str(), echo.path.as_str(), echo.body.as_str()),
        ("POST", "/base/orders/7", "{\"x\":1}")
    );
    assert_eq!(echo.headers["x-trace"], "abc");
    let e = c
        .invoke_binding(rt::InvokeBindingRequest {
            name: "hook".into(),
            operation: "explode".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let _ = std::fs::remove_dir_all(dir);
}

/// InvokeService leaves through a proxy listener: its route (by the `id` header) picks the
/// cluster, so a 503 from the upstream is Unavailable and the echo proves the request shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_service_through_the_proxy() {
    let echo = echo_upstream("orders-v1").await;
    let down = status_upstream("broken", 503).await;
    let egress = free_port();
    let listener = json!({
        "name": "egress_runtime_http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": egress}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "egress",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/", "headers": [{"name": "id", "string_match": {"exact": "orders"}}]}, "route": {"cluster": "orders"}},
                {"match": {"prefix": "/", "headers": [{"name": "id", "string_match": {"exact": "broken"}}]}, "route": {"cluster": "broken"}}
            ]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
        }}]}]
    });
    let cluster = |name: &str, addr: std::net::SocketAddr| json!({"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": addr.port()}}}}]}]}});
    let cfg = memory_config(
        json!({"rpcs": {"mosn": {"config": {"channel": [{"size": 16, "protocol": "http", "listener": "egress_runtime_http"}]}}}}),
    );
    let r = start(
        cfg,
        vec![listener],
        vec![cluster("orders", echo.addr), cluster("broken", down.addr)],
    )
    .await;
    let mut c = client(r.grpc).await;
    let call = |id: &str| {
        let mut req = tonic::Request::new(rt::InvokeServiceRequest {
            id: id.into(),
            message: Some(rt::CommonInvokeRequest {
                method: "api/orders".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"{\"n\":1}".to_vec(),
                }),
                content_type: "application/json".into(),
                http_extension: Some(rt::HttpExtension {
                    verb: rt::http_extension::Verb::Post as i32,
                    querystring: "a=1&b=2".into(),
                }),
            }),
        });
        req.metadata_mut()
            .insert("x-caller", "tests".parse().unwrap());
        req
    };
    let resp = c
        .invoke_service(call("orders"))
        .await
        .expect("InvokeService");
    assert_eq!(resp.metadata().get("x-upstream").unwrap(), "orders-v1");
    assert!(resp.metadata().get("content-length").is_none());
    let resp = resp.into_inner();
    assert_eq!(resp.content_type, "application/json");
    let echo: Echo = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    assert_eq!(
        (echo.method.as_str(), echo.path.as_str(), echo.body.as_str()),
        ("POST", "/api/orders?a=1&b=2", "{\"n\":1}")
    );
    assert_eq!(echo.headers["id"], "orders");
    assert_eq!(echo.headers["x-caller"], "tests");
    assert_eq!(echo.headers["content-type"], "application/json");
    let e = c.invoke_service(call("broken")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message().starts_with("http response code 503"),
        "{}",
        e.message()
    );
    // The proxy counted both requests on its own stats.
    assert_eq!(stat("cluster.orders.upstream_rq_200"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuator_and_unix_socket() {
    let sock = temp_dir("uds").join("runtime.sock");
    let cfg = memory_config(json!({}));
    let uds = runtime_listener(
        "runtime_uds",
        json!({"pipe": {"path": sock.display().to_string()}}),
        cfg.clone(),
    );
    let r = start(cfg, vec![uds], vec![]).await;
    let (code, body) = actuator(r.actuator, "/actuator/health/readiness").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "UP");
    assert_eq!(body["components"]["runtime_startup"]["status"], "UP");
    assert_eq!(body["components"]["state.state_demo"]["status"], "UP");
    let (code, body) = actuator(r.actuator, "/actuator/health/liveness").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("UP")));
    let (code, body) = actuator(r.actuator, "/actuator/info").await;
    assert_eq!((code, body["app"]["name"].as_str()), (200, Some("layer8")));
    assert_eq!(actuator(r.actuator, "/actuator/nope").await.0, 404);

    // The Unix-socket listener serves the same runtime: a write over TCP reads back over UDS.
    let mut tcp = client(r.grpc).await;
    tcp.save_state(rt::SaveStateRequest {
        store_name: "state_demo".into(),
        states: vec![item("shared", "yes", None, 0)],
    })
    .await
    .unwrap();
    let path = sock.clone();
    let ch = tonic::transport::Endpoint::from_static("http://uds")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect over the Unix socket");
    let mut unix = rt::runtime_client::RuntimeClient::new(ch);
    let g = unix
        .get_state(rt::GetStateRequest {
            store_name: "state_demo".into(),
            key: "shared".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.data, b"yes");
}
