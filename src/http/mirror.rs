//! `request_mirror_policies`: fire-and-forget shadow requests.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::BodyExt;

use super::forward::*;
use crate::upstream::{pool, Cluster};

pub(super) fn spawn_mirror(
    cluster: Arc<Cluster>,
    parts: &http::request::Parts,
    pq: &str,
    authority: &str,
    body: Bytes,
) {
    let method: Method = parts.method.clone();
    let mut headers = parts.headers.clone();
    // Envoy appends "-shadow" to the authority of mirrored requests.
    let shadow = format!("{authority}-shadow");
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        headers.insert(header::HOST, v);
    }
    let pq = pq.to_string();
    tokio::spawn(async move {
        let Some(host) = cluster.pick(None, 0, &[]) else {
            return;
        };
        let uri = upstream_uri(&cluster, false, &shadow, &pq, None);
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = b.headers_mut() {
            *h = headers;
        }
        let Ok(req) = b.body(pool::UpstreamBody::full(body)) else {
            return;
        };
        if let Ok(sender) = pool::checkout(&cluster, &host, false).await {
            if let Ok(resp) = sender.send(req).await {
                cluster.stats.response(resp.status().as_u16());
                let _ = resp.into_body().collect().await;
            }
        }
    });
}
