//! State-of-the-World streams: `StreamAggregatedResources` and `StreamSecrets`.
//!
//! Every request carries the full name list of its type, the last accepted `version_info` and the
//! nonce of the response it answers. LDS and CDS responses are the whole state, so a name missing
//! from one is a removal; for the named types (RDS, EDS, SDS) a response only upserts.

use std::collections::BTreeSet;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::types::{CLUSTER, LISTENER};
use super::{
    nack_status, transport, unwrap_resource, Interest, Service, Session, StreamError, Update,
    Verdict,
};
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use crate::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

struct Out {
    tx: mpsc::UnboundedSender<DiscoveryRequest>,
    first: bool,
}

pub(super) async fn run(s: &mut Session<'_>) -> Result<(), StreamError> {
    let channel = transport::connect(&s.cfg.target, s.cfg.tls.as_ref()).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut out = Out { tx, first: true };
    for t in s.types.order.clone() {
        send(s, &mut out, &t, None);
    }
    let requests = UnboundedReceiverStream::new(rx);
    let inbound = match s.cfg.service {
        Service::Ads => AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .stream_aggregated_resources(requests)
            .await?
            .into_inner(),
        Service::Sds => SecretDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .stream_secrets(requests)
            .await?
            .into_inner(),
    };
    super::drive(s, &mut out, inbound).await
}

impl super::Wire for Out {
    type Response = DiscoveryResponse;

    async fn respond(
        &mut self,
        s: &mut Session<'_>,
        resp: DiscoveryResponse,
    ) -> Result<(), StreamError> {
        respond(s, self, resp).await
    }

    fn change_interest(&mut self, s: &mut Session<'_>, type_url: &str, interest: Interest) {
        change_interest(s, self, type_url, interest);
    }
}

/// Send the current request for `type_url` (skipped when there is no interest and nothing was
/// subscribed on this stream).
fn send(
    s: &mut Session<'_>,
    out: &mut Out,
    type_url: &str,
    error: Option<crate::pb::google::rpc::Status>,
) {
    let node_first = out.first;
    let st = s.types.get(type_url);
    if st.interest == Interest::None && st.sent == Interest::None {
        return;
    }
    st.sent = st.interest.clone();
    let req = DiscoveryRequest {
        version_info: st.version_info.clone(),
        resource_names: st.interest.names(),
        type_url: type_url.to_string(),
        response_nonce: st.nonce.clone(),
        error_detail: error,
        ..Default::default()
    };
    let mut first = node_first;
    let node = s.node(&mut first);
    out.first = first;
    let _ = out.tx.send(DiscoveryRequest { node, ..req });
}

fn change_interest(s: &mut Session<'_>, out: &mut Out, type_url: &str, interest: Interest) {
    let st = s.types.get(type_url);
    if st.interest == interest {
        return;
    }
    st.interest = interest;
    send(s, out, type_url, None);
}

async fn respond(
    s: &mut Session<'_>,
    out: &mut Out,
    resp: DiscoveryResponse,
) -> Result<(), StreamError> {
    let type_url = resp.type_url.clone();
    if !s.types.state.contains_key(&type_url) {
        tracing::warn!(client = %s.cfg.name, %type_url, "response for a type never requested; ignored");
        return Ok(());
    }
    s.responded = true;
    let mut resources = Vec::with_capacity(resp.resources.len());
    let mut malformed = Vec::new();
    for any in resp.resources {
        match unwrap_resource(any, &type_url, &resp.version_info) {
            Ok(r) => resources.push(r),
            Err(m) => malformed.push((String::new(), m)),
        }
    }
    let full_state = type_url == LISTENER || type_url == CLUSTER;
    let removed: Vec<String> = if full_state {
        let present: BTreeSet<&str> = resources.iter().map(|r| r.name.as_str()).collect();
        s.types
            .get(&type_url)
            .versions
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let accepted: Vec<(String, String)>;
    let judged = malformed.is_empty();
    let verdict = if judged {
        let names: Vec<(String, String)> = resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let v = s
            .judge(Update {
                type_url: type_url.clone(),
                version_info: resp.version_info.clone(),
                resources,
                removed: removed.clone(),
            })
            .await?;
        accepted = names
            .into_iter()
            .filter(|(n, _)| !v.rejected.iter().any(|(r, _)| r == n))
            .collect();
        v
    } else {
        accepted = Vec::new();
        Verdict {
            rejected: malformed,
            interest: Vec::new(),
        }
    };
    let st = s.types.get(&type_url);
    st.nonce = resp.nonce;
    if verdict.rejected.is_empty() {
        st.version_info = resp.version_info;
    }
    for (n, v) in accepted {
        st.versions.insert(n, v);
    }
    if judged {
        for n in &removed {
            st.versions.remove(n);
        }
    }
    let error = (!verdict.rejected.is_empty()).then(|| nack_status(&verdict.rejected));
    send(s, out, &type_url, error);
    for (t, i) in verdict.interest {
        change_interest(s, out, &t, i);
    }
    Ok(())
}
