//! Transparent capture as in an Istio pod, inside a network namespace made for the test:
//! iptables REDIRECTs the app's outbound TCP to layer8's `virtualOutbound` listener
//! (`use_original_dst` + the original_dst listener filter), which hands the connection to the
//! listener bound (with `bind_to_port: false`) on the original destination, or, when there is
//! none, passes it through an ORIGINAL_DST cluster to where it was going. layer8 runs as uid
//! 65534 and its own traffic is excluded from capture, like istio-proxy's uid 1337.

mod common;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::*;

const BOOTSTRAP: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 15000 } }
static_resources:
  listeners:
  - name: virtualOutbound
    address: { socket_address: { address: 0.0.0.0, port_value: 15001 } }
    use_original_dst: true
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
  - name: 0.0.0.0_9002
    address: { socket_address: { address: 0.0.0.0, port_value: 9002 } }
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: outbound_9002
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response: { status: 200, body: { inline_string: "handled-by-9002-listener" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
"#;

const UPSTREAM: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"upstream-9001"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 9001), H).serve_forever()
"#;

#[test]
fn iptables_capture_original_dst_handoff_and_passthrough() {
    if Command::new("iptables").arg("--version").output().is_err() {
        panic!("iptables not installed: run `bash .ci/install-deps.sh`");
    }
    let dir = temp_dir("origdst");
    std::fs::write(dir.join("bootstrap.yaml"), BOOTSTRAP).expect("write");
    std::fs::write(dir.join("upstream.py"), UPSTREAM).expect("write");
    for f in ["bootstrap.yaml", "upstream.py"] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644));
    }
    let mut ns = Netns::new();
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "127.0.0.1",
        "--dport",
        "9001:9002",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        "65534",
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let py = dir.join("upstream.py");
    ns.spawn(
        &["python3", py.to_str().expect("path")],
        &dir.join("upstream.log"),
    );
    let cfg = dir.join("bootstrap.yaml");
    ns.spawn(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            layer8_bin(),
            "-c",
            cfg.to_str().expect("path"),
            "--concurrency",
            "1",
        ],
        &dir.join("layer8.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ns.curl("http://127.0.0.1:15000/ready").0 != "200" {
        let log = std::fs::read_to_string(dir.join("layer8.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "layer8 not ready in the namespace:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The app calls 127.0.0.1:9001: captured, no listener owns 9001, so it passes through the
    // ORIGINAL_DST cluster to the real destination.
    let mut got = ns.curl("http://127.0.0.1:9001/");
    for _ in 0..50 {
        if got.0 == "200" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        got = ns.curl("http://127.0.0.1:9001/");
    }
    assert_eq!(got, ("200".to_string(), "upstream-9001".to_string()));
    // 127.0.0.1:9002: captured and handed to the listener bound (virtually) on 0.0.0.0:9002.
    assert_eq!(
        ns.curl("http://127.0.0.1:9002/x"),
        ("200".to_string(), "handled-by-9002-listener".to_string())
    );
    let stats = ns
        .curl("http://127.0.0.1:15000/stats?filter=PassthroughCluster")
        .1;
    assert!(
        stats.contains("cluster.PassthroughCluster.upstream_cx_total: "),
        "{stats}"
    );
    assert!(
        !stats.contains("cluster.PassthroughCluster.upstream_cx_total: 0\n"),
        "{stats}"
    );
    assert!(ns
        .curl("http://127.0.0.1:15000/stats?filter=outbound_9002")
        .1
        .contains("http.outbound_9002.downstream_rq_total: 1\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
