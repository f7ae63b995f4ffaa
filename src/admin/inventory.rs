//! `/clusters` and `/listeners` in Envoy's text and JSON shapes.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::model::cluster::EndpointAddr;
use crate::model::listener::ListenAddr;
use crate::server::State;

fn addr_json(a: &EndpointAddr) -> Value {
    match a {
        EndpointAddr::Ip(s) => {
            json!({"socket_address": {"address": s.ip().to_string(), "port_value": s.port()}})
        }
        EndpointAddr::Dns(h, p) => json!({"socket_address": {"address": h, "port_value": p}}),
        EndpointAddr::Unix(p) => json!({"pipe": {"path": p.display().to_string()}}),
    }
}

/// `/clusters` text: `cluster::host::stat::value` lines.
pub fn clusters_text(state: &Arc<State>) -> String {
    let snap = state.snapshots.load();
    let mut names: Vec<_> = snap.clusters.keys().cloned().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let Some(c) = snap.clusters.get(&name) else {
            continue;
        };
        let t = c.config.thresholds;
        let _ = writeln!(out, "{name}::observability_name::{name}");
        let _ = writeln!(
            out,
            "{name}::default_priority::max_connections::{}",
            t.max_connections
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_pending_requests::{}",
            t.max_pending_requests
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_requests::{}",
            t.max_requests
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_retries::{}",
            t.max_retries
        );
        let _ = writeln!(out, "{name}::added_via_api::false");
        let set = c.endpoints();
        for h in &set.all {
            let key = h.key();
            let healthy = set.hosts.iter().any(|x| Arc::ptr_eq(x, h));
            let _ = writeln!(out, "{name}::{key}::rq_active::{}", h.active_requests());
            let _ = writeln!(out, "{name}::{key}::weight::{}", h.weight);
            let _ = writeln!(
                out,
                "{name}::{key}::health_flags::{}",
                if healthy {
                    "healthy"
                } else {
                    "/failed_eds_health"
                }
            );
            let _ = writeln!(out, "{name}::{key}::hostname::{}", h.hostname);
        }
    }
    out
}

/// `/clusters?format=json` (Envoy's `admin.v3.Clusters` shape).
pub fn clusters_json(state: &Arc<State>) -> Value {
    let snap = state.snapshots.load();
    let statuses: Vec<Value> = snap
        .clusters
        .values()
        .map(|c| {
            let set = c.endpoints();
            let hosts: Vec<Value> = set
                .all
                .iter()
                .map(|h| {
                    json!({
                        "address": addr_json(&h.addr),
                        "weight": h.weight,
                        "hostname": h.hostname,
                        "health_status": {"eds_health_status": if set.hosts.iter().any(|x| Arc::ptr_eq(x, h)) { "HEALTHY" } else { "UNHEALTHY" }},
                        "stats": [{"name": "rq_active", "type": "GAUGE", "value": h.active_requests()}]
                    })
                })
                .collect();
            let t = c.config.thresholds;
            json!({
                "name": c.name.as_ref(),
                "observability_name": c.name.as_ref(),
                "added_via_api": false,
                "host_statuses": hosts,
                "circuit_breakers": {"thresholds": [{
                    "max_connections": t.max_connections, "max_pending_requests": t.max_pending_requests,
                    "max_requests": t.max_requests, "max_retries": t.max_retries
                }]}
            })
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}

/// `/listeners` text: `name::address` lines.
pub fn listeners_text(state: &Arc<State>) -> String {
    let snap = state.snapshots.load();
    let mut out = String::new();
    for l in &snap.listeners {
        let _ = writeln!(out, "{}::{}", l.name, l.address);
    }
    out
}

/// `/listeners?format=json`.
pub fn listeners_json(state: &Arc<State>) -> Value {
    let snap = state.snapshots.load();
    let statuses: Vec<Value> = snap
        .listeners
        .iter()
        .map(|l| {
            let addr = match &l.address {
                ListenAddr::Tcp(s) => json!({"socket_address": {"address": s.ip().to_string(), "port_value": s.port()}}),
                ListenAddr::Unix(p) => json!({"pipe": {"path": p.display().to_string()}}),
            };
            json!({"name": l.name, "local_address": addr})
        })
        .collect();
    json!({ "listener_statuses": statuses })
}
