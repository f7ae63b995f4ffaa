//! Real istiod output (`shared/fixtures/istio`) through layer8.
//!
//! 1. Every bootstrap pilot-agent renders loads (with `--allow-unknown-static-fields`, as
//!    pilot-agent passes it), starts, and its static listeners serve: 15090 `/stats/prometheus`
//!    reaches layer8's admin through the `prometheus_stats` cluster, 15021 `/healthz/ready` reaches
//!    the `agent` cluster (a stand-in for pilot-agent).
//! 2. Every listener, cluster, route configuration and endpoint assignment in the config dumps is
//!    translated; what translation skipped and why resources were rejected is printed
//!    (`--nocapture`), and the translated counts and the exact rejected set are asserted.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use layer8::config::{cluster, listener, route, ConfigError, Ctx, Notes};
use layer8_xds::json::{decode, parse_text, DecodeOptions};
use layer8_xds::pb::envoy::admin::v3 as admin;
use layer8_xds::pb::envoy::config::cluster::v3::Cluster;
use layer8_xds::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use layer8_xds::pb::envoy::config::listener::v3::Listener;
use layer8_xds::pb::envoy::config::route::v3::RouteConfiguration;
use layer8_xds::pb::ext::envoy::admin::v3::ConfigDump;
use layer8_xds::pb::google::protobuf::Any;
use serde_json::{json, Value};

fn read_doc(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml = path.extension().is_some_and(|e| e == "yaml");
    parse_text(&text, yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// 1. Bootstraps
// ---------------------------------------------------------------------------------------------

/// Stand-in for pilot-agent's status server (15020): `/healthz/ready` answers 200
/// `ready-from-agent`, anything else 404 (so the test also sees the path was forwarded as is).
async fn fake_agent() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind agent");
    let addr = l.local_addr().expect("agent addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let (status, body) = match req.uri().path() {
                            "/healthz/ready" => (200, "ready-from-agent"),
                            _ => (404, "not the agent's readiness path"),
                        };
                        let resp = hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The `port_value` of a `{socket_address: {...}}` address.
fn port_of(addr: &Value) -> Option<u64> {
    addr.pointer("/socket_address/port_value")
        .and_then(Value::as_u64)
}

fn set_port(addr: &mut Value, port: u16) {
    addr["socket_address"]["port_value"] = json!(port);
}

/// The only endpoint address of a static cluster's `load_assignment`.
fn only_endpoint(cluster: &mut Value) -> &mut Value {
    let eps = cluster
        .pointer_mut("/load_assignment/endpoints")
        .and_then(Value::as_array_mut)
        .expect("load_assignment.endpoints");
    assert_eq!(eps.len(), 1, "localities");
    let lbs = eps[0]["lb_endpoints"].as_array_mut().expect("lb_endpoints");
    assert_eq!(lbs.len(), 1);
    &mut lbs[0]["endpoint"]["address"]
}

/// Ports a rendered bootstrap uses and the free ports this test uses instead.
struct Ports {
    admin: u16,
    prometheus: u16,
    health: u16,
    agent: SocketAddr,
}

/// Rewrite the fixed ports of a pilot-agent bootstrap to free ones; everything else stays as
/// rendered. Each substitution must happen exactly once, so a fixture of a different shape fails
/// here rather than silently testing something else.
///
/// What is rewritten:
/// - `admin.address` (15000, or 15005 in the fixtures rendered with a custom admin port);
/// - the `prometheus_stats` cluster's endpoint, which pilot-agent points at the admin port: it
///   must follow the admin port, or 15090 would not reach layer8's own admin;
/// - the `agent` cluster's endpoint (pilot-agent's status port 15020) -> the stand-in agent;
/// - the listeners on 15090 (Prometheus) and 15021 (health); their `0.0.0.0` address is kept.
///
/// What is deliberately kept, and why it is fine:
/// - `xds-grpc` / `sds-grpc` are STATIC clusters on Unix sockets (`/tmp/XDS`,
///   `./var/run/secrets/workload-spiffe-uds/test.sock`, in Istio `./etc/istio/proxy/XDS`) that do
///   not exist here: clusters only connect on demand, so a missing socket path is not an error;
/// - STRICT_DNS clusters (`zipkin` -> localhost:6000, `envoy_metrics_service` ->
///   `metrics-service`, `envoy_accesslog_service`): resolution runs in the background and a name
///   that does not resolve leaves the cluster empty, it does not stop the server;
/// - `dynamic_resources` (ADS over `xds-grpc`), `tracing`, `stats_sinks`, `stats_config`,
///   `overload_manager`, `layered_runtime`, `bootstrap_extensions`, `node` metadata: not acted on
///   by layer8 yet and not needed to serve the static listeners.
fn rewrite(doc: &mut Value, ports: &Ports) {
    let admin_addr = doc.pointer_mut("/admin/address").expect("admin.address");
    let fixture_admin = port_of(admin_addr).expect("admin port");
    assert!(
        fixture_admin == 15000 || fixture_admin == 15005,
        "admin port {fixture_admin}"
    );
    set_port(admin_addr, ports.admin);

    let clusters = doc
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .expect("static_resources.clusters");
    let (mut prom_done, mut agent_done) = (0, 0);
    for c in clusters.iter_mut() {
        match c["name"].as_str() {
            Some("prometheus_stats") => {
                let a = only_endpoint(c);
                assert_eq!(port_of(a), Some(fixture_admin), "prometheus_stats -> admin");
                set_port(a, ports.admin);
                prom_done += 1;
            }
            Some("agent") => {
                let a = only_endpoint(c);
                assert_eq!(port_of(a), Some(15020), "agent port");
                assert_eq!(a["socket_address"]["address"], "127.0.0.1");
                set_port(a, ports.agent.port());
                agent_done += 1;
            }
            _ => {}
        }
    }
    assert_eq!((prom_done, agent_done), (1, 1));

    let listeners = doc
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .expect("static_resources.listeners");
    assert_eq!(listeners.len(), 2);
    let mut seen = BTreeSet::new();
    for l in listeners.iter_mut() {
        let a = &mut l["address"];
        let port = port_of(a).expect("listener port");
        seen.insert(port);
        match port {
            15090 => set_port(a, ports.prometheus),
            15021 => set_port(a, ports.health),
            other => panic!("unexpected static listener port {other}"),
        }
    }
    assert_eq!(seen, BTreeSet::from([15021, 15090]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstraps_start_and_serve_static_listeners() {
    let agent = fake_agent().await;
    let clients = Clients::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(istio_fixtures().join("bootstrap"))
        .expect("bootstrap dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "all.json",
            "default.json",
            "lrs.json",
            "running.json",
            "runningsds.json",
            "stats_inclusion.json",
            "tracing_zipkin.json"
        ]
    );
    for (path, name) in paths.iter().zip(&names) {
        let mut doc = read_doc(path);
        let ports = Ports {
            admin: free_port(),
            prometheus: free_port(),
            health: free_port(),
            agent,
        };
        rewrite(&mut doc, &ports);
        let text = serde_json::to_string(&doc).expect("json");

        // What --mode validate would say (also prints what translation skipped).
        let notes = layer8::server::validate(None, Some(&text), true)
            .unwrap_or_else(|e| panic!("{name}: validate: {e}"));
        println!(
            "bootstrap {name}: validates; skipped {}",
            notes.skipped.len()
        );
        for s in &notes.skipped {
            println!("  skipped: {s}");
        }

        let l8 = start_in_process_with(&text, true).await;
        assert_eq!(l8.admin.port(), ports.admin, "{name}");
        let snap = l8.state.snapshots.load();
        assert_eq!(snap.listeners.len(), 2, "{name}");

        let r = clients
            .get(ports.prometheus, "localhost", "/stats/prometheus")
            .await;
        assert_eq!(r.status, 200, "{name}: /stats/prometheus: {}", r.text());
        let body = r.text();
        let lines: Vec<&str> = body.lines().collect();
        assert!(
            lines.contains(&"# TYPE envoy_server_live gauge"),
            "{name}: no envoy_server_live TYPE line in:\n{body}"
        );
        assert!(
            lines.contains(&"envoy_server_live 1"),
            "{name}: no `envoy_server_live 1` in:\n{body}"
        );

        let r = clients
            .get(ports.health, "localhost", "/healthz/ready")
            .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "ready-from-agent"),
            "{name}: /healthz/ready"
        );
        // Only /healthz/ready is routed on 15021, only /stats/prometheus on 15090.
        let r = clients
            .get(ports.health, "localhost", "/stats/prometheus")
            .await;
        assert_eq!(r.status, 404, "{name}: 15021 /stats/prometheus");
        let r = clients
            .get(ports.prometheus, "localhost", "/healthz/ready")
            .await;
        assert_eq!(r.status, 404, "{name}: 15090 /healthz/ready");
        println!(
            "bootstrap {name}: :{} /stats/prometheus -> admin, :{} /healthz/ready -> agent",
            ports.prometheus, ports.health
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Config dumps
// ---------------------------------------------------------------------------------------------

/// Why a resource was rejected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Reason {
    /// A security filter layer8 does not implement (RBAC, ext_authz, Istio authn, JWT).
    SecurityFilter,
    /// `filter_chain_matcher` (waypoints): not implemented yet.
    FilterChainMatcher,
    /// Internal listeners and `envoy_internal_address` endpoints (ambient/HBONE): not implemented
    /// yet; outside the brief's list of acceptable reasons, see the report.
    InternalListener,
    /// Anything else: a layer8 bug.
    Other(String),
}

fn classify(e: &ConfigError) -> Reason {
    if e.message.starts_with("security filter ") {
        Reason::SecurityFilter
    } else if e.path == "filter_chain_matcher" {
        Reason::FilterChainMatcher
    } else if e.message == "internal listeners are not supported yet" {
        Reason::InternalListener
    } else {
        Reason::Other(e.to_string())
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    translated: usize,
    /// Translated with at least one skip note.
    with_skips: usize,
    rejected: usize,
}

/// What one dump produced.
#[derive(Debug, Default)]
struct Walk {
    listeners: Counts,
    clusters: Counts,
    routes: Counts,
    endpoints: Counts,
    /// `(kind, name, reason)` of every rejected resource.
    rejected: BTreeSet<(&'static str, String, Reason)>,
    /// Every skip note of every translated resource.
    notes: Vec<String>,
    /// What is printed (at once, so parallel tests do not interleave).
    log: String,
}
impl Walk {
    fn record<T>(
        &mut self,
        kind: &'static str,
        name: &str,
        res: Result<T, ConfigError>,
        notes: &Notes,
    ) {
        let counts = match kind {
            "listener" => &mut self.listeners,
            "cluster" => &mut self.clusters,
            "route" => &mut self.routes,
            _ => &mut self.endpoints,
        };
        match res {
            Ok(_) if notes.skipped.is_empty() => {
                counts.translated += 1;
                let _ = writeln!(self.log, "  {kind} {name}: translated");
            }
            Ok(_) => {
                counts.translated += 1;
                counts.with_skips += 1;
                let _ = writeln!(
                    self.log,
                    "  {kind} {name}: translated, skipped {}:",
                    notes.skipped.len()
                );
                for s in &notes.skipped {
                    let _ = writeln!(self.log, "      {s}");
                }
                self.notes.extend(notes.skipped.iter().cloned());
            }
            Err(e) => {
                counts.rejected += 1;
                let reason = classify(&e);
                let _ = writeln!(self.log, "  {kind} {name}: REJECTED ({reason:?}): {e}");
                self.rejected.insert((kind, name.to_string(), reason));
            }
        }
    }

    fn listener(&mut self, any: &Any) {
        let l: Listener = any.to_msg().expect("Listener");
        let mut notes = Notes::default();
        let res = listener::translate(&l, &mut notes);
        self.record("listener", &l.name, res, &notes);
    }

    fn cluster(&mut self, any: &Any) {
        let c: Cluster = any.to_msg().expect("Cluster");
        let mut notes = Notes::default();
        let res = cluster::translate(&c, &mut notes);
        self.record("cluster", &c.name, res, &notes);
    }

    fn route(&mut self, any: &Any) {
        let rc: RouteConfiguration = any.to_msg().expect("RouteConfiguration");
        let mut notes = Notes::default();
        let res = route::translate(&rc, &mut notes);
        self.record("route", &rc.name, res, &notes);
    }

    fn endpoints(&mut self, any: &Any) {
        let la: ClusterLoadAssignment = any.to_msg().expect("ClusterLoadAssignment");
        // As EDS delivers them: addresses must be IPs (or pipes), not host names.
        let ctx = Ctx::new("cluster_load_assignment", &la.cluster_name);
        let res = cluster::load_assignment(&la, &ctx, false);
        self.record("endpoints", &la.cluster_name, res, &Notes::default());
    }
}

fn walk_dump(name: &str) -> Walk {
    let path = istio_fixtures().join("config-dumps").join(name);
    // Unknown fields are tolerated: the dumps come from Envoys newer and older than layer8's protos.
    let dump = decode::<ConfigDump>(
        read_doc(&path),
        DecodeOptions {
            allow_unknown_fields: true,
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
    .message;
    let mut w = Walk::default();
    let _ = writeln!(w.log, "== {name}");
    for cfg in &dump.configs {
        let ty = cfg.type_url.rsplit('/').next().unwrap_or_default();
        match ty {
            "envoy.admin.v3.ListenersConfigDump" => {
                let d: admin::ListenersConfigDump = cfg.to_msg().expect("ListenersConfigDump");
                for s in &d.static_listeners {
                    w.listener(s.listener.as_ref().expect("static listener"));
                }
                for dl in &d.dynamic_listeners {
                    let active = dl.active_state.as_ref().and_then(|s| s.listener.as_ref());
                    w.listener(
                        active.unwrap_or_else(|| panic!("{name}: {}: no active_state", dl.name)),
                    );
                }
            }
            "envoy.admin.v3.ClustersConfigDump" => {
                let d: admin::ClustersConfigDump = cfg.to_msg().expect("ClustersConfigDump");
                for s in &d.static_clusters {
                    w.cluster(s.cluster.as_ref().expect("static cluster"));
                }
                for dc in &d.dynamic_active_clusters {
                    w.cluster(dc.cluster.as_ref().expect("dynamic cluster"));
                }
            }
            "envoy.admin.v3.RoutesConfigDump" => {
                let d: admin::RoutesConfigDump = cfg.to_msg().expect("RoutesConfigDump");
                for s in &d.static_route_configs {
                    w.route(s.route_config.as_ref().expect("static route config"));
                }
                for dr in &d.dynamic_route_configs {
                    w.route(dr.route_config.as_ref().expect("dynamic route config"));
                }
            }
            "envoy.admin.v3.EndpointsConfigDump" => {
                let d: admin::EndpointsConfigDump = cfg.to_msg().expect("EndpointsConfigDump");
                for s in &d.static_endpoint_configs {
                    w.endpoints(s.endpoint_config.as_ref().expect("static endpoints"));
                }
                for de in &d.dynamic_endpoint_configs {
                    w.endpoints(de.endpoint_config.as_ref().expect("dynamic endpoints"));
                }
            }
            // Bootstrap (its static resources are the dumps' static_* entries), scoped routes
            // (empty in every dump) and secrets are not translated resources.
            other => {
                let _ = writeln!(w.log, "  ({other}: not walked)");
            }
        }
    }
    let _ = writeln!(
        w.log,
        "== {name}: translated/with skips/rejected: listeners {}/{}/{}, clusters {}/{}/{}, routes {}/{}/{}, endpoints {}/{}/{}",
        w.listeners.translated, w.listeners.with_skips, w.listeners.rejected,
        w.clusters.translated, w.clusters.with_skips, w.clusters.rejected,
        w.routes.translated, w.routes.with_skips, w.routes.rejected,
        w.endpoints.translated, w.endpoints.with_skips, w.endpoints.rejected,
    );
    w
}

/// What one dump must produce.
struct Expect {
    dump: &'static str,
    /// Translated listeners, clusters, route configurations, endpoint assignments.
    translated: [usize; 4],
    /// Rejected `(kind, name, reason)`.
    rejected: Vec<(&'static str, &'static str, Reason)>,
}

fn expectations() -> Vec<Expect> {
    use Reason::*;
    vec![
        Expect {
            dump: "sidecar-istio-1.20.json",
            // Everything, virtualInbound's mTLS chains included.
            translated: [18, 24, 15, 0],
            rejected: vec![],
        },
        Expect {
            dump: "sidecar-istio-1.9.json",
            // Everything, virtualInbound's mTLS chains and Istio 1.9's HTTP `istio_authn`
            // (PERMISSIVE peer mTLS) included.
            translated: [22, 37, 16, 0],
            rejected: vec![],
        },
        Expect {
            dump: "waypoint-istio-1.21.json",
            translated: [1, 3, 1, 1],
            rejected: vec![
                ("listener", "main_internal", FilterChainMatcher),
                (
                    "endpoints",
                    "inbound-vip|8100|http|httpbin.default.svc.cluster.local",
                    InternalListener,
                ),
            ],
        },
        Expect {
            dump: "route-and-cluster-http.json",
            translated: [0, 1, 1, 0],
            rejected: vec![],
        },
        Expect {
            dump: "listeners-rbac-istio-1.18.yaml",
            translated: [25, 0, 0, 0],
            rejected: vec![
                // The network `istio_authn` filter (a TypedStruct-wrapped
                // io.istio.network.authn.Config, feeding RBAC) comes first in both.
                ("listener", "virtualInbound", SecurityFilter),
                ("listener", "connect_terminate", SecurityFilter),
                ("listener", "main_internal", InternalListener),
                ("listener", "connect_originate", InternalListener),
            ],
        },
        Expect {
            dump: "endpoints-bookinfo.json",
            translated: [0, 0, 0, 37],
            rejected: vec![],
        },
    ]
}

/// Names of security filters: a skip note must never mention one.
const SECURITY: &[&str] = &["rbac", "ext_authz", "authn", "jwt", "oauth", "basic_auth"];

#[test]
fn config_dumps_translate() {
    let mut out = String::new();
    let mut failures = Vec::new();
    for e in expectations() {
        let w = walk_dump(e.dump);
        out.push_str(&w.log);
        let translated = [
            w.listeners.translated,
            w.clusters.translated,
            w.routes.translated,
            w.endpoints.translated,
        ];
        if translated != e.translated {
            failures.push(format!(
                "{}: translated [listeners, clusters, routes, endpoints] {translated:?}, expected {:?}",
                e.dump, e.translated
            ));
        }
        let expected: BTreeSet<(&'static str, String, Reason)> = e
            .rejected
            .into_iter()
            .map(|(k, n, r)| (k, n.to_string(), r))
            .collect();
        if w.rejected != expected {
            failures.push(format!(
                "{}: rejected {:#?}, expected {expected:#?}",
                e.dump, w.rejected
            ));
        }
        for n in &w.notes {
            let lower = n.to_ascii_lowercase();
            if SECURITY.iter().any(|s| lower.contains(s)) {
                failures.push(format!("{}: security filter skipped: {n}", e.dump));
            }
        }
    }
    println!("{out}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
