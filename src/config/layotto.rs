//! Layotto's own config file read as a bootstrap: a MOSN-style JSON document
//! (`{"servers": [{"listeners": [...]}], ...}`) becomes the Envoy bootstrap layer8 serves, so
//! `layer8 -c configs/config.json` starts a Layotto user's runtime unchanged.
//!
//! Per listener of each server: a chain with a `grpc` filter becomes a `layer8.runtime`
//! listener (its `config`, with `grpc_config`, is the runtime section as is); a `proxy` chain
//! whose `stream_filters` hold `actuator_filter` becomes a `layer8.actuator` listener;
//! `tcpcopy` filters (traffic sampling to local files) are left out. Other MOSN listeners
//! (proxies with MOSN routers) are refused: describe them as Envoy listeners. Top-level
//! `node`, `admin`, `dynamic_resources` and `static_resources.clusters` pass through; MOSN's
//! `tracing`, `metrics` and `pprof` sections are not read (layer8's admin serves metrics).

use serde_json::{json, Map, Value};

/// Whether `doc` is a Layotto/MOSN config rather than an Envoy bootstrap.
pub fn is_layotto(doc: &Value) -> bool {
    doc.get("servers").is_some_and(Value::is_array)
        && doc
            .get("static_resources")
            .is_none_or(|s| s.get("listeners").is_none())
}

/// The Envoy bootstrap for a Layotto config; errors name the listener and what is unsupported.
pub fn to_bootstrap(doc: &Value) -> Result<Value, String> {
    let servers = doc
        .get("servers")
        .and_then(Value::as_array)
        .ok_or("servers: must be an array")?;
    let mut listeners = Vec::new();
    for (si, server) in servers.iter().enumerate() {
        let ls = server
            .get("listeners")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("servers[{si}].listeners: must be an array"))?;
        for (li, l) in ls.iter().enumerate() {
            let at = format!("servers[{si}].listeners[{li}]");
            listeners.push(listener(l, &at)?);
        }
    }
    let mut out = Map::new();
    for key in ["node", "admin", "dynamic_resources", "layered_runtime"] {
        if let Some(v) = doc.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let clusters = doc
        .pointer("/static_resources/clusters")
        .cloned()
        .unwrap_or_else(|| json!([]));
    out.insert(
        "static_resources".into(),
        json!({"listeners": listeners, "clusters": clusters}),
    );
    Ok(Value::Object(out))
}

fn listener(l: &Value, at: &str) -> Result<Value, String> {
    let name = l
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.name: required"))?;
    let addr = l
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at} ({name}).address: required"))?;
    let address = if l.get("network").and_then(Value::as_str) == Some("unix") {
        json!({"pipe": {"path": addr}})
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{at} ({name}).address: '{addr}' is not host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{at} ({name}).address: bad port in '{addr}'"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        json!({"socket_address": {"address": if host.is_empty() { "0.0.0.0" } else { host }, "port_value": port}})
    };
    let filters: Vec<&Value> = l
        .pointer("/filter_chains/0/filters")
        .and_then(Value::as_array)
        .map(|f| f.iter().collect())
        .unwrap_or_default();
    let kind = |f: &&Value| {
        f.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let typed = |type_url: &str, value: Option<&Value>| {
        let mut ts = json!({
            "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
            "type_url": type_url,
        });
        if let (Some(v), Some(o)) = (value, ts.as_object_mut()) {
            o.insert("value".into(), v.clone());
        }
        ts
    };
    let terminal = if let Some(grpc) = filters.iter().find(|f| kind(f) == "grpc") {
        let config = grpc.get("config").cloned().unwrap_or_else(|| json!({}));
        json!({"name": crate::runtime::config::FILTER_NAME,
               "typed_config": typed(crate::runtime::config::RUNTIME_TYPE, Some(&config))})
    } else if filters.iter().any(|f| kind(f) == "proxy")
        && l.get("stream_filters")
            .and_then(Value::as_array)
            .is_some_and(|s| {
                s.iter()
                    .any(|f| f.get("type").and_then(Value::as_str) == Some("actuator_filter"))
            })
    {
        json!({"name": crate::runtime::config::ACTUATOR_FILTER_NAME,
               "typed_config": typed(crate::runtime::config::ACTUATOR_TYPE, None)})
    } else {
        let kinds: Vec<String> = filters.iter().map(kind).collect();
        return Err(format!(
            "{at} ({name}): MOSN filters {kinds:?} are not supported; only the `grpc` runtime \
             filter and the actuator are read from a Layotto config (describe proxy listeners \
             as Envoy listeners)"
        ));
    };
    Ok(json!({"name": name, "address": address, "filter_chains": [{"filters": [terminal]}]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layotto_standalone_becomes_a_bootstrap() {
        let doc: Value = serde_json::from_str(
            r#"{"servers":[{"default_log_path":"stdout","routers":[{"router_config_name":"actuator_dont_need_router"}],
              "listeners":[
                {"name":"grpc","address":"127.0.0.1:34904","bind_port":true,"filter_chains":[{"filters":[
                  {"type":"tcpcopy","config":{"strategy":{"switch":"OFF"}}},
                  {"type":"grpc","config":{"server_name":"runtime","grpc_config":{"hellos":{"helloworld":{"type":"helloworld"}}}}}]}]},
                {"name":"uds","address":"/tmp/client-proxy.sock","network":"unix","filter_chains":[{"filters":[
                  {"type":"grpc","config":{"grpc_config":{}}}]}]},
                {"name":"actuator","address":"127.0.0.1:34999","bind_port":true,"filter_chains":[{"filters":[
                  {"type":"proxy","config":{"downstream_protocol":"Http1","router_config_name":"actuator_dont_need_router"}}]}],
                 "stream_filters":[{"type":"actuator_filter"}]}]}],
              "metrics":{"sinks":[{"type":"prometheus","config":{"port":34903}}]}}"#,
        )
        .unwrap();
        assert!(is_layotto(&doc));
        let b = to_bootstrap(&doc).unwrap();
        let ls = b["static_resources"]["listeners"].as_array().unwrap();
        assert_eq!(ls.len(), 3);
        assert_eq!(ls[0]["address"]["socket_address"]["port_value"], 34904);
        let f = &ls[0]["filter_chains"][0]["filters"][0];
        assert_eq!(f["name"], "layer8.runtime");
        assert_eq!(
            f["typed_config"]["value"]["grpc_config"]["hellos"]["helloworld"]["type"],
            "helloworld"
        );
        assert_eq!(ls[1]["address"]["pipe"]["path"], "/tmp/client-proxy.sock");
        assert_eq!(
            ls[2]["filter_chains"][0]["filters"][0]["name"],
            "layer8.actuator"
        );
        let bad: Value = serde_json::from_str(
            r#"{"servers":[{"listeners":[{"name":"egress","address":"0.0.0.0:12221","filter_chains":[{"filters":[{"type":"proxy"}]}]}]}]}"#,
        )
        .unwrap();
        let e = to_bootstrap(&bad).unwrap_err();
        assert!(
            e.starts_with("servers[0].listeners[0] (egress): MOSN filters"),
            "{e}"
        );
    }
}
