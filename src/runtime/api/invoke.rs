//! InvokeService: the call leaves as HTTP/1.1 through one of layer8's own proxy listeners
//! (`rpcs.mosn.config.channel[0].listener`), so that listener's routes, clusters and policies
//! apply. URI = `/<method>[?querystring]`, method = the HTTP verb (GET by default), header
//! `id: <target app id>`, the caller's gRPC metadata as headers.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use tonic::metadata::{KeyAndValueRef, MetadataMap};
use tonic::Status;

use super::Shared;
use crate::model::listener::ListenAddr;
use crate::runtime::proto::rt;

/// The client InvokeService sends with (keep-alive pool to the egress listener).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Headers that belong to the gRPC hop, not to the forwarded request.
const SKIP: &[&str] = &[
    "content-type",
    "content-length",
    "te",
    "user-agent",
    "host",
    "grpc-accept-encoding",
    "grpc-encoding",
    "grpc-timeout",
    "accept-encoding",
];

/// Response headers that belong to the HTTP hop (Content-Length among them: Layotto #285).
const RESPONSE_SKIP: &[&str] = &[
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// The largest response body InvokeService accepts (64 MiB).
pub const MAX_RESPONSE_BODY: usize = 64 << 20;

/// `InvokeService`.
pub async fn invoke(
    s: &Shared,
    meta: MetadataMap,
    r: rt::InvokeServiceRequest,
) -> Result<(rt::InvokeResponse, MetadataMap), Status> {
    let rpc = s.rpc.as_ref().ok_or_else(|| {
        Status::failed_precondition("service invocation (rpcs) is not configured")
    })?;
    let msg = r
        .message
        .ok_or_else(|| Status::invalid_argument("message is required"))?;
    if r.id.is_empty() {
        return Err(Status::invalid_argument("id is empty"));
    }
    let state = s
        .state
        .upgrade()
        .ok_or_else(|| Status::unavailable("layer8 is shutting down"))?;
    let addr = {
        let snap = state.snapshots.load();
        let l = snap
            .listeners
            .iter()
            .find(|l| l.name == rpc.listener)
            .ok_or_else(|| {
                Status::failed_precondition(format!("listener {} not found", rpc.listener))
            })?;
        match &l.address {
            ListenAddr::Tcp(a) if a.ip().is_unspecified() => {
                std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
            }
            ListenAddr::Tcp(a) => *a,
            ListenAddr::Unix(_) => {
                return Err(Status::failed_precondition(format!(
                    "listener {} is a Unix socket; InvokeService needs a TCP listener",
                    rpc.listener
                )))
            }
        }
    };
    let (verb, query) = match &msg.http_extension {
        Some(h) => (h.verb(), h.querystring.clone()),
        None => (rt::http_extension::Verb::None, String::new()),
    };
    let method = match verb {
        rt::http_extension::Verb::None | rt::http_extension::Verb::Get => http::Method::GET,
        rt::http_extension::Verb::Head => http::Method::HEAD,
        rt::http_extension::Verb::Post => http::Method::POST,
        rt::http_extension::Verb::Put => http::Method::PUT,
        rt::http_extension::Verb::Delete => http::Method::DELETE,
        rt::http_extension::Verb::Connect => http::Method::CONNECT,
        rt::http_extension::Verb::Options => http::Method::OPTIONS,
        rt::http_extension::Verb::Trace => http::Method::TRACE,
        rt::http_extension::Verb::Patch => http::Method::PATCH,
    };
    let path = msg.method.trim_start_matches('/');
    let uri = if query.is_empty() {
        format!("http://{addr}/{path}")
    } else {
        format!("http://{addr}/{path}?{query}")
    };
    let mut timeout = rpc.timeout;
    let mut req = http::Request::builder()
        .method(method)
        .uri(&uri)
        .header(http::header::HOST, r.id.as_str())
        .header("id", r.id.as_str());
    for kv in meta.iter() {
        if let KeyAndValueRef::Ascii(k, v) = kv {
            let name = k.as_str();
            if name == "rpc_request_timeout" {
                if let Some(ms) = v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
                    timeout = Duration::from_millis(ms);
                }
                continue;
            }
            if SKIP.contains(&name) || name.starts_with(':') || name == "id" {
                continue;
            }
            req = req.header(name, v.as_bytes());
        }
    }
    if !msg.content_type.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, msg.content_type.as_str());
    }
    let body = msg.data.map(|a| a.value).unwrap_or_default();
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Status::invalid_argument(format!("invalid request: {e}")))?;
    // One deadline for the whole exchange, the response body included.
    let exchange = async {
        let resp = s
            .http
            .request(req)
            .await
            .map_err(|e| Status::unavailable(format!("invoke {}: {e}", r.id)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map_err(|e| Status::unavailable(format!("invoke {}: {e}", r.id)))?
            .to_bytes();
        Ok::<_, Status>((status, headers, body))
    };
    let (status, headers, body) =
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("invoke {} timed out after {timeout:?}", r.id))
            })??;
    if status != http::StatusCode::OK {
        return Err(Status::unavailable(format!(
            "http response code {}, body: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body)
        )));
    }
    let mut out = MetadataMap::new();
    for (k, v) in &headers {
        let name = k.as_str();
        if RESPONSE_SKIP.contains(&name) || name.starts_with("grpc-") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::AsciiMetadataKey::from_bytes(name.as_bytes()),
            tonic::metadata::AsciiMetadataValue::try_from(v.as_bytes()),
        ) {
            out.append(k, v);
        }
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((
        rt::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: body.to_vec(),
            }),
            content_type,
        },
        out,
    ))
}
