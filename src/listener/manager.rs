//! Listener lifecycle: bind sockets, run accept loops, apply new snapshots.
//!
//! Envoy semantics: an unchanged listener keeps its socket and connections; a changed listener
//! keeps its socket (same address) but new connections get the new config while connections on
//! the old config are drained; a removed listener stops accepting and drains.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::model::listener::{ListenAddr, ListenerConfig};
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
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(t) = &self.accept {
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
    /// Bring running listeners in line with `listeners`.
    pub async fn apply(
        &mut self,
        listeners: &[Arc<ListenerConfig>],
        state: &Arc<State>,
    ) -> Result<(), BindError> {
        let mut next: HashMap<String, Active> = HashMap::new();
        for cfg in listeners {
            if let Some(old) = self.active.remove(&cfg.name) {
                let cur = old.current.load_full();
                if cur.config.config_hash == cfg.config_hash {
                    next.insert(cfg.name.clone(), old);
                    continue;
                }
                if cur.config.address == cfg.address && cur.config.bind_to_port == cfg.bind_to_port
                {
                    // Same socket, new config: new connections see the new generation.
                    old.current.store(Generation::new(cfg.clone()));
                    cur.drain();
                    next.insert(cfg.name.clone(), old);
                    continue;
                }
                drop(old);
            }
            let current = Arc::new(ArcSwap::new(Generation::new(cfg.clone())));
            let accept = if cfg.bind_to_port {
                Some(spawn_accept(cfg, current.clone(), state.clone()).await?)
            } else {
                None
            };
            next.insert(cfg.name.clone(), Active { current, accept });
        }
        // Whatever is left was removed: dropping it stops accepting and drains.
        self.active.clear();
        self.active = next;
        Ok(())
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
            if let Some(t) = a.accept.take() {
                t.abort();
            }
        }
    }
}

fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn spawn_accept(
    cfg: &Arc<ListenerConfig>,
    current: Arc<ArcSwap<Generation>>,
    state: Arc<State>,
) -> Result<tokio::task::JoinHandle<()>, BindError> {
    let err = |source| BindError {
        name: cfg.name.clone(),
        address: cfg.address.to_string(),
        source,
    };
    let cx_total = crate::stats::counter(format!("{}.downstream_cx_total", cfg.stat_prefix));
    match &cfg.address {
        ListenAddr::Tcp(addr) => {
            let listener = bind_tcp(*addr).map_err(err)?;
            Ok(tokio::spawn(async move {
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
                    let generation = current.load_full();
                    let drain = generation.drain.subscribe();
                    tokio::spawn(super::serve_tcp(
                        stream,
                        generation.config.clone(),
                        state.clone(),
                        drain,
                    ));
                }
            }))
        }
        ListenAddr::Unix(path) => {
            let p = path.to_string_lossy();
            if !p.starts_with('@') {
                let _ = std::fs::remove_file(path);
            }
            let listener = if let Some(abs) = p.strip_prefix('@') {
                let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(abs.as_bytes()).map_err(err)?;
                let std_l = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(err)?;
                std_l.set_nonblocking(true).map_err(err)?;
                UnixListener::from_std(std_l).map_err(err)?
            } else {
                UnixListener::bind(path).map_err(err)?
            };
            Ok(tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    };
                    cx_total.increment(1);
                    let generation = current.load_full();
                    let drain = generation.drain.subscribe();
                    tokio::spawn(super::serve_unix(
                        stream,
                        generation.config.clone(),
                        state.clone(),
                        drain,
                    ));
                }
            }))
        }
    }
}
