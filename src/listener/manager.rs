//! Listener lifecycle: bind sockets, run accept loops, apply new snapshots.
//!
//! Envoy semantics: an unchanged listener keeps its socket and connections; a changed listener
//! keeps its socket (same address) but new connections get the new config while connections on
//! the old config are drained; a removed listener stops accepting and drains.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

use super::balance::Balancer;
use crate::model::listener::{ListenAddr, ListenerConfig, WorkerPlacement};
use crate::server::State;

/// One config generation of a listener: connections accepted under it drain together.
#[derive(Debug)]
pub struct Generation {
    /// The config.
    pub config: Arc<ListenerConfig>,
    drain: watch::Sender<bool>,
}

impl Generation {
    fn new(config: Arc<ListenerConfig>) -> Arc<Generation> {
        Arc::new(Generation {
            config,
            drain: watch::channel(false).0,
        })
    }

    /// Ask this generation's connections to finish (HTTP: GOAWAY / Connection: close).
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }
}

struct Active {
    current: Arc<ArcSwap<Generation>>,
    accept: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        for t in &self.accept {
            t.abort();
        }
        self.current.load().drain();
    }
}

/// Owns the running listeners. Only the config path touches it.
#[derive(Default)]
pub struct ListenerManager {
    active: HashMap<String, Active>,
}

/// Errors binding listeners.
#[derive(Debug, thiserror::Error)]
#[error("listener '{name}': cannot bind {address}: {source}")]
pub struct BindError {
    /// Listener name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Cause.
    pub source: std::io::Error,
}

impl ListenerManager {
    /// Bring running listeners in line with `listeners`. A listener that cannot bind is left
    /// out (the others still start) and returned with its error.
    pub async fn apply(
        &mut self,
        listeners: &[Arc<ListenerConfig>],
        state: &Arc<State>,
    ) -> Vec<BindError> {
        let mut next: HashMap<String, Active> = HashMap::new();
        let mut failed = Vec::new();
        for cfg in listeners {
            let old = match self.active.remove(&cfg.name) {
                Some(old) => {
                    let cur = old.current.load_full();
                    if cur.config.config_hash == cfg.config_hash {
                        next.insert(cfg.name.clone(), old);
                        continue;
                    }
                    if cur.config.address == cfg.address
                        && cur.config.bind_to_port == cfg.bind_to_port
                    {
                        // Same socket, new config: new connections see the new generation.
                        old.current.store(Generation::new(cfg.clone()));
                        cur.drain();
                        next.insert(cfg.name.clone(), old);
                        continue;
                    }
                    Some(old)
                }
                None => None,
            };
            let current = Arc::new(ArcSwap::new(Generation::new(cfg.clone())));
            let accept = if cfg.bind_to_port {
                match spawn_accept(cfg, current.clone(), state.clone()).await {
                    Ok(a) => a,
                    Err(e) => {
                        // The listener it would replace keeps serving (Envoy keeps the last
                        // good listener when an update cannot bind).
                        failed.push(e);
                        if let Some(o) = old {
                            next.insert(cfg.name.clone(), o);
                        }
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            // Only now, with the new socket listening, does the old one stop and drain.
            drop(old);
            next.insert(cfg.name.clone(), Active { current, accept });
        }
        // Whatever is left was removed: dropping it stops accepting and drains.
        self.active.clear();
        self.active = next;
        failed
    }

    /// Drain every listener's connections (admin `/drain_listeners`, shutdown).
    pub fn drain_all(&self) {
        for a in self.active.values() {
            a.current.load().drain();
        }
    }

    /// Stop accepting on all listeners (`/drain_listeners?inboundonly` is not distinguished).
    pub fn stop_accepting(&mut self) {
        for a in self.active.values_mut() {
            for t in a.accept.drain(..) {
                t.abort();
            }
        }
    }
}

/// A listening socket; with `reuse_port` several can share one address (one per worker).
fn bind_tcp(
    addr: std::net::SocketAddr,
    reuse_port: bool,
) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Where an accepted connection is served: the worker [`Balancer`] picks, or this one.
struct Placement {
    /// This accept loop's worker.
    me: usize,
    balancer: Arc<Balancer>,
    /// Whether connections move to the worker with the fewest (else they stay on `me`).
    spread: bool,
}

impl Placement {
    /// Serve `stream` here, or, when spreading and another worker has fewer active connections,
    /// on that worker's runtime (deregistered from this event loop, registered on that one).
    fn dispatch<S: Handoff>(&self, stream: S, current: &ArcSwap<Generation>, state: &Arc<State>) {
        let target = if self.spread {
            self.balancer.pick(self.me)
        } else {
            self.me
        };
        let active = self.balancer.enter(target);
        let generation = current.load_full();
        let drain = generation.drain.subscribe();
        let config = generation.config.clone();
        let state = state.clone();
        let handle = crate::workers::handles().get(target);
        match handle {
            Some(h) if target != self.me => match stream.into_std() {
                Ok(std) => {
                    h.spawn(async move {
                        let _active = active;
                        match S::from_std(std) {
                            Ok(s) => s.serve(config, state, drain).await,
                            Err(e) => tracing::warn!(error = %e, "cannot move a connection to worker {target}"),
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot move a connection to worker {target}"),
            },
            _ => {
                tokio::spawn(async move {
                    let _active = active;
                    stream.serve(config, state, drain).await
                });
            }
        }
    }
}

/// A tokio stream that can leave one runtime's event loop for another's, and be served.
trait Handoff: Sized + Send + 'static {
    type Std: Send + 'static;
    fn into_std(self) -> std::io::Result<Self::Std>;
    fn from_std(s: Self::Std) -> std::io::Result<Self>;
    fn serve(
        self,
        listener: Arc<ListenerConfig>,
        state: Arc<State>,
        drain: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static;
}

macro_rules! handoff {
    ($stream:ty, $std:ty, $serve:path) => {
        impl Handoff for $stream {
            type Std = $std;
            fn into_std(self) -> std::io::Result<$std> {
                <$stream>::into_std(self)
            }
            fn from_std(s: $std) -> std::io::Result<Self> {
                <$stream>::from_std(s)
            }
            fn serve(
                self,
                listener: Arc<ListenerConfig>,
                state: Arc<State>,
                drain: watch::Receiver<bool>,
            ) -> impl std::future::Future<Output = ()> + Send + 'static {
                $serve(self, listener, state, drain)
            }
        }
    };
}
handoff!(TcpStream, std::net::TcpStream, super::serve_tcp);
handoff!(
    UnixStream,
    std::os::unix::net::UnixStream,
    super::serve_unix
);

async fn accept_tcp(
    listener: std::net::TcpListener,
    current: Arc<ArcSwap<Generation>>,
    state: Arc<State>,
    cx_total: metrics::Counter,
    placement: Placement,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener socket");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        cx_total.increment(1);
        placement.dispatch(stream, &current, &state);
    }
}

/// Bind the listener and start its accept loops: one per worker (each on its own
/// `SO_REUSEPORT` socket), or one on the current runtime when no workers run.
async fn spawn_accept(
    cfg: &Arc<ListenerConfig>,
    current: Arc<ArcSwap<Generation>>,
    state: Arc<State>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, BindError> {
    let err = |source| BindError {
        name: cfg.name.clone(),
        address: cfg.address.to_string(),
        source,
    };
    let cx_total = crate::stats::counter(format!("{}.downstream_cx_total", cfg.stat_prefix));
    let balancer = Balancer::new(&cfg.stat_prefix, crate::workers::count());
    let placement = |me| Placement {
        me,
        balancer: balancer.clone(),
        spread: cfg.placement == WorkerPlacement::Spread,
    };
    match &cfg.address {
        ListenAddr::Tcp(addr) => {
            let workers = crate::workers::handles();
            if workers.is_empty() {
                let l = bind_tcp(*addr, false).map_err(err)?;
                return Ok(vec![tokio::spawn(accept_tcp(
                    l,
                    current,
                    state,
                    cx_total,
                    placement(0),
                ))]);
            }
            // Bind every socket before starting any loop, so a bind error leaves nothing behind.
            // A listener whose connections all go to the first worker needs only its socket.
            let first = bind_tcp(*addr, true).map_err(err)?;
            let bound = first.local_addr().map_err(err)?;
            let mut sockets = vec![first];
            let accepting = match cfg.placement {
                WorkerPlacement::Spread => workers.len(),
                WorkerPlacement::FirstWorker => 1,
            };
            for _ in 1..accepting {
                sockets.push(bind_tcp(bound, true).map_err(err)?);
            }
            Ok(sockets
                .into_iter()
                .zip(workers)
                .enumerate()
                .map(|(i, (l, h))| {
                    h.spawn(accept_tcp(
                        l,
                        current.clone(),
                        state.clone(),
                        cx_total.clone(),
                        placement(i),
                    ))
                })
                .collect())
        }
        ListenAddr::Unix(path) => {
            let p = path.to_string_lossy();
            if !p.starts_with('@') {
                let _ = std::fs::remove_file(path);
            }
            let std_l = if let Some(abs) = p.strip_prefix('@') {
                let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(abs.as_bytes()).map_err(err)?;
                std::os::unix::net::UnixListener::bind_addr(&addr).map_err(err)?
            } else {
                std::os::unix::net::UnixListener::bind(path).map_err(err)?
            };
            std_l.set_nonblocking(true).map_err(err)?;
            // One accept loop, on the first worker; the balancer spreads the connections (when
            // the listener's placement says so).
            let placement = placement(0);
            let task = async move {
                let listener = match UnixListener::from_std(std_l) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register unix listener");
                        return;
                    }
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    };
                    cx_total.increment(1);
                    placement.dispatch(stream, &current, &state);
                }
            };
            Ok(vec![match crate::workers::handles().first() {
                Some(h) => h.spawn(task),
                None => tokio::spawn(task),
            }])
        }
    }
}
