//! Envoy's admin API on `admin.address`: readiness, server info, config dump, stats (Envoy text
//! and Prometheus), clusters, listeners, health-check toggles, draining, quitting and logging.

mod config_dump;
mod inventory;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::server::State;
use crate::stats;

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json(value: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Bind the admin listener and serve it in the background. Returns the bound address.
pub async fn start(addr: SocketAddr, state: Arc<State>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(req, &state).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn has_param(req: &Request<Incoming>, key: &str) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some(key)))
}

fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Gauges derived from live state when stats are read, instead of being kept up to date on the
/// request path: uptime, and each cluster's `upstream_rq_active` (its circuit-breaker count).
fn sync_gauges(state: &State) {
    stats::gauge("server.uptime").set(state.started.elapsed().as_secs() as f64);
    for c in state.snapshots.load().clusters.values() {
        let active = c.circuit.requests.load(Ordering::Relaxed);
        c.stats.rq_active.set(active as f64);
    }
}

const POST_ONLY: &[&str] = &[
    "/healthcheck/fail",
    "/healthcheck/ok",
    "/drain_listeners",
    "/quitquitquit",
    "/logging",
];

async fn handle(req: Request<Incoming>, state: &Arc<State>) -> Resp {
    let path = req.uri().path().to_string();
    if POST_ONLY.contains(&path.as_str()) && req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "This endpoint requires POST\n",
        );
    }
    match path.as_str() {
        "/ready" => {
            match (state.live.load(Ordering::SeqCst), stats::store().get("server.state")) {
                (true, Some(0)) => text(StatusCode::OK, "LIVE\n"),
                (_, Some(2)) => text(StatusCode::SERVICE_UNAVAILABLE, "INITIALIZING\n"),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n"),
            }
        }
        "/server_info" => {
            let info = config_dump::server_info(state);
            crate::server::release_config_memory();
            json(&info)
        }
        "/config_dump" => {
            let dump = config_dump::config_dump(state, query_param(&req, "resource"));
            crate::server::release_config_memory();
            json(&dump)
        }
        "/stats" => {
            sync_gauges(state);
            if query_param(&req, "format") == Some("prometheus") {
                return text(StatusCode::OK, stats::store().render_prometheus(has_param(&req, "usedonly")));
            }
            let filter = match query_param(&req, "filter").map(percent_decode) {
                Some(f) if !f.is_empty() => match regex::Regex::new(&f) {
                    Ok(r) => Some(r),
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid re2 regex: {e}\n")),
                },
                _ => None,
            };
            text(StatusCode::OK, stats::store().render_envoy(filter.as_ref(), has_param(&req, "usedonly")))
        }
        "/stats/prometheus" => {
            sync_gauges(state);
            text(StatusCode::OK, stats::store().render_prometheus(has_param(&req, "usedonly")))
        }
        "/clusters" => {
            if query_param(&req, "format") == Some("json") {
                json(&inventory::clusters_json(state))
            } else {
                text(StatusCode::OK, inventory::clusters_text(state))
            }
        }
        "/listeners" => {
            if query_param(&req, "format") == Some("json") {
                json(&inventory::listeners_json(state))
            } else {
                text(StatusCode::OK, inventory::listeners_text(state))
            }
        }
        "/healthcheck/fail" => {
            state.healthy.store(false, Ordering::SeqCst);
            stats::gauge("server.live").set(0.0);
            text(StatusCode::OK, "OK\n")
        }
        "/healthcheck/ok" => {
            state.healthy.store(true, Ordering::SeqCst);
            stats::gauge("server.live").set(1.0);
            text(StatusCode::OK, "OK\n")
        }
        "/drain_listeners" => {
            let mut mgr = state.listeners.lock().await;
            if !has_param(&req, "graceful") {
                mgr.stop_accepting();
            }
            mgr.drain_all();
            stats::gauge("server.state").set(1.0);
            text(StatusCode::OK, "OK\n")
        }
        "/quitquitquit" => {
            state.quit.notify_waiters();
            state.quit.notify_one();
            text(StatusCode::OK, "OK\n")
        }
        "/logging" => {
            let level = query_param(&req, "level").map(str::to_string).or_else(|| {
                req.uri().query().and_then(|q| q.split('&').next()).and_then(|kv| kv.split_once('=')).map(|(c, l)| format!("{c}={l}"))
            });
            match (level, &state.log_reload) {
                (Some(l), Some(reload)) => match reload(&l) {
                    Ok(()) => text(StatusCode::OK, format!("active loggers:\n  layer8: {l}\n")),
                    Err(e) => text(StatusCode::NOT_FOUND, format!("error: {e}\n")),
                },
                (None, _) => text(StatusCode::OK, "active loggers:\n  layer8\n"),
                (Some(_), None) => text(StatusCode::NOT_FOUND, "logging is not reloadable\n"),
            }
        }
        "/" | "/help" => text(
            StatusCode::OK,
            "admin commands are:\n  /clusters\n  /config_dump\n  /drain_listeners\n  /healthcheck/fail\n  /healthcheck/ok\n  /listeners\n  /logging\n  /quitquitquit\n  /ready\n  /server_info\n  /stats\n  /stats/prometheus\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "invalid path. admin commands are listed at /help\n"),
    }
}
