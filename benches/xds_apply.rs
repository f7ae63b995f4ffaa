//! How fast and how lean a full xDS snapshot and an EDS update are applied, layer8 against
//! Envoy, both fed by the in-repo control plane over Delta ADS on loopback TCP.
//!
//! Configurations: the Istio 1.20 sidecar dump (`virtualInbound` with its mutual-TLS chains
//! included, its secrets served over SDS by the same control plane from a throwaway CA, since the
//! dump's keys are redacted; upstream TLS is not originated yet, so clusters lose their transport
//! sockets; Istio's private filters left out: upstream Envoy does not have them; the bound
//! listeners moved to free ports; EDS clusters given one endpoint), and a
//! synthetic istiod-sized mesh (1000 services: 1000 EDS clusters, 1000 listeners, 10 route
//! configurations with 10 000 routes).
//!
//! Both run with the `stats_config` pilot-agent renders (Istio's stats inclusion list), as every
//! Istio sidecar does.
//!
//! Per proxy: time from its first xDS request to its last ACK of the snapshot (CDS, EDS, LDS,
//! RDS), RSS two seconds later, round trip of single-assignment EDS updates (push to ACK), RSS
//! after them. For layer8 also the in-process cost without the wire: translating and composing
//! the same resources, and applying one EDS update.
//!
//! `cargo bench --bench xds_apply` (release build; needs Envoy: `bash .ci/install-deps.sh`).
//! `XDS_BENCH_SERVICES` changes the mesh size. Results go to stdout as a markdown table.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use layer8::model::Snapshot;
use layer8::xds::{apply, store::Dynamic};
use layer8_test_control_plane::synthetic::{self, Mesh};
use layer8_test_control_plane::{files, ControlPlane};
use layer8_xds::client::types::{self, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use layer8_xds::client::{Resource, Update};
use layer8_xds::pb::envoy::config::cluster::v3::Cluster;
use layer8_xds::pb::envoy::config::listener::v3::Listener;
use layer8_xds::pb::google::protobuf::Any;

/// EDS updates per run (`XDS_BENCH_EDS_UPDATES` to change).
fn eds_updates() -> usize {
    std::env::var("XDS_BENCH_EDS_UPDATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn envoy_bin() -> String {
    std::env::var("LAYER8_ENVOY").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/layer8-tools/venv/bin/envoy")
    })
}

/// The `stats_config` pilot-agent renders (Istio's default inclusion list), for both proxies.
fn istio_stats_config() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/istio/bootstrap/default.json"
    );
    let text = std::fs::read_to_string(path).expect("istio bootstrap");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["stats_config"].clone()
}

fn bootstrap(admin: u16, cp: SocketAddr) -> String {
    // istio-agent's SDS server (`sds-grpc`) is played by the same control plane.
    let clusters: Vec<serde_json::Value> = ["xds-grpc", "sds-grpc"]
        .iter()
        .map(|name| serde_json::json!({
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                {"socket_address": {"address": cp.ip().to_string(), "port_value": cp.port()}}}}]}]}
        }))
        .collect();
    serde_json::json!({
        "stats_config": istio_stats_config(),
        "node": {"id": "sidecar~10.0.0.1~bench.default~default.svc.cluster.local", "cluster": "bench.default"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "lds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "ads_config": {"api_type": "DELTA_GRPC", "set_node_on_first_message_only": true, "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}
        },
        "static_resources": {"clusters": clusters}
    })
    .to_string()
}

/// istio-agent's `default` (workload certificate) and `ROOTCA` secrets, from a throwaway CA (the
/// dump's own have their private keys redacted).
fn istio_secrets() -> Vec<Any> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca.self_signed(&ca_key).expect("ca");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![SanType::URI(
        "spiffe://cluster.local/ns/default/sa/bench"
            .to_string()
            .try_into()
            .expect("uri"),
    )];
    let key = KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    [
        serde_json::json!({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "default", "tls_certificate": {"certificate_chain": {"inline_string": cert.pem()},
            "private_key": {"inline_string": key.serialize_pem()}}}),
        serde_json::json!({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": ca.pem()}}}),
    ]
    .into_iter()
    .map(|v| files::resource_from_json(v).expect("secret"))
    .collect()
}

struct Measured {
    apply_ms: f64,
    rss_applied: f64,
    eds_p50_us: f64,
    eds_p99_us: f64,
    rss_after_eds: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

async fn measure(proxy: &str, resources: &[Any], eds: &[Any]) -> Measured {
    let cp = ControlPlane::new();
    let v = cp.set(resources.iter().cloned()).expect("resources");
    let server = cp
        .serve_tcp(([127, 0, 0, 1], 0).into())
        .await
        .expect("serve");
    let admin = free_port();
    let dir = std::env::temp_dir().join(format!("layer8-xds-bench-{}-{proxy}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("bootstrap.json");
    std::fs::write(&cfg, bootstrap(admin, server.addr())).expect("write");
    let (bin, extra): (String, &[&str]) = if proxy == "envoy" {
        (envoy_bin(), &["--disable-hot-restart", "-l", "error"])
    } else {
        (env!("CARGO_BIN_EXE_layer8").to_string(), &["-l", "error"])
    };
    let mut child: Child = Command::new(&bin)
        .arg("-c")
        .arg(&cfg)
        .args(["--concurrency", "2"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    let first = cp
        .wait_for(Duration::from_secs(60), |_| true)
        .await
        .expect("first request");
    let mut last = first.at;
    let with_secrets = resources.iter().any(|a| a.type_url == types::SECRET);
    let mut kinds = vec![CLUSTER, ENDPOINT, LISTENER, ROUTE];
    if with_secrets {
        kinds.push(types::SECRET);
    }
    for t in kinds {
        let ack = cp
            .wait_for(Duration::from_secs(120), |r| {
                r.type_url == t && r.is_ack() && r.response_version.as_deref() == Some(v.as_str())
            })
            .await
            .unwrap_or_else(|e| panic!("{proxy}: ACK of {t}: {e}"));
        last = last.max(ack.at);
    }
    let apply_ms = (last - first.at).as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_applied = rss_mib(child.id());
    let mut lat = Vec::with_capacity(eds.len());
    for u in eds {
        let t = Instant::now();
        let v = cp.set([u.clone()]).expect("set");
        if let Err(e) = cp.wait_ack(ENDPOINT, &v).await {
            panic!("{proxy}: EDS ACK: {e}");
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_eds = rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Measured {
        apply_ms,
        rss_applied,
        eds_p50_us: percentile(&lat, 0.5),
        eds_p99_us: percentile(&lat, 0.99),
        rss_after_eds,
    }
}

fn updates(resources: &[Any], type_url: &str) -> Update {
    Update {
        type_url: type_url.to_string(),
        version_info: "1".into(),
        resources: resources
            .iter()
            .filter(|a| a.type_url == type_url)
            .map(|a| Resource {
                name: types::resource_name(a).expect("name"),
                version: "1".into(),
                body: a.clone(),
            })
            .collect(),
        removed: Vec::new(),
    }
}

/// layer8's apply cost without the wire: (full snapshot ms, one EDS update µs).
fn in_process(resources: &[Any], eds: &[Any]) -> (f64, f64) {
    // The same stats inclusion list as the processes.
    let b = serde_json::json!({"stats_config": istio_stats_config()}).to_string();
    let loaded = layer8::config::bootstrap::load(None, Some(&b), true).expect("stats_config");
    if let Some(m) = layer8::config::bootstrap::stats_matcher(&loaded.bootstrap).expect("matcher") {
        layer8::stats::set_matcher(m);
    }
    let mut full = Vec::new();
    let mut d = Dynamic::new(&Snapshot::default());
    for _ in 0..5 {
        d = Dynamic::new(&Snapshot::default());
        let t = Instant::now();
        for ty in [CLUSTER, ENDPOINT, LISTENER, ROUTE, types::SECRET] {
            let u = updates(resources, ty);
            let out = match ty {
                CLUSTER => apply::clusters(&mut d, &u),
                ENDPOINT => apply::endpoints(&mut d, &u),
                LISTENER => apply::listeners(&mut d, &u),
                ROUTE => apply::routes(&mut d, &u),
                _ => apply::secrets(&mut d, &u),
            };
            assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        }
        std::hint::black_box(d.compose());
        full.push(t.elapsed());
    }
    full.sort();
    let n = eds.len() * 20;
    let single: Vec<Update> = eds
        .iter()
        .map(|a| updates(std::slice::from_ref(a), ENDPOINT))
        .collect();
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(apply::endpoints(&mut d, &single[i % single.len()]));
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    (full[full.len() / 2].as_secs_f64() * 1e3, per)
}

/// The 1.20 dump as a benchmark input (see the module docs).
fn istio_fixture() -> (Vec<Any>, Vec<Any>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/istio/config-dumps/sidecar-istio-1.20.json"
    );
    let mut out = Vec::new();
    let mut eds = Vec::new();
    let upstream: SocketAddr = ([127, 0, 0, 1], 1).into();
    let m = Mesh {
        services: 0,
        route_configs: 1,
        routes_per_service: 1,
        endpoints: 1,
    };
    // Upstream Envoy lacks Istio's own extensions; both proxies get the dump without them.
    out.extend(istio_secrets());
    for a in files::resources_from_config_dump(std::path::Path::new(path))
        .expect("dump")
        .into_iter()
        .map(files::without_istio_extensions)
        .filter(|a| a.type_url != types::SECRET)
    {
        if a.type_url == LISTENER {
            let mut l: Listener = a.to_msg().expect("listener");
            if l.bind_to_port.as_ref().is_none_or(|b| b.value) {
                use layer8_xds::pb::envoy::config::core::v3::{
                    address, socket_address::PortSpecifier,
                };
                if let Some(address::Address::SocketAddress(sa)) =
                    l.address.as_mut().and_then(|a| a.address.as_mut())
                {
                    sa.address = "127.0.0.1".into();
                    sa.port_specifier = Some(PortSpecifier::PortValue(u32::from(free_port())));
                }
            }
            out.push(Any::from_msg(&l).expect("pack"));
            continue;
        }
        if a.type_url == CLUSTER {
            // Without TLS (not served by layer8 yet): Envoy would wait for istio's SDS secrets.
            let mut c: Cluster = a.to_msg().expect("cluster");
            c.transport_socket = None;
            c.transport_socket_matches.clear();
            let a = Any::from_msg(&c).expect("pack");
            if let Some(e) = &c.eds_cluster_config {
                let name = if e.service_name.is_empty() {
                    c.name.clone()
                } else {
                    e.service_name.clone()
                };
                let mut cla = synthetic::assignment_of(0, &m, upstream).expect("cla");
                let mut la: layer8_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
                    cla.to_msg().expect("cla");
                la.cluster_name = name;
                cla = Any::from_msg(&la).expect("pack");
                eds.push(cla.clone());
                out.push(cla);
            }
            out.push(a);
            continue;
        }
        out.push(a);
    }
    (out, eds)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let services: usize = std::env::var("XDS_BENCH_SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mesh = Mesh {
        services,
        route_configs: 10,
        routes_per_service: 10,
        endpoints: 3,
    };
    let upstream: SocketAddr = ([127, 0, 0, 1], 1).into();
    let synthetic = synthetic::mesh(&mesh, upstream).expect("mesh");
    let synthetic_eds: Vec<Any> = (0..eds_updates())
        .map(|i| {
            let m = Mesh {
                endpoints: 2 + i % 3,
                ..mesh
            };
            synthetic::assignment_of(i % services, &m, upstream).expect("cla")
        })
        .collect();
    let (fixture, fixture_eds) = istio_fixture();
    let fixture_eds: Vec<Any> = (0..eds_updates())
        .map(|i| fixture_eds[i % fixture_eds.len()].clone())
        .collect();
    let configs = [
        ("Istio 1.20 sidecar dump", fixture, fixture_eds),
        (
            "synthetic mesh (1k clusters, 1k listeners, 10k routes)",
            synthetic,
            synthetic_eds,
        ),
    ];
    println!("| config | proxy | snapshot applied (first request to last ACK) | RSS after | EDS update p50 / p99 (push to ACK) | RSS after {} EDS updates |", eds_updates());
    println!("|---|---|---|---|---|---|");
    let mut in_proc = Vec::new();
    for (name, resources, eds) in &configs {
        for proxy in ["layer8", "envoy"] {
            let m = rt.block_on(measure(proxy, resources, eds));
            println!(
                "| {name} | {proxy} | {:.1} ms | {:.1} MiB | {:.0} / {:.0} µs | {:.1} MiB |",
                m.apply_ms, m.rss_applied, m.eds_p50_us, m.eds_p99_us, m.rss_after_eds
            );
        }
        in_proc.push((name, rt.block_on(async { in_process(resources, eds) })));
    }
    println!();
    println!("layer8 in process (translate + compose, no wire):");
    for (name, (full, eds)) in in_proc {
        println!("- {name}: full snapshot {full:.1} ms; one EDS update {eds:.1} µs");
    }
}
