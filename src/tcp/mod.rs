//! `envoy.filters.network.tcp_proxy`: pick a cluster (weighted), connect to a host, and copy
//! bytes both ways with an idle timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::access_log::{Flags, Record};
use crate::listener::ConnInfo;
use crate::model::cluster::{Discovery, EndpointAddr};
use crate::model::listener::TcpProxyConfig;
use crate::server::State;

/// Proxy one downstream connection, and write its access log line when it ends.
pub async fn proxy<S>(
    mut downstream: S,
    cfg: Arc<TcpProxyConfig>,
    info: ConnInfo,
    state: Arc<State>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut record = (!cfg.access_logs.is_empty()).then(|| Box::new(Record::start()));
    relay(&mut downstream, &cfg, &info, &state, record.as_deref_mut()).await;
    if let Some(mut r) = record {
        r.duration = Some(r.started.elapsed());
        cfg.access_logs.emit(&r, &info);
    }
}

/// Pick a host, connect, and copy until either side is done.
async fn relay<S>(
    downstream: &mut S,
    cfg: &TcpProxyConfig,
    info: &ConnInfo,
    state: &State,
    mut log: Option<&mut Record>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    cfg.stats.cx_total.increment(1);
    let pick = if cfg.clusters.len() == 1 {
        0
    } else {
        rand::random_range(0..cfg.total_weight)
    };
    let Some((_, name)) = cfg.clusters.iter().find(|(upper, _)| pick < *upper) else {
        return;
    };
    let snapshot = state.snapshots.load();
    let Some(cluster) = snapshot.cluster(name).cloned() else {
        cfg.stats.no_route.increment(1);
        tracing::debug!(cluster = %name, "tcp_proxy: unknown cluster");
        if let Some(l) = log {
            l.flags.set(Flags::NO_CLUSTER);
        }
        return;
    };
    if let Some(l) = log.as_deref_mut() {
        l.upstream_cluster = Some(cluster.name.clone());
    }
    let host = if cluster.config.discovery == Discovery::OriginalDst {
        info.original_dst.map(|dst| cluster.original_dst_host(dst))
    } else {
        cluster.pick(None, 0, &[])
    };
    let Some(host) = host else {
        cluster.stats.cx_none_healthy.increment(1);
        if let Some(l) = log {
            l.flags.set(Flags::NO_HEALTHY_UPSTREAM);
        }
        return;
    };
    if let Some(l) = log.as_deref_mut() {
        l.upstream_host = Some(host.key().to_string());
        l.attempts = 1;
    }
    let connect = async {
        match &host.addr {
            EndpointAddr::Ip(a) => tokio::net::TcpStream::connect(a).await.map(|s| {
                let _ = s.set_nodelay(true);
                let local = s.local_addr().ok();
                (Box::new(s) as Box<dyn Io>, local)
            }),
            EndpointAddr::Unix(p) => tokio::net::UnixStream::connect(p)
                .await
                .map(|s| (Box::new(s) as Box<dyn Io>, None)),
            EndpointAddr::Dns(h, _) => Err(std::io::Error::other(format!("unresolved {h}"))),
        }
    };
    let mut upstream = match tokio::time::timeout(cluster.config.connect_timeout, connect).await {
        Ok(Ok((s, local))) => {
            if let Some(l) = log.as_deref_mut() {
                l.upstream_local = local;
            }
            s
        }
        _ => {
            cluster.stats.cx_connect_fail.increment(1);
            if let Some(l) = log {
                l.flags.set(Flags::CONNECT_FAILURE);
            }
            return;
        }
    };
    cluster.stats.cx_total.increment(1);
    cluster.stats.cx_active.increment(1.0);
    cfg.stats.cx_active.increment(1.0);
    let (rx, tx, end) = copy_with_idle(downstream, &mut upstream, cfg.idle_timeout).await;
    cluster.stats.cx_active.decrement(1.0);
    cfg.stats.cx_active.decrement(1.0);
    cfg.stats.rx_bytes.increment(rx);
    cfg.stats.tx_bytes.increment(tx);
    cluster.stats.cx_tx_bytes.increment(rx);
    cluster.stats.cx_rx_bytes.increment(tx);
    if let Some(IdleOrIo::Idle) = end {
        cfg.stats.idle_timeout.increment(1);
    }
    if let Some(l) = log {
        l.bytes_received = rx;
        l.bytes_sent = tx;
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

enum IdleOrIo {
    Idle,
    Io,
}

/// Copy both directions; an idle period longer than `idle` (no bytes either way) ends it.
/// Returns the bytes copied from `a` and from `b`, and what cut the copy short, if anything.
async fn copy_with_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
) -> (u64, u64, Option<IdleOrIo>)
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(idle) = idle else {
        return match tokio::io::copy_bidirectional(a, b).await {
            Ok((rx, tx)) => (rx, tx, None),
            Err(_) => (0, 0, Some(IdleOrIo::Io)),
        };
    };
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut buf_a = vec![0u8; 16 * 1024];
    let mut buf_b = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    let (mut rx, mut tx) = (0u64, 0u64);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut buf_a), if a_open => match r {
                Ok(0) | Err(_) => { a_open = false; let _ = bw.shutdown().await; }
                Ok(n) => { rx += n as u64; if bw.write_all(&buf_a[..n]).await.is_err() { return (rx, tx, Some(IdleOrIo::Io)); } }
            },
            r = br.read(&mut buf_b), if b_open => match r {
                Ok(0) | Err(_) => { b_open = false; let _ = aw.shutdown().await; }
                Ok(n) => { tx += n as u64; if aw.write_all(&buf_b[..n]).await.is_err() { return (rx, tx, Some(IdleOrIo::Io)); } }
            },
            _ = tokio::time::sleep(idle) => return (rx, tx, Some(IdleOrIo::Idle)),
        }
    }
    (rx, tx, None)
}
