//! Loading an Envoy v3 bootstrap (file and/or `--config-yaml`) and compiling its static resources
//! into a [`Snapshot`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use layer8_xds::json::{self, DecodeOptions};
use layer8_xds::pb::envoy::config::bootstrap::v3::Bootstrap;
use layer8_xds::pb::envoy::config::core::v3 as core;
use serde_json::Value;

use super::{ConfigError, Ctx, Notes};
use crate::model::listener::RouteSource;
use crate::model::secret::SecretSource;
use crate::model::Snapshot;
use crate::upstream::Cluster;

/// Errors loading a bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The document does not decode as a Bootstrap.
    #[error("{origin}: {source}")]
    Decode {
        /// File name or `--config-yaml`.
        origin: String,
        /// Cause.
        source: json::JsonError,
    },
    /// A Layotto (MOSN) config that cannot be read as a bootstrap.
    #[error("{origin}: Layotto config: {message}")]
    Layotto {
        /// File name or `--config-yaml`.
        origin: String,
        /// What is unsupported, naming the listener.
        message: String,
    },
    /// Neither a file nor inline YAML was given.
    #[error("no configuration: give -c/--config-path or --config-yaml")]
    Empty,
}

/// A decoded bootstrap and what was tolerated while reading it.
#[derive(Debug)]
pub struct Loaded {
    /// The bootstrap proto.
    pub bootstrap: Bootstrap,
    /// Unknown fields that were ignored (only with `--allow-unknown-static-fields`).
    pub unknown_fields: Vec<String>,
}

/// Envoy's merge semantics on JSON: objects merge, arrays concatenate, scalars replace.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) => b.extend(o),
        (b, o) => *b = o,
    }
}

/// Read a config file (YAML by `.yaml`/`.yml` extension, JSON otherwise; YAML is tried when JSON
/// fails, as both are common in the wild) and merge `config_yaml` over it.
pub fn load(
    path: Option<&Path>,
    config_yaml: Option<&str>,
    allow_unknown: bool,
) -> Result<Loaded, LoadError> {
    let mut doc: Option<Value> = None;
    if let Some(p) = path {
        let text = std::fs::read_to_string(p).map_err(|source| LoadError::Read {
            path: p.display().to_string(),
            source,
        })?;
        let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let parsed = json::parse_text(&text, yaml).or_else(|e| {
            if yaml {
                Err(e)
            } else {
                json::parse_text(&text, true)
            }
        });
        doc = Some(parsed.map_err(|source| LoadError::Decode {
            origin: p.display().to_string(),
            source,
        })?);
    }
    if let Some(y) = config_yaml {
        let over = json::parse_text(y, true).map_err(|source| LoadError::Decode {
            origin: "--config-yaml".into(),
            source,
        })?;
        match &mut doc {
            Some(d) => merge(d, over),
            None => doc = Some(over),
        }
    }
    let mut doc = doc.ok_or(LoadError::Empty)?;
    let origin = path.map_or("--config-yaml".to_string(), |p| p.display().to_string());
    if super::layotto::is_layotto(&doc) {
        // A Layotto (MOSN) config file: its runtime and actuator listeners, as a bootstrap.
        doc = super::layotto::to_bootstrap(&doc).map_err(|message| LoadError::Layotto {
            origin: origin.clone(),
            message,
        })?;
    }
    let decoded = json::decode::<Bootstrap>(
        doc,
        DecodeOptions {
            allow_unknown_fields: allow_unknown,
        },
    )
    .map_err(|source| LoadError::Decode { origin, source })?;
    Ok(Loaded {
        bootstrap: decoded.message,
        unknown_fields: decoded.unknown_fields,
    })
}

/// The admin listener address (`admin.address`), if any.
pub fn admin_address(b: &Bootstrap) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(admin) = &b.admin else {
        return Ok(None);
    };
    let Some(addr) = &admin.address else {
        return Ok(None);
    };
    let ctx = Ctx::new("bootstrap", "admin");
    match &addr.address {
        Some(core::address::Address::SocketAddress(sa)) => {
            let ip = sa.address.parse().map_err(|_| {
                ctx.at("address.socket_address.address")
                    .err("malformed IP address")
            })?;
            let port = match sa.port_specifier {
                Some(core::socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .map_err(|_| {
                        ctx.at("address.socket_address.port_value")
                            .err("out of range")
                    })?,
                _ => 0,
            };
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ctx
            .at("address")
            .err("only socket addresses are supported for admin")),
    }
}

/// `stats_config.stats_matcher`, compiled.
pub fn stats_matcher(b: &Bootstrap) -> Result<Option<crate::stats::Matcher>, ConfigError> {
    use layer8_xds::pb::envoy::config::metrics::v3::stats_matcher::StatsMatcher as M;
    let Some(m) = b
        .stats_config
        .as_ref()
        .and_then(|s| s.stats_matcher.as_ref())
        .and_then(|m| m.stats_matcher.as_ref())
    else {
        return Ok(None);
    };
    let root = Ctx::new("bootstrap", "stats_config");
    let ctx = root.at("stats_matcher");
    let list = |l: &layer8_xds::pb::envoy::r#type::matcher::v3::ListStringMatcher, field: &str| {
        l.patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                super::route::string_matcher(p, &ctx.at(format!("{field}.patterns[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Some(match m {
        M::RejectAll(true) => crate::stats::Matcher::RejectAll,
        M::RejectAll(false) => return Ok(None),
        M::InclusionList(l) => crate::stats::Matcher::Include(list(l, "inclusion_list")?),
        M::ExclusionList(l) => crate::stats::Matcher::Exclude(list(l, "exclusion_list")?),
    }))
}

/// Compile the bootstrap's static resources into a snapshot. Clusters whose config is unchanged
/// from `prev` keep their live state (endpoints, pools).
pub fn build_snapshot(
    b: &Bootstrap,
    prev: Option<&Snapshot>,
    notes: &mut Notes,
) -> Result<Snapshot, ConfigError> {
    let mut snap = Snapshot::default();
    let Some(sr) = &b.static_resources else {
        return Ok(snap);
    };
    let mut names = std::collections::HashSet::new();
    for c in &sr.clusters {
        let cfg = super::cluster::translate(c, notes)?;
        if !names.insert(cfg.name.clone()) {
            return Err(ConfigError::new(
                format!("cluster '{}'", cfg.name),
                "name",
                "duplicate cluster name",
            ));
        }
        let live = match prev.and_then(|p| p.clusters.get(cfg.name.as_str())) {
            Some(existing) if existing.config.config_hash == cfg.config_hash => existing.clone(),
            _ => Cluster::new(cfg),
        };
        snap.clusters.insert(live.name.clone(), live);
    }
    for (i, s) in sr.secrets.iter().enumerate() {
        let secret = super::secret::translate(s)?;
        if snap
            .secrets
            .insert(s.name.clone(), Arc::new(secret))
            .is_some()
        {
            return Err(ConfigError::new(
                format!("secret '{}'", s.name),
                format!("static_resources.secrets[{i}].name"),
                "duplicate secret name",
            ));
        }
    }
    let lookup = |name: &str| snap.secrets.get(name).cloned();
    let mut routes: HashMap<String, Arc<crate::model::route::RouteTable>> = HashMap::new();
    let mut listener_names = std::collections::HashSet::new();
    for l in &sr.listeners {
        let compiled = super::listener::translate(l, notes)?;
        if !listener_names.insert(compiled.name.clone()) {
            return Err(ConfigError::new(
                format!("listener '{}'", compiled.name),
                "name",
                "duplicate listener name",
            ));
        }
        let lctx = Ctx::new("listener", &compiled.name);
        for tls in compiled.tls_contexts() {
            for r in tls.settings.secret_refs() {
                if r.source == SecretSource::Static && !snap.secrets.contains_key(&r.name) {
                    return Err(lctx
                        .at("transport_socket")
                        .err(format!("unknown static secret '{}'", r.name)));
                }
            }
            crate::tls::server::resolve(tls, &lookup)
                .map_err(|e| lctx.at("transport_socket").err(e.to_string()))?;
        }
        for chain in compiled
            .filter_chains
            .iter()
            .chain(compiled.default_chain.iter())
        {
            if let crate::model::listener::NetworkFilter::Http(h) = &chain.terminal {
                if let RouteSource::Static(t) = &h.routes {
                    if !t.name.is_empty() {
                        routes.insert(t.name.clone(), t.clone());
                    }
                }
            }
        }
        snap.listeners.push(Arc::new(compiled));
    }
    snap.routes = routes;
    Ok(snap)
}
