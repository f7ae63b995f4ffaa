//! Compiled Istio peer authentication (`istio_authn` HTTP filter of istiod 1.5 to 1.9): which
//! mutual-TLS modes authenticate a peer, and which trust domains it may come from.

/// A `MutualTls` peer method's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    /// A verified client certificate with a SPIFFE identity is required.
    Strict,
    /// Plaintext and TLS without a client certificate pass too.
    Permissive,
}

/// Which trust domains a peer's SPIFFE identity may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustDomains {
    /// Any (`skip_validate_trust_domain`).
    Any,
    /// The trust domain of this proxy's own certificate.
    Local,
    /// These (`allowed_trust_domains`).
    Allowed(Vec<String>),
}

/// The compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthn {
    /// Peer methods, in order: the first that passes authenticates the peer.
    pub methods: Vec<MtlsMode>,
    /// Accept the request even when no method passes (`peer_is_optional`).
    pub optional: bool,
    /// Trust-domain check on the peer's identity.
    pub trust_domains: TrustDomains,
}
