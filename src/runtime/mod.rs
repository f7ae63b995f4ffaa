//! The application runtime: Layotto's gRPC API (`spec.proto.runtime.v1`) served by the
//! `layer8.runtime` network filter of a proxy listener, and the actuator (health, info) served by
//! the `layer8.actuator` filter. Config ([`config`]) -> components built and connected at startup
//! ([`components::registry`]) -> one gRPC service per runtime ([`api`]) -> every connection on a
//! runtime listener is an HTTP/2 connection into it ([`serve`]).

pub mod actuator;
pub mod api;
pub mod codec;
pub mod components;
pub mod config;
pub mod keys;
pub mod proto;
pub mod stats;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use futures_util::future::Either;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use self::api::{RuntimeApi, Shared};
use self::components::registry::{BuildError, Components};
use self::components::{Health, Subscription};
use self::config::RuntimeConfig;
use self::proto::rt::{lifecycle_server::LifecycleServer, runtime_server::RuntimeServer};
use crate::model::listener::{NetworkFilter, RuntimeFilter};
use crate::model::Snapshot;
use crate::server::State;

/// The path prefix of the `Runtime` service's methods.
const RUNTIME_PATH: &str = "/spec.proto.runtime.v1.Runtime/";

/// Running runtimes by [`RuntimeFilter::id`]. Listeners whose runtime config is identical share
/// one runtime (a TCP and a Unix-socket listener for the same app, say).
pub type Runtimes = HashMap<u64, Arc<Runtime>>;

/// The identity of a runtime config: a hash of its JSON (object keys sorted).
pub fn config_id(json: &serde_json::Value) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.to_string().hash(&mut h);
    h.finish()
}

/// One running runtime: its components, its gRPC services and its app subscriptions.
pub struct Runtime {
    /// The config it was built from.
    pub config: Arc<RuntimeConfig>,
    /// The components.
    pub components: Arc<Components>,
    /// The `Runtime` service, called directly for its own paths (most calls), which skips
    /// the router's path matching.
    runtime: RuntimeServer<RuntimeApi>,
    /// Every service (`Lifecycle`, reflection; `Runtime` again), for the other paths.
    routes: tonic::service::Routes,
    stats: Arc<stats::RpcStats>,
    subscriptions: Arc<tokio::sync::Mutex<Vec<Subscription>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Runtime {
    /// Build and connect every component, then subscribe the app (in the background: the app
    /// may start after its sidecar).
    pub async fn start(
        config: Arc<RuntimeConfig>,
        state: Weak<State>,
    ) -> Result<Arc<Runtime>, BuildError> {
        let components = Arc::new(Components::build(&config).await?);
        let shared = Arc::new(Shared {
            components: components.clone(),
            rpc: config.rpcs.clone(),
            state,
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
            segments: Default::default(),
        });
        let api = RuntimeApi(shared);
        let runtime = RuntimeServer::new(api.clone());
        let mut routes =
            tonic::service::Routes::new(runtime.clone()).add_service(LifecycleServer::new(api));
        // Server reflection (v1, and v1alpha for older grpcurl), so grpcurl and friends work
        // without the .proto files.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::DESCRIPTOR_SET)
        };
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "gRPC reflection unavailable"),
        }
        let subscriptions = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(api::callback::subscribe_app(
            components.clone(),
            subscriptions.clone(),
            stop.clone(),
        ));
        Ok(Arc::new(Runtime {
            config,
            components,
            runtime,
            routes,
            stats: Arc::new(stats::RpcStats::default()),
            subscriptions,
            stop,
        }))
    }

    /// Liveness: the runtime itself (`runtime_startup`), never its stores.
    pub fn liveness(&self) -> (String, Health) {
        let h = if self.stop.is_cancelled() {
            Health::Down("shutdown".into())
        } else {
            Health::Up
        };
        ("runtime_startup".to_string(), h)
    }

    /// Readiness: [`Runtime::liveness`] plus each component (`<api>.<name>`).
    pub async fn health(&self) -> Vec<(String, Health)> {
        let mut out = vec![self.liveness()];
        out.extend(self.components.health().await);
        out
    }

    /// Stop delivering messages (shutdown).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.subscriptions.lock().await.clear();
    }
}

/// Whether a listener serves the runtime API (on any chain).
pub fn has_runtime_filter(l: &crate::model::listener::ListenerConfig) -> bool {
    l.filter_chains
        .iter()
        .chain(l.default_chain.iter())
        .any(|c| matches!(c.terminal, NetworkFilter::Runtime(_)))
}

/// Start one runtime per distinct runtime config in `snap`'s listeners. A component that cannot
/// be built stops the process (Layotto #275: never a half-started runtime).
pub async fn start_all(snap: &Snapshot, state: &Arc<State>) -> Result<Runtimes, BuildError> {
    let mut out = Runtimes::new();
    for l in &snap.listeners {
        for chain in l.filter_chains.iter().chain(l.default_chain.iter()) {
            if let NetworkFilter::Runtime(f) = &chain.terminal {
                if out.contains_key(&f.id) {
                    continue;
                }
                let rt = Runtime::start(f.config.clone(), Arc::downgrade(state)).await?;
                tracing::info!(listener = %l.name, "runtime API ready");
                out.insert(f.id, rt);
            }
        }
    }
    Ok(out)
}

/// Serve the runtime's gRPC API on one accepted connection (HTTP/2), until it closes or drains.
pub async fn serve<S>(
    stream: S,
    filter: Arc<RuntimeFilter>,
    state: Arc<State>,
    mut drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Some(rt) = state
        .runtimes
        .get()
        .and_then(|m| m.get(&filter.id))
        .cloned()
    else {
        tracing::warn!("runtime listener without a running runtime (runtime listeners must be static); closing");
        return;
    };
    crate::stats::counter("runtime.downstream_cx_total").increment(1);
    let runtime = rt.runtime.clone();
    let routes = rt.routes.clone();
    let rpc_stats = rt.stats.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let method = rpc_stats.for_path(req.uri().path()).clone();
        method.total.increment(1);
        // The `Runtime` service reads hyper's body as it is; the rarely called services behind
        // `routes` take a boxed body, and their future is boxed so that it does not enlarge
        // every call's task.
        let call = if req.uri().path().starts_with(RUNTIME_PATH) {
            Either::Left(tonic::codegen::Service::call(&mut runtime.clone(), req))
        } else {
            let req = req.map(tonic::body::boxed);
            Either::Right(Box::pin(tonic::codegen::Service::call(
                &mut routes.clone(),
                req,
            )))
        };
        async move {
            let resp = match call {
                Either::Left(call) => match call.await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                },
                Either::Right(call) => call.await.map_err(std::io::Error::other)?,
            };
            // A failed unary call is answered trailers-only: its status is in the headers.
            if resp
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s.as_bytes() != b"0")
            {
                method.errors.increment(1);
            }
            Ok::<_, std::io::Error>(resp)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // No `date` header: gRPC servers (grpc-go under Layotto, Dapr) send none, and it would be
    // one more header to encode on every reply.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .auto_date_header(false)
        .max_concurrent_streams(1024)
        .keep_alive_interval(Some(std::time::Duration::from_secs(60)));
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "runtime connection ended with an error");
            }
            return;
        }
        _ = async {
            loop {
                if *drain.borrow_and_update() { break; }
                if drain.changed().await.is_err() { std::future::pending::<()>().await; }
            }
        } => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
