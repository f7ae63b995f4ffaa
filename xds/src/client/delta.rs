//! Incremental (Delta) streams: `DeltaAggregatedResources` and `DeltaSecrets`.
//!
//! Requests carry subscription changes, not full lists; a new stream sends the current names
//! and `initial_resource_versions` so the server only sends what changed while disconnected.

use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{
    nack_status, transport, unwrap_resource, Interest, Resource, Service, Session, StreamError,
    Update,
};
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use crate::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

struct Out {
    tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    first: bool,
}

impl Out {
    fn send(&mut self, s: &Session<'_>, req: DeltaDiscoveryRequest) {
        let node = s.node(&mut self.first);
        let _ = self.tx.send(DeltaDiscoveryRequest { node, ..req });
    }
}

pub(super) async fn run(s: &mut Session<'_>) -> Result<(), StreamError> {
    let channel = transport::connect(&s.cfg.target, s.cfg.tls.as_ref()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut out = Out { tx, first: true };
    for t in s.types.order.clone() {
        let st = s.types.get(&t);
        if st.interest == Interest::None {
            continue;
        }
        st.sent = st.interest.clone();
        let req = DeltaDiscoveryRequest {
            type_url: t.clone(),
            resource_names_subscribe: st.interest.names(),
            initial_resource_versions: st
                .versions
                .iter()
                .filter(|(k, _)| match &st.interest {
                    Interest::Names(n) => n.contains(*k),
                    _ => true,
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Default::default()
        };
        out.send(s, req);
    }
    let requests = UnboundedReceiverStream::new(rx);
    let inbound = match s.cfg.service {
        Service::Ads => AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .delta_aggregated_resources(requests)
            .await?
            .into_inner(),
        Service::Sds => SecretDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .delta_secrets(requests)
            .await?
            .into_inner(),
    };
    super::drive(s, &mut out, inbound).await
}

impl super::Wire for Out {
    type Response = DeltaDiscoveryResponse;

    async fn respond(
        &mut self,
        s: &mut Session<'_>,
        resp: DeltaDiscoveryResponse,
    ) -> Result<(), StreamError> {
        respond(s, self, resp).await
    }

    fn change_interest(&mut self, s: &mut Session<'_>, type_url: &str, interest: Interest) {
        change_interest(s, self, type_url, interest);
    }
}

/// Send the difference between what this stream subscribed to and the new interest.
fn change_interest(s: &mut Session<'_>, out: &mut Out, type_url: &str, interest: Interest) {
    let st = s.types.get(type_url);
    st.interest = interest.clone();
    if st.sent == interest {
        return;
    }
    let (subscribe, unsubscribe) = match (&st.sent, &interest) {
        (Interest::Names(old), Interest::Names(new)) => (
            new.difference(old).cloned().collect(),
            old.difference(new).cloned().collect(),
        ),
        (Interest::None, Interest::Names(new)) => (new.iter().cloned().collect(), Vec::new()),
        (Interest::None, Interest::Wildcard) => (Vec::new(), Vec::new()),
        (_, Interest::Wildcard) => (vec!["*".to_string()], Vec::new()),
        (Interest::Names(old), Interest::None) => (Vec::new(), old.iter().cloned().collect()),
        (Interest::Wildcard, _) => (interest.names(), vec!["*".to_string()]),
        (Interest::None, Interest::None) => return,
    };
    // Forget unsubscribed resources: the server will not tell us they are gone.
    let gone: BTreeSet<&String> = unsubscribe.iter().collect();
    st.versions.retain(|k, _| !gone.contains(k));
    st.sent = interest;
    let req = DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        ..Default::default()
    };
    out.send(s, req);
}

async fn respond(
    s: &mut Session<'_>,
    out: &mut Out,
    resp: DeltaDiscoveryResponse,
) -> Result<(), StreamError> {
    let type_url = resp.type_url.clone();
    if !s.types.state.contains_key(&type_url) {
        tracing::warn!(client = %s.cfg.name, %type_url, "response for a type never requested; ignored");
        return Ok(());
    }
    s.responded = true;
    let mut resources = Vec::with_capacity(resp.resources.len());
    let mut malformed = Vec::new();
    for r in resp.resources {
        let Some(body) = r.resource else {
            malformed.push((r.name.clone(), format!("resource '{}' has no body", r.name)));
            continue;
        };
        match unwrap_resource(body, &type_url, &r.version) {
            Ok(mut res) => {
                if !r.name.is_empty() && r.name != res.name {
                    malformed.push((
                        r.name.clone(),
                        format!(
                            "resource '{}' carries a resource named '{}'",
                            r.name, res.name
                        ),
                    ));
                    continue;
                }
                res.version = r.version;
                resources.push(res);
            }
            Err(m) => malformed.push((r.name, m)),
        }
    }
    let names: Vec<(String, String)> = resources
        .iter()
        .map(|r: &Resource| (r.name.clone(), r.version.clone()))
        .collect();
    let removed = resp.removed_resources;
    let rejected = if malformed.is_empty() {
        let v = s
            .judge(Update {
                type_url: type_url.clone(),
                version_info: resp.system_version_info,
                resources,
                removed: removed.clone(),
            })
            .await?;
        let st = s.types.get(&type_url);
        for (n, ver) in names {
            if !v.rejected.iter().any(|(r, _)| *r == n) {
                st.versions.insert(n, ver);
            }
        }
        for n in &removed {
            st.versions.remove(n);
        }
        let ack = DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: resp.nonce,
            error_detail: (!v.rejected.is_empty()).then(|| nack_status(&v.rejected)),
            ..Default::default()
        };
        out.send(s, ack);
        for (t, i) in v.interest {
            change_interest(s, out, &t, i);
        }
        return Ok(());
    } else {
        malformed
    };
    let nack = DeltaDiscoveryRequest {
        type_url,
        response_nonce: resp.nonce,
        error_detail: Some(nack_status(&rejected)),
        ..Default::default()
    };
    out.send(s, nack);
    Ok(())
}
