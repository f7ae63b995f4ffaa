//! Client-certificate verification: webpki chain validation against the trusted CA, then
//! Envoy's SAN matchers (any SAN of the right type matching any matcher passes).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::peer::PeerCert;
use crate::model::tls::{SanMatch, SanType};

/// A webpki verifier followed by SAN matching.
#[derive(Debug)]
pub struct SanVerifier {
    /// Chain validation (and whether a certificate is required).
    pub inner: Arc<dyn ClientCertVerifier>,
    /// Matchers; empty: any SAN.
    pub matchers: Vec<SanMatch>,
    /// Counts SAN mismatches.
    pub fail_verify_san: metrics::Counter,
}

/// Whether the certificate's SANs satisfy the matchers.
pub fn san_matches(cert: &PeerCert, matchers: &[SanMatch]) -> bool {
    if matchers.is_empty() {
        return true;
    }
    matchers.iter().any(|m| {
        let test = |names: &[String]| names.iter().any(|n| m.matcher.matches(n));
        match m.san_type {
            SanType::Dns => test(&cert.dns_sans),
            SanType::Uri => test(&cert.uri_sans),
            SanType::Email => test(&cert.email_sans),
            SanType::Ip => test(&cert.ip_sans),
            SanType::Any => {
                test(&cert.dns_sans)
                    || test(&cert.uri_sans)
                    || test(&cert.email_sans)
                    || test(&cert.ip_sans)
            }
        }
    })
}

impl ClientCertVerifier for SanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.matchers.is_empty() {
            return Ok(verified);
        }
        let cert = PeerCert::parse(end_entity).ok_or(Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if san_matches(&cert, &self.matchers) {
            Ok(verified)
        } else {
            self.fail_verify_san.increment(1);
            Err(Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server-certificate verifier with Envoy's upstream semantics: the chain must lead to a
/// trusted CA and, when SAN matchers are configured, a SAN must match; the host name itself is
/// not checked (Envoy checks names only through `match_subject_alt_names`).
#[derive(Debug)]
pub struct UpstreamVerifier {
    /// Trust anchors.
    pub roots: Arc<rustls::RootCertStore>,
    /// SAN matchers; empty: any.
    pub matchers: Vec<SanMatch>,
    /// Signature algorithms.
    pub provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if !self.matchers.is_empty() {
            let peer = PeerCert::parse(end_entity).ok_or(Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))?;
            if !san_matches(&peer, &self.matchers) {
                return Err(Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
