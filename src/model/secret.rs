//! Secrets (SDS): certificates and trust anchors, held ready for TLS.

/// Where a referenced secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretSource {
    /// The ADS stream (`sds_config: {ads: {}}`).
    Ads,
    /// A separate SDS stream to the bootstrap cluster of this name (istio's `sds-grpc`).
    Cluster(String),
    /// The bootstrap's `static_resources.secrets` (a reference by name, without `sds_config`).
    Static,
}

/// A secret referenced by a cluster or listener (`sds_secret_config`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// Secret name (`default`, `ROOTCA`, ...).
    pub name: String,
    /// Its source.
    pub source: SecretSource,
}

/// A compiled secret.
#[derive(Clone)]
pub enum Secret {
    /// A certificate chain and its private key (PEM).
    TlsCertificate {
        /// PEM certificate chain.
        cert_chain: Vec<u8>,
        /// PEM private key.
        private_key: Vec<u8>,
    },
    /// Trust anchors for peer validation (PEM).
    ValidationContext {
        /// PEM CA bundle.
        trusted_ca: Vec<u8>,
        /// SAN matchers a peer certificate must pass (empty: any).
        san_matchers: Vec<super::tls::SanMatch>,
    },
    /// A kind layer8 stores but does not use (session ticket keys, generic secrets).
    Other,
}

impl std::fmt::Debug for Secret {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::TlsCertificate { cert_chain, .. } => f
                .debug_struct("TlsCertificate")
                .field("cert_chain_bytes", &cert_chain.len())
                .finish_non_exhaustive(),
            Secret::ValidationContext {
                trusted_ca,
                san_matchers,
            } => f
                .debug_struct("ValidationContext")
                .field("trusted_ca_bytes", &trusted_ca.len())
                .field("san_matchers", san_matchers)
                .finish(),
            Secret::Other => f.write_str("Other"),
        }
    }
}
