//! The gRPC services and the listening socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use layer8_xds::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use layer8_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use layer8_xds::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::ControlPlane;

type SotwStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

fn sotw(cp: &ControlPlane, req: Request<Streaming<DiscoveryRequest>>) -> Response<SotwStream> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(crate::stream_sotw::run(cp.clone(), req.into_inner(), tx));
    Response::new(ReceiverStream::new(rx))
}

fn delta(
    cp: &ControlPlane,
    req: Request<Streaming<DeltaDiscoveryRequest>>,
) -> Response<DeltaStream> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(crate::stream_delta::run(cp.clone(), req.into_inner(), tx));
    Response::new(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for ControlPlane {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(sotw(self, req))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(delta(self, req))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for ControlPlane {
    type StreamSecretsStream = SotwStream;
    type DeltaSecretsStream = DeltaStream;

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(sotw(self, req))
    }

    async fn delta_secrets(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(delta(self, req))
    }

    async fn fetch_secrets(
        &self,
        _req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("FetchSecrets"))
    }
}

/// Where a running server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// TCP.
    Tcp(SocketAddr),
    /// Unix socket.
    Unix(PathBuf),
}

/// A running server; [`ServerHandle::stop`] ends its streams and closes the socket.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where it listens.
    pub bound: Bound,
    cp: ControlPlane,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The TCP address (panics for a Unix socket server: a test bug).
    pub fn addr(&self) -> SocketAddr {
        match &self.bound {
            Bound::Tcp(a) => *a,
            Bound::Unix(p) => panic!("server listens on {}", p.display()),
        }
    }

    /// Stop: drop every stream, stop accepting, close the socket.
    pub async fn stop(mut self) {
        self.cp.drop_streams();
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        if let Bound::Unix(p) = &self.bound {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl ControlPlane {
    fn router(&self) -> tonic::transport::server::Router {
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(self.clone()))
            .add_service(SecretDiscoveryServiceServer::new(self.clone()))
    }

    /// Serve on a TCP address (port 0 picks one).
    pub async fn serve_tcp(&self, addr: SocketAddr) -> std::io::Result<ServerHandle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        // No Nagle delays, as istiod (Go sets TCP_NODELAY on every connection).
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            },
        );
        Ok(self.spawn(incoming, Bound::Tcp(bound)))
    }

    /// Serve on a TCP address over TLS (`config` decides the certificate, client authentication
    /// and ALPN): istiod's port 15012 shape.
    pub async fn serve_tls(
        &self,
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> std::io::Result<ServerHandle> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsConn>>(16);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                // A failed handshake drops that connection only.
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                });
            }
        });
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(self.spawn(incoming, Bound::Tcp(bound)))
    }

    /// Serve on a Unix socket path (an existing socket file is replaced).
    pub async fn serve_unix(&self, path: &Path) -> std::io::Result<ServerHandle> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        Ok(self.spawn(incoming, Bound::Unix(path.to_path_buf())))
    }

    /// Serve `incoming` until [`ServerHandle::stop`].
    fn spawn<I, IO, IE>(&self, incoming: I, bound: Bound) -> ServerHandle
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
        IO::ConnectInfo: Clone + Send + Sync + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        });
        ServerHandle {
            bound,
            cp: self.clone(),
            shutdown: Some(tx),
            task,
        }
    }
}

/// A TLS connection the gRPC server can serve.
struct TlsConn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
