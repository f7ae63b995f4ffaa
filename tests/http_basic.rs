//! HTTP/1.1, h2c and routing basics through layer8 over real sockets.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_and_h2c_proxy_to_echo_upstream() {
    let up = echo_upstream("a").await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: basic_a }"#;
    let yaml = http_bootstrap(
        admin,
        listen,
        vhosts,
        &static_cluster("basic_a", &[up.addr], ""),
        "",
    );
    let _l8 = start_in_process(&yaml).await;
    let c = Clients::new();
    let r = c
        .send(
            false,
            listen,
            "POST",
            "example.com",
            "/x?y=1",
            &[("x-test", "1")],
            "hello",
        )
        .await;
    assert_eq!(r.status, 200);
    let e = r.echo();
    assert_eq!(
        (
            e.upstream.as_str(),
            e.method.as_str(),
            e.path.as_str(),
            e.body.as_str()
        ),
        ("a", "POST", "/x?y=1", "hello")
    );
    assert_eq!(e.headers["host"], "example.com");
    assert_eq!(e.headers["x-test"], "1");
    assert_eq!(e.headers["x-forwarded-proto"], "http");
    assert_eq!(e.headers["x-request-id"].len(), 36);
    assert_eq!(r.header("server"), Some("envoy"));
    assert!(r.header("x-envoy-upstream-service-time").is_some());

    let r = c
        .send(true, listen, "GET", "example.com", "/h2", &[], "")
        .await;
    assert_eq!(r.status, 200);
    let e = r.echo();
    assert_eq!(
        (e.path.as_str(), e.headers["host"].as_str()),
        ("/h2", "example.com")
    );
}
