//! Proto3 JSON (and YAML) decoding of Envoy messages, the way Envoy reads a bootstrap.
//!
//! `Any` values carry their message inline next to `@type`. Types the pool does not know (Istio's
//! private filter configs such as `stats.PluginConfig`) decode as empty placeholder messages that
//! keep their type URL, so the translator can decide to skip or reject them by name. Unknown
//! fields are rejected (naming every one) unless the caller allows them, as Envoy's
//! `--allow-unknown-static-fields` does.

use std::collections::BTreeSet;

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::Value;

use crate::registry::{pool, type_name, PLACEHOLDER_DIR};

/// Errors decoding a document into a protobuf message. Each names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The text is not valid JSON/YAML.
    #[error("{format} syntax error: {message}")]
    Syntax {
        /// "JSON" or "YAML".
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field's value does not fit its protobuf type.
    #[error("field '{path}': {message}")]
    Field {
        /// Dotted field path from the document root.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Fields the message type does not have (rejected unless unknown fields are allowed).
    #[error("unknown field(s): {}", .0.join(", "))]
    UnknownFields(Vec<String>),
    /// The target message type is not in the descriptor pool (a build defect).
    #[error("message type '{0}' is not in the descriptor pool")]
    NoDescriptor(String),
}

/// How strictly to decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeOptions {
    /// Tolerate fields the message does not define (they are reported, not rejected).
    pub allow_unknown_fields: bool,
}

/// A decoded message and what was tolerated on the way.
#[derive(Debug)]
pub struct Decoded<M> {
    /// The message.
    pub message: M,
    /// Paths of unknown fields that were ignored (only when allowed).
    pub unknown_fields: Vec<String>,
    /// Type URLs of `Any` payloads the pool does not know; they decode as empty messages.
    pub unknown_types: Vec<String>,
}

/// Parse JSON or YAML text into a JSON value. YAML is tried when `yaml` is set, JSON otherwise.
pub fn parse_text(text: &str, yaml: bool) -> Result<Value, JsonError> {
    if yaml {
        serde_yaml::from_str(text).map_err(|e| JsonError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })
    } else {
        serde_json::from_str(text).map_err(|e| JsonError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })
    }
}

/// Decode a JSON value into the protobuf message `M`.
pub fn decode<M>(value: Value, opts: DecodeOptions) -> Result<Decoded<M>, JsonError>
where
    M: Message + prost::Name + Default,
{
    let bytes = decode_dynamic(value, &M::full_name(), opts)?;
    let message = M::decode(bytes.message.as_slice()).map_err(|e| JsonError::Field {
        path: String::new(),
        message: e.to_string(),
    })?;
    Ok(Decoded {
        message,
        unknown_fields: bytes.unknown_fields,
        unknown_types: bytes.unknown_types,
    })
}

/// Decode a JSON value into the wire bytes of the message named `full_name`.
pub fn decode_dynamic(
    value: Value,
    full_name: &str,
    opts: DecodeOptions,
) -> Result<Decoded<Vec<u8>>, JsonError> {
    let mut unknown_types = BTreeSet::new();
    collect_unknown_types(&value, &mut unknown_types);
    let pool = crate::registry::ensure_placeholders(unknown_types.iter().map(String::as_str));
    let desc = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonError::NoDescriptor(full_name.to_string()))?;

    let mut unknown_fields = Vec::new();
    find_unknown_fields(&value, &desc, "", &mut unknown_fields);
    if !unknown_fields.is_empty() && !opts.allow_unknown_fields {
        return Err(JsonError::UnknownFields(unknown_fields));
    }

    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let message = DynamicMessage::deserialize_with_options(desc, de, &options).map_err(
        |e: serde_json::Error| JsonError::Field {
            path: track.path().to_string(),
            message: e.to_string(),
        },
    )?;
    Ok(Decoded {
        message: message.encode_to_vec(),
        unknown_fields,
        unknown_types: unknown_types.into_iter().collect(),
    })
}

/// Render a message as Envoy renders it in `/config_dump`: proto3 JSON, snake_case field names,
/// `Any` payloads inline with `@type`.
pub fn to_json<M>(message: &M) -> Value
where
    M: Message + prost::Name,
{
    bytes_to_json(&M::full_name(), &message.encode_to_vec(), false)
}

/// Like [`to_json`] but printing fields that hold their default value too (Envoy's
/// `always_print_primitive_fields`, used by `/server_info`).
pub fn to_json_with_defaults<M>(message: &M) -> Value
where
    M: Message + prost::Name,
{
    bytes_to_json(&M::full_name(), &message.encode_to_vec(), true)
}

/// Render the wire bytes of the message named `full_name` as JSON (`null` if it cannot be).
/// `Any`s of types the pool does not know render as `{"@type": ...}`: their placeholders are
/// registered here, in the pool used for the rendering.
pub fn bytes_to_json(full_name: &str, bytes: &[u8], emit_defaults: bool) -> Value {
    let pool = crate::registry::ensure_placeholders_in_wire(bytes);
    let Some(desc) = pool.get_message_by_name(full_name) else {
        return Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(desc, bytes) else {
        return Value::Null;
    };
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(!emit_defaults);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(Value::Null)
}

fn collect_unknown_types(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(url)) = map.get("@type") {
                let name = type_name(url);
                if !crate::registry::is_known(name) {
                    out.insert(name.to_string());
                }
            }
            map.values().for_each(|v| collect_unknown_types(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_unknown_types(v, out)),
        _ => {}
    }
}

/// Well-known types whose JSON form is not an object of fields.
fn has_special_json(desc: &MessageDescriptor) -> bool {
    desc.full_name().starts_with("google.protobuf.") && desc.full_name() != "google.protobuf.Any"
}

fn find_unknown_fields(value: &Value, desc: &MessageDescriptor, path: &str, out: &mut Vec<String>) {
    let Value::Object(map) = value else { return };
    if has_special_json(desc) {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    if desc.full_name() == "google.protobuf.Any" {
        let Some(Value::String(url)) = map.get("@type") else {
            return;
        };
        let Some(inner) = pool().get_message_by_name(type_name(url)) else {
            return;
        };
        if has_special_json(&inner) || inner.parent_file().name().starts_with(PLACEHOLDER_DIR) {
            return;
        }
        let mut rest = map.clone();
        rest.remove("@type");
        find_unknown_fields(&Value::Object(rest), &inner, path, out);
        return;
    }
    for (key, v) in map {
        let field = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key));
        let Some(field) = field else {
            out.push(join(key));
            continue;
        };
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        let here = join(key);
        if field.is_map() {
            let Value::Object(entries) = v else { continue };
            let value_field = inner.map_entry_value_field();
            if let Kind::Message(value_desc) = value_field.kind() {
                for (k, item) in entries {
                    find_unknown_fields(item, &value_desc, &format!("{here}.{k}"), out);
                }
            }
        } else if field.is_list() {
            if let Value::Array(items) = v {
                for (i, item) in items.iter().enumerate() {
                    find_unknown_fields(item, &inner, &format!("{here}[{i}]"), out);
                }
            }
        } else {
            find_unknown_fields(v, &inner, &here, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::envoy::config::bootstrap::v3::Bootstrap;
    use crate::pb::envoy::config::listener::v3::Listener;

    const LISTENER: &str = r#"
name: l1
address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: tcp
      cluster: backend
      idle_timeout: 5s
  - name: istio.stats
    typed_config:
      "@type": type.googleapis.com/stats.PluginConfig
      anything: goes
"#;

    #[test]
    fn yaml_listener_with_inline_any_and_istio_private_type() {
        let v = parse_text(LISTENER, true).expect("yaml");
        let d = decode::<Listener>(v, DecodeOptions::default()).expect("decode");
        let filters = &d.message.filter_chains[0].filters;
        assert_eq!(d.message.name, "l1");
        assert_eq!(d.unknown_types, vec!["stats.PluginConfig".to_string()]);
        let Some(crate::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
            &filters[0].config_type
        else {
            panic!("no typed_config");
        };
        let tcp: crate::pb::ext::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy =
            any.to_msg().expect("tcp proxy");
        assert_eq!(tcp.stat_prefix, "tcp");
        assert_eq!(tcp.idle_timeout.map(|d| d.seconds), Some(5));
    }

    #[test]
    fn unknown_fields_rejected_with_paths_unless_allowed() {
        let v = parse_text(
            r#"{"static_resources":{"clusters":[{"name":"c","bogus":1}]},"nope":true}"#,
            false,
        )
        .expect("json");
        let err = decode::<Bootstrap>(v.clone(), DecodeOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field(s): nope, static_resources.clusters[0].bogus"
        );
        let ok = decode::<Bootstrap>(
            v,
            DecodeOptions {
                allow_unknown_fields: true,
            },
        )
        .expect("tolerated");
        assert_eq!(ok.unknown_fields.len(), 2);
    }

    #[test]
    fn bad_value_names_field_path() {
        let v = parse_text(
            r#"{"static_resources":{"clusters":[{"name":"c","connect_timeout":"soon"}]}}"#,
            false,
        )
        .expect("json");
        let err = decode::<Bootstrap>(v, DecodeOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("field 'static_resources.clusters[0].connect_timeout'"),
            "{err}"
        );
    }

    #[test]
    fn round_trips_to_snake_case_json_with_inline_any() {
        let v = parse_text(LISTENER, true).expect("yaml");
        let d = decode::<Listener>(v, DecodeOptions::default()).expect("decode");
        let json = to_json(&d.message);
        assert_eq!(
            json["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"],
            "tcp"
        );
        assert_eq!(json["address"]["socket_address"]["port_value"], 10000);
    }

    #[test]
    fn unknown_types_decode_while_the_pool_is_released_concurrently() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let releaser = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    crate::registry::release();
                    std::thread::yield_now();
                }
            })
        };
        for i in 0..40 {
            let text = format!(
                "name: l{i}\nfilter_chains:\n- filters:\n  - name: private\n    typed_config:\n      \"@type\": type.googleapis.com/example.private.Config{i}\n"
            );
            let value = parse_text(&text, true).expect("yaml");
            let decoded = decode::<Listener>(value, DecodeOptions::default());
            let decoded = decoded.unwrap_or_else(|e| panic!("round {i}: {e}"));
            assert_eq!(
                decoded.unknown_types,
                [format!("example.private.Config{i}")],
                "round {i}"
            );
        }
        stop.store(true, Ordering::Relaxed);
        releaser.join().expect("releaser");
    }
}
