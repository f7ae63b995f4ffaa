//! Downstream TLS termination: a filter chain's `DownstreamTlsContext` with inline certificates
//! (curl as the client: HTTP/1.1 and HTTP/2 by ALPN, x-forwarded-proto), mutual TLS (trusted CA,
//! required client certificate, SAN matchers), and certificates delivered over SDS: the listener
//! warms until they come, rotation takes effect for new handshakes without draining open
//! connections, and a secret that cannot be used is NACKed while the last good one serves.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::pki::{Ca, Leaf};
use common::xds::*;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use layer8_test_control_plane::ControlPlane;
use layer8_xds::client::types::{LISTENER, SECRET};
use serde_json::json;

/// curl over TLS: (exit code, HTTP status, HTTP version, body).
fn curl_tls(port: u16, path: &str, args: &[&str]) -> (i32, String, String, String) {
    let url = format!("https://server.test:{port}{path}");
    let resolve = format!("server.test:{port}:127.0.0.1");
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "--resolve", &resolve])
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version}", &url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, version) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        out.status.code().unwrap_or(-1),
        code.to_string(),
        version.to_string(),
        body.to_string(),
    )
}

async fn curl<A: AsRef<str>>(port: u16, path: &str, args: &[A]) -> (i32, String, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_tls(port, &path, &a)
    })
    .await
    .expect("curl task")
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A listener on `port` whose one chain terminates TLS with `tls` (the DownstreamTlsContext
/// body, YAML) and routes everything to the echo cluster.
fn tls_bootstrap(admin: u16, port: u16, tls: &str, echo: std::net::SocketAddr) -> String {
    tls_bootstrap_with(admin, port, tls, echo, "")
}

struct Pki {
    dir: PathBuf,
    ca: Ca,
    ca_pem: PathBuf,
    server: (PathBuf, PathBuf),
}

fn pki(tag: &str) -> Pki {
    let dir = temp_dir(tag);
    let ca = Ca::new("cluster.local");
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).expect("write ca");
    let server = ca
        .leaf(&[
            "server.test",
            "127.0.0.1",
            "spiffe://cluster.local/ns/default/sa/server",
        ])
        .write(&dir, "server");
    Pki {
        dir,
        ca,
        ca_pem,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_with_inline_certificates() {
    let pki = pki("tls-inline");
    let echo = echo_upstream("echo").await;
    let (admin, port) = (free_port(), free_port());
    let tls = format!(
        "          common_tls_context:\n            alpn_protocols: [h2, http/1.1]\n            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n",
        p(&pki.server.0),
        p(&pki.server.1)
    );
    let _s = start_in_process(&tls_bootstrap(admin, port, &tls, echo.addr)).await;
    let ca = p(&pki.ca_pem);

    // ALPN picks HTTP/2; the upstream sees x-forwarded-proto: https.
    let (rc, code, version, body) = curl(port, "/a", &["--cacert", &ca]).await;
    assert_eq!(
        (rc, code.as_str(), version.as_str()),
        (0, "200", "2"),
        "{body}"
    );
    let echo: Echo = serde_json::from_str(&body).expect("echo");
    assert_eq!(echo.path, "/a");
    assert_eq!(
        echo.headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    // Without a client certificate nobody vouches for an x-forwarded-client-cert: dropped.
    let (rc, code, version, body) = curl(
        port,
        "/b",
        &[
            "--cacert",
            &ca,
            "--http1.1",
            "-H",
            "x-forwarded-client-cert: By=spoofed",
        ],
    )
    .await;
    assert_eq!((rc, code.as_str(), version.as_str()), (0, "200", "1.1"));
    let echo: Echo = serde_json::from_str(&body).expect("echo");
    assert_eq!(echo.headers.get("x-forwarded-client-cert"), None);
    // A client offering no protocol we speak still gets a TLS session (no ALPN), as in Envoy.
    let (rc, code, version, _) = curl(port, "/c", &["--cacert", &ca, "--no-alpn"]).await;
    assert_eq!((rc, code.as_str(), version.as_str()), (0, "200", "1.1"));
    // The certificate is checked by the client: one that does not trust the CA refuses.
    let (rc, _, _, _) = curl::<&str>(port, "/", &[]).await;
    assert_eq!(rc, 60, "curl: untrusted server certificate");
    // Plaintext on the TLS port is a failed handshake; the listener keeps serving.
    let (code, _) = tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .expect("curl");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status,
        )
    })
    .await
    .expect("task");
    assert_eq!(code, "000", "plaintext gets no HTTP response");
    let (rc, code, _, _) = curl(port, "/d", &["--cacert", &ca]).await;
    assert_eq!((rc, code.as_str()), (0, "200"));
    let prefix = format!("listener.127.0.0.1_{port}.ssl");
    assert_eq!(stat(&format!("{prefix}.handshake")), 4);
    assert!(stat(&format!("{prefix}.connection_error")) >= 2);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_verifies_client_certificates_and_sans() {
    let pki = pki("tls-mutual");
    let echo = echo_upstream("echo").await;
    let (admin, port) = (free_port(), free_port());
    let good = pki
        .ca
        .leaf(&["spiffe://cluster.local/ns/default/sa/sleep"])
        .write(&pki.dir, "good");
    let wrong_san = pki
        .ca
        .leaf(&["spiffe://other.domain/ns/default/sa/sleep"])
        .write(&pki.dir, "wrong-san");
    let other_ca = Ca::new("elsewhere")
        .leaf(&["spiffe://cluster.local/ns/default/sa/sleep"])
        .write(&pki.dir, "other-ca");
    let tls = format!(
        r#"          require_client_certificate: true
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {} }}
              private_key: {{ filename: {} }}
            validation_context:
              trusted_ca: {{ filename: {} }}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{ prefix: "spiffe://cluster.local/" }}
"#,
        p(&pki.server.0),
        p(&pki.server.1),
        p(&pki.ca_pem)
    );
    // An access log of the peer's identity, written every 20 ms.
    layer8::access_log::sink::set_flush_interval(std::time::Duration::from_millis(20));
    let log = pki.dir.join("peers.log");
    let hcm = format!(
        "          forward_client_cert_details: APPEND_FORWARD\n          set_current_client_cert_details: {{ subject: true, uri: true, dns: true }}\n          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{ text_format: \"%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_FINGERPRINT_256% %REQ(:SCHEME)% %DOWNSTREAM_LOCAL_URI_SAN% %DOWNSTREAM_PEER_DNS_SAN%\\n\" }}",
        p(&log)
    );
    let _s = start_in_process(&tls_bootstrap_with(admin, port, &tls, echo.addr, &hcm)).await;
    let ca = p(&pki.ca_pem);
    let with = |c: &(PathBuf, PathBuf)| {
        vec![
            "--cacert".to_string(),
            ca.clone(),
            "--cert".to_string(),
            p(&c.0),
            "--key".to_string(),
            p(&c.1),
        ]
    };
    let run = |v: Vec<String>| async move { curl(port, "/", &v).await };
    // The upstream learns who the peer is: this hop's element is appended to what the peer
    // sent (APPEND_FORWARD), with Envoy's key order.
    let mut args = with(&good);
    args.extend([
        "-H".to_string(),
        "x-forwarded-client-cert: By=upstream-hop".to_string(),
    ]);
    let (rc, code, _, body) = run(args).await;
    assert_eq!((rc, code.as_str()), (0, "200"), "{body}");
    let echo: Echo = serde_json::from_str(&body).expect("echo");
    let der = rustls::pki_types::CertificateDer::from_pem_file(&good.0).expect("pem");
    let hash: String = ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        echo.headers.get("x-forwarded-client-cert").map(String::as_str),
        Some(
            format!(
                "By=upstream-hop,By=spiffe://cluster.local/ns/default/sa/server;Hash={hash};Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/sleep"
            )
            .as_str()
        )
    );
    let prefix = format!("listener.127.0.0.1_{port}.ssl");
    // No client certificate: refused.
    let (rc, code, _, _) = run(vec!["--cacert".into(), ca.clone()]).await;
    assert_ne!(rc, 0, "no client certificate");
    assert_eq!(code, "000");
    assert_eq!(stat(&format!("{prefix}.no_certificate")), 1);
    // A trusted certificate whose SAN does not match: refused, counted as fail_verify_san.
    let (rc, code, _, _) = run(with(&wrong_san)).await;
    assert_ne!(rc, 0, "SAN outside the trust domain");
    assert_eq!(code, "000");
    assert_eq!(stat(&format!("{prefix}.fail_verify_san")), 1);
    // A certificate from another CA: refused.
    let (rc, code, _, _) = run(with(&other_ca)).await;
    assert_ne!(rc, 0, "untrusted client CA");
    assert_eq!(code, "000");
    // And the listener still serves the good client.
    let (rc, code, _, _) = run(with(&good)).await;
    assert_eq!((rc, code.as_str()), (0, "200"));
    assert_eq!(stat(&format!("{prefix}.handshake")), 2);
    // Both requests were logged with the peer's identity; refused handshakes made no request.
    let want = format!("spiffe://cluster.local/ns/default/sa/sleep {hash} https spiffe://cluster.local/ns/default/sa/server -");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines, format!("{want}\n{want}\n"));
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[test]
fn invalid_tls_configs_are_rejected_naming_the_field() {
    let pki = pki("tls-invalid");
    let echo: std::net::SocketAddr = ([127, 0, 0, 1], 9).into();
    let other = Ca::new("x").leaf(&["a.test"]).write(&pki.dir, "other");
    let cases = [
        (
            // A key that is not the certificate's.
            format!(
                "          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n",
                p(&pki.server.0),
                p(&other.1)
            ),
            "filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0]",
        ),
        (
            "          require_client_certificate: true\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: { inline_string: x }\n              private_key: { inline_string: y }\n".to_string(),
            "tls_certificates[0]",
        ),
        (
            format!(
                "          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n            validation_context:\n              trusted_ca: {{ filename: {} }}\n              verify_certificate_hash: [abcd]\n",
                p(&pki.server.0),
                p(&pki.server.1),
                p(&pki.ca_pem)
            ),
            "validation_context.verify_certificate_hash",
        ),
        (
            format!(
                "          require_client_certificate: true\n          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n",
                p(&pki.server.0),
                p(&pki.server.1)
            ),
            "require_client_certificate",
        ),
    ];
    for (tls, field) in cases {
        let cfg = tls_bootstrap(15999, 15998, &tls, echo);
        let path = pki.dir.join("bad.yaml");
        std::fs::write(&path, cfg).expect("write");
        let err = validate_rejects(&path);
        assert!(
            err.contains("listener 'tls'") && err.contains(field),
            "{field}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
}

fn tls_secret(name: &str, leaf: &Leaf) -> layer8_xds::pb::google::protobuf::Any {
    any(json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": leaf.cert_pem},
            "private_key": {"inline_string": leaf.key_pem}
        }
    }))
}

/// An HTTP/1.1 client over one TLS connection (to check it survives a rotation).
async fn tls_client(
    port: u16,
    ca_pem: &str,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("server.test").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> u16 {
    let req = http::Request::builder()
        .uri("/kept")
        .header("host", "server.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_over_sds_warm_rotate_and_nack() {
    let dir = temp_dir("tls-sds");
    let ca1 = Ca::new("one");
    let ca2 = Ca::new("two");
    let ca1_pem = dir.join("ca1.pem");
    let ca2_pem = dir.join("ca2.pem");
    std::fs::write(&ca1_pem, ca1.pem()).expect("write");
    std::fs::write(&ca2_pem, ca2.pem()).expect("write");
    let echo = echo_upstream("echo").await;
    let port = free_port();
    let listener = any(json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "tls_in",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [
                    {"name": "server-cert", "sds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}}
                ]}
            }},
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "tls_in",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "echo"}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                }
            }]
        }]
    }));
    let cluster = any(json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": "echo", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "echo", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": echo.addr.port()}}}}]}]}
    }));
    let cp = ControlPlane::new();
    let v1 = cp.set([listener, cluster]).expect("resources");
    let server = cp
        .serve_tcp(([127, 0, 0, 1], 0).into())
        .await
        .expect("serve");
    let admin = free_port();
    let bootstrap = ads_bootstrap(admin, CpAddr::Tcp(server.addr()), false);
    let _proc = tokio::task::spawn_blocking(move || {
        start_process(layer8_bin(), &bootstrap, "json", admin, &[])
    })
    .await
    .expect("start");

    // The listener is accepted but warms: its certificate has not come.
    cp.wait_ack(LISTENER, &v1).await.expect("LDS ACK");
    let sub = cp
        .wait_for(std::time::Duration::from_secs(10), |r| {
            r.type_url == SECRET && r.names.iter().any(|n| n == "server-cert")
        })
        .await
        .expect("SDS subscription");
    assert_eq!(sub.names, ["server-cert"]);
    let warming = tokio::task::spawn_blocking(move || {
        admin_json(admin, "/config_dump?resource=dynamic_listeners")
    })
    .await
    .expect("dump");
    let states: Vec<String> = warming["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|l| {
            if l.get("warming_state").is_some() {
                "warming"
            } else {
                "active"
            }
            .to_string()
        })
        .collect();
    assert_eq!(states, ["warming"], "{warming}");

    // The certificate arrives: the listener is active and serves it.
    let v2 = cp
        .set([tls_secret("server-cert", &ca1.leaf(&["server.test"]))])
        .expect("secret");
    cp.wait_ack(SECRET, &v2).await.expect("SDS ACK");
    let ca1_s = p(&ca1_pem);
    let ca2_s = p(&ca2_pem);
    let mut ok = false;
    for _ in 0..100 {
        if curl(port, "/", &["--cacert", &ca1_s]).await.1 == "200" {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "served with the SDS certificate");
    let mut kept = tls_client(port, &ca1.pem()).await;
    assert_eq!(get(&mut kept).await, 200);

    // Rotation: new handshakes get the new certificate; the open connection keeps working.
    let v3 = cp
        .set([tls_secret("server-cert", &ca2.leaf(&["server.test"]))])
        .expect("rotate");
    cp.wait_ack(SECRET, &v3).await.expect("rotation ACK");
    assert_eq!(curl(port, "/", &["--cacert", &ca2_s]).await.1, "200");
    assert_eq!(curl(port, "/", &["--cacert", &ca1_s]).await.0, 60);
    assert_eq!(get(&mut kept).await, 200, "open connection not drained");

    // A secret whose key is not its certificate's is NACKed; the last good one keeps serving.
    let mut bad = ca1.leaf(&["server.test"]);
    bad.key_pem = ca1.leaf(&["x.test"]).key_pem;
    let v4 = cp.set([tls_secret("server-cert", &bad)]).expect("bad");
    let nack = cp.wait_nack(SECRET, &v4).await.expect("NACK");
    let msg = nack.error.expect("error_detail");
    assert!(
        msg.contains("secret 'server-cert'") && msg.contains("tls_certificate"),
        "{msg}"
    );
    assert_eq!(curl(port, "/", &["--cacert", &ca2_s]).await.1, "200");
    assert_eq!(get(&mut kept).await, 200);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Istio 1.9's `istio_authn` HTTP filter, STRICT peer mTLS: a peer without a client certificate
/// gets Istio's 401 on every request; one with a certificate from the trust domain is served. A
/// policy asking for JWT is refused at load, never served without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_authn_strict_requires_a_peer_certificate() {
    let pki = pki("tls-authn");
    let echo = echo_upstream("echo").await;
    let (admin, port) = (free_port(), free_port());
    let peer = pki
        .ca
        .leaf(&["spiffe://cluster.local/ns/default/sa/sleep"])
        .write(&pki.dir, "peer");
    // Client certificates are asked for but optional in the handshake: istio_authn decides.
    let tls = format!(
        "          common_tls_context:\n            tls_certificates:\n            - certificate_chain: {{ filename: {} }}\n              private_key: {{ filename: {} }}\n            validation_context:\n              trusted_ca: {{ filename: {} }}\n",
        p(&pki.server.0),
        p(&pki.server.1),
        p(&pki.ca_pem)
    );
    let authn = |policy: &str| {
        tls_bootstrap(admin, port, &tls, echo.addr).replace(
            "          http_filters:\n",
            &format!(
                "          http_filters:\n          - name: istio_authn\n            typed_config:\n              \"@type\": type.googleapis.com/istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig\n              policy: {policy}\n"
            ),
        )
    };
    let _s = start_in_process(&authn("{ peers: [ { mtls: {} } ] }")).await;
    let ca = p(&pki.ca_pem);
    let (rc, code, _, body) = curl(port, "/", &["--cacert", &ca]).await;
    assert_eq!(
        (rc, code.as_str(), body.as_str()),
        (0, "401", "Peer authentication failed.")
    );
    let (cert, key) = (p(&peer.0), p(&peer.1));
    let (rc, code, _, body) = curl(
        port,
        "/",
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    )
    .await;
    assert_eq!((rc, code.as_str()), (0, "200"), "{body}");
    assert_eq!(stat("http.tls.istio_authn.peer_authn_failed"), 1);

    let bad = pki.dir.join("jwt.yaml");
    std::fs::write(
        &bad,
        authn("{ peers: [ { mtls: {} } ], origins: [ { jwt: { issuer: x } } ] }"),
    )
    .expect("write");
    let err = validate_rejects(&bad);
    assert!(
        err.contains("http_filters[0].typed_config.policy.origins")
            && err.contains("not implemented"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// Certificates from the bootstrap's `static_resources.secrets`, referenced by name (an
/// `sds_secret_config` without `sds_config`, as Envoy reads it); an unknown name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_secrets_by_name() {
    let pki = pki("tls-static-secret");
    let echo = echo_upstream("echo").await;
    let (admin, port) = (free_port(), free_port());
    let tls = "          common_tls_context:\n            tls_certificate_sds_secret_configs:\n            - name: server-cert\n";
    let secrets = format!(
        "  secrets:\n  - name: server-cert\n    tls_certificate:\n      certificate_chain: {{ filename: {} }}\n      private_key: {{ filename: {} }}\n",
        p(&pki.server.0),
        p(&pki.server.1)
    );
    let with_secrets = |cfg: String| {
        cfg.replace(
            "static_resources:\n",
            &format!("static_resources:\n{secrets}"),
        )
    };
    let _s = start_in_process(&with_secrets(tls_bootstrap(admin, port, tls, echo.addr))).await;
    let (rc, code, _, body) = curl(port, "/", &["--cacert", &p(&pki.ca_pem)]).await;
    assert_eq!((rc, code.as_str()), (0, "200"), "{body}");

    let bad = pki.dir.join("unknown.yaml");
    std::fs::write(
        &bad,
        with_secrets(tls_bootstrap(
            15997,
            15996,
            &tls.replace("server-cert", "missing"),
            echo.addr,
        )),
    )
    .expect("write");
    let err = validate_rejects(&bad);
    assert!(
        err.contains("listener 'tls'") && err.contains("unknown static secret 'missing'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&pki.dir);
}
