//! The runtime section: Layotto's `grpc_config` (per API, component name -> `{type, metadata}`,
//! plus `app`), read from the `layer8.runtime` network filter of a listener.

use std::collections::BTreeMap;
use std::time::Duration;

use layer8_xds::pb::google::protobuf::{value::Kind, Struct, Value};
use serde_json::Value as Json;

use super::components::Metadata;

/// The runtime network filter's name; its `typed_config` is a `TypedStruct` with this type URL.
pub const FILTER_NAME: &str = "layer8.runtime";
/// Type URL inside the `TypedStruct` of the runtime filter.
pub const RUNTIME_TYPE: &str = "layer8.runtime.v1.Runtime";
/// The actuator network filter's name.
pub const ACTUATOR_FILTER_NAME: &str = "layer8.actuator";
/// Type URL inside the `TypedStruct` of the actuator filter.
pub const ACTUATOR_TYPE: &str = "layer8.runtime.v1.Actuator";

/// A runtime configuration error, naming the component (`state.redis_demo`) or key.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {message}")]
pub struct ConfigError {
    /// Where: `<api>.<component>` or a top-level key.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

fn err(at: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        at: at.into(),
        message: message.into(),
    }
}

/// The app this runtime serves (`grpc_config.app`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppConfig {
    /// `app_id`: used in key prefixes and service invocation.
    pub app_id: String,
    /// `grpc_callback_host` (default 127.0.0.1).
    pub callback_host: String,
    /// `grpc_callback_port`; 0 = no AppCallback.
    pub callback_port: u16,
}

/// One component: `{"type": ..., "metadata": {...}}` plus the API-specific extras.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    /// `type` (the implementation: `in-memory`, `redis`, `etcd`, ...).
    pub kind: String,
    /// `metadata`, every value as a string (non-string JSON values are serialized).
    pub metadata: Metadata,
    /// `metadata` as given (the file API passes it through raw).
    pub raw_metadata: Json,
    /// Sequencer `biggerThan`: key -> floor.
    pub bigger_than: BTreeMap<String, i64>,
    /// Hello `hello` (the greeting).
    pub hello: Option<String>,
}

/// Service invocation (`rpcs.mosn.config`): where InvokeService requests leave.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcConfig {
    /// The name of the proxy listener requests are sent to (`channel[0].listener`).
    pub listener: String,
    /// Default timeout when the caller sets no `rpc_request_timeout`.
    pub timeout: Duration,
}

/// A parsed runtime section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeConfig {
    /// `app`.
    pub app: AppConfig,
    /// `hellos`.
    pub hellos: BTreeMap<String, ComponentSpec>,
    /// `state`.
    pub state: BTreeMap<String, ComponentSpec>,
    /// `pub_subs`.
    pub pub_subs: BTreeMap<String, ComponentSpec>,
    /// `config_store`.
    pub config_store: BTreeMap<String, ComponentSpec>,
    /// `lock`.
    pub lock: BTreeMap<String, ComponentSpec>,
    /// `sequencer`.
    pub sequencer: BTreeMap<String, ComponentSpec>,
    /// `file`.
    pub file: BTreeMap<String, ComponentSpec>,
    /// `bindings`.
    pub bindings: BTreeMap<String, ComponentSpec>,
    /// `secret_store`.
    pub secret_store: BTreeMap<String, ComponentSpec>,
    /// `rpcs`.
    pub rpcs: Option<RpcConfig>,
}

/// Layotto API sections layer8 does not implement: a config that declares components in them is
/// rejected rather than half-served.
const UNSUPPORTED: &[&str] = &[
    "oss",
    "cryption",
    "email",
    "phone",
    "sms",
    "custom_component",
    "delay_queue",
];

impl RuntimeConfig {
    /// Parse a `grpc_config` object (or a Layotto grpc filter config `{server_name, grpc_config}`).
    pub fn from_json(v: &Json) -> Result<RuntimeConfig, ConfigError> {
        let v = v.get("grpc_config").unwrap_or(v);
        let obj = v
            .as_object()
            .ok_or_else(|| err("grpc_config", "must be an object"))?;
        let mut cfg = RuntimeConfig::default();
        for (key, val) in obj {
            let section = |v: &Json| components(key, v);
            match key.as_str() {
                "app" => cfg.app = app(val)?,
                "hellos" => cfg.hellos = section(val)?,
                "state" => cfg.state = section(val)?,
                "pub_subs" => cfg.pub_subs = section(val)?,
                "config_store" => cfg.config_store = section(val)?,
                "lock" => cfg.lock = section(val)?,
                "sequencer" => cfg.sequencer = section(val)?,
                "file" => cfg.file = section(val)?,
                "bindings" => cfg.bindings = section(val)?,
                "secret_store" => cfg.secret_store = section(val)?,
                "rpcs" => cfg.rpcs = rpcs(val)?,
                "extends" | "server_name" => {}
                k if UNSUPPORTED.contains(&k) => {
                    if val.as_object().is_some_and(|o| !o.is_empty()) {
                        return Err(err(k, "this API is not supported by layer8"));
                    }
                }
                "files" => return Err(err("files", "unknown key (Layotto's key is `file`)")),
                k => return Err(err(k, "unknown key in grpc_config")),
            }
        }
        if cfg.app.callback_host.is_empty() {
            cfg.app.callback_host = "127.0.0.1".into();
        }
        Ok(cfg)
    }

    /// Parse the `value` of the runtime filter's `TypedStruct`.
    pub fn from_struct(s: &Struct) -> Result<RuntimeConfig, ConfigError> {
        RuntimeConfig::from_json(&struct_to_json(s))
    }
}

fn app(v: &Json) -> Result<AppConfig, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err("app", "must be an object"))?;
    let port = match o.get("grpc_callback_port") {
        None | Some(Json::Null) => 0,
        Some(p) => number(p)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| err("app.grpc_callback_port", "must be a port number"))?,
    };
    Ok(AppConfig {
        app_id: string(o.get("app_id")).unwrap_or_default(),
        callback_host: string(o.get("grpc_callback_host")).unwrap_or_default(),
        callback_port: port,
    })
}

/// The component types layer8 implements per API section, and the Dapr-style prefix a type may
/// carry (`state.redis` is `redis`).
pub fn known_types(api: &str) -> (&'static [&'static str], &'static str) {
    match api {
        "hellos" => (&["helloworld"], ""),
        "state" => (&["in-memory", "redis"], "state"),
        "pub_subs" => (&["in-memory", "redis"], "pubsub"),
        "config_store" => (&["in-memory", "etcd"], ""),
        "lock" | "sequencer" => (&["in-memory", "redis", "etcd"], ""),
        "file" => (&["local"], ""),
        "bindings" => (&["http"], "bindings"),
        "secret_store" => (&["local.file", "local.env"], "secretstores"),
        _ => (&[], ""),
    }
}

/// A component type without its Dapr-style prefix (`state.redis` -> `redis`).
pub fn base_type<'a>(kind: &'a str, dapr_prefix: &str) -> &'a str {
    if dapr_prefix.is_empty() {
        return kind;
    }
    kind.strip_prefix(dapr_prefix)
        .and_then(|k| k.strip_prefix('.'))
        .unwrap_or(kind)
}

fn components(api: &str, v: &Json) -> Result<BTreeMap<String, ComponentSpec>, ConfigError> {
    let o = v.as_object().ok_or_else(|| err(api, "must be an object"))?;
    let mut out = BTreeMap::new();
    for (name, c) in o {
        let at = format!("{api}.{name}");
        let co = c
            .as_object()
            .ok_or_else(|| err(&at, "must be an object with `type`"))?;
        let kind = string(co.get("type"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(&at, "`type` is required"))?;
        let (known, prefix) = known_types(api);
        if !known.contains(&base_type(&kind, prefix)) {
            return Err(err(
                &at,
                format!("unknown type '{kind}' (known: {})", known.join(", ")),
            ));
        }
        let raw_metadata = co.get("metadata").cloned().unwrap_or(Json::Null);
        let metadata = match &raw_metadata {
            Json::Null => Metadata::new(),
            Json::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), string(Some(v)).unwrap_or_else(|| v.to_string())))
                .collect(),
            // The file API's metadata may be an array (minio): kept raw only.
            Json::Array(_) if api == "file" => Metadata::new(),
            _ => return Err(err(format!("{at}.metadata"), "must be an object")),
        };
        let mut bigger_than = BTreeMap::new();
        if let Some(b) = co.get("biggerThan").filter(|b| !b.is_null()) {
            let bo = b
                .as_object()
                .ok_or_else(|| err(format!("{at}.biggerThan"), "must be an object"))?;
            for (k, n) in bo {
                let n = number(n)
                    .ok_or_else(|| err(format!("{at}.biggerThan.{k}"), "must be an integer"))?;
                bigger_than.insert(k.clone(), n);
            }
        }
        out.insert(
            name.clone(),
            ComponentSpec {
                kind,
                metadata,
                raw_metadata,
                bigger_than,
                hello: string(co.get("hello")),
            },
        );
    }
    Ok(out)
}

fn rpcs(v: &Json) -> Result<Option<RpcConfig>, ConfigError> {
    let Some(o) = v.as_object() else {
        return Err(err("rpcs", "must be an object"));
    };
    if o.is_empty() {
        return Ok(None);
    }
    let mosn = o
        .get("mosn")
        .ok_or_else(|| err("rpcs", "only the `mosn` invoker is supported"))?;
    let channel = mosn
        .pointer("/config/channel/0")
        .ok_or_else(|| err("rpcs.mosn.config.channel", "one channel is required"))?;
    let protocol = string(channel.get("protocol")).unwrap_or_else(|| "http".into());
    if protocol != "http" {
        return Err(err(
            "rpcs.mosn.config.channel[0].protocol",
            format!("'{protocol}' is not supported (only http)"),
        ));
    }
    let listener = string(channel.get("listener"))
        .filter(|l| !l.is_empty())
        .ok_or_else(|| err("rpcs.mosn.config.channel[0].listener", "is required"))?;
    let timeout = match mosn.pointer("/config/timeout") {
        Some(t) => number(t)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis)
            .ok_or_else(|| err("rpcs.mosn.config.timeout", "must be milliseconds"))?,
        None => Duration::from_millis(3000),
    };
    Ok(Some(RpcConfig { listener, timeout }))
}

fn string(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer from a JSON number (protobuf Structs carry every number as a double) or string.
fn number(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A protobuf `Struct` as JSON (whole numbers become integers).
pub fn struct_to_json(s: &Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// A duration from component metadata: `5s`, `500ms`, `1m`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layotto_standalone_shape() {
        let v: Json = serde_json::from_str(
            r#"{"server_name":"runtime","grpc_config":{
              "hellos":{"helloworld":{"type":"helloworld","hello":"greeting"}},
              "state":{"state_demo":{"type":"in-memory","metadata":{}}},
              "sequencer":{"s":{"type":"redis","metadata":{"redisHost":"127.0.0.1:6379"},"biggerThan":{"k":10}}},
              "app":{"app_id":"app1","grpc_callback_port":9999}}}"#,
        )
        .unwrap();
        let c = RuntimeConfig::from_json(&v).unwrap();
        assert_eq!(c.app.app_id, "app1");
        assert_eq!(c.app.callback_port, 9999);
        assert_eq!(c.app.callback_host, "127.0.0.1");
        assert_eq!(c.hellos["helloworld"].hello.as_deref(), Some("greeting"));
        assert_eq!(c.state["state_demo"].kind, "in-memory");
        assert_eq!(c.sequencer["s"].bigger_than["k"], 10);
        assert_eq!(c.sequencer["s"].metadata["redisHost"], "127.0.0.1:6379");
    }

    #[test]
    fn errors_name_the_component() {
        let v: Json = serde_json::from_str(r#"{"lock":{"l1":{"metadata":{}}}}"#).unwrap();
        let e = RuntimeConfig::from_json(&v).unwrap_err();
        assert_eq!(e.to_string(), "lock.l1: `type` is required");
        let v: Json = serde_json::from_str(r#"{"oss":{"o":{"type":"aws.oss"}}}"#).unwrap();
        let e = RuntimeConfig::from_json(&v).unwrap_err();
        assert_eq!(e.to_string(), "oss: this API is not supported by layer8");
        let v: Json = serde_json::from_str(r#"{"lock":{"l":{"type":"zookeeper"}}}"#).unwrap();
        let e = RuntimeConfig::from_json(&v).unwrap_err();
        assert_eq!(
            e.to_string(),
            "lock.l: unknown type 'zookeeper' (known: in-memory, redis, etcd)"
        );
        let v: Json = serde_json::from_str(r#"{"state":{"s":{"type":"state.redis"}}}"#).unwrap();
        assert!(RuntimeConfig::from_json(&v).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("1e300"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
