//! Istio's `istio_authn` HTTP filter config -> [`PeerAuthn`]. Peer authentication by mutual TLS
//! is implemented; JWT (peer or origin) is not, and a policy that asks for it is rejected, never
//! served without it.

use layer8_xds::pb::ext::istio::authentication::v1alpha1 as policy;
use layer8_xds::pb::ext::istio::envoy::config::filter::http::authn::v2alpha1::FilterConfig;
use layer8_xds::pb::google::protobuf::Any;

use super::{ConfigError, Ctx};
use crate::model::authn::{MtlsMode, PeerAuthn, TrustDomains};

/// The filter's config type.
pub const ISTIO_AUTHN_TYPE: &str = "istio.envoy.config.filter.http.authn.v2alpha1.FilterConfig";

/// Compile the filter's config (`ctx` is its `typed_config`).
pub fn istio_authn(any: &Any, ctx: &Ctx) -> Result<PeerAuthn, ConfigError> {
    if !any.type_url.ends_with(ISTIO_AUTHN_TYPE) {
        return Err(ctx.err(format!(
            "istio_authn must be a {ISTIO_AUTHN_TYPE}, not wrapped in {}",
            any.type_url
        )));
    }
    let cfg: FilterConfig = any.to_msg().map_err(|e| ctx.err(e.to_string()))?;
    let p = cfg.policy.unwrap_or_default();
    let pctx = ctx.at("policy");
    if !p.origins.is_empty() {
        return Err(pctx
            .at("origins")
            .err("origin (JWT) authentication is not implemented; refusing to serve without it"));
    }
    let mut methods = Vec::new();
    for (i, m) in p.peers.iter().enumerate() {
        let mctx = pctx.at(format!("peers[{i}]"));
        use policy::peer_authentication_method::Params;
        match &m.params {
            Some(Params::Mtls(t)) => {
                let permissive = t.allow_tls
                    || policy::mutual_tls::Mode::try_from(t.mode)
                        .is_ok_and(|m| m == policy::mutual_tls::Mode::Permissive);
                methods.push(if permissive {
                    MtlsMode::Permissive
                } else {
                    MtlsMode::Strict
                });
            }
            Some(Params::Jwt(_)) => {
                return Err(mctx.at("jwt").err(
                    "peer JWT authentication is not implemented; refusing to serve without it",
                ))
            }
            None => return Err(mctx.err("a peer method needs mtls")),
        }
    }
    let trust_domains = if !cfg.allowed_trust_domains.is_empty() {
        TrustDomains::Allowed(cfg.allowed_trust_domains.clone())
    } else if cfg.skip_validate_trust_domain {
        TrustDomains::Any
    } else {
        TrustDomains::Local
    };
    Ok(PeerAuthn {
        methods,
        optional: p.peer_is_optional,
        trust_domains,
    })
}
