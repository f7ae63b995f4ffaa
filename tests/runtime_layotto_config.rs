//! Layotto's own config file (MOSN `servers` JSON) as layer8's bootstrap: the binary started on
//! it serves the runtime and the actuator, called with a real gRPC client and HTTP client.

mod common;

use std::time::Duration;

use common::runtime::{actuator, client, item};
use common::*;
use layer8::runtime::proto::rt;
use serde_json::json;

/// Layotto's own config file (`configs/config_standalone.json` shape: MOSN `servers` with a
/// `grpc` listener and the actuator) starts layer8 as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layotto_config_file_runs_unchanged() {
    let (grpc, act) = (free_port(), free_port());
    let dir = temp_dir("layotto");
    let cfg = json!({
        "servers": [{
            "default_log_path": "stdout",
            "default_log_level": "DEBUG",
            "routers": [{"router_config_name": "actuator_dont_need_router"}],
            "listeners": [
                {"name": "grpc", "address": format!("127.0.0.1:{grpc}"), "bind_port": true,
                 "filter_chains": [{"filters": [{"type": "grpc", "config": {"server_name": "runtime", "grpc_config": {
                    "hellos": {"helloworld": {"type": "helloworld", "hello": "greeting"}},
                    "state": {"state_demo": {"type": "in-memory", "metadata": null}},
                    "lock": {"lock_demo": {"type": "in-memory", "metadata": null}},
                    "pub_subs": {"pub_subs_demo": {"type": "in-memory", "metadata": {"consumerID": "1"}}},
                    "sequencer": {"sequencer_demo": {"type": "in-memory", "metadata": {}}},
                    "secret_store": {"secret_demo1": {"type": "local.env", "metadata": {}}},
                    "app": {"app_id": "app1", "grpc_callback_port": 0}
                 }}}]}]},
                {"name": "actuator", "address": format!("127.0.0.1:{act}"), "bind_port": true,
                 "filter_chains": [{"filters": [{"type": "proxy", "config": {
                    "downstream_protocol": "Http1", "upstream_protocol": "Http1",
                    "router_config_name": "actuator_dont_need_router"}}]}],
                 "stream_filters": [{"type": "actuator_filter"}]}
            ]
        }],
        "metrics": {"sinks": [{"type": "prometheus", "config": {"port": 34903}}]}
    });
    let path = dir.join("config_standalone.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let mut child = std::process::Command::new(layer8_bin())
        .arg("-c")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("layer8");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "runtime not listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = client(grpc).await;
    let h = c
        .say_hello(rt::SayHelloRequest {
            service_name: "helloworld".into(),
            name: "layotto".into(),
            data: None,
        })
        .await
        .expect("SayHello")
        .into_inner();
    assert_eq!(h.hello, "greeting, layotto");
    c.save_state(rt::SaveStateRequest {
        store_name: "state_demo".into(),
        states: vec![item("k", "v", None, 0)],
    })
    .await
    .unwrap();
    let (code, body) = actuator(act, "/actuator/health/readiness").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("UP")), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
