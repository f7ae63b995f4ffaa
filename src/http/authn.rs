//! Istio's `istio_authn` HTTP filter (istiod 1.5 to 1.9): peer authentication by mutual TLS.
//!
//! Decided once per connection (the peer is the connection's): a `MutualTls` method passes when
//! the connection carries a verified client certificate with a SPIFFE identity from an accepted
//! trust domain, or, in PERMISSIVE mode, when it carries none. When no method passes and peers
//! are not optional, every request gets Istio's 401.

use crate::model::authn::{MtlsMode, PeerAuthn, TrustDomains};
use crate::tls::Handshake;

/// The trust domain of a SPIFFE ID (`spiffe://<td>/...`).
fn trust_domain(id: &str) -> Option<&str> {
    id.strip_prefix("spiffe://")?.split('/').next()
}

/// Whether the connection's peer is authenticated under `policy`.
pub fn allows(policy: &PeerAuthn, tls: Option<&Handshake>) -> bool {
    if policy.methods.is_empty() || policy.optional {
        return true;
    }
    let peer_id = tls
        .and_then(|h| h.peer.as_deref())
        .and_then(|p| p.spiffe_id());
    policy.methods.iter().any(|mode| match peer_id {
        None => *mode == MtlsMode::Permissive,
        Some(id) => {
            let Some(td) = trust_domain(id) else {
                return false;
            };
            match &policy.trust_domains {
                TrustDomains::Any => true,
                TrustDomains::Allowed(list) => list.iter().any(|a| a == td),
                TrustDomains::Local => tls
                    .and_then(|h| h.local_id.as_deref())
                    .and_then(trust_domain)
                    .is_some_and(|local| local == td),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tls::PeerCert;

    fn conn(peer: Option<&str>, local: Option<&str>) -> Handshake {
        Handshake {
            peer: peer.map(|p| {
                Arc::new(PeerCert {
                    uri_sans: vec![p.to_string()],
                    ..PeerCert::default()
                })
            }),
            local_id: local.map(Arc::from),
            ..Handshake::default()
        }
    }

    #[test]
    fn strict_needs_a_peer_from_an_accepted_trust_domain() {
        let mut p = PeerAuthn {
            methods: vec![MtlsMode::Strict],
            optional: false,
            trust_domains: TrustDomains::Local,
        };
        let local = Some("spiffe://cluster.local/ns/a/sa/b");
        assert!(!allows(&p, None), "plaintext");
        assert!(
            !allows(&p, Some(&conn(None, local))),
            "TLS without a client cert"
        );
        assert!(allows(
            &p,
            Some(&conn(Some("spiffe://cluster.local/ns/x/sa/y"), local))
        ));
        assert!(!allows(
            &p,
            Some(&conn(Some("spiffe://other.td/ns/x/sa/y"), local))
        ));
        p.trust_domains = TrustDomains::Any;
        assert!(allows(
            &p,
            Some(&conn(Some("spiffe://other.td/ns/x/sa/y"), local))
        ));
        p.trust_domains = TrustDomains::Allowed(vec!["other.td".into()]);
        assert!(allows(
            &p,
            Some(&conn(Some("spiffe://other.td/ns/x/sa/y"), local))
        ));
        assert!(!allows(
            &p,
            Some(&conn(Some("spiffe://cluster.local/ns/x/sa/y"), local))
        ));
        p.optional = true;
        assert!(allows(&p, None), "peer_is_optional");
    }

    #[test]
    fn permissive_accepts_plaintext() {
        let p = PeerAuthn {
            methods: vec![MtlsMode::Permissive],
            optional: false,
            trust_domains: TrustDomains::Any,
        };
        assert!(allows(&p, None));
        assert!(allows(&p, Some(&conn(None, None))));
    }
}
