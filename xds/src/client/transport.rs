//! gRPC channels to a management server over TCP or a Unix socket (istio's
//! `./etc/istio/proxy/XDS` pipe), plaintext or TLS (the cluster's `UpstreamTlsContext`, built into
//! a rustls config by the caller).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where a management server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` (an IP literal or a name the system resolver knows).
    Tcp(String),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// TLS to the management server: the client config (trust anchors, client certificate, ALPN)
/// and the name to send as SNI.
#[derive(Debug, Clone)]
pub struct Tls {
    /// rustls client config.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI (and the name a default verifier would check).
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// A channel could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {message}")]
pub struct ConnectError {
    target: String,
    message: String,
}

/// How long to wait for the TCP or Unix connection itself.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Open an HTTP/2 channel to `target`, over TLS when `tls` is set (connects eagerly, so a down
/// server is an error here).
pub async fn connect(target: &Target, tls: Option<&Tls>) -> Result<Channel, ConnectError> {
    let err = |message: String| ConnectError {
        target: target.to_string(),
        message,
    };
    match (target, tls) {
        (Target::Tcp(authority), Some(tls)) => {
            let endpoint = Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| err(e.to_string()))?;
            let authority = authority.clone();
            let tls = tls.clone();
            let connector = tower::service_fn(move |_: Uri| {
                let (authority, tls) = (authority.clone(), tls.clone());
                async move {
                    let tcp = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        tokio::net::TcpStream::connect(authority.as_str()),
                    )
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                    let _ = tcp.set_nodelay(true);
                    let stream = tokio_rustls::TlsConnector::from(tls.config)
                        .connect(tls.server_name, tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            });
            endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|e| err(source_chain(&e)))
        }
        (Target::Unix(_), Some(_)) => Err(err("TLS over a Unix socket is not supported".into())),
        (Target::Tcp(authority), None) => {
            let endpoint = Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| err(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            endpoint.connect().await.map_err(|e| err(source_chain(&e)))
        }
        (Target::Unix(path), None) => {
            // The URI is only a placeholder for the :authority; the connector ignores it.
            let endpoint =
                Endpoint::from_static("http://localhost").connect_timeout(CONNECT_TIMEOUT);
            let path = path.clone();
            let connector = tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            });
            endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|e| err(source_chain(&e)))
        }
    }
}

/// An error with its causes, `a: b: c`.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
