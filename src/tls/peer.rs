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
    /// The subject, RFC 2253 style as Envoy prints it (empty for SPIFFE certificates).
    pub subject: String,
    /// SHA-256 of the DER certificate, lower-case hex (XFCC's `Hash`).
    pub sha256: String,
}

impl PeerCert {
    /// Parse a DER certificate; `None` if it is not one.
    pub fn parse(der: &CertificateDer<'_>) -> Option<PeerCert> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let mut out = PeerCert {
            subject: rfc2253(cert.subject()),
            sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
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

    /// The `x-forwarded-client-cert` element for this peer: `By` (this side's URI SANs),
    /// `Hash`, then the requested details in Envoy's order.
    pub fn xfcc(&self, local_id: Option<&str>, xfcc: &crate::model::listener::Xfcc) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(by) = local_id {
            parts.push(format!("By={by}"));
        }
        parts.push(format!("Hash={}", self.sha256));
        if xfcc.subject {
            parts.push(format!("Subject=\"{}\"", self.subject.replace('"', "\\\"")));
        }
        if xfcc.uri {
            if self.uri_sans.is_empty() {
                parts.push("URI=".into());
            }
            parts.extend(self.uri_sans.iter().map(|u| format!("URI={u}")));
        }
        if xfcc.dns {
            parts.extend(self.dns_sans.iter().map(|d| format!("DNS={d}")));
        }
        parts.join(";")
    }

    /// The peer's SPIFFE identity (its first `spiffe://` URI SAN).
    pub fn spiffe_id(&self) -> Option<&str> {
        self.uri_sans
            .iter()
            .map(String::as_str)
            .find(|u| u.starts_with("spiffe://"))
    }
}

/// A name as RFC 2253 writes it: last RDN first, `,` between RDNs, `+` inside one.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let key = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    let value = atv.as_str().unwrap_or_default();
                    format!("{key}={}", escape(value))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i == last && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
