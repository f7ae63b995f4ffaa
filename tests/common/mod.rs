//! Shared test harness: free ports, layer8 in-process or as a process, real upstream servers
//! (an echo server that reports what it received), and HTTP/1.1 + h2c clients.
#![allow(dead_code)]

pub mod netns;
pub mod pki;
pub mod runtime;
pub mod xds;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A free loopback port (bound then released). Ports come from below the kernel's ephemeral
/// range (32768+), so an outgoing connection cannot take one between this call and the bind,
/// and a port is never handed out twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..10_000 {
        let port = rand_port();
        if given.contains(&port) {
            continue;
        }
        let free = StdListener::bind(("127.0.0.1", port)).is_ok()
            && StdListener::bind(("0.0.0.0", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free port found");
}

fn rand_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    20_000 + (h.finish() % 12_000) as u16
}

/// Replace `{name}` placeholders in a template.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// A layer8 server running inside the test process.
pub struct InProcess {
    pub state: Arc<layer8::server::State>,
    pub admin: SocketAddr,
}

/// Start layer8 in-process from YAML (must include an admin address).
pub async fn start_in_process(yaml: &str) -> InProcess {
    start_in_process_with(yaml, false).await
}

/// Start layer8 in-process from YAML or JSON (must include an admin address), tolerating unknown
/// bootstrap fields when `allow_unknown` is set (as `--allow-unknown-static-fields` does).
pub async fn start_in_process_with(yaml: &str, allow_unknown: bool) -> InProcess {
    let loaded = layer8::config::bootstrap::load(None, Some(yaml), allow_unknown)
        .unwrap_or_else(|e| panic!("load: {e}"));
    let options = layer8::server::Options {
        concurrency: 2,
        allow_unknown_static_fields: allow_unknown,
        ..Default::default()
    };
    let running = layer8::server::start(loaded, options, None)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    InProcess {
        state: running.state,
        admin: running.admin.expect("admin address"),
    }
}

/// A layer8 child process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub admin: u16,
    pub dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "layer8-test-{}-{}-{}",
        tag,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Path of the layer8 binary built for these tests.
pub fn layer8_bin() -> &'static str {
    env!("CARGO_BIN_EXE_layer8")
}

/// Start a binary (layer8 or envoy) with `-c <file>` and extra args; wait for `/ready` on `admin`.
pub fn start_process(bin: &str, config: &str, ext: &str, admin: u16, extra: &[&str]) -> Proc {
    let dir = temp_dir("proc");
    let path = dir.join(format!("bootstrap.{ext}"));
    std::fs::write(&path, config).expect("write config");
    let log = std::fs::File::create(dir.join("log")).expect("log file");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&path)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let mut p = Proc { child, admin, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            let log = std::fs::read_to_string(p.dir.join("log")).unwrap_or_default();
            panic!("{bin} exited with {status}:\n{log}");
        }
        if blocking_get(admin, "/ready").is_some_and(|(s, _)| s == 200) {
            return p;
        }
        assert!(Instant::now() < deadline, "{bin} not ready after 30s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal blocking HTTP/1.1 GET (for readiness polling outside a runtime).
pub fn blocking_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Where the Envoy binary is (installed by `.ci/install-deps.sh`).
pub fn envoy_bin() -> String {
    if let Ok(p) = std::env::var("LAYER8_ENVOY") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let default = format!("{home}/.cache/layer8-tools/venv/bin/envoy");
    if std::path::Path::new(&default).exists() {
        return default;
    }
    panic!("Envoy not found: run `bash .ci/install-deps.sh` (or set LAYER8_ENVOY)");
}

/// What the echo upstream saw, returned as JSON in the response body.
#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    pub upstream: String,
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The upstream connection's peer address (layer8's source address).
    pub peer: String,
}

/// A running echo upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
}

/// Start an echo upstream named `name` (HTTP/1.1 and h2c). Behaviour by path:
/// `/status/NNN` answers NNN; `/delay/MS` sleeps first; anything else answers 200 with [`Echo`].
pub async fn echo_upstream(name: &str) -> Upstream {
    http_upstream(name, None).await
}

/// An upstream that answers every request with `status` and body `fixed` (and counts hits).
pub async fn status_upstream(name: &str, status: u16) -> Upstream {
    http_upstream(name, Some(status)).await
}

async fn http_upstream(name: &str, fixed_status: Option<u16>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicU64::new(0));
    let up = Upstream {
        addr,
        name: name.to_string(),
        hits: hits.clone(),
    };
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (name, hits) = (name.clone(), hits.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let name = name.clone();
                    hits.fetch_add(1, Ordering::Relaxed);
                    async move {
                        Ok::<_, Infallible>(match fixed_status {
                            Some(status) => fixed(status, &name),
                            None => echo(req, &name, peer).await,
                        })
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    up
}

fn fixed(status: u16, name: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-upstream", name)
        .body(Full::new(Bytes::from_static(b"fixed")))
        .expect("response")
}

async fn echo(req: Request<Incoming>, name: &str, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|s| s.split(['/', '?']).next())
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.to_string(),
            serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    if let Some(a) = req.uri().authority() {
        headers
            .entry("host")
            .or_insert(serde_json::Value::String(a.to_string()));
    }
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "upstream": name, "method": method, "path": path, "version": version,
        "headers": headers, "body": String::from_utf8_lossy(&body), "peer": peer.to_string(),
    });
    Response::builder()
        .status(
            status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK),
        )
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("response")
}

/// A raw TCP upstream on a free loopback port: `handle` serves each accepted connection.
pub async fn raw_upstream<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}

/// A plain response: status, headers, body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn echo(&self) -> Echo {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {} {:?}", self.status, self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTP clients: HTTP/1.1 keep-alive and h2c prior knowledge.
#[derive(Clone)]
pub struct Clients {
    pub h1: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    pub h2: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Default for Clients {
    fn default() -> Self {
        Self::new()
    }
}

impl Clients {
    pub fn new() -> Clients {
        Clients {
            h1: Client::builder(TokioExecutor::new()).build_http(),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Send a request: `port` is layer8's listener; `host` the Host header.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        h2: bool,
        port: u16,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Resp {
        let uri = format!("http://127.0.0.1:{port}{path}");
        let mut b = Request::builder().method(method).uri(uri);
        if h2 {
            // :authority carries the host for HTTP/2.
            b = b.uri(format!("http://{host}{path}"));
        } else {
            b = b.header("host", host);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let client = if h2 { &self.h2 } else { &self.h1 };
        let resp = if h2 {
            // Connect to the listener while keeping :authority = host.
            send_h2_to(port, req).await
        } else {
            client.request(req).await.map_err(|e| e.to_string())
        };
        let resp = resp.unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, port: u16, host: &str, path: &str) -> Resp {
        self.send(false, port, "GET", host, path, &[], "").await
    }
}

/// Send one h2c request to 127.0.0.1:port (one connection per call).
pub async fn send_h2_to(
    port: u16,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// A standard HTTP listener+route bootstrap: `{routes}` is the YAML list of routes of one
/// virtual host with domains `["*"]`, `{clusters}` the YAML list of clusters.
pub fn http_bootstrap(
    admin: u16,
    listen: u16,
    vhosts: &str,
    clusters: &str,
    hcm_extra: &str,
) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          {hcm_extra}
          route_config:
            name: local
            virtual_hosts:
{vhosts}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}
"#
    )
}

/// A bootstrap with one listener `tls` on `port` whose chain terminates TLS (`tls`: the
/// DownstreamTlsContext's fields, YAML at 10 spaces) and routes everything to the `echo` cluster
/// (`hcm`: more HttpConnectionManager fields, same indentation).
pub fn tls_bootstrap_with(
    admin: u16,
    port: u16,
    tls: &str,
    echo: std::net::SocketAddr,
    hcm: &str,
) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
{tls}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tls
{hcm}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: echo }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
{cluster}"#,
        cluster = static_cluster("echo", &[echo], "")
    )
}

/// YAML for a STATIC cluster over `addrs` (indented for `http_bootstrap`).
pub fn static_cluster(name: &str, addrs: &[SocketAddr], extra: &str) -> String {
    let eps: String = addrs
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{eps}"
    )
}

/// `layer8 validate -c path`, which must fail: its error output.
pub fn validate_rejects(path: &std::path::Path) -> String {
    let out = Command::new(layer8_bin())
        .args(["validate", "-c"])
        .arg(path)
        .output()
        .expect("layer8 validate");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{} accepted: {err}", path.display());
    err
}

/// Value of a stat by Envoy name in the in-process store (0 if absent).
pub fn stat(name: &str) -> u64 {
    layer8::stats::store().get(name).unwrap_or(0)
}

/// The real Istio data in `shared/fixtures/istio` (bootstraps, config dumps).
pub fn istio_fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/istio"
    ))
}
