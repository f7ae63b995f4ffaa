//! The runtime API with in-memory components, through a real gRPC client against a running
//! layer8: pub/sub (app callback and SubscribeTopicEvents), files, secrets, bindings, service
//! invocation through a proxy listener, the actuator and a Unix-socket listener.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::runtime::{actuator, client, item, memory_config, runtime_listener, start};
use common::*;
use layer8::runtime::proto::rt;
use serde_json::json;
use tonic::Code;

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

    // A client that goes away mid-upload leaves neither the file nor a partial one behind.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(rt::PutFileRequest {
        store_name: "file_demo".into(),
        name: "dir/cancelled.bin".into(),
        data: vec![7u8; 1024],
        metadata: HashMap::new(),
    })
    .await
    .unwrap();
    let mut c2 = client(r.grpc).await;
    let upload = tokio::spawn(async move {
        let _ = c2
            .put_file(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let part_exists = || {
        std::fs::read_dir(root.join("dir"))
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
    };
    assert!(part_exists(), "the upload is in progress");
    // The client goes away (its call is dropped: the stream is reset) while the request stream
    // is still open. Ending the stream first would be a complete upload, not a cancelled one.
    upload.abort();
    let _ = upload.await;
    common::runtime::eventually(5, "the partial upload removed", || !part_exists()).await;
    drop(tx);
    assert!(!root.join("dir/cancelled.bin").exists());
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
    // `rpc_request_timeout` (ms) bounds the whole exchange.
    let mut slow = call("orders");
    slow.get_mut().message.as_mut().unwrap().method = "delay/3000".into();
    slow.metadata_mut()
        .insert("rpc_request_timeout", "200".parse().unwrap());
    let started = std::time::Instant::now();
    let e = c.invoke_service(slow).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
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

/// A DROPped event of a SubscribeTopicEvents subscription with a dead-letter topic is published
/// there; a client that goes away gets no more events, and the next subscriber gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_topic_events_dead_letter() {
    use rt::subscribe_topic_events_request::SubscribeTopicEventsRequestType as Q;
    use rt::subscribe_topic_events_response::SubscribeTopicEventsResponseType as R;
    let r = start(memory_config(json!({})), vec![], vec![]).await;
    let mut c = client(r.grpc).await;
    let open = |topic: &str, dead_letter: Option<&str>| rt::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(Q::InitialRequest(
            rt::SubscribeTopicEventsRequestInitial {
                pubsub_name: "pub_subs_demo".into(),
                topic: topic.into(),
                metadata: HashMap::new(),
                dead_letter_topic: dead_letter.map(str::to_string),
            },
        )),
    };
    // The dead-letter topic's subscriber.
    let (dlq_tx, dlq_rx) = tokio::sync::mpsc::channel(4);
    dlq_tx.send(open("dlq", None)).await.unwrap();
    let mut dlq = c
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(dlq_rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        dlq.message()
            .await
            .unwrap()
            .unwrap()
            .subscribe_topic_events_response_type,
        Some(R::InitialResponse(_))
    ));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(open("work", Some("dlq"))).await.unwrap();
    let mut s = c
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        s.message()
            .await
            .unwrap()
            .unwrap()
            .subscribe_topic_events_response_type,
        Some(R::InitialResponse(_))
    ));
    c.publish_event(rt::PublishEventRequest {
        pubsub_name: "pub_subs_demo".into(),
        topic: "work".into(),
        data: b"poison".to_vec(),
        data_content_type: "text/plain".into(),
        metadata: HashMap::new(),
    })
    .await
    .unwrap();
    let Some(R::EventMessage(ev)) = s
        .message()
        .await
        .unwrap()
        .unwrap()
        .subscribe_topic_events_response_type
    else {
        panic!("expected the event");
    };
    tx.send(rt::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(Q::EventProcessed(
            rt::SubscribeTopicEventsRequestProcessed {
                id: ev.id,
                status: Some(rt::TopicEventResponse { status: 2 }),
            },
        )),
    })
    .await
    .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), dlq.message())
        .await
        .expect("dead-lettered event")
        .unwrap()
        .unwrap();
    let Some(R::EventMessage(dead)) = m.subscribe_topic_events_response_type else {
        panic!("expected an event on the dead-letter topic");
    };
    assert_eq!(dead.data, b"poison");
    assert_eq!(dead.topic, "dlq");
}
