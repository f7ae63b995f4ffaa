//! `DownstreamTlsContext` -> [`TlsSettings`]: certificates (inline or SDS), client-certificate
//! validation (trusted CA, SAN matchers), ALPN, protocol versions and TLS 1.2 cipher suites.
//!
//! Settings layer8 cannot honour are rejected, naming the field, when ignoring them would weaken
//! security (certificate pinning, CRLs, untrusted chains accepted); the rest are noted.

use layer8_xds::pb::envoy::config::core::v3 as core;
use layer8_xds::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use layer8_xds::pb::ext::envoy::extensions::transport_sockets::tls::v3 as tls_ext;

use super::{ConfigError, Ctx, Notes};
use crate::model::tls::{CaSource, CertSource, SanMatch, SanType, TlsSettings, TlsVersion};

/// Compile a listener transport socket. `Ok(None)`: plaintext (`raw_buffer` or none).
pub fn downstream(
    ts: &core::TransportSocket,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<Option<TlsSettings>, ConfigError> {
    use core::transport_socket::ConfigType;
    if !super::is_tls_transport(ts) {
        return Ok(None);
    }
    let ctx = ctx.at("typed_config");
    let any = match &ts.config_type {
        Some(ConfigType::TypedConfig(a)) if a.type_url.ends_with(".DownstreamTlsContext") => a,
        Some(ConfigType::TypedConfig(a)) => {
            return Err(ctx.err(format!(
                "transport socket '{}' ({}) is not supported on listeners",
                ts.name, a.type_url
            )))
        }
        None => return Err(ctx.err("a TLS transport socket needs a DownstreamTlsContext")),
    };
    let d: tls_ext::DownstreamTlsContext = any.to_msg().map_err(|e| ctx.err(e.to_string()))?;
    if d.require_sni.as_ref().is_some_and(|b| b.value) {
        return Err(ctx.at("require_sni").err("not supported"));
    }
    if d.ocsp_staple_policy != 0 {
        return Err(ctx
            .at("ocsp_staple_policy")
            .err("OCSP stapling is not supported"));
    }
    if d.session_ticket_keys_type.is_some() {
        notes.skip(
            &ctx.at("session_ticket_keys"),
            "session ticket keys (rustls issues its own tickets)",
        );
    }
    let common = d.common_tls_context.unwrap_or_default();
    let cctx = ctx.at("common_tls_context");
    let mut settings = common_context(&common, &cctx, notes)?;
    settings.require_client_certificate = d.require_client_certificate.is_some_and(|b| b.value);
    if settings.require_client_certificate && settings.ca.is_none() {
        return Err(ctx
            .at("require_client_certificate")
            .err("requiring a client certificate needs a validation context with trusted_ca"));
    }
    if settings.certs.is_empty() {
        return Err(cctx.err(
            "a server needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)",
        ));
    }
    Ok(Some(settings))
}

fn common_context(
    c: &tls_ext::CommonTlsContext,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<TlsSettings, ConfigError> {
    if c.tls_certificate_provider_instance.is_some() {
        return Err(ctx
            .at("tls_certificate_provider_instance")
            .err("certificate providers are not supported"));
    }
    if c.custom_handshaker.is_some() || c.custom_tls_certificate_selector.is_some() {
        return Err(ctx.err("custom handshakers and certificate selectors are not supported"));
    }
    let mut certs = Vec::new();
    for (i, t) in c.tls_certificates.iter().enumerate() {
        let tctx = ctx.at(format!("tls_certificates[{i}]"));
        let (cert_chain, private_key) = certificate(t, &tctx)?;
        crate::tls::check_certificate(&cert_chain, &private_key).map_err(|e| tctx.err(e))?;
        certs.push(CertSource::Inline {
            cert_chain,
            private_key,
        });
    }
    // How long a listener waits for each secret (Envoy's init targets): `None` = forever.
    let mut waits: Vec<Option<std::time::Duration>> = Vec::new();
    let mut sds = |s: &tls::SdsSecretConfig, sctx: &Ctx| -> Result<_, ConfigError> {
        if let Some(cs) = &s.sds_config {
            waits.push(super::config_source::initial_fetch_timeout(
                cs,
                &sctx.at("sds_config"),
            )?);
        }
        super::secret::secret_ref(s, sctx)
    };
    for (i, s) in c.tls_certificate_sds_secret_configs.iter().enumerate() {
        let sctx = ctx.at(format!("tls_certificate_sds_secret_configs[{i}]"));
        certs.push(CertSource::Sds(sds(s, &sctx)?));
    }
    if certs.len() > 1 {
        notes.skip(
            ctx,
            "more than one server certificate (the first is served)",
        );
    }
    use tls_ext::common_tls_context::ValidationContextType as V;
    let (ca, san_matchers) = match &c.validation_context_type {
        None => (None, Vec::new()),
        Some(V::ValidationContext(v)) => {
            let vctx = ctx.at("validation_context");
            let ca = match &v.trusted_ca {
                Some(d) => Some(CaSource::Inline(super::secret::data_source(
                    d,
                    &vctx.at("trusted_ca"),
                )?)),
                None => None,
            };
            (ca, validation_context(v, &vctx, notes)?)
        }
        Some(V::ValidationContextSdsSecretConfig(s)) => {
            let sref = sds(s, &ctx.at("validation_context_sds_secret_config"))?;
            (Some(CaSource::Sds(sref)), Vec::new())
        }
        Some(V::CombinedValidationContext(cv)) => {
            let cctx = ctx.at("combined_validation_context");
            let s = cv
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    cctx.at("validation_context_sds_secret_config")
                        .err("required")
                })?;
            let sref = sds(s, &cctx.at("validation_context_sds_secret_config"))?;
            let default = cv.default_validation_context.clone().unwrap_or_default();
            let dctx = cctx.at("default_validation_context");
            if default.trusted_ca.is_some() {
                notes.skip(
                    &dctx.at("trusted_ca"),
                    "trusted_ca of the default context (the SDS context's is used)",
                );
            }
            (
                Some(CaSource::Sds(sref)),
                validation_context(&default, &dctx, notes)?,
            )
        }
        Some(_) => {
            return Err(ctx.err("certificate provider validation contexts are not supported"))
        }
    };
    let (versions, tls12_suites) = match &c.tls_params {
        Some(p) => tls_params(p, &ctx.at("tls_params"), notes)?,
        None => ((TlsVersion::Tls12, TlsVersion::Tls13), Vec::new()),
    };
    let sds_fetch_timeout = if waits.iter().any(Option::is_none) {
        None
    } else {
        waits.into_iter().flatten().max()
    };
    Ok(TlsSettings {
        sds_fetch_timeout,
        certs,
        ca,
        san_matchers,
        require_client_certificate: false,
        alpn: c
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
        versions,
        tls12_suites,
    })
}

fn certificate(t: &tls::TlsCertificate, ctx: &Ctx) -> Result<(Vec<u8>, Vec<u8>), ConfigError> {
    if t.private_key_provider.is_some() {
        return Err(ctx
            .at("private_key_provider")
            .err("private key providers are not supported"));
    }
    let chain = t
        .certificate_chain
        .as_ref()
        .ok_or_else(|| ctx.at("certificate_chain").err("required"))?;
    let key = t
        .private_key
        .as_ref()
        .ok_or_else(|| ctx.at("private_key").err("required"))?;
    Ok((
        super::secret::data_source(chain, &ctx.at("certificate_chain"))?,
        super::secret::data_source(key, &ctx.at("private_key"))?,
    ))
}

/// The SAN matchers of a validation context; settings that would pin or restrict peers further
/// (hashes, SPKI, CRL, custom validators) are rejected rather than ignored.
pub fn validation_context(
    v: &tls::CertificateValidationContext,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<Vec<SanMatch>, ConfigError> {
    if !v.verify_certificate_spki.is_empty() {
        return Err(ctx.at("verify_certificate_spki").err("not supported"));
    }
    if !v.verify_certificate_hash.is_empty() {
        return Err(ctx.at("verify_certificate_hash").err("not supported"));
    }
    if v.crl.is_some() {
        return Err(ctx
            .at("crl")
            .err("certificate revocation lists are not supported"));
    }
    if v.custom_validator_config.is_some() {
        return Err(ctx
            .at("custom_validator_config")
            .err("custom validators are not supported"));
    }
    if v.trust_chain_verification != 0 {
        return Err(ctx
            .at("trust_chain_verification")
            .err("only VERIFY_TRUST_CHAIN is supported"));
    }
    if v.allow_expired_certificate {
        return Err(ctx
            .at("allow_expired_certificate")
            .err("accepting expired certificates is not supported"));
    }
    if v.ca_certificate_provider_instance.is_some() || v.system_root_certs.is_some() {
        return Err(ctx.err("certificate providers and system root certificates are not supported"));
    }
    if v.watched_directory.is_some() {
        notes.skip(
            &ctx.at("watched_directory"),
            "watched directory (files are read once)",
        );
    }
    let mut out = Vec::new();
    #[allow(deprecated)]
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        out.push(SanMatch {
            san_type: SanType::Any,
            matcher: super::route::string_matcher(
                m,
                &ctx.at(format!("match_subject_alt_names[{i}]")),
            )?,
        });
    }
    use tls::subject_alt_name_matcher::SanType as T;
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let mctx = ctx.at(format!("match_typed_subject_alt_names[{i}]"));
        let san_type = match T::try_from(m.san_type) {
            Ok(T::Dns) => SanType::Dns,
            Ok(T::Uri) => SanType::Uri,
            Ok(T::Email) => SanType::Email,
            Ok(T::IpAddress) => SanType::Ip,
            _ => {
                return Err(mctx
                    .at("san_type")
                    .err("must be DNS, URI, EMAIL or IP_ADDRESS"))
            }
        };
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| mctx.at("matcher").err("required"))?;
        out.push(SanMatch {
            san_type,
            matcher: super::route::string_matcher(matcher, &mctx.at("matcher"))?,
        });
    }
    Ok(out)
}

/// Protocol versions and TLS 1.2 cipher suites. OpenSSL cipher names rustls does not implement
/// (CBC, static RSA key exchange) are dropped with a note; a list left empty is an error.
fn tls_params(
    p: &tls::TlsParameters,
    ctx: &Ctx,
    notes: &mut Notes,
) -> Result<((TlsVersion, TlsVersion), Vec<rustls::CipherSuite>), ConfigError> {
    use tls::tls_parameters::TlsProtocol as P;
    let min = match P::try_from(p.tls_minimum_protocol_version) {
        Ok(P::TlsAuto) | Ok(P::TlSv12) => TlsVersion::Tls12,
        Ok(P::TlSv10) | Ok(P::TlSv11) => {
            notes.skip(
                &ctx.at("tls_minimum_protocol_version"),
                "TLS 1.0 and 1.1 (TLS 1.2 is the lowest layer8 speaks)",
            );
            TlsVersion::Tls12
        }
        Ok(P::TlSv13) => TlsVersion::Tls13,
        Err(_) => {
            return Err(ctx
                .at("tls_minimum_protocol_version")
                .err("unknown version"))
        }
    };
    let max = match P::try_from(p.tls_maximum_protocol_version) {
        Ok(P::TlsAuto) | Ok(P::TlSv13) => TlsVersion::Tls13,
        Ok(P::TlSv12) => TlsVersion::Tls12,
        Ok(P::TlSv10) | Ok(P::TlSv11) => {
            return Err(ctx
                .at("tls_maximum_protocol_version")
                .err("TLS 1.0 and 1.1 are not supported"))
        }
        Err(_) => {
            return Err(ctx
                .at("tls_maximum_protocol_version")
                .err("unknown version"))
        }
    };
    if min > max {
        return Err(ctx
            .at("tls_minimum_protocol_version")
            .err("above tls_maximum_protocol_version"));
    }
    let mut suites = Vec::new();
    let mut dropped = Vec::new();
    // OpenSSL's syntax allows equal-preference groups: `[A|B]`.
    for name in p
        .cipher_suites
        .iter()
        .flat_map(|c| c.trim_matches(|ch| ch == '[' || ch == ']').split('|'))
    {
        match tls12_suite(name) {
            Some(s) => suites.push(s),
            None => dropped.push(name.to_string()),
        }
    }
    if !dropped.is_empty() {
        notes.skip(
            &ctx.at("cipher_suites"),
            format!(
                "cipher suites rustls does not implement: {}",
                dropped.join(", ")
            ),
        );
    }
    if !p.cipher_suites.is_empty() && suites.is_empty() && min == TlsVersion::Tls12 {
        return Err(ctx
            .at("cipher_suites")
            .err("none of these TLS 1.2 cipher suites is supported"));
    }
    if !p.ecdh_curves.is_empty() {
        notes.skip(
            &ctx.at("ecdh_curves"),
            "ECDH curves (rustls' defaults are used)",
        );
    }
    Ok(((min, max), suites))
}

/// The rustls suite for an OpenSSL TLS 1.2 cipher name.
fn tls12_suite(name: &str) -> Option<rustls::CipherSuite> {
    use rustls::CipherSuite as C;
    Some(match name.trim() {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256" => C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" => C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384" => C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-CHACHA20-POLY1305" => C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305" => C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        _ => return None,
    })
}

/// The TLS of a management-server cluster (`xds-grpc` with an `UpstreamTlsContext`): trust
/// anchors are required (a control plane dictates the whole configuration: its certificate is
/// always verified), a client certificate is optional, certificates come inline or from files
/// (not over SDS, which would need the stream being configured). `host` is the endpoint's
/// address, the SNI when the context names none.
pub fn management_client(
    ts: &core::TransportSocket,
    host: &str,
    ctx: &Ctx,
) -> Result<layer8_xds::client::Tls, ConfigError> {
    use core::transport_socket::ConfigType;
    let ctx = ctx.at("transport_socket.typed_config");
    let any = match &ts.config_type {
        Some(ConfigType::TypedConfig(a)) if a.type_url.ends_with(".UpstreamTlsContext") => a,
        _ => return Err(ctx.err("a management server's TLS needs an UpstreamTlsContext")),
    };
    let u: tls_ext::UpstreamTlsContext = any.to_msg().map_err(|e| ctx.err(e.to_string()))?;
    let mut notes = Notes::default();
    let common = u.common_tls_context.unwrap_or_default();
    let cctx = ctx.at("common_tls_context");
    if !common.tls_certificate_sds_secret_configs.is_empty() {
        return Err(cctx
            .at("tls_certificate_sds_secret_configs")
            .err("certificates over SDS are not supported for the management server"));
    }
    let client_cert = match common.tls_certificates.as_slice() {
        [] => None,
        [t] => Some(certificate(t, &cctx.at("tls_certificates[0]"))?),
        _ => {
            return Err(cctx
                .at("tls_certificates")
                .err("one client certificate at most"))
        }
    };
    use tls_ext::common_tls_context::ValidationContextType as V;
    let (trusted_ca, san_matchers) = match &common.validation_context_type {
        Some(V::ValidationContext(v)) => {
            let vctx = cctx.at("validation_context");
            let ca = v.trusted_ca.as_ref().ok_or_else(|| {
                vctx.at("trusted_ca")
                    .err("required for a management server")
            })?;
            (
                super::secret::data_source(ca, &vctx.at("trusted_ca"))?,
                validation_context(v, &vctx, &mut notes)?,
            )
        }
        _ => {
            return Err(cctx
                .at("validation_context")
                .err("a management server's certificate must be verified: set trusted_ca"))
        }
    };
    let versions = match &common.tls_params {
        Some(p) => tls_params(p, &cctx.at("tls_params"), &mut notes)?.0,
        None => (TlsVersion::Tls12, TlsVersion::Tls13),
    };
    let alpn = if common.alpn_protocols.is_empty() {
        vec![b"h2".to_vec()]
    } else {
        common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect()
    };
    let sni = if u.sni.is_empty() {
        host.to_string()
    } else {
        u.sni.clone()
    };
    crate::tls::client::build(&crate::tls::client::ClientSettings {
        trusted_ca,
        san_matchers,
        client_cert,
        sni,
        alpn,
        versions,
    })
    .map_err(|e| ctx.err(e.to_string()))
}
