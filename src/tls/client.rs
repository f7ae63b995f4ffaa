//! TLS client configs: how layer8 talks TLS to a management server (the xDS cluster's
//! `UpstreamTlsContext`). Built once, on the config path.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::verify::UpstreamVerifier;
use super::TlsError;
use crate::model::tls::{SanMatch, TlsVersion};

/// What an `UpstreamTlsContext` to a management server says.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// PEM trust anchors for the server's certificate.
    pub trusted_ca: Vec<u8>,
    /// SAN matchers for the server's certificate (empty: any).
    pub san_matchers: Vec<SanMatch>,
    /// Client certificate chain and key (PEM), for mutual TLS.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// SNI to send.
    pub sni: String,
    /// ALPN (gRPC needs `h2`).
    pub alpn: Vec<Vec<u8>>,
    /// Lowest and highest version.
    pub versions: (TlsVersion, TlsVersion),
}

/// Build the xDS client's TLS.
pub fn build(s: &ClientSettings) -> Result<layer8_xds::client::Tls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_slice_iter(&s.trusted_ca)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::TrustedCa {
            message: e.to_string(),
        })?;
    if cas.is_empty() {
        return Err(TlsError::TrustedCa {
            message: "no PEM certificate found".into(),
        });
    }
    for c in cas {
        roots.add(c).map_err(|e| TlsError::TrustedCa {
            message: e.to_string(),
        })?;
    }
    let versions = super::protocol_versions(s.versions);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UpstreamVerifier {
            roots: Arc::new(roots),
            matchers: s.san_matchers.clone(),
            provider,
        }));
    let mut config = match &s.client_cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let certs = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Certificate {
                    secret: None,
                    message: format!("certificate chain: {e}"),
                })?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Certificate {
                secret: None,
                message: format!("private key: {e}"),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(TlsError::Rustls)?
        }
    };
    config.alpn_protocols = s.alpn.clone();
    let server_name = ServerName::try_from(s.sni.clone()).map_err(|e| TlsError::Certificate {
        secret: None,
        message: format!("sni '{}': {e}", s.sni),
    })?;
    Ok(layer8_xds::client::Tls {
        config: Arc::new(config),
        server_name,
    })
}
