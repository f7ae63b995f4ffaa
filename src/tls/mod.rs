//! TLS transport sockets: terminating downstream TLS (and mTLS) on a filter chain with rustls.
//!
//! The config path compiles a `DownstreamTlsContext` into [`TlsSettings`](crate::model::tls)
//! and, when its certificates are known (inline, or delivered over SDS), builds rustls server
//! configs ([`server`]) and swaps them into the chain. The data path ([`accept`]) only loads
//! those configs: read the ClientHello, pick the config (with ALPN, or without when the client's
//! ALPN list has nothing in common with ours, where rustls would abort and Envoy carries on),
//! handshake, and learn the peer's certificate ([`peer`]).

pub mod client;
pub mod peer;
pub mod server;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::model::tls::DownstreamTls;

pub use peer::PeerCert;
pub use server::check_certificate;

/// Errors building a TLS context from its settings and secrets.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No server certificate configured.
    #[error("no server certificate configured")]
    NoCertificate,
    /// A secret of the wrong kind is named where a certificate or CA is expected.
    #[error("secret '{name}' is not a {expected}")]
    WrongKind {
        /// Secret name.
        name: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The certificate or key does not parse, or they do not match.
    #[error("{}{message}", secret.as_ref().map(|s| format!("secret '{s}': ")).unwrap_or_default())]
    Certificate {
        /// The secret it came from, if any.
        secret: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The trusted CA bundle is unusable.
    #[error("trusted_ca: {message}")]
    TrustedCa {
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination.
    #[error("{0}")]
    Rustls(rustls::Error),
}

/// The rustls protocol versions in `(lowest, highest)`.
fn protocol_versions(
    range: (crate::model::tls::TlsVersion, crate::model::tls::TlsVersion),
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    use crate::model::tls::TlsVersion;
    [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| range.0 <= *v && *v <= range.1)
    .map(|(_, p)| p)
    .collect()
}

/// What the handshake established.
#[derive(Debug, Default, Clone)]
pub struct Handshake {
    /// SNI the client sent, lower-cased.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The client's verified certificate, when it sent one.
    pub peer: Option<Arc<PeerCert>>,
    /// This side's identity: the URI SAN of the certificate served.
    pub local_id: Option<Arc<str>>,
}

/// Terminate TLS on an accepted connection. `None`: the handshake failed (counted), timed out,
/// or the chain's certificates have not arrived yet; the connection is closed.
pub async fn accept<S>(
    stream: S,
    tls: &DownstreamTls,
    timeout: Option<Duration>,
) -> Option<(TlsStream<S>, Handshake)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(configs) = tls.server.load_full() else {
        tls.stats.no_secret.increment(1);
        tracing::debug!("TLS chain without certificates yet: closing");
        return None;
    };
    let handshake = async {
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = acceptor.await.ok()?;
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let offered: Vec<&[u8]> = hello.alpn().map(Iterator::collect).unwrap_or_default();
        let config = configs.for_client(&offered).clone();
        match start.into_stream(config).await {
            Ok(stream) => Some((stream, sni)),
            Err(e) => {
                let cause = e.get_ref().and_then(|c| c.downcast_ref::<rustls::Error>());
                if matches!(cause, Some(rustls::Error::NoCertificatesPresented)) {
                    tls.stats.no_certificate.increment(1);
                }
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
        }
    };
    let done = match timeout {
        Some(t) => tokio::time::timeout(t, handshake).await.ok().flatten(),
        None => handshake.await,
    };
    let Some((stream, sni)) = done else {
        tls.stats.connection_error.increment(1);
        return None;
    };
    tls.stats.handshake.increment(1);
    let conn = stream.get_ref().1;
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(PeerCert::parse)
        .map(Arc::new);
    Some((
        stream,
        Handshake {
            sni,
            alpn,
            peer,
            local_id: configs.local_id.clone(),
        },
    ))
}
