//! Compiled downstream TLS (`DownstreamTlsContext`): what a filter chain's TLS transport socket
//! needs, and the rustls server configs built from it once its certificates are known.
//!
//! Certificates may be inline or come over SDS. The settings are fixed when the listener is
//! compiled; the rustls configs are (re)built off the request path when the secrets they use
//! arrive or rotate, and swapped in without touching the listener or its connections.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::matcher::StringMatch;
use super::secret::SecretRef;

/// A certificate and key: inline PEM, or an SDS secret holding them.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `tls_certificates[]` (PEM chain, PEM key).
    Inline {
        /// PEM certificate chain.
        cert_chain: Vec<u8>,
        /// PEM private key.
        private_key: Vec<u8>,
    },
    /// `tls_certificate_sds_secret_configs[]`.
    Sds(SecretRef),
}

/// Trust anchors for client certificates: inline PEM or an SDS validation-context secret.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// `validation_context.trusted_ca`.
    Inline(Vec<u8>),
    /// `validation_context_sds_secret_config` (or the combined context's).
    Sds(SecretRef),
}

/// Which subject alternative names a SAN matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    /// Any type (the deprecated untyped `match_subject_alt_names`).
    Any,
    /// DNS names.
    Dns,
    /// URIs (SPIFFE IDs).
    Uri,
    /// Email addresses.
    Email,
    /// IP addresses.
    Ip,
}

/// One SAN matcher: the peer certificate passes when any of its SANs of the type matches.
#[derive(Debug, Clone)]
pub struct SanMatch {
    /// The SAN type.
    pub san_type: SanType,
    /// The string test.
    pub matcher: StringMatch,
}

/// TLS protocol versions layer8 offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The settings of a downstream TLS context, fixed at config time.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Server certificates (the first is used; rustls serves one chain per config).
    pub certs: Vec<CertSource>,
    /// Trust anchors for client certificates; `None`: client certificates are not requested.
    pub ca: Option<CaSource>,
    /// SAN matchers (any must match); from the inline or default validation context, plus
    /// those of an SDS validation context.
    pub san_matchers: Vec<SanMatch>,
    /// Reject a handshake without a client certificate.
    pub require_client_certificate: bool,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Lowest and highest version.
    pub versions: (TlsVersion, TlsVersion),
    /// TLS 1.2 cipher suites allowed, as rustls names them; empty: rustls' defaults.
    pub tls12_suites: Vec<rustls::CipherSuite>,
    /// How long a listener warms waiting for this context's SDS secrets (`None`: forever).
    pub sds_fetch_timeout: Option<std::time::Duration>,
}

impl TlsSettings {
    /// The SDS secrets this context needs.
    pub fn secret_refs(&self) -> impl Iterator<Item = &SecretRef> {
        let certs = self.certs.iter().filter_map(|c| match c {
            CertSource::Sds(r) => Some(r),
            CertSource::Inline { .. } => None,
        });
        let ca = self.ca.iter().filter_map(|c| match c {
            CaSource::Sds(r) => Some(r),
            CaSource::Inline(_) => None,
        });
        certs.chain(ca)
    }
}

/// The rustls configs of a context: one offering ALPN, and one for clients whose ALPN list has
/// nothing in common with it (Envoy then proceeds without ALPN; rustls would abort).
#[derive(Debug)]
pub struct ServerConfigs {
    /// With the configured ALPN protocols.
    pub with_alpn: Arc<rustls::ServerConfig>,
    /// Without ALPN.
    pub without_alpn: Arc<rustls::ServerConfig>,
    /// The served certificate's first URI SAN (the proxy's SPIFFE identity in a mesh).
    pub local_id: Option<Arc<str>>,
}

impl ServerConfigs {
    /// The config to answer a ClientHello offering `offered` (ALPN names) with.
    pub fn for_client(&self, offered: &[&[u8]]) -> &Arc<rustls::ServerConfig> {
        let ours = &self.with_alpn.alpn_protocols;
        if offered.is_empty() || offered.iter().any(|o| ours.iter().any(|p| p == o)) {
            &self.with_alpn
        } else {
            &self.without_alpn
        }
    }
}

/// `listener.<address>.ssl.*` counters, resolved at config time.
#[derive(Debug, Clone)]
pub struct TlsStats {
    /// Handshakes completed.
    pub handshake: metrics::Counter,
    /// Handshakes failed (protocol errors, untrusted or missing client certificates...).
    pub connection_error: metrics::Counter,
    /// Client certificates whose SANs matched no matcher.
    pub fail_verify_san: metrics::Counter,
    /// Handshakes without a client certificate where one was required.
    pub no_certificate: metrics::Counter,
    /// Connections refused because the certificates have not arrived (SDS).
    pub no_secret: metrics::Counter,
}

/// A filter chain's TLS transport socket.
#[derive(Debug)]
pub struct DownstreamTls {
    /// Settings.
    pub settings: TlsSettings,
    /// The rustls configs; `None` until every secret it needs is known.
    pub server: ArcSwapOption<ServerConfigs>,
    /// Counters.
    pub stats: TlsStats,
}
