//! Locally generated responses, with Envoy's status codes, bodies and response flags.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use super::RespBody;

/// Why layer8 answered instead of the upstream (Envoy's response flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// NR: no route.
    NoRoute,
    /// NC: no cluster.
    NoCluster,
    /// UH: no healthy upstream.
    NoHealthyUpstream,
    /// UF: upstream connection failure.
    ConnectFailure,
    /// UO: overflow (circuit breaker).
    Overflow,
    /// UT: upstream request timeout.
    Timeout,
    /// UC/UR: upstream reset or connection termination.
    Reset,
    /// DPE: downstream protocol error.
    ProtocolError,
}

impl Flag {
    /// The short flag Envoy logs (`%RESPONSE_FLAGS%`).
    pub fn code(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::NoCluster => "NC",
            Flag::NoHealthyUpstream => "UH",
            Flag::ConnectFailure => "UF",
            Flag::Overflow => "UO",
            Flag::Timeout => "UT",
            Flag::Reset => "UC",
            Flag::ProtocolError => "DPE",
        }
    }
}

/// A plain local reply.
pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let body: Bytes = body.into();
    let mut b = Response::builder().status(status);
    if !body.is_empty() {
        b = b.header(http::header::CONTENT_TYPE, "text/plain");
    }
    b.body(Either::Right(Either::Left(Full::new(body))))
        .unwrap_or_else(|_| {
            let mut r = Response::new(Either::Right(Either::Left(Full::new(Bytes::new()))));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

/// The local reply Envoy sends for a response flag. `detail` is the transport failure reason
/// (omitted from the body when empty, as Envoy does for a refused TCP connection).
pub fn for_flag(flag: Flag, detail: &str) -> Response<RespBody> {
    let mut resp = match flag {
        Flag::NoRoute => reply(StatusCode::NOT_FOUND, Bytes::new()),
        Flag::NoCluster => reply(StatusCode::SERVICE_UNAVAILABLE, Bytes::new()),
        Flag::NoHealthyUpstream => reply(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
        Flag::ConnectFailure => {
            return upstream_failure(flag, "remote connection failure", detail, false)
        }
        Flag::Overflow => return upstream_failure(flag, "overflow", "", false),
        Flag::Timeout => reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
        Flag::Reset => return upstream_failure(flag, "connection termination", "", false),
        Flag::ProtocolError => reply(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    resp.extensions_mut().insert(flag);
    resp
}

/// Envoy's 503 for an upstream failure before response headers: `reason` is the reset reason
/// (`remote connection failure`, `connection timeout`, `overflow`, ...), `detail` the transport
/// failure reason (omitted when empty), `retried` whether the router had retried.
pub fn upstream_failure(
    flag: Flag,
    reason: &str,
    detail: &str,
    retried: bool,
) -> Response<RespBody> {
    let mut body = String::from("upstream connect error or disconnect/reset before headers. ");
    if retried {
        body.push_str("retried and the latest ");
    }
    body.push_str("reset reason: ");
    body.push_str(reason);
    if !detail.is_empty() {
        body.push_str(", transport failure reason: ");
        body.push_str(detail);
    }
    let mut resp = reply(StatusCode::SERVICE_UNAVAILABLE, body);
    if flag == Flag::Overflow {
        resp.headers_mut().insert(
            super::headers::names::X_ENVOY_OVERLOADED,
            HeaderValue::from_static("true"),
        );
    }
    resp.extensions_mut().insert(flag);
    resp
}
