//! Building rustls server configs from [`TlsSettings`] and the secrets they name. Runs on the
//! config path only: when a listener is compiled and whenever a secret it uses arrives or
//! rotates.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::verify::SanVerifier;
use super::TlsError;
use crate::model::secret::Secret;
use crate::model::tls::{
    CaSource, CertSource, DownstreamTls, SanMatch, ServerConfigs, TlsSettings,
};

/// Looks up a secret by name in the current configuration.
pub type SecretLookup<'a> = &'a dyn Fn(&str) -> Option<Arc<Secret>>;

/// Parse a PEM chain and key and check that they belong together.
pub fn check_certificate(chain: &[u8], key: &[u8]) -> Result<(), String> {
    certified_key(chain, key, &provider(&[])).map(|_| ())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("certificate chain: no PEM certificate found".into());
    }
    Ok(certs)
}

fn certified_key(
    chain: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    let chain = certs(chain)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    rustls::sign::CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("certificate and private key: {e}"))
}

/// ring's provider, with TLS 1.2 suites limited to `tls12` when it is not empty.
fn provider(tls12: &[rustls::CipherSuite]) -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if !tls12.is_empty() {
        p.cipher_suites.retain(|s| match s {
            rustls::SupportedCipherSuite::Tls12(_) => tls12.contains(&s.suite()),
            rustls::SupportedCipherSuite::Tls13(_) => true,
        });
    }
    p
}

/// Build the rustls configs. `Ok(None)`: a secret it needs has not arrived yet.
pub fn build(
    s: &TlsSettings,
    secrets: SecretLookup<'_>,
    fail_verify_san: &metrics::Counter,
) -> Result<Option<ServerConfigs>, TlsError> {
    let Some(first) = s.certs.first() else {
        return Err(TlsError::NoCertificate);
    };
    let (chain, key, cert_name) = match first {
        CertSource::Inline {
            cert_chain,
            private_key,
        } => (cert_chain.clone(), private_key.clone(), None),
        CertSource::Sds(r) => match secrets(&r.name).as_deref() {
            None => return Ok(None),
            Some(Secret::TlsCertificate {
                cert_chain,
                private_key,
            }) => (
                cert_chain.clone(),
                private_key.clone(),
                Some(r.name.clone()),
            ),
            Some(_) => {
                return Err(TlsError::WrongKind {
                    name: r.name.clone(),
                    expected: "tls_certificate",
                })
            }
        },
    };
    let mut matchers: Vec<SanMatch> = s.san_matchers.clone();
    let ca = match &s.ca {
        None => None,
        Some(CaSource::Inline(pem)) => Some(pem.clone()),
        Some(CaSource::Sds(r)) => match secrets(&r.name).as_deref() {
            None => return Ok(None),
            Some(Secret::ValidationContext {
                trusted_ca,
                san_matchers,
            }) => {
                matchers.extend(san_matchers.iter().cloned());
                Some(trusted_ca.clone())
            }
            Some(_) => {
                return Err(TlsError::WrongKind {
                    name: r.name.clone(),
                    expected: "validation_context",
                })
            }
        },
    };
    let local_id = certs(&chain)
        .ok()
        .and_then(|c| c.first().and_then(super::PeerCert::parse))
        .and_then(|p| p.uri_sans.into_iter().next())
        .map(Arc::from);
    let provider = Arc::new(provider(&s.tls12_suites));
    let key = certified_key(&chain, &key, &provider).map_err(|message| TlsError::Certificate {
        secret: cert_name,
        message,
    })?;
    let versions = super::protocol_versions(s.versions);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(TlsError::Rustls)?;
    let mut config = match ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs(&pem).map_err(|message| TlsError::TrustedCa { message })? {
                roots.add(c).map_err(|e| TlsError::TrustedCa {
                    message: e.to_string(),
                })?;
            }
            let mut vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !s.require_client_certificate {
                vb = vb.allow_unauthenticated();
            }
            let inner = vb.build().map_err(|e| TlsError::TrustedCa {
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(Arc::new(SanVerifier {
                inner,
                matchers,
                fail_verify_san: fail_verify_san.clone(),
            }))
        }
    }
    .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.ignore_client_order = false;
    let without_alpn = Arc::new(config.clone());
    config.alpn_protocols = s.alpn.clone();
    Ok(Some(ServerConfigs {
        with_alpn: Arc::new(config),
        without_alpn,
        local_id,
    }))
}

/// (Re)build a context's configs from the current secrets and swap them in. Returns whether it
/// is ready (every secret it needs is here).
pub fn resolve(tls: &DownstreamTls, secrets: SecretLookup<'_>) -> Result<bool, TlsError> {
    match build(&tls.settings, secrets, &tls.stats.fail_verify_san)? {
        Some(c) => {
            tls.server.store(Some(Arc::new(c)));
            Ok(true)
        }
        None => Ok(tls.server.load().is_some()),
    }
}
