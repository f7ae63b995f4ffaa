//! gRPC (a real tonic service: unary and server streaming, status in trailers) and websocket
//! upgrades through layer8.

mod common;
use std::net::SocketAddr;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn h2_cluster(name: &str, addr: SocketAddr) -> String {
    static_cluster(
        name,
        &[addr],
        r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
"#,
    )
}

/// Serve a tonic service on a free loopback port.
fn serve_grpc<S>(service: S) -> SocketAddr
where
    S: tower::Service<
            http::Request<tonic::body::BoxBody>,
            Response = http::Response<tonic::body::BoxBody>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    let l = tokio::net::TcpListener::from_std(l).expect("listener");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

/// Start layer8 with one gRPC route (`route`: the route action, YAML at 16 spaces) to an
/// HTTP/2 cluster `cluster` at `addr`, and a health client through it.
async fn health_through_layer8(
    route: &str,
    cluster: &str,
    addr: SocketAddr,
) -> HealthClient<tonic::transport::Channel> {
    let (admin, listen) = (free_port(), free_port());
    let vhosts = format!(
        r#"            - name: grpc
              domains: ["*"]
              routes:
              - match: {{ prefix: "/grpc.health.v1.Health/", grpc: {{}} }}
                route:
{route}"#
    );
    std::mem::forget(
        start_in_process(&http_bootstrap(
            admin,
            listen,
            &vhosts,
            &h2_cluster(cluster, addr),
            "",
        ))
        .await,
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{listen}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect through layer8");
    HealthClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_with_trailers() {
    let (mut reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("layer8.Demo", tonic_health::ServingStatus::Serving)
        .await;
    let grpc_addr = serve_grpc(service);
    let route = "                  { cluster: grpc_up, timeout: 0s }";
    let mut client = health_through_layer8(route, "grpc_up", grpc_addr).await;
    let r = client
        .check(HealthCheckRequest {
            service: "layer8.Demo".into(),
        })
        .await
        .expect("unary");
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);

    // An error status travels in a trailers-only response.
    let err = client
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Server streaming: each status change arrives, in order.
    let mut stream = client
        .watch(HealthCheckRequest {
            service: "layer8.Demo".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("first").expect("some");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter
        .set_service_status("layer8.Demo", tonic_health::ServingStatus::NotServing)
        .await;
    let second = stream.message().await.expect("second").expect("some");
    assert_eq!(second.status, ServingStatus::NotServing as i32);
    reporter
        .set_service_status("layer8.Demo", tonic_health::ServingStatus::Serving)
        .await;
    let third = stream.message().await.expect("third").expect("some");
    assert_eq!(third.status, ServingStatus::Serving as i32);
    assert_eq!(stat("cluster.grpc_up.upstream_cx_total"), 1);
}

/// Read an HTTP/1 message head byte by byte (so no upgraded bytes are consumed), lower-cased.
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).await.ok()?;
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// An upstream that accepts `Upgrade: websocket` and then echoes raw bytes.
async fn upgrade_echo() -> SocketAddr {
    raw_upstream(|mut s| async move {
        let Some(text) = read_head(&mut s).await else {
            return;
        };
        if !text.contains("upgrade: websocket") {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n").await;
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let up = upgrade_echo().await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: ws
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: ws_up }"#;
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        vhosts,
        &static_cluster("ws_up", &[up], ""),
        "upgrade_configs: [ { upgrade_type: websocket } ]",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .expect("connect");
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.expect("write");
    let head = read_head(&mut s).await.expect("read head");
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"\x81\x05frame", b"bytes after upgrade"] {
        s.write_all(msg).await.expect("write frame");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.expect("echo");
        assert_eq!(got, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_not_configured_is_not_tunnelled() {
    let up = upgrade_echo().await;
    let (admin, listen) = (free_port(), free_port());
    let vhosts = r#"            - name: ws
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: ws_off }"#;
    let _l8 = start_in_process(&http_bootstrap(
        admin,
        listen,
        vhosts,
        &static_cluster("ws_off", &[up], ""),
        "",
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .expect("connect");
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    // As Envoy: 403, empty body, connection closed (checked against Envoy 1.40 by hand).
    assert!(buf.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{buf}");
    assert!(
        buf.to_ascii_lowercase().contains("connection: close\r\n"),
        "{buf}"
    );
    assert!(
        buf.ends_with("content-length: 0\r\n\r\n") || buf.contains("\r\ncontent-length: 0\r\n"),
        "{buf}"
    );
}

/// A health service that answers UNAVAILABLE until it has been asked `fail_first` times, and
/// NOT_FOUND for any service but `layer8.Demo` (so a retried request must arrive intact).
struct Flaky {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    fail_first: usize,
}

#[tonic::async_trait]
impl tonic_health::pb::health_server::Health for Flaky {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n <= self.fail_first {
            return Err(tonic::Status::unavailable("warming up"));
        }
        if req.into_inner().service != "layer8.Demo" {
            return Err(tonic::Status::not_found("no such service"));
        }
        Ok(tonic::Response::new(
            tonic_health::pb::HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            },
        ))
    }

    type WatchStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<
                    Item = Result<tonic_health::pb::HealthCheckResponse, tonic::Status>,
                > + Send,
        >,
    >;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_on_unavailable_resends_the_streamed_request() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let grpc_addr = serve_grpc(tonic_health::pb::health_server::HealthServer::new(Flaky {
        calls: calls.clone(),
        fail_first: 1,
    }));
    // Istio's default retry policy for a route; "unavailable" reads the grpc-status of a
    // trailers-only response.
    let route = r#"                  cluster: grpc_flaky
                  timeout: 0s
                  retry_policy:
                    retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
                    num_retries: 2
                    retry_host_predicate: [ { name: envoy.retry_host_predicates.previous_hosts } ]"#;
    let mut client = health_through_layer8(route, "grpc_flaky", grpc_addr).await;
    let r = client
        .check(HealthCheckRequest {
            service: "layer8.Demo".into(),
        })
        .await
        .expect("retried to success");
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A status the policy does not list is not retried.
    let err = client
        .check(HealthCheckRequest {
            service: "other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}
