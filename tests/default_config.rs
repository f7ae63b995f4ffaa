//! The README quickstart: `layer8` with no arguments serves its embedded default (admin on
//! 15000, demo listener on 10000 proxying to a local app on 8080). Run in a network namespace of
//! its own so the fixed ports cannot collide with anything on the machine.

mod common;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::*;

#[test]
fn embedded_default_serves_the_quickstart() {
    let dir = temp_dir("default");
    std::fs::write(dir.join("index.html"), "hello from the local app\n").expect("write");
    let mut ns = Netns::new();
    ns.spawn(
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "127.0.0.1",
            "--directory",
            dir.to_str().expect("path"),
        ],
        &dir.join("app.log"),
    );
    ns.spawn(&[layer8_bin()], &dir.join("layer8.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while ns.curl("http://127.0.0.1:15000/ready") != ("200".to_string(), "LIVE\n".to_string()) {
        let log = std::fs::read_to_string(dir.join("layer8.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "not ready:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        ns.curl("http://127.0.0.1:10000/layer8"),
        ("200".to_string(), "layer8 is running\n".to_string())
    );
    let mut got = ns.curl("http://127.0.0.1:10000/index.html");
    for _ in 0..50 {
        if got.0 == "200" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        got = ns.curl("http://127.0.0.1:10000/index.html");
    }
    assert_eq!(
        got,
        ("200".to_string(), "hello from the local app\n".to_string())
    );
    let stats = ns
        .curl("http://127.0.0.1:15000/stats?filter=cluster.local_app.upstream_rq_200")
        .1;
    assert_eq!(stats, "cluster.local_app.upstream_rq_200: 1\n");
    let log = std::fs::read_to_string(dir.join("layer8.log")).unwrap_or_default();
    assert!(
        log.contains("serving the embedded default configuration"),
        "{log}"
    );
    // The runtime API on 34904 with Layotto's demo component names, and the actuator on 34999.
    let (code, body) = ns.curl("http://127.0.0.1:34999/actuator/health/readiness");
    assert_eq!(code, "200", "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("readiness JSON");
    assert_eq!(health["status"], "UP");
    for c in [
        "state.state_demo",
        "lock.lock_demo",
        "pub_subs.pub_subs_demo",
        "sequencer.sequencer_demo",
        "config_store.config_demo",
    ] {
        assert_eq!(health["components"][c]["status"], "UP", "{c}: {body}");
    }
    // The README's call, with grpcurl (server reflection: no .proto files needed).
    let grpcurl = std::path::Path::new(&envoy_bin()).with_file_name("grpcurl");
    let hello = ns.exec(&[
        grpcurl.to_str().expect("path"),
        "-plaintext",
        "-d",
        r#"{"service_name":"helloworld","name":"layer8"}"#,
        "127.0.0.1:34904",
        "spec.proto.runtime.v1.Runtime/SayHello",
    ]);
    let hello: serde_json::Value = serde_json::from_str(&hello).expect("SayHello JSON");
    assert_eq!(hello["hello"], "greeting, layer8");
    let _ = std::fs::remove_dir_all(&dir);
}
