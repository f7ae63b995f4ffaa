//! Resources from files: `@type`-tagged resource lists (JSON or YAML) and istiod config dumps.

use std::path::Path;

use layer8_xds::json::{self, DecodeOptions};
use layer8_xds::pb::envoy::admin::v3 as admin;
use layer8_xds::pb::ext::envoy::admin::v3::ConfigDump;
use layer8_xds::pb::google::protobuf::Any;
use serde_json::Value;

fn read(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    json::parse_text(&text, yaml).map_err(|e| format!("{}: {e}", path.display()))
}

/// One resource from its proto3 JSON (`{"@type": ..., fields...}`).
pub fn resource_from_json(v: Value) -> Result<Any, String> {
    let bytes = json::decode_dynamic(
        v,
        "google.protobuf.Any",
        DecodeOptions {
            allow_unknown_fields: true,
        },
    )
    .map_err(|e| e.to_string())?;
    <Any as prost::Message>::decode(bytes.message.as_slice()).map_err(|e| e.to_string())
}

/// A list of resources: a JSON/YAML array, or an object with a `resources` array.
pub fn resources_from_file(path: &Path) -> Result<Vec<Any>, String> {
    let v = read(path)?;
    let list = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("resources") {
            Some(Value::Array(a)) => a,
            _ => return Err(format!("{}: expected a `resources` array", path.display())),
        },
        _ => {
            return Err(format!(
                "{}: expected an array of resources",
                path.display()
            ))
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| resource_from_json(v).map_err(|e| format!("{}[{i}]: {e}", path.display())))
        .collect()
}

/// The dynamic resources of an Envoy `/config_dump` (what istiod sent that sidecar): active
/// listeners, clusters, route configurations, endpoint assignments and secrets, as xDS resources.
pub fn resources_from_config_dump(path: &Path) -> Result<Vec<Any>, String> {
    let dump = json::decode::<ConfigDump>(
        read(path)?,
        DecodeOptions {
            allow_unknown_fields: true,
        },
    )
    .map_err(|e| format!("{}: {e}", path.display()))?
    .message;
    let mut out = Vec::new();
    let bad = |what: &str, e: prost::DecodeError| format!("{}: {what}: {e}", path.display());
    for cfg in &dump.configs {
        match cfg.type_url.rsplit('/').next().unwrap_or_default() {
            "envoy.admin.v3.ListenersConfigDump" => {
                let d: admin::ListenersConfigDump =
                    cfg.to_msg().map_err(|e| bad("ListenersConfigDump", e))?;
                out.extend(
                    d.dynamic_listeners
                        .into_iter()
                        .filter_map(|l| l.active_state.and_then(|s| s.listener)),
                );
            }
            "envoy.admin.v3.ClustersConfigDump" => {
                let d: admin::ClustersConfigDump =
                    cfg.to_msg().map_err(|e| bad("ClustersConfigDump", e))?;
                out.extend(
                    d.dynamic_active_clusters
                        .into_iter()
                        .filter_map(|c| c.cluster),
                );
            }
            "envoy.admin.v3.RoutesConfigDump" => {
                let d: admin::RoutesConfigDump =
                    cfg.to_msg().map_err(|e| bad("RoutesConfigDump", e))?;
                out.extend(
                    d.dynamic_route_configs
                        .into_iter()
                        .filter_map(|r| r.route_config),
                );
            }
            "envoy.admin.v3.EndpointsConfigDump" => {
                let d: admin::EndpointsConfigDump =
                    cfg.to_msg().map_err(|e| bad("EndpointsConfigDump", e))?;
                out.extend(
                    d.dynamic_endpoint_configs
                        .into_iter()
                        .filter_map(|e| e.endpoint_config),
                );
            }
            "envoy.admin.v3.SecretsConfigDump" => {
                let d: layer8_xds::pb::ext::envoy::admin::v3::SecretsConfigDump =
                    cfg.to_msg().map_err(|e| bad("SecretsConfigDump", e))?;
                out.extend(
                    d.dynamic_active_secrets
                        .into_iter()
                        .filter_map(|s| s.secret),
                );
            }
            _ => {}
        }
    }
    // Normalise type URLs (dumps may use the `type.googleapis.com/` prefix or not).
    for a in &mut out {
        if let Some(name) = a.type_url.rsplit('/').next() {
            a.type_url = format!("type.googleapis.com/{name}");
        }
    }
    Ok(out)
}
