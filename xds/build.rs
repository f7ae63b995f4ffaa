//! Compiles the vendored Envoy extension protos in `proto/envoy-ext` against xds-api's descriptor set.
//!
//! Every package that xds-api already generates is mapped with `extern_path`, so the extension types
//! reference xds-api's core types instead of duplicating them. No system `protoc` is needed (protox).

use std::collections::BTreeSet;
use std::path::PathBuf;

use heck::ToUpperCamelCase;
use prost::Message;

/// The extension protos layer8 compiles, relative to `proto/envoy-ext`.
const FILES: &[&str] = &[
    "envoy/admin/v3/config_dump.proto",
    "envoy/admin/v3/server_info.proto",
    "envoy/admin/v3/listeners.proto",
    "envoy/admin/v3/clusters.proto",
    "envoy/admin/v3/metrics.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/common/fault/v3/fault.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/grpc_stats/v3/config.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/request_id/uuid/v3/uuid.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "udpa/type/v1/typed_struct.proto",
    "xds/type/v3/typed_struct.proto",
    "istio/authentication/v1alpha1/policy.proto",
    "istio/envoy/config/filter/http/authn/v2alpha1/config.proto",
];

fn rust_path(package: &str) -> String {
    let parts: Vec<&str> = package
        .split('.')
        .map(|p| if p == "type" { "r#type" } else { p })
        .collect();
    format!("::xds_api::pb::{}", parts.join("::"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto/envoy-ext");
    println!("cargo:rerun-if-changed={}", root.display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let base = prost_types::FileDescriptorSet::decode(xds_api::FILE_DESCRIPTOR_SET)?;
    // Every top-level message and enum xds-api generates, by full name and xds-api path. Mapped one
    // by one (not by package) because some packages are only partly in xds-api (envoy.admin.v3).
    let mut externs: BTreeSet<(String, String)> = BTreeSet::new();
    for file in &base.file {
        let package = file.package.clone().unwrap_or_default();
        let names = file
            .message_type
            .iter()
            .filter_map(|m| m.name.clone())
            .chain(file.enum_type.iter().filter_map(|e| e.name.clone()));
        for name in names {
            externs.insert((
                format!(".{package}.{name}"),
                format!("{}::{}", rust_path(&package), name.to_upper_camel_case()),
            ));
        }
    }

    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(protox::file::IncludeFileResolver::new(root.clone()));
    resolver.add(protox::file::DescriptorSetFileResolver::new(base));
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_files(FILES)?;
    let fds = compiler.file_descriptor_set();
    std::fs::write(out.join("ext-descriptors.bin"), fds.encode_to_vec())?;

    let mut config = prost_build::Config::new();
    // prost-build maps google.protobuf itself; point it at xds-api's copy instead.
    config.compile_well_known_types();
    for (proto, rust) in &externs {
        config.extern_path(proto, rust);
    }
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    config.include_file("ext.rs");
    config.compile_fds(fds)?;
    Ok(())
}
