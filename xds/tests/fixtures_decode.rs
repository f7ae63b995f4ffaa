//! Every real istiod artefact in `shared/fixtures/istio` decodes into Envoy's protobuf types.

use std::path::PathBuf;

use layer8_xds::json::{decode, parse_text, DecodeOptions};
use layer8_xds::pb::envoy::config::bootstrap::v3::Bootstrap;
use layer8_xds::pb::ext::envoy::admin::v3::ConfigDump;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/istio")
}

fn read(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml = path.extension().is_some_and(|e| e == "yaml");
    parse_text(&text, yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn bootstraps_decode_strictly() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures().join("bootstrap")).expect("bootstrap dir") {
        let path = entry.expect("entry").path();
        let d = decode::<Bootstrap>(read(&path), DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!d
            .message
            .static_resources
            .as_ref()
            .expect("static")
            .listeners
            .is_empty());
        n += 1;
    }
    assert_eq!(n, 7);
}

#[test]
fn config_dumps_decode() {
    let dir = fixtures().join("config-dumps");
    for name in [
        "sidecar-istio-1.20.json",
        "sidecar-istio-1.9.json",
        "waypoint-istio-1.21.json",
        "route-and-cluster-http.json",
        "listeners-rbac-istio-1.18.yaml",
    ] {
        let path = dir.join(name);
        let d = decode::<ConfigDump>(
            read(&path),
            DecodeOptions {
                allow_unknown_fields: true,
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!d.message.configs.is_empty(), "{name}");
        println!(
            "{name}: unknown fields {:?}, unknown types {:?}",
            d.unknown_fields, d.unknown_types
        );
    }
}
