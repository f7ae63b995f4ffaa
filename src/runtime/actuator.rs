//! The actuator (Layotto's, on 127.0.0.1:34999 by default): `GET /actuator/health/liveness`,
//! `/actuator/health/readiness` and `/actuator/info`, JSON, 200 when UP and 503 otherwise.
//! Served by the `layer8.actuator` network filter over HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use super::components::Health;
use crate::server::State;

/// Serve actuator requests on one connection.
pub async fn serve<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req.method(), req.uri().path()).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn status_of(h: &Health) -> (&'static str, String) {
    match h {
        Health::Up => ("UP", String::new()),
        Health::Down(r) => ("DOWN", r.clone()),
    }
}

/// The health report for `readiness` (every component) or `liveness` (the runtime itself).
pub async fn report(state: &State, readiness: bool) -> (bool, Value) {
    let mut components = Map::new();
    let mut up = true;
    if let Some(runtimes) = state.runtimes.get() {
        for rt in runtimes.values() {
            let all = if readiness {
                rt.health().await
            } else {
                vec![rt.liveness()]
            };
            for (name, h) in all {
                let (s, reason) = status_of(&h);
                up &= h == Health::Up;
                components.insert(name, json!({"status": s, "details": {"reason": reason}}));
            }
        }
    }
    let status = if up { "UP" } else { "DOWN" };
    (up, json!({"status": status, "components": components}))
}

async fn handle(state: &State, method: &http::Method, path: &str) -> http::Response<Full<Bytes>> {
    if method != http::Method::GET {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            Value::Object(Map::new()),
        );
    }
    match path.trim_end_matches('/') {
        "/actuator/health/liveness" | "/actuator/health/readiness" => {
            let (up, body) = report(state, path.contains("readiness")).await;
            let code = if up {
                http::StatusCode::OK
            } else {
                http::StatusCode::SERVICE_UNAVAILABLE
            };
            reply(code, body)
        }
        "/actuator/health" => reply(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            Value::Object(Map::new()),
        ),
        "/actuator/info" => reply(
            http::StatusCode::OK,
            json!({"app": {"name": "layer8", "version": env!("CARGO_PKG_VERSION"), "compiled": env!("LAYER8_COMPILED")}}),
        ),
        _ => http::Response::builder()
            .status(http::StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default(),
    }
}

fn reply(code: http::StatusCode, body: Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}
