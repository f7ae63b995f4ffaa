//! One State-of-the-World stream (ADS or SDS).

use std::collections::{BTreeSet, HashMap};

use layer8_xds::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::{wildcard_type, ControlPlane, Request};

#[derive(Debug, Default)]
struct Sub {
    /// `None`: wildcard.
    names: Option<BTreeSet<String>>,
    /// Type version last sent (0: nothing sent yet).
    sent: u64,
    /// Nonce of the last response.
    nonce: String,
}

pub(crate) async fn run(
    cp: ControlPlane,
    mut reqs: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let stream = cp.stream_opened();
    let mut changed = cp.inner.changed.subscribe();
    let mut kill = cp.inner.kill.subscribe();
    kill.borrow_and_update();
    let mut subs: HashMap<String, Sub> = HashMap::new();
    loop {
        tokio::select! {
            req = reqs.message() => {
                let Ok(Some(r)) = req else { break };
                cp.record(Request {
                    stream,
                    delta: false,
                    type_url: r.type_url.clone(),
                    version_info: r.version_info.clone(),
                    nonce: r.response_nonce.clone(),
                    response_version: None,
                    names: r.resource_names.clone(),
                    unsubscribe: Vec::new(),
                    initial_versions: Default::default(),
                    error: r.error_detail.as_ref().map(|e| e.message.clone()),
                    node_id: r.node.as_ref().map(|n| n.id.clone()),
                    at: std::time::Instant::now(),
                });
                let sub = subs.entry(r.type_url.clone()).or_default();
                if !r.response_nonce.is_empty() && r.response_nonce != sub.nonce {
                    continue; // stale
                }
                let names = if r.resource_names.is_empty() && wildcard_type(&r.type_url) {
                    None
                } else {
                    Some(r.resource_names.iter().cloned().collect())
                };
                let names_changed = sub.names != names;
                sub.names = names;
                if r.error_detail.is_some() && !names_changed {
                    continue; // NACK: wait for the next change
                }
                if (r.response_nonce.is_empty() || names_changed)
                    && !send(&cp, &r.type_url, sub, &tx).await
                {
                    break;
                }
            }
            res = changed.changed() => {
                if res.is_err() { break }
                let mut ok = true;
                for (t, sub) in subs.iter_mut() {
                    let (v, _) = cp.select(t, Some(&BTreeSet::new()));
                    if v > sub.sent && !send(&cp, t, sub, &tx).await {
                        ok = false;
                        break;
                    }
                }
                if !ok { break }
            }
            _ = kill.changed() => {
                let _ = tx.send(Err(Status::unavailable("control plane dropped the stream"))).await;
                break;
            }
        }
    }
    cp.stream_closed();
}

async fn send(
    cp: &ControlPlane,
    type_url: &str,
    sub: &mut Sub,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> bool {
    let (version, items) = cp.select(type_url, sub.names.as_ref());
    let version_s = version.to_string();
    let nonce = cp.nonce_for(&version_s);
    sub.sent = version.max(1);
    sub.nonce = nonce.clone();
    let resp = DiscoveryResponse {
        version_info: version_s,
        resources: items.into_iter().map(|i| i.body).collect(),
        type_url: type_url.to_string(),
        nonce,
        ..Default::default()
    };
    tx.send(Ok(resp)).await.is_ok()
}
