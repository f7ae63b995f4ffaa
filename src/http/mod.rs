//! `envoy.filters.network.http_connection_manager`: HTTP/1.1 and HTTP/2 (h2c prior knowledge,
//! chosen per connection by the codec setting) on hyper, each request handed to the [`router`].

pub mod headers;
pub mod local_reply;
pub mod router;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::listener::ConnInfo;
use crate::model::listener::{Codec, HcmConfig};
use crate::server::State;

/// Response body sent downstream: streamed from upstream, or a local reply.
pub type RespBody = Either<Incoming, Full<Bytes>>;

/// Per-connection context shared by its requests.
#[derive(Debug)]
pub struct ConnCtx {
    /// The HCM config this connection was accepted under.
    pub hcm: Arc<HcmConfig>,
    /// Connection facts.
    pub info: ConnInfo,
    /// Process state (snapshots, stats).
    pub state: Arc<State>,
}

/// Serve HTTP on one downstream connection until it closes or is drained.
pub async fn serve<S>(
    stream: S,
    hcm: Arc<HcmConfig>,
    info: ConnInfo,
    state: Arc<State>,
    mut drain: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    hcm.stats.cx_total.increment(1);
    hcm.stats.cx_active.increment(1.0);
    let ctx = Arc::new(ConnCtx {
        hcm: hcm.clone(),
        info,
        state,
    });
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(router::handle(req, ctx).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    match hcm.codec {
        Codec::Http1 => builder = builder.http1_only(),
        Codec::Http2 => builder = builder.http2_only(),
        Codec::Auto => {}
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(hcm.max_request_headers_bytes.max(8192))
        .header_read_timeout(hcm.request_headers_timeout.or(hcm.idle_timeout))
        .preserve_header_case(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(hcm.max_request_headers_bytes as u32)
        .max_concurrent_streams(2_147_483_647);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let drained = async {
        loop {
            if *drain.borrow_and_update() {
                return;
            }
            if drain.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drained => {
            // HTTP/2: GOAWAY; HTTP/1.1: finish the in-flight request, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
    hcm.stats.cx_active.decrement(1.0);
}
