//! `Secret` -> [`Secret`], and the secrets a transport socket references over SDS.

use layer8_xds::pb::envoy::config::core::v3 as core;
use layer8_xds::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use layer8_xds::pb::ext::envoy::extensions::transport_sockets::tls::v3 as tls_ext;

use super::{ConfigError, Ctx};
use crate::model::secret::{Secret, SecretRef, SecretSource};

/// Read a data source (inline bytes or string, file, environment variable).
pub fn data_source(d: &core::DataSource, ctx: &Ctx) -> Result<Vec<u8>, ConfigError> {
    use core::data_source::Specifier;
    match &d.specifier {
        Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(Specifier::Filename(f)) => {
            std::fs::read(f).map_err(|e| ctx.at("filename").err(format!("cannot read {f}: {e}")))
        }
        Some(Specifier::EnvironmentVariable(v)) => {
            std::env::var(v).map(String::into_bytes).map_err(|_| {
                ctx.at("environment_variable")
                    .err(format!("{v} is not set"))
            })
        }
        None => Err(ctx.err("no data source specified")),
    }
}

/// Compile a secret.
pub fn translate(s: &tls::Secret) -> Result<Secret, ConfigError> {
    let ctx = Ctx::new("secret", &s.name);
    if s.name.is_empty() {
        return Err(ctx.at("name").err("must not be empty"));
    }
    use tls::secret::Type;
    match &s.r#type {
        Some(Type::TlsCertificate(c)) => {
            let ctx = ctx.at("tls_certificate");
            let chain = c
                .certificate_chain
                .as_ref()
                .ok_or_else(|| ctx.at("certificate_chain").err("required"))?;
            let key = c
                .private_key
                .as_ref()
                .ok_or_else(|| ctx.at("private_key").err("required"))?;
            let cert_chain = data_source(chain, &ctx.at("certificate_chain"))?;
            let private_key = data_source(key, &ctx.at("private_key"))?;
            crate::tls::check_certificate(&cert_chain, &private_key).map_err(|e| ctx.err(e))?;
            Ok(Secret::TlsCertificate {
                cert_chain,
                private_key,
            })
        }
        Some(Type::ValidationContext(v)) => {
            let ctx = ctx.at("validation_context");
            let trusted_ca = match &v.trusted_ca {
                Some(d) => data_source(d, &ctx.at("trusted_ca"))?,
                None => Vec::new(),
            };
            let san_matchers =
                super::tls::validation_context(v, &ctx, &mut super::Notes::default())?;
            Ok(Secret::ValidationContext {
                trusted_ca,
                san_matchers,
            })
        }
        Some(Type::SessionTicketKeys(_)) | Some(Type::GenericSecret(_)) => Ok(Secret::Other),
        None => Err(ctx.at("type").err("a secret needs a type")),
    }
}

/// An `SdsSecretConfig`: the secret's name and where it comes from.
pub fn secret_ref(c: &tls::SdsSecretConfig, ctx: &Ctx) -> Result<SecretRef, ConfigError> {
    if c.name.is_empty() {
        return Err(ctx.at("name").err("must not be empty"));
    }
    let source = match c
        .sds_config
        .as_ref()
        .and_then(|s| s.config_source_specifier.as_ref())
    {
        None => SecretSource::Static,
        Some(spec) => match super::config_source::source(spec, &ctx.at("sds_config"))? {
            super::config_source::Source::Ads => SecretSource::Ads,
            super::config_source::Source::Cluster(c) => SecretSource::Cluster(c),
        },
    };
    Ok(SecretRef {
        name: c.name.clone(),
        source,
    })
}

/// Secrets an upstream or downstream TLS transport socket fetches over SDS.
pub fn refs(ts: &core::TransportSocket, ctx: &Ctx) -> Result<Vec<SecretRef>, ConfigError> {
    use core::transport_socket::ConfigType;
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Ok(Vec::new());
    };
    let ctx = ctx.at("typed_config");
    let common = if any.type_url.ends_with(".UpstreamTlsContext") {
        any.to_msg::<tls_ext::UpstreamTlsContext>()
            .map_err(|e| ctx.err(e.to_string()))?
            .common_tls_context
    } else if any.type_url.ends_with(".DownstreamTlsContext") {
        any.to_msg::<tls_ext::DownstreamTlsContext>()
            .map_err(|e| ctx.err(e.to_string()))?
            .common_tls_context
    } else {
        None
    };
    let Some(common) = common else {
        return Ok(Vec::new());
    };
    let ctx = ctx.at("common_tls_context");
    let mut out = Vec::new();
    for (i, c) in common.tls_certificate_sds_secret_configs.iter().enumerate() {
        out.push(secret_ref(
            c,
            &ctx.at(format!("tls_certificate_sds_secret_configs[{i}]")),
        )?);
    }
    use tls_ext::common_tls_context::ValidationContextType as V;
    match &common.validation_context_type {
        Some(V::ValidationContextSdsSecretConfig(c)) => out.push(secret_ref(
            c,
            &ctx.at("validation_context_sds_secret_config"),
        )?),
        Some(V::CombinedValidationContext(c)) => {
            if let Some(s) = &c.validation_context_sds_secret_config {
                out.push(secret_ref(
                    s,
                    &ctx.at("combined_validation_context.validation_context_sds_secret_config"),
                )?);
            }
        }
        _ => {}
    }
    Ok(out)
}
