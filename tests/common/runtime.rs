//! Runtime API harness: a bootstrap with the runtime and actuator listeners, a gRPC client, and
//! real Redis and etcd servers on free loopback ports (stopped on drop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use layer8::runtime::proto::rt;
use layer8::runtime::proto::rt::runtime_client::RuntimeClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::{free_port, temp_dir};

/// A bootstrap with admin, the runtime on `grpc` and the actuator on `actuator`, plus `extra`
/// listeners and clusters (JSON arrays' items).
pub fn bootstrap(
    admin: u16,
    grpc: u16,
    actuator: u16,
    grpc_config: Value,
    extra_listeners: Vec<Value>,
    clusters: Vec<Value>,
) -> String {
    let mut listeners = vec![
        runtime_listener(
            "runtime",
            json!({"socket_address": {"address": "127.0.0.1", "port_value": grpc}}),
            grpc_config,
        ),
        json!({
            "name": "actuator",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": actuator}},
            "filter_chains": [{"filters": [{"name": "layer8.actuator", "typed_config": {
                "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
                "type_url": "layer8.runtime.v1.Actuator"}}]}]
        }),
    ];
    listeners.extend(extra_listeners);
    json!({
        "node": {"id": "runtime-test", "cluster": "test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
    .to_string()
}

/// A listener serving the runtime with `grpc_config` at `address` (a `socket_address` or `pipe`).
pub fn runtime_listener(name: &str, address: Value, grpc_config: Value) -> Value {
    json!({
        "name": name,
        "address": address,
        "filter_chains": [{"filters": [{"name": "layer8.runtime", "typed_config": {
            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
            "type_url": "layer8.runtime.v1.Runtime",
            "value": {"grpc_config": grpc_config}}}]}]
    })
}

/// A runtime client on `127.0.0.1:port`.
pub async fn client(port: u16) -> RuntimeClient<Channel> {
    let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("connect to the runtime");
    RuntimeClient::new(ch)
}

/// An actuator GET: (status, JSON body).
pub async fn actuator(port: u16, path: &str) -> (u16, Value) {
    let c = super::Clients::new();
    let r = c.get(port, "localhost", path).await;
    let body = serde_json::from_str(&r.text()).unwrap_or(Value::Null);
    (r.status, body)
}

/// A server process on a loopback port; killed on drop.
pub struct Server {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    program: String,
}

impl Server {
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).expect("log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e} (run .ci/install-deps.sh)", self.program));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} not up on {}",
                self.program,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill it (SIGKILL: no shutdown work).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn program(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    name.to_string()
}

/// A real `redis-server` (no persistence unless `appendonly`).
pub fn redis(appendonly: bool) -> Server {
    let port = free_port();
    let dir = temp_dir("redis");
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--appendonly".into(),
        if appendonly { "yes" } else { "no" }.into(),
    ]);
    if appendonly {
        args.extend(["--appendfsync".into(), "always".into()]);
    }
    args.extend(["--dir".into(), dir.display().to_string()]);
    let mut s = Server {
        child: None,
        port,
        dir,
        args,
        program: program("redis-server"),
    };
    s.spawn();
    s
}

/// A real single-node `etcd`.
pub fn etcd() -> Server {
    let port = free_port();
    let peer = free_port();
    let dir = temp_dir("etcd");
    let client = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args = vec![
        "--name".into(),
        "t".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--listen-peer-urls".into(),
        peer_url.clone(),
        "--initial-advertise-peer-urls".into(),
        peer_url.clone(),
        "--initial-cluster".into(),
        format!("t={peer_url}"),
    ];
    let mut s = Server {
        child: None,
        port,
        dir,
        args,
        program: program("etcd"),
    };
    s.spawn();
    s
}

/// The socket address of a port on loopback.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A subscriber app: a tonic `AppCallback` server that records every event it gets.
pub mod app {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use layer8::runtime::proto::rt;
    use layer8::runtime::proto::rt::app_callback_server::{AppCallback, AppCallbackServer};
    use tonic::{Request, Response, Status};

    /// What the app answers for an event, by its data.
    pub type Verdict = Arc<dyn Fn(&rt::TopicEventRequest, usize) -> i32 + Send + Sync>;

    /// The app's state, shared with the test.
    #[derive(Clone)]
    pub struct App {
        /// Subscriptions it declares.
        pub subscriptions: Vec<(String, String)>,
        /// Every event received, in order.
        pub events: Arc<Mutex<Vec<rt::TopicEventRequest>>>,
        /// Deliveries per data payload.
        pub seen: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
        /// How to answer (given the event and how many times it was seen, 1-based).
        pub verdict: Verdict,
    }

    impl App {
        /// An app subscribing `(pubsub, topic)` pairs and answering SUCCESS.
        pub fn new(subscriptions: &[(&str, &str)]) -> App {
            App {
                subscriptions: subscriptions
                    .iter()
                    .map(|(p, t)| (p.to_string(), t.to_string()))
                    .collect(),
                events: Arc::default(),
                seen: Arc::default(),
                verdict: Arc::new(|_, _| 0),
            }
        }

        /// Distinct payloads received.
        pub fn distinct(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    #[tonic::async_trait]
    impl AppCallback for App {
        async fn list_topic_subscriptions(
            &self,
            _: Request<()>,
        ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
            Ok(Response::new(rt::ListTopicSubscriptionsResponse {
                subscriptions: self
                    .subscriptions
                    .iter()
                    .map(|(p, t)| rt::TopicSubscription {
                        pubsub_name: p.clone(),
                        topic: t.clone(),
                        metadata: HashMap::new(),
                    })
                    .collect(),
            }))
        }

        async fn on_topic_event(
            &self,
            r: Request<rt::TopicEventRequest>,
        ) -> Result<Response<rt::TopicEventResponse>, Status> {
            let ev = r.into_inner();
            let n = {
                let mut seen = self.seen.lock().unwrap();
                let n = seen.entry(ev.data.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let status = (self.verdict)(&ev, n);
            self.events.lock().unwrap().push(ev);
            Ok(Response::new(rt::TopicEventResponse { status }))
        }
    }

    /// A running app server; stops on drop.
    pub struct Running {
        /// Its address.
        pub addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Running {
        /// Stop serving (the port closes; layer8's deliveries fail until a restart).
        pub async fn stop(mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            if let Some(t) = self.task.take() {
                t.abort();
                let _ = t.await;
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(t) = self.task.take() {
                t.abort();
            }
        }
    }

    /// Serve `app` on `port`.
    pub async fn serve(app: App, port: u16) -> Running {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind app");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AppCallbackServer::new(app))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                )
                .await;
        });
        Running {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }
}

/// Wait until `f` holds, up to `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The in-memory runtime config the API tests share (Layotto's demo names), plus `extra` sections.
pub fn memory_config(extra: Value) -> Value {
    let mut c = json!({
        "hellos": {"helloworld": {"type": "helloworld", "hello": "greeting"}},
        "state": {"state_demo": {"type": "in-memory", "metadata": {}}},
        "lock": {"lock_demo": {"type": "in-memory", "metadata": {}}},
        "pub_subs": {"pub_subs_demo": {"type": "in-memory", "metadata": {"consumerID": "1", "redeliverInterval": "100ms"}}},
        "sequencer": {"sequencer_demo": {"type": "in-memory", "metadata": {}, "biggerThan": {"floored": 100}}},
        "config_store": {"config_demo": {"type": "in-memory", "metadata": {}}},
        "app": {"app_id": "app1", "grpc_callback_port": 0}
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A running in-process layer8 with the runtime and actuator listeners.
pub struct Rt {
    pub l8: super::InProcess,
    pub grpc: u16,
    pub actuator: u16,
}

/// Start layer8 in-process with `config` as the runtime section plus extra listeners and clusters.
pub async fn start(config: Value, listeners: Vec<Value>, clusters: Vec<Value>) -> Rt {
    let (admin, grpc, act) = (super::free_port(), super::free_port(), super::free_port());
    let yaml = bootstrap(admin, grpc, act, config, listeners, clusters);
    let l8 = super::start_in_process(&yaml).await;
    Rt {
        l8,
        grpc,
        actuator: act,
    }
}

/// A state item with an etag and a concurrency mode.
pub fn item(key: &str, value: &str, etag: Option<&str>, concurrency: i32) -> rt::StateItem {
    rt::StateItem {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        etag: etag.map(|e| rt::Etag { value: e.into() }),
        metadata: HashMap::new(),
        options: Some(rt::StateOptions {
            concurrency,
            consistency: 0,
        }),
    }
}

/// `CONCURRENCY_FIRST_WRITE`.
pub const FIRST_WRITE: i32 = rt::state_options::StateConcurrency::ConcurrencyFirstWrite as i32;
/// `CONCURRENCY_LAST_WRITE`.
pub const LAST_WRITE: i32 = rt::state_options::StateConcurrency::ConcurrencyLastWrite as i32;
