//! The descriptor pool of every protobuf type layer8 knows: xds-api's set plus the vendored extensions.
//!
//! It backs the proto3 JSON mapping ([`crate::json`]) and `/config_dump` rendering; it is built once.

use std::sync::{OnceLock, RwLock};

use prost::Message;
use prost_reflect::DescriptorPool;

const EXT_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ext-descriptors.bin"));

/// File-name prefix of the placeholder descriptors made for unknown types.
pub const PLACEHOLDER_DIR: &str = "layer8/placeholder/";

fn cell() -> &'static RwLock<Option<DescriptorPool>> {
    static POOL: OnceLock<RwLock<Option<DescriptorPool>>> = OnceLock::new();
    POOL.get_or_init(|| RwLock::new(None))
}

/// The shared pool (xds-api's descriptors, the extensions compiled from `proto/envoy-ext`, and the
/// placeholders registered for unknown types). Cloning a pool is cheap; config-time only. It is
/// built on first use and can be dropped with [`release`] between config updates.
pub fn pool() -> DescriptorPool {
    if let Some(p) = cell().read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return p.clone();
    }
    let mut guard = cell().write().unwrap_or_else(|p| p.into_inner());
    guard.get_or_insert_with(base_pool).clone()
}

/// Drop the pool (several MB of descriptors) until it is needed again. Placeholders registered
/// for unknown types are dropped with it and re-registered by the next decode that meets them.
pub fn release() {
    *cell().write().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Register empty placeholder messages for type names the pool does not know (Istio-private
/// filter configs), so `Any` values of those types decode (dropping their content) and render
/// back as `{"@type": ...}`. Config-time only.
///
/// Returns the pool that has them: decode with it, not with a later [`pool`], which a
/// concurrent [`release`] may have replaced with one without the placeholders.
pub fn ensure_placeholders<'a>(names: impl IntoIterator<Item = &'a str>) -> DescriptorPool {
    let current = pool();
    let missing: Vec<&str> = names
        .into_iter()
        .filter(|n| current.get_message_by_name(n).is_none())
        .collect();
    if missing.is_empty() {
        return current;
    }
    let mut slot = cell().write().unwrap_or_else(|p| p.into_inner());
    let guard = slot.get_or_insert_with(base_pool);
    for name in missing {
        if guard.get_message_by_name(name).is_some() {
            continue;
        }
        let (package, message) = match name.rsplit_once('.') {
            Some((p, m)) => (Some(p.to_string()), m.to_string()),
            None => (None, name.to_string()),
        };
        let file = prost_types::FileDescriptorProto {
            name: Some(format!("{PLACEHOLDER_DIR}{name}.proto")),
            package,
            message_type: vec![prost_types::DescriptorProto {
                name: Some(message),
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        // Only names absent from the pool get here, so the file cannot clash.
        let _ = guard.add_file_descriptor_proto(file);
    }
    guard.clone()
}

/// Register placeholders for every `type.googleapis.com/...` type URL found in encoded protobuf
/// (the `Any`s nested anywhere in a resource received over xDS), so the resource can be rendered
/// as JSON even when it carries Istio-private extension configs.
pub fn ensure_placeholders_in_wire(bytes: &[u8]) -> DescriptorPool {
    const PREFIX: &[u8] = b"type.googleapis.com/";
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(PREFIX.len()).position(|w| w == PREFIX) {
        let start = i + pos + PREFIX.len();
        let len = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.' || **b == b'_')
            .count();
        if let Ok(name) = std::str::from_utf8(&bytes[start..start + len]) {
            if !name.is_empty() {
                names.push(name.to_string());
            }
        }
        i = start + len;
    }
    ensure_placeholders(names.iter().map(String::as_str))
}

fn base_pool() -> DescriptorPool {
    // Both sets are produced by our build (xds-api ships one, build.rs writes the other), so a
    // failure here is a build defect, not an input error.
    let mut pool = DescriptorPool::new();
    for (what, bytes) in [
        ("xds-api", xds_api::FILE_DESCRIPTOR_SET),
        ("extension", EXT_DESCRIPTORS),
    ] {
        let mut set = prost_types::FileDescriptorSet::decode(bytes)
            .unwrap_or_else(|e| panic!("{what} descriptor set is invalid: {e}"));
        // Source locations and comments: most of the set's bytes, and nothing the JSON mapping
        // or `/config_dump` reads. Dropping them halves the pool and the startup peak.
        for file in &mut set.file {
            file.source_code_info = None;
        }
        pool.add_file_descriptor_set(set)
            .unwrap_or_else(|e| panic!("{what} descriptors do not link: {e}"));
    }
    pool
}

/// The full message name in a type URL (`type.googleapis.com/envoy.config.listener.v3.Listener`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Whether the pool has a real descriptor (not a placeholder) for this type URL or name.
pub fn is_known(type_url: &str) -> bool {
    pool()
        .get_message_by_name(type_name(type_url))
        .is_some_and(|d| !d.parent_file().name().starts_with(PLACEHOLDER_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_has_core_and_extension_types() {
        for name in [
            "envoy.config.bootstrap.v3.Bootstrap",
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "udpa.type.v1.TypedStruct",
        ] {
            assert!(pool().get_message_by_name(name).is_some(), "{name} missing");
        }
        assert!(!is_known("type.googleapis.com/example.NotRegistered"));
    }
}
