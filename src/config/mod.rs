//! Translation of Envoy v3 protobuf configuration into layer8's compiled model.
//!
//! This is the only code that reads protobuf structs. Each function takes a resource and returns
//! its compiled form or a [`ConfigError`] naming the resource and the field path. Extensions are
//! recognised by type URL (falling back to filter name); security-relevant ones that layer8 does
//! not implement reject the resource, observational ones are skipped and counted.

pub mod access_log;
pub mod authn;
pub mod bootstrap;
pub mod cluster;
pub mod config_source;
pub mod extensions;
pub mod layotto;
pub mod listener;
pub mod route;
pub mod route_action;
pub mod secret;
pub mod tls;

use std::hash::Hasher;
use std::time::Duration;

use layer8_xds::pb::google::protobuf::Duration as PbDuration;

/// A configuration error: which resource, which field, what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{resource}: {path}: {message}")]
pub struct ConfigError {
    /// Resource kind and name, e.g. `listener 'ingress'`.
    pub resource: String,
    /// Field path inside the resource, e.g. `filter_chains[0].filters[1].typed_config`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(
        resource: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            resource: resource.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Builds errors for one resource, tracking the current field path. Paths are kept as a chain
/// of borrowed segments and only joined into a string when an error is made, so walking a
/// large, valid resource allocates nothing for its paths.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    resource: std::sync::Arc<str>,
    parent: Option<&'a Ctx<'a>>,
    seg: Seg,
}

/// One field-path segment: `field` or `[i]`-style.
#[derive(Debug, Clone)]
pub enum Seg {
    /// The resource itself.
    Root,
    /// A literal field name.
    Static(&'static str),
    /// A computed segment (`routes[3]`).
    Owned(String),
}

impl From<&'static str> for Seg {
    fn from(s: &'static str) -> Seg {
        Seg::Static(s)
    }
}

impl From<String> for Seg {
    fn from(s: String) -> Seg {
        Seg::Owned(s)
    }
}

impl Ctx<'static> {
    /// Context for a resource (`kind 'name'`).
    pub fn new(kind: &str, name: &str) -> Ctx<'static> {
        Ctx {
            resource: format!("{kind} '{name}'").into(),
            parent: None,
            seg: Seg::Root,
        }
    }
}

impl<'a> Ctx<'a> {
    /// A child path (`field` or `field[i]`).
    pub fn at(&self, field: impl Into<Seg>) -> Ctx<'_> {
        Ctx {
            resource: self.resource.clone(),
            parent: Some(self),
            seg: field.into(),
        }
    }

    /// The field path, joined (`a.b[2].c`).
    pub fn path(&self) -> String {
        let mut segs: Vec<&str> = Vec::new();
        let mut cur = Some(self);
        while let Some(c) = cur {
            match &c.seg {
                Seg::Root => {}
                Seg::Static(s) => segs.push(s),
                Seg::Owned(s) => segs.push(s),
            }
            cur = c.parent;
        }
        let mut path = String::new();
        for s in segs.into_iter().rev() {
            if !path.is_empty() && !s.starts_with('[') {
                path.push('.');
            }
            path.push_str(s);
        }
        path
    }

    /// An error at this path.
    pub fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.resource.to_string(), self.path(), message)
    }

    /// The resource this context is for (`kind 'name'`).
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

/// Notes about what translation skipped (observational extensions, unsupported options).
#[derive(Debug, Default, Clone)]
pub struct Notes {
    /// Human-readable lines: `resource: path: what was skipped`.
    pub skipped: Vec<String>,
}

impl Notes {
    /// Record a skipped element.
    pub fn skip(&mut self, ctx: &Ctx<'_>, what: impl std::fmt::Display) {
        self.skipped
            .push(format!("{}: {}: {what}", ctx.resource, ctx.path()));
    }
}

/// Convert a protobuf duration (negative durations are an error).
pub fn duration(d: &PbDuration, ctx: &Ctx) -> Result<Duration, ConfigError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(ctx.err("duration must not be negative"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration where zero means "disabled" (Envoy's timeout convention).
pub fn timeout(
    d: Option<&PbDuration>,
    default: Option<Duration>,
    ctx: &Ctx,
) -> Result<Option<Duration>, ConfigError> {
    match d {
        None => Ok(default),
        Some(d) => {
            let d = duration(d, ctx)?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// Whether a transport socket does more than pass bytes through (`raw_buffer`): TLS, or another
/// transport layer8 would have to implement.
pub fn is_tls_transport(ts: &layer8_xds::pb::envoy::config::core::v3::TransportSocket) -> bool {
    use layer8_xds::pb::envoy::config::core::v3::transport_socket::ConfigType;
    let ty = match &ts.config_type {
        Some(ConfigType::TypedConfig(a)) => a.type_url.as_str(),
        None => "",
    };
    !(ty.ends_with("RawBuffer") || ts.name == "envoy.transport_sockets.raw_buffer")
}

/// Stable hash of a message's encoding (to detect unchanged resources).
pub fn config_hash<M: prost::Message>(m: &M) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(&m.encode_to_vec());
    h.finish()
}
