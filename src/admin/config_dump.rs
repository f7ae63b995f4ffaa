//! `/config_dump` and `/server_info` in Envoy's JSON shapes (readable by `istioctl proxy-config`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use layer8_xds::json::to_json;
use layer8_xds::pb::envoy::admin::v3 as admin;
use layer8_xds::pb::ext::envoy::admin::v3 as admin_ext;
use layer8_xds::pb::google::protobuf::{Any, Timestamp};
use serde_json::{json, Value};

use crate::server::State;

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn pack<M: prost::Name>(m: &M) -> Option<Any> {
    Any::from_msg(m).ok()
}

/// The full config dump, optionally filtered to one resource kind (`?resource=`).
pub fn config_dump(state: &Arc<State>, resource: Option<&str>) -> Value {
    let b = &state.bootstrap;
    let updated = Some(timestamp(state.started_wall));
    let sr = b.static_resources.clone().unwrap_or_default();
    let mut configs = Vec::new();
    configs.extend(pack(&admin_ext::BootstrapConfigDump {
        bootstrap: Some(b.clone()),
        last_updated: updated,
    }));
    // Extension types the descriptor pool does not know (Istio's) render as `{"@type": ...}`:
    // the JSON rendering registers their placeholders itself.
    let dynamic = state.xds.get().map(|x| x.store());
    let type_version = |t: &str| {
        dynamic
            .as_ref()
            .and_then(|d| d.version_info.get(t).cloned())
            .unwrap_or_default()
    };
    configs.extend(pack(&admin::ClustersConfigDump {
        version_info: type_version("cds"),
        static_clusters: sr
            .clusters
            .iter()
            .map(|c| admin::clusters_config_dump::StaticCluster {
                cluster: pack(c),
                last_updated: updated,
            })
            .collect(),
        dynamic_active_clusters: dynamic.as_ref().map_or_else(Vec::new, |d| {
            d.clusters
                .values()
                .map(|e| dynamic_cluster(&e.meta))
                .collect()
        }),
        dynamic_warming_clusters: dynamic.as_ref().map_or_else(Vec::new, |d| {
            d.warming_clusters
                .values()
                .map(|w| dynamic_cluster(&w.entry.meta))
                .collect()
        }),
    }));
    configs.extend(pack(&admin::ListenersConfigDump {
        version_info: type_version("lds"),
        static_listeners: sr
            .listeners
            .iter()
            .map(|l| admin::listeners_config_dump::StaticListener {
                listener: pack(l),
                last_updated: updated,
            })
            .collect(),
        dynamic_listeners: dynamic
            .as_ref()
            .map_or_else(Vec::new, |d| dynamic_listeners(d)),
    }));
    let mut static_routes = Vec::new();
    for l in &sr.listeners {
        for fc in &l.filter_chains {
            for f in &fc.filters {
                use layer8_xds::pb::envoy::config::listener::v3::filter::ConfigType;
                use layer8_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                let Ok(h) = any.to_msg::<hcm::HttpConnectionManager>() else {
                    continue;
                };
                if let Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc)) =
                    h.route_specifier
                {
                    static_routes.push(admin::routes_config_dump::StaticRouteConfig {
                        route_config: pack(&rc),
                        last_updated: updated,
                    });
                }
            }
        }
    }
    configs.extend(pack(&admin::RoutesConfigDump {
        static_route_configs: static_routes,
        dynamic_route_configs: dynamic.as_ref().map_or_else(Vec::new, |d| {
            d.routes
                .values()
                .map(|e| admin::routes_config_dump::DynamicRouteConfig {
                    version_info: e.meta.version.clone(),
                    route_config: Some(e.meta.raw.clone()),
                    last_updated: Some(timestamp(e.meta.last_updated)),
                    ..Default::default()
                })
                .collect()
        }),
    }));
    if let Some(d) = &dynamic {
        configs.extend(pack(&admin::EndpointsConfigDump {
            static_endpoint_configs: Vec::new(),
            dynamic_endpoint_configs: d
                .endpoints
                .values()
                .map(|e| admin::endpoints_config_dump::DynamicEndpointConfig {
                    version_info: e.meta.version.clone(),
                    endpoint_config: Some(e.meta.raw.clone()),
                    last_updated: Some(timestamp(e.meta.last_updated)),
                    ..Default::default()
                })
                .collect(),
        }));
    }
    configs.extend(pack(&admin_ext::SecretsConfigDump {
        dynamic_active_secrets: dynamic.as_ref().map_or_else(Vec::new, |d| {
            d.secrets
                .iter()
                .map(|(name, e)| admin_ext::secrets_config_dump::DynamicSecret {
                    name: name.clone(),
                    version_info: e.meta.version.clone(),
                    last_updated: Some(timestamp(e.meta.last_updated)),
                    secret: Some(redacted(&e.meta.raw)),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    }));
    drop(dynamic);
    let dump = admin_ext::ConfigDump { configs };
    let mut v = to_json(&dump);
    if let Some(r) = resource {
        // `?resource=dynamic_listeners` etc.: flatten the named field across configs.
        let items: Vec<Value> = v["configs"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get(r))
                    .flat_map(|x| x.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        v = json!({ "configs": items });
    }
    if v.get("configs").is_none() {
        v = json!({ "configs": [] });
    }
    v
}

fn dynamic_cluster(m: &crate::xds::store::Meta) -> admin::clusters_config_dump::DynamicCluster {
    admin::clusters_config_dump::DynamicCluster {
        version_info: m.version.clone(),
        cluster: Some(m.raw.clone()),
        last_updated: Some(timestamp(m.last_updated)),
        ..Default::default()
    }
}

fn listener_state(
    m: &crate::xds::store::Meta,
) -> admin::listeners_config_dump::DynamicListenerState {
    admin::listeners_config_dump::DynamicListenerState {
        version_info: m.version.clone(),
        listener: Some(m.raw.clone()),
        last_updated: Some(timestamp(m.last_updated)),
    }
}

fn dynamic_listeners(
    d: &crate::xds::store::Dynamic,
) -> Vec<admin::listeners_config_dump::DynamicListener> {
    let mut names: Vec<&String> = d
        .listeners
        .keys()
        .chain(d.warming_listeners.keys())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| admin::listeners_config_dump::DynamicListener {
            name: n.clone(),
            active_state: d.listeners.get(n).map(|e| listener_state(&e.meta)),
            warming_state: d
                .warming_listeners
                .get(n)
                .map(|w| listener_state(&w.entry.meta)),
            ..Default::default()
        })
        .collect()
}

/// A secret as `/config_dump` shows it: private keys replaced by `[redacted]`, as Envoy does.
fn redacted(raw: &Any) -> Any {
    use layer8_xds::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};
    use layer8_xds::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
    let Ok(mut s) = raw.to_msg::<Secret>() else {
        return raw.clone();
    };
    if let Some(secret::Type::TlsCertificate(c)) = &mut s.r#type {
        if c.private_key.is_some() {
            c.private_key = Some(DataSource {
                specifier: Some(Specifier::InlineString("[redacted]".into())),
                ..Default::default()
            });
        }
    }
    pack(&s).unwrap_or_else(|| raw.clone())
}

/// `/server_info`.
pub fn server_info(state: &Arc<State>) -> Value {
    let uptime = state.started.elapsed();
    let info = admin_ext::ServerInfo {
        version: format!("layer8/{}/Clean/RELEASE/rustls", env!("CARGO_PKG_VERSION")),
        state: if crate::stats::store().get("server.state") == Some(2) {
            admin_ext::server_info::State::Initializing as i32
        } else {
            admin_ext::server_info::State::Live as i32
        },
        uptime_current_epoch: Some(layer8_xds::pb::google::protobuf::Duration {
            seconds: uptime.as_secs() as i64,
            nanos: 0,
        }),
        uptime_all_epochs: Some(layer8_xds::pb::google::protobuf::Duration {
            seconds: uptime.as_secs() as i64,
            nanos: 0,
        }),
        hot_restart_version: "disabled".into(),
        command_line_options: Some(admin_ext::CommandLineOptions {
            concurrency: state.options.concurrency as u32,
            config_path: state.options.config_path.clone().unwrap_or_default(),
            drain_time: Some(layer8_xds::pb::google::protobuf::Duration {
                seconds: state.options.drain_time_s as i64,
                nanos: 0,
            }),
            allow_unknown_static_fields: state.options.allow_unknown_static_fields,
            config_yaml: state.options.config_yaml.clone().unwrap_or_default(),
            service_cluster: state.options.service_cluster.clone(),
            service_node: state.options.service_node.clone(),
            service_zone: state.options.service_zone.clone(),
            drain_strategy: if state.options.drain_strategy_immediate {
                admin_ext::command_line_options::DrainStrategy::Immediate as i32
            } else {
                admin_ext::command_line_options::DrainStrategy::Gradual as i32
            },
            disable_hot_restart: state.options.disable_hot_restart,
            log_level: state.options.log_level.clone(),
            component_log_level: state.options.component_log_level.clone(),
            log_format: state.options.log_format.clone(),
            file_flush_interval: state.options.file_flush_interval_msec.map(|ms| {
                layer8_xds::pb::google::protobuf::Duration {
                    seconds: (ms / 1000) as i64,
                    nanos: ((ms % 1000) * 1_000_000) as i32,
                }
            }),
            ..Default::default()
        }),
        node: state.bootstrap.node.clone(),
        hot_restart_initializing: false,
    };
    layer8_xds::json::to_json_with_defaults(&info)
}
