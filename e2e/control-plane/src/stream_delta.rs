//! One Delta stream (ADS or SDS).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use layer8_xds::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::{wildcard_type, ControlPlane, Request};

#[derive(Debug, Default)]
struct Sub {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client holds: name -> version.
    known: BTreeMap<String, String>,
}

pub(crate) async fn run(
    cp: ControlPlane,
    mut reqs: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
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
                    delta: true,
                    type_url: r.type_url.clone(),
                    version_info: String::new(),
                    nonce: r.response_nonce.clone(),
                    response_version: None,
                    names: r.resource_names_subscribe.clone(),
                    unsubscribe: r.resource_names_unsubscribe.clone(),
                    initial_versions: r.initial_resource_versions.clone().into_iter().collect(),
                    error: r.error_detail.as_ref().map(|e| e.message.clone()),
                    node_id: r.node.as_ref().map(|n| n.id.clone()),
                    at: std::time::Instant::now(),
                });
                let first = !subs.contains_key(&r.type_url);
                let sub = subs.entry(r.type_url.clone()).or_default();
                if first {
                    sub.wildcard = r.resource_names_subscribe.is_empty() && wildcard_type(&r.type_url);
                    sub.known = r.initial_resource_versions.clone().into_iter().collect();
                }
                for n in &r.resource_names_subscribe {
                    if n == "*" { sub.wildcard = true } else { sub.names.insert(n.clone()); }
                }
                for n in &r.resource_names_unsubscribe {
                    if n == "*" { sub.wildcard = false } else { sub.names.remove(n); }
                    sub.known.remove(n);
                }
                let changes = !r.resource_names_subscribe.is_empty() || !r.resource_names_unsubscribe.is_empty();
                if (first || changes) && !send(&cp, &r.type_url, sub, first, &tx).await {
                    break;
                }
            }
            res = changed.changed() => {
                if res.is_err() { break }
                let mut ok = true;
                for (t, sub) in subs.iter_mut() {
                    if !send(&cp, t, sub, false, &tx).await { ok = false; break }
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

/// Send what changed since the client's view (`always`: even when nothing did).
async fn send(
    cp: &ControlPlane,
    type_url: &str,
    sub: &mut Sub,
    always: bool,
    tx: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) -> bool {
    let scope = (!sub.wildcard).then_some(&sub.names);
    let (version, changed, removed) = cp.diff(type_url, scope, &sub.known);
    let resources: Vec<Resource> = changed
        .into_iter()
        .map(|i| Resource {
            name: i.name,
            version: i.version,
            resource: Some(i.body),
            ..Default::default()
        })
        .collect();
    if resources.is_empty() && removed.is_empty() && !always {
        return true;
    }
    for n in &removed {
        sub.known.remove(n);
    }
    for r in &resources {
        sub.known.insert(r.name.clone(), r.version.clone());
    }
    let version_s = version.to_string();
    let resp = DeltaDiscoveryResponse {
        system_version_info: version_s.clone(),
        resources,
        type_url: type_url.to_string(),
        removed_resources: removed,
        nonce: cp.nonce_for(&version_s),
        ..Default::default()
    };
    tx.send(Ok(resp)).await.is_ok()
}
