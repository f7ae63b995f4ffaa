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

/// Whether an extension config is Istio's own (not in upstream Envoy): `istio.*`, `io.istio.*`,
/// `stats.PluginConfig`, the TCP metadata exchange, also when wrapped in a `TypedStruct`.
fn istio_private(any: &Any) -> bool {
    let inner = if any.type_url.ends_with("udpa.type.v1.TypedStruct")
        || any.type_url.ends_with("xds.type.v3.TypedStruct")
    {
        any.to_msg::<layer8_xds::pb::ext::udpa::r#type::v1::TypedStruct>()
            .map(|t| t.type_url)
            .unwrap_or_default()
    } else {
        any.type_url.clone()
    };
    let name = inner.rsplit('/').next().unwrap_or_default();
    name.starts_with("istio.")
        || name.starts_with("io.istio.")
        || name.starts_with("stats.")
        || name.starts_with("envoy.tcp.metadataexchange.")
}

/// A resource without Istio's private extensions (network, HTTP and cluster filters), as
/// upstream Envoy (which lacks them) can load it. Other resources are returned unchanged.
pub fn without_istio_extensions(any: Any) -> Any {
    use layer8_xds::pb::envoy::config::cluster::v3::Cluster;
    use layer8_xds::pb::envoy::config::listener::v3::{filter::ConfigType, Filter, Listener};
    use layer8_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_filter, HttpConnectionManager,
    };
    fn network(filters: &mut Vec<Filter>) {
        filters.retain(|f| match &f.config_type {
            Some(ConfigType::TypedConfig(a)) => !istio_private(a),
            _ => true,
        });
        for f in filters.iter_mut() {
            let Some(ConfigType::TypedConfig(a)) = &mut f.config_type else {
                continue;
            };
            let Ok(mut h) = a.to_msg::<HttpConnectionManager>() else {
                continue;
            };
            h.http_filters.retain(|hf| match &hf.config_type {
                Some(http_filter::ConfigType::TypedConfig(a)) => !istio_private(a),
                _ => true,
            });
            if let Ok(packed) = Any::from_msg(&h) {
                *a = packed;
            }
        }
    }
    if any.type_url.ends_with("envoy.config.listener.v3.Listener") {
        if let Ok(mut l) = any.to_msg::<Listener>() {
            for fc in l
                .filter_chains
                .iter_mut()
                .chain(l.default_filter_chain.iter_mut())
            {
                network(&mut fc.filters);
            }
            return Any::from_msg(&l).unwrap_or(any);
        }
    }
    if any.type_url.ends_with("envoy.config.cluster.v3.Cluster") {
        if let Ok(mut c) = any.to_msg::<Cluster>() {
            c.filters
                .retain(|f| f.typed_config.as_ref().is_none_or(|a| !istio_private(a)));
            return Any::from_msg(&c).unwrap_or(any);
        }
    }
    any
}
