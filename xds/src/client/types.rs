//! Type URLs of the xDS resource types and how to name a resource.

use crate::pb::google::protobuf::Any;

/// LDS.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RDS.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// CDS.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// EDS.
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// SDS.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The `Resource` wrapper a server may put around any resource.
pub const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// The order Envoy (and istiod's push order) uses: clusters and their endpoints before the
/// listeners and routes that reference them, secrets last.
pub fn ads_order() -> Vec<String> {
    [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Short name for stats and logs (`lds`, `cds`, ...).
pub fn short(type_url: &str) -> &'static str {
    match type_url {
        LISTENER => "lds",
        ROUTE => "rds",
        CLUSTER => "cds",
        ENDPOINT => "eds",
        SECRET => "sds",
        _ => "unknown",
    }
}

/// Only the name of a resource: field 1 of Listener, Cluster, RouteConfiguration, Secret
/// (`name`) and ClusterLoadAssignment (`cluster_name`). Decoding skips every other field.
#[derive(Clone, PartialEq, prost::Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name of a resource of one of the five xDS types.
pub fn resource_name(any: &Any) -> Result<String, String> {
    match any.type_url.as_str() {
        LISTENER | ROUTE | CLUSTER | ENDPOINT | SECRET => {
            let n = <NameOnly as prost::Message>::decode(any.value.as_slice())
                .map_err(|e| format!("malformed {}: {e}", short(&any.type_url)))?;
            if n.name.is_empty() {
                return Err(format!("{} resource without a name", short(&any.type_url)));
            }
            Ok(n.name)
        }
        other => Err(format!("unsupported resource type {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn names_come_from_field_one() {
        let c = crate::pb::envoy::config::cluster::v3::Cluster {
            name: "outbound|80||a.b".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: CLUSTER.into(),
            value: c.encode_to_vec(),
        };
        assert_eq!(resource_name(&any).as_deref(), Ok("outbound|80||a.b"));
        let cla = crate::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
            cluster_name: "svc".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: ENDPOINT.into(),
            value: cla.encode_to_vec(),
        };
        assert_eq!(resource_name(&any).as_deref(), Ok("svc"));
        let any = Any {
            type_url: LISTENER.into(),
            value: Vec::new(),
        };
        assert_eq!(
            resource_name(&any),
            Err("lds resource without a name".to_string())
        );
    }
}
