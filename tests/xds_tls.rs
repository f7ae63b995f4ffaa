//! xDS over TLS: the `xds-grpc` cluster with an `UpstreamTlsContext` (istiod's port 15012 shape):
//! the control plane's certificate is verified against `trusted_ca` and the SAN matchers, layer8
//! presents its client certificate, and ALPN is h2. A control plane whose certificate does not
//! verify is never talked to; a TLS cluster without trust anchors is refused at startup.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::pki::Ca;
use common::xds::*;
use common::*;
use layer8_test_control_plane::ControlPlane;
use layer8_xds::client::types::{LISTENER, ROUTE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

/// The control plane's TLS: a certificate for `xds.test`, client certificates required.
fn server_tls(ca: &Ca) -> Arc<rustls::ServerConfig> {
    let leaf = ca.leaf(&["xds.test"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca"))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
        )
        .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// The ADS bootstrap with `xds-grpc` over TLS (`tls` is the UpstreamTlsContext).
fn tls_bootstrap(admin: u16, cp: std::net::SocketAddr, tls: Value) -> String {
    let mut v: Value =
        serde_json::from_str(&ads_bootstrap(admin, CpAddr::Tcp(cp), true)).expect("json");
    v["static_resources"]["clusters"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": tls
    });
    serde_json::to_string_pretty(&v).expect("json")
}

fn upstream_tls(dir: &Path, ca_file: &str, san: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "sni": "xds.test",
        "common_tls_context": {
            "tls_certificates": [{
                "certificate_chain": {"filename": dir.join("client.pem").display().to_string()},
                "private_key": {"filename": dir.join("client.key").display().to_string()}
            }],
            "validation_context": {
                "trusted_ca": {"filename": dir.join(ca_file).display().to_string()},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": san}}]
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_over_mutual_tls() {
    let dir = temp_dir("xds-tls");
    let ca = Ca::new("mesh");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("other-ca.pem"), Ca::new("other").pem()).expect("write");
    ca.leaf(&["spiffe://cluster.local/ns/default/sa/app"])
        .write(&dir, "client");
    let echo = echo_upstream("echo").await;
    let port = free_port();
    let cp = ControlPlane::new();
    let v1 = cp
        .set([
            rds_listener("tls_xds", port, "routes"),
            route_config("routes", &[("*", "echo")]),
            any(json!({
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "echo", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": echo.addr.port()}}}}]}]}
            })),
        ])
        .expect("resources");
    let server = cp
        .serve_tls(([127, 0, 0, 1], 0).into(), server_tls(&ca))
        .await
        .expect("serve");
    let addr = server.addr();

    // Verified both ways: the whole configuration arrives and serves.
    let admin = free_port();
    let b = tls_bootstrap(admin, addr, upstream_tls(&dir, "ca.pem", "xds.test"));
    let _proc =
        tokio::task::spawn_blocking(move || start_process(layer8_bin(), &b, "json", admin, &[]))
            .await
            .expect("start");
    for t in [LISTENER, ROUTE] {
        cp.wait_ack(t, &v1).await.expect("ACK over TLS");
    }
    let c = Clients::new();
    let mut status = 0;
    for _ in 0..100 {
        status = c.get(port, "a.test", "/").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "routes delivered over TLS serve");

    // A control plane whose certificate does not verify (another CA, or a SAN the matchers do
    // not accept) is never sent a request.
    for (ca_file, san) in [("other-ca.pem", "xds.test"), ("ca.pem", "istiod.other")] {
        let seen = cp.requests().len();
        let admin = free_port();
        let path = dir.join("bad.json");
        std::fs::write(
            &path,
            tls_bootstrap(admin, addr, upstream_tls(&dir, ca_file, san)),
        )
        .expect("write");
        // It never becomes ready (no configuration arrives), so start it without waiting.
        let mut child = Command::new(layer8_bin())
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (ready, connected) = tokio::task::spawn_blocking(move || {
            (
                blocking_get(admin, "/ready").map(|(s, _)| s),
                admin_stat(admin, "control_plane.connected_state"),
            )
        })
        .await
        .expect("admin");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(ready, Some(503), "{ca_file}/{san}: still initializing");
        assert_eq!(connected, "0", "{ca_file}/{san}: not connected");
        assert_eq!(
            cp.requests().len(),
            seen,
            "{ca_file}/{san}: no request reached the server"
        );
    }

    // Without trust anchors the bootstrap is refused, naming the field.
    let mut tls = upstream_tls(&dir, "ca.pem", "xds.test");
    tls["common_tls_context"]
        .as_object_mut()
        .expect("object")
        .remove("validation_context");
    let path = dir.join("no-ca.json");
    std::fs::write(&path, tls_bootstrap(free_port(), addr, tls)).expect("write");
    let err = validate_rejects(&path);
    assert!(
        err.contains("cluster 'xds-grpc'") && err.contains("validation_context"),
        "{err}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
