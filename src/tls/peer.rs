//! What a verified client certificate says about the peer: its SANs (the SPIFFE identity is the
//! URI SAN) and subject, read once per connection after the handshake.

use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// A peer certificate's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// URI SANs (`spiffe://<trust domain>/ns/<ns>/sa/<sa>` in a mesh).
    pub uri_sans: Vec<String>,
    /// DNS SANs.
    pub dns_sans: Vec<String>,
    /// Email SANs.
    pub email_sans: Vec<String>,
    /// IP SANs, as text.
    pub ip_sans: Vec<String>,
    /// The subject, RFC 4514 style (empty for SPIFFE certificates).
    pub subject: String,
}

impl PeerCert {
    /// Parse a DER certificate; `None` if it is not one.
    pub fn parse(der: &CertificateDer<'_>) -> Option<PeerCert> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).ok()?;
        let mut out = PeerCert {
            subject: cert.subject().to_string(),
            ..PeerCert::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => out.uri_sans.push((*u).to_string()),
                    GeneralName::DNSName(d) => out.dns_sans.push((*d).to_string()),
                    GeneralName::RFC822Name(e) => out.email_sans.push((*e).to_string()),
                    GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            out.ip_sans.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// The peer's SPIFFE identity (its first `spiffe://` URI SAN).
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uri_sans
            .iter()
            .map(String::as_str)
            .find(|u| u.starts_with("spiffe://"))
    }
}
