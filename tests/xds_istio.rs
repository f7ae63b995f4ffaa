//! Real istiod output over ADS, in a pod-like network namespace.
//!
//! The in-repo control plane serves the dynamic resources of the Istio 1.20 and 1.9 sidecar config
//! dumps (listeners, clusters, routes) unchanged, plus one endpoint assignment per EDS cluster
//! pointing at a local upstream that answers with the cluster's name. The dumps' secrets have
//! their private keys redacted, so the SDS stream (istio-agent's job, not istiod's) serves
//! `default` and `ROOTCA` from a test CA for `cluster.local` instead. layer8 starts from
//! the bootstrap pilot-agent renders (`fixtures/istio/bootstrap/default.json`: xds-grpc and
//! sds-grpc on Unix sockets, Delta ADS; SotW for the 1.9 run), as uid 65534 inside a namespace
//! where iptables redirects outbound TCP to `virtualOutbound` (15001) as istio-iptables does.
//!
//! Checked: every type is ACKed and every listener is active. For every virtual host of every
//! route configuration that routes `/` to an EDS cluster, a request to a service address with
//! that Host header is captured, handed to the listener Istio meant, and answered by the cluster
//! the route names. Inbound, as istio-iptables captures it to `virtualInbound` (15006): a peer
//! sidecar's mutual TLS (ALPN `istio-http/1.1`, a `spiffe://cluster.local/...` certificate)
//! reaches the app through the inbound cluster, and so does plaintext (PERMISSIVE); a client
//! certificate from another trust domain or another CA is refused in the handshake.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::pki::Ca;
use common::*;
use layer8_test_control_plane::files::resources_from_config_dump;
use layer8_test_control_plane::ControlPlane;
use layer8_xds::client::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use layer8_xds::pb::envoy::config::cluster::v3::Cluster;
use layer8_xds::pb::envoy::config::listener::v3::Listener;
use layer8_xds::pb::envoy::config::route::v3::{
    route::Action, route_action, route_match, RouteConfiguration,
};
use layer8_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use layer8_xds::pb::google::protobuf::Any;
use serde_json::Value;

/// A second layer8 as the upstreams: one listener per EDS cluster (HTTP/1.1 and h2c, as Istio
/// clusters may speak either) answering with the cluster's name.
fn upstreams_bootstrap(ports: &BTreeMap<u16, String>, app_port: u16) -> String {
    let mut listeners = String::new();
    let app = [(app_port, "inbound-app".to_string())];
    for (port, name) in ports.iter().chain(app.iter().map(|(p, n)| (p, n))) {
        // The app listens on every address of the pod, as a container does.
        let ip = if *port == app_port {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        listeners.push_str(&format!(
            r#"
  - name: up_{port}
    address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: up_{port}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "{name}" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
        ));
    }
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 15100 }} }}\nstatic_resources:\n  listeners:{listeners}"
    )
}

/// A request the route configurations promise to route: (listener, Host, expected cluster).
#[derive(Debug)]
struct Expectation {
    listener: String,
    host: String,
    cluster: String,
}

/// Every (listener, domain) whose virtual host routes `/` straight to an EDS cluster.
fn expectations(resources: &[Any], eds: &BTreeMap<String, String>) -> Vec<Expectation> {
    let mut routes: BTreeMap<String, RouteConfiguration> = BTreeMap::new();
    for a in resources.iter().filter(|a| a.type_url == ROUTE) {
        let rc: RouteConfiguration = a.to_msg().expect("route");
        routes.insert(rc.name.clone(), rc);
    }
    let mut out = Vec::new();
    for a in resources.iter().filter(|a| a.type_url == LISTENER) {
        let l: Listener = a.to_msg().expect("listener");
        if l.name.starts_with("virtual") {
            continue;
        }
        for fc in &l.filter_chains {
            for f in &fc.filters {
                let Some(
                    layer8_xds::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        tc,
                    ),
                ) = &f.config_type
                else {
                    continue;
                };
                let Ok(h) = tc.to_msg::<HttpConnectionManager>() else {
                    continue;
                };
                let Some(RouteSpecifier::Rds(rds)) = &h.route_specifier else {
                    continue;
                };
                let Some(rc) = routes.get(&rds.route_config_name) else {
                    continue;
                };
                for vh in &rc.virtual_hosts {
                    let Some(r) = vh.routes.first() else { continue };
                    let root = match r.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()) {
                        Some(route_match::PathSpecifier::Prefix(p)) => p == "/",
                        Some(route_match::PathSpecifier::Path(p)) => p == "/",
                        _ => false,
                    };
                    let cluster = match &r.action {
                        Some(Action::Route(ra)) => match &ra.cluster_specifier {
                            Some(route_action::ClusterSpecifier::Cluster(c)) => c.clone(),
                            _ => continue,
                        },
                        _ => continue,
                    };
                    if !root || !eds.contains_key(&cluster) {
                        continue;
                    }
                    for d in &vh.domains {
                        if !d.contains('*') {
                            out.push(Expectation {
                                listener: l.name.clone(),
                                host: d.clone(),
                                cluster: cluster.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// The address a client would call to reach a listener: `<ip>_<port>` is that address, and
/// `0.0.0.0_<port>` any address on that port no other listener owns.
fn address_for(listener: &str) -> String {
    let (ip, port) = listener.rsplit_once('_').expect("listener name ip_port");
    let ip = if ip == "0.0.0.0" { "10.255.0.1" } else { ip };
    format!("{ip}:{port}")
}

fn bootstrap(dir: &Path, delta: bool) -> String {
    let text = std::fs::read_to_string(istio_fixtures().join("bootstrap/default.json"))
        .expect("bootstrap");
    let mut v: Value = serde_json::from_str(&text).expect("json");
    for c in v["static_resources"]["clusters"]
        .as_array_mut()
        .expect("clusters")
    {
        if c["name"] == "xds-grpc" {
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["pipe"]["path"] = Value::String(dir.join("XDS").display().to_string());
        }
    }
    if !delta {
        v["dynamic_resources"]["ads_config"]["api_type"] = Value::String("GRPC".into());
    }
    serde_json::to_string_pretty(&v).expect("json")
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The dump's secrets replaced by usable ones: `default` for
/// `spiffe://cluster.local/ns/default/sa/app` and `ROOTCA`, both from `ca`.
fn with_test_secrets(resources: Vec<Any>, ca: &Ca) -> Vec<Any> {
    let leaf = ca.leaf(&["spiffe://cluster.local/ns/default/sa/app"]);
    let default = common::xds::any(serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": "default",
        "tls_certificate": {"certificate_chain": {"inline_string": leaf.cert_pem},
                            "private_key": {"inline_string": leaf.key_pem}}
    }));
    let root = common::xds::any(serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": "ROOTCA",
        "validation_context": {"trusted_ca": {"inline_string": ca.pem()}}
    }));
    resources
        .into_iter()
        .filter(|a| a.type_url != SECRET)
        .chain([default, root])
        .collect()
}

/// A peer sidecar's request over mutual TLS (openssl as the client: curl cannot offer Istio's
/// ALPN): the HTTP response, or the error output.
fn mtls_request(ns: &Netns, dir: &Path, to: &str, cert: &str) -> String {
    let script = format!(
        "printf 'GET /inbound HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n' | \
         timeout 10 openssl s_client -quiet -connect {to} -alpn istio-http/1.1 \
         -cert {d}/{cert}.pem -key {d}/{cert}.key -CAfile {d}/ca.pem -verify_return_error 2>&1",
        d = dir.display()
    );
    let out = ns
        .cmd(&["sh", "-c", &script])
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The port of the dump's inbound HTTP service (the `inbound|<port>||` cluster).
fn inbound_port(resources: &[Any]) -> u16 {
    resources
        .iter()
        .filter(|a| a.type_url == CLUSTER)
        .filter_map(|a| a.to_msg::<Cluster>().ok())
        .find_map(|c| {
            c.name
                .strip_prefix("inbound|")
                .and_then(|r| r.strip_suffix("||"))
                .and_then(|p| p.parse().ok())
        })
        .expect("an inbound cluster")
}

async fn serve_dump(dump: &str, delta: bool) {
    let dir = temp_dir("istio-xds");
    chmod(&dir, 0o755);
    let ca = Ca::new("cluster.local");
    let resources = with_test_secrets(
        resources_from_config_dump(&istio_fixtures().join("config-dumps").join(dump))
            .unwrap_or_else(|e| panic!("{dump}: {e}")),
        &ca,
    );
    let app_port = inbound_port(&resources);
    // A peer sidecar's certificate, one from another trust domain, one from another CA.
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    ca.leaf(&["spiffe://cluster.local/ns/default/sa/sleep"])
        .write(&dir, "peer");
    ca.leaf(&["spiffe://other.domain/ns/default/sa/sleep"])
        .write(&dir, "foreign");
    Ca::new("cluster.local")
        .leaf(&["spiffe://cluster.local/ns/default/sa/sleep"])
        .write(&dir, "untrusted");
    // One upstream port per EDS cluster; its endpoints point there.
    let mut eds: BTreeMap<String, String> = BTreeMap::new();
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    let mut assignments = Vec::new();
    for a in resources.iter().filter(|a| a.type_url == CLUSTER) {
        let c: Cluster = a.to_msg().expect("cluster");
        let Some(ecc) = &c.eds_cluster_config else {
            continue;
        };
        // Clusters that always originate TLS wait for the mTLS issue.
        if c.transport_socket
            .as_ref()
            .is_some_and(layer8::config::is_tls_transport)
        {
            continue;
        }
        let port = 20000 + eds.len() as u16;
        let service = if ecc.service_name.is_empty() {
            c.name.clone()
        } else {
            ecc.service_name.clone()
        };
        eds.insert(c.name.clone(), service.clone());
        ports.insert(port, c.name.clone());
        assignments.push(common::xds::assignment(
            &service,
            &[([127, 0, 0, 1], port).into()],
        ));
    }
    let cp = ControlPlane::new();
    let v1 = cp
        .set(resources.iter().cloned().chain(assignments))
        .expect("resources");
    std::fs::create_dir_all(dir.join("var/run/secrets/workload-spiffe-uds")).expect("mkdir");
    chmod(&dir.join("var"), 0o755);
    chmod(&dir.join("var/run"), 0o755);
    chmod(&dir.join("var/run/secrets"), 0o755);
    chmod(&dir.join("var/run/secrets/workload-spiffe-uds"), 0o755);
    let xds = cp.serve_unix(&dir.join("XDS")).await.expect("xds socket");
    let sds_path = dir.join("var/run/secrets/workload-spiffe-uds/test.sock");
    let sds = cp.serve_unix(&sds_path).await.expect("sds socket");
    chmod(&dir.join("XDS"), 0o777);
    chmod(&sds_path, 0o777);
    std::fs::write(dir.join("bootstrap.json"), bootstrap(&dir, delta)).expect("write");
    std::fs::write(
        dir.join("upstreams.yaml"),
        upstreams_bootstrap(&ports, app_port),
    )
    .expect("write");
    chmod(&dir.join("bootstrap.json"), 0o644);

    let mut ns = Netns::new();
    // A default route so service addresses are routable, and istio-iptables' capture: every
    // outbound TCP connection but layer8's own (uid 65534) and loopback goes to 15001.
    ns.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.exec(&["ip", "link", "set", "eth0", "up"]);
    ns.exec(&["ip", "link", "set", "eth1", "up"]);
    ns.exec(&["ip", "addr", "add", "10.0.0.1/8", "dev", "eth0"]);
    ns.exec(&["ip", "route", "add", "default", "dev", "eth0"]);
    // Inbound capture (istio-iptables' PREROUTING rule, here for the test's own clients, which
    // play the peer pods): connections to the app's port on the pod address go to 15006.
    let inbound = format!("-p tcp -d 10.0.0.1/32 --dport {app_port} -j REDIRECT --to-ports 15006");
    for rule in [
        "-p tcp -m owner --uid-owner 65534 -j RETURN",
        "-p tcp -d 127.0.0.1/32 -j RETURN",
        inbound.as_str(),
        "-p tcp -j REDIRECT --to-ports 15001",
    ] {
        let mut args = vec!["iptables", "-t", "nat", "-A", "OUTPUT"];
        args.extend(rule.split(' '));
        ns.exec(&args);
    }
    let up = dir.join("upstreams.yaml");
    ns.spawn(
        &[
            layer8_bin(),
            "-c",
            up.to_str().expect("path"),
            "--concurrency",
            "1",
        ],
        &dir.join("upstreams.log"),
    );
    let cfg = dir.join("bootstrap.json");
    ns.spawn_in(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            layer8_bin(),
            "-c",
            cfg.to_str().expect("path"),
            "--allow-unknown-static-fields",
            "--concurrency",
            "1",
        ],
        &dir.join("layer8.log"),
        &dir,
    );
    let log = || std::fs::read_to_string(dir.join("layer8.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ns.curl("http://127.0.0.1:15000/ready").0 != "200"
        || ns.curl("http://127.0.0.1:15100/ready").0 != "200"
    {
        assert!(
            Instant::now() < deadline,
            "{dump}: layer8 not ready:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every type is ACKed, listeners included (virtualInbound warms until its secrets come).
    for t in [CLUSTER, ENDPOINT, ROUTE, LISTENER] {
        cp.wait_ack(t, &v1)
            .await
            .unwrap_or_else(|e| panic!("{dump}: {t}: {e}\n{}", log()));
    }
    // istio's secrets come over the separate SotW SDS stream to sds-grpc, by name.
    let sds_req = cp
        .wait_for(Duration::from_secs(20), |r| {
            r.type_url == SECRET && !r.names.is_empty()
        })
        .await
        .unwrap_or_else(|e| panic!("{dump}: SDS: {e}"));
    let mut names = sds_req.names.clone();
    names.sort();
    assert_eq!(names, ["ROOTCA", "default"], "{dump}");
    assert!(
        !sds_req.delta,
        "{dump}: SDS is SotW, as istio's agent serves it"
    );
    cp.wait_for(Duration::from_secs(20), |r| {
        r.type_url == SECRET && r.is_ack()
    })
    .await
    .unwrap_or_else(|e| panic!("{dump}: SDS ACK: {e}"));
    let secrets = ns
        .curl("http://127.0.0.1:15000/config_dump?resource=dynamic_active_secrets")
        .1;
    let secrets: Value = serde_json::from_str(&secrets).expect("config_dump");
    let mut held: Vec<&str> = secrets["configs"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    held.sort();
    assert_eq!(held, ["ROOTCA", "default"], "{dump}: {secrets}");
    let text = secrets.to_string();
    assert!(
        text.contains("[redacted]") && !text.contains("PRIVATE KEY"),
        "{dump}: private keys are redacted: {text}"
    );
    let listeners = resources.iter().filter(|a| a.type_url == LISTENER).count();
    let active = ns
        .curl("http://127.0.0.1:15000/config_dump?resource=dynamic_listeners")
        .1;
    let active: Value = serde_json::from_str(&active).expect("config_dump");
    let states: Vec<bool> = active["configs"]
        .as_array()
        .map(|a| a.iter().map(|l| l.get("active_state").is_some()).collect())
        .unwrap_or_default();
    assert_eq!(
        states,
        vec![true; listeners],
        "{dump}: every listener is active: {active}\n{}",
        log()
    );

    // Inbound: a peer sidecar's mutual TLS reaches the app through virtualInbound.
    let to = format!("10.0.0.1:{app_port}");
    let got = mtls_request(&ns, &dir, &to, "peer");
    assert!(
        got.contains("HTTP/1.1 200") && got.ends_with("inbound-app"),
        "{dump}: mTLS inbound: {got}\n{}",
        log()
    );
    // Plaintext too (PERMISSIVE).
    assert_eq!(
        ns.curl(&format!("http://{to}/inbound")),
        ("200".to_string(), "inbound-app".to_string()),
        "{dump}: plaintext inbound"
    );
    // Certificates from another trust domain (SAN matcher) or another CA are refused.
    for cert in ["foreign", "untrusted"] {
        let got = mtls_request(&ns, &dir, &to, cert);
        assert!(
            !got.contains("HTTP/1.1"),
            "{dump}: {cert} certificate refused: {got}"
        );
    }
    // (The ssl.* counters are outside the Istio bootstrap's stats inclusion list; tests/tls.rs
    // checks them.)

    let cases = expectations(&resources, &eds);
    assert!(
        cases.len() >= 10,
        "{dump}: only {} routes to check",
        cases.len()
    );
    let mut wrong = Vec::new();
    for c in &cases {
        let url = format!("http://{}/", address_for(&c.listener));
        let host = format!("Host: {}", c.host);
        let got = ns.curl_with(&["-H", &host], &url);
        if got != ("200".to_string(), c.cluster.clone()) {
            wrong.push(format!("{c:?}: got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{dump}: {} of {} misrouted:\n{}\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n"),
        log()
    );
    println!(
        "{dump}: {} requests routed as the route configurations say",
        cases.len()
    );
    drop(ns);
    xds.stop().await;
    sds.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn istio_1_20_sidecar_dump_over_delta_ads() {
    serve_dump("sidecar-istio-1.20.json", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn istio_1_9_sidecar_dump_over_sotw_ads() {
    serve_dump("sidecar-istio-1.9.json", false).await;
}
