//! Accepting connections: listener sockets and their lifecycle ([`manager`]), listener filters
//! ([`inspect`], [`original_dst`]), filter-chain selection ([`filter_chain`]), then hand-off to
//! the chain's terminal network filter (tcp_proxy or the HTTP connection manager).

pub mod balance;
pub mod filter_chain;
pub mod inspect;
pub mod manager;
pub mod original_dst;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::model::listener::{FilterChain, ListenerConfig, NetworkFilter};
use crate::server::State;

pub use manager::ListenerManager;

/// What listener filters learned about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Downstream peer address.
    pub peer: SocketAddr,
    /// Local address the connection arrived on.
    pub local: SocketAddr,
    /// Original destination (iptables REDIRECT), if known.
    pub original_dst: Option<SocketAddr>,
    /// TLS SNI, lower-cased.
    pub sni: Option<String>,
    /// `tls` or `raw_buffer`.
    pub transport: &'static str,
    /// ALPN protocols (TLS) or the http_inspector's protocol (`http/1.1`, `h2c`).
    pub app_protocols: Vec<String>,
    /// TLS terminated by the chain: what the handshake established.
    pub tls: Option<crate::tls::Handshake>,
}

impl ConnInfo {
    /// The destination used for matching: the original destination if known, else local.
    pub fn destination(&self) -> SocketAddr {
        self.original_dst.unwrap_or(self.local)
    }
}

/// Run listener filters, pick a filter chain, and serve the connection on it.
pub async fn serve_tcp(
    stream: TcpStream,
    listener: Arc<ListenerConfig>,
    state: Arc<State>,
    drain: watch::Receiver<bool>,
) {
    let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut info = ConnInfo {
        peer,
        local,
        original_dst: None,
        sni: None,
        transport: "raw_buffer",
        app_protocols: Vec::new(),
        tls: None,
    };
    let mut listener = listener;
    if listener.inspectors.original_dst || listener.use_original_dst {
        info.original_dst = original_dst::get(&stream, local).filter(|d| *d != local);
    }
    if listener.use_original_dst {
        if let Some(dst) = info.original_dst {
            if let Some(target) = state.find_listener_for(dst) {
                listener = target;
            }
        }
    }
    if listener.inspectors.tls || listener.inspectors.http {
        let inspected = tokio::time::timeout(
            listener.listener_filters_timeout,
            inspect::inspect(&stream, listener.inspectors),
        )
        .await;
        match inspected {
            Ok(found) => {
                info.transport = found.transport;
                info.sni = found.sni;
                info.app_protocols = found.app_protocols;
            }
            Err(_) if listener.continue_on_listener_filters_timeout => {}
            Err(_) => {
                crate::stats::counter(format!(
                    "{}.downstream_pre_cx_timeout",
                    listener.stat_prefix
                ))
                .increment(1);
                return;
            }
        }
    }
    let Some(chain) = filter_chain::select(&listener, &info) else {
        crate::stats::counter(format!("{}.no_filter_chain_match", listener.stat_prefix))
            .increment(1);
        tracing::debug!(listener = %listener.name, peer = %info.peer, "no filter chain matched; closing");
        if !listener.access_logs.is_empty() {
            let mut r = crate::access_log::Record::start();
            r.flags.set(crate::access_log::Flags::NO_ROUTE);
            r.details = Some("filter_chain_not_found".into());
            r.duration = Some(std::time::Duration::ZERO);
            listener.access_logs.emit(&r, &info);
        }
        return;
    };
    serve_chain(stream, &chain, info, state, drain).await;
}

/// Run the chain's transport socket (TLS termination, if any), then its terminal filter.
async fn serve_chain<S>(
    stream: S,
    chain: &FilterChain,
    mut info: ConnInfo,
    state: Arc<State>,
    drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match &chain.tls {
        None => serve_filter(stream, chain, info, state, drain).await,
        Some(tls) => {
            let Some((stream, hs)) = crate::tls::accept(stream, tls, chain.handshake_timeout).await
            else {
                return;
            };
            info.transport = "tls";
            if hs.sni.is_some() {
                info.sni = hs.sni.clone();
            }
            info.tls = Some(hs);
            serve_filter(stream, chain, info, state, drain).await;
        }
    }
}

async fn serve_filter<S>(
    stream: S,
    chain: &FilterChain,
    info: ConnInfo,
    state: Arc<State>,
    drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match &chain.terminal {
        NetworkFilter::TcpProxy(t) => crate::tcp::proxy(stream, t.clone(), info, state).await,
        NetworkFilter::Http(h) => crate::http::serve(stream, h.clone(), info, state, drain).await,
        NetworkFilter::Runtime(r) => crate::runtime::serve(stream, r.clone(), state, drain).await,
        NetworkFilter::Actuator => crate::runtime::actuator::serve(stream, state).await,
    }
}

/// Serve a Unix-socket connection (no listener filters apply).
pub async fn serve_unix(
    stream: tokio::net::UnixStream,
    listener: Arc<ListenerConfig>,
    state: Arc<State>,
    drain: watch::Receiver<bool>,
) {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let info = ConnInfo {
        peer: unspecified,
        local: unspecified,
        original_dst: None,
        sni: None,
        transport: "raw_buffer",
        app_protocols: Vec::new(),
        tls: None,
    };
    let Some(chain) = filter_chain::select(&listener, &info) else {
        return;
    };
    serve_chain(stream, &chain, info, state, drain).await;
}
