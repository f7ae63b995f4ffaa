//! Header handling shared by requests and responses: hop-by-hop removal, configured header
//! mutations, `x-forwarded-*` and `x-request-id`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::listener::ConnInfo;
use crate::model::route::{AppendAction, HeaderFormat, HeaderOps};

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// Remove hop-by-hop headers (and those named in `Connection`). `te: trailers` survives, as it
/// must for gRPC; `upgrade` survives when `keep_upgrade` is set.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for n in HOP_BY_HOP.iter() {
        if keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION) {
            continue;
        }
        h.remove(n);
    }
    for n in named {
        h.remove(n);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Values available to `%...%` header formatters.
pub struct FormatCtx<'a> {
    /// Connection facts.
    pub info: &'a ConnInfo,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Request headers (for `%REQ(x)%` in response mutations).
    pub request: Option<&'a HeaderMap>,
    /// Upstream address, once known.
    pub upstream: Option<&'a str>,
}

fn format(f: &HeaderFormat, ctx: &FormatCtx<'_>, target: &HeaderMap) -> Option<HeaderValue> {
    match f {
        HeaderFormat::Literal(v) => Some(v.clone()),
        HeaderFormat::DownstreamRemoteAddressWithoutPort => {
            HeaderValue::from_str(&ctx.info.peer.ip().to_string()).ok()
        }
        HeaderFormat::DownstreamRemoteAddress => {
            HeaderValue::from_str(&ctx.info.peer.to_string()).ok()
        }
        HeaderFormat::DownstreamLocalAddress => {
            HeaderValue::from_str(&ctx.info.destination().to_string()).ok()
        }
        HeaderFormat::UpstreamRemoteAddress => {
            ctx.upstream.and_then(|u| HeaderValue::from_str(u).ok())
        }
        HeaderFormat::Protocol => Some(HeaderValue::from_static(ctx.protocol)),
        HeaderFormat::RequestHeader(n) => ctx.request.unwrap_or(target).get(n).cloned(),
        HeaderFormat::Hostname(v) => Some(v.clone()),
    }
}

/// Apply configured removals and additions.
pub fn apply(ops: &HeaderOps, h: &mut HeaderMap, ctx: &FormatCtx<'_>) {
    for n in &ops.remove {
        h.remove(n);
    }
    for add in &ops.add {
        let Some(value) = format(&add.value, ctx, h) else {
            continue;
        };
        match add.action {
            AppendAction::Append => {
                h.append(add.name.clone(), value);
            }
            AppendAction::AddIfAbsent => {
                if !h.contains_key(&add.name) {
                    h.insert(add.name.clone(), value);
                }
            }
            AppendAction::Overwrite => {
                h.insert(add.name.clone(), value);
            }
            AppendAction::OverwriteIfExists => {
                if h.contains_key(&add.name) {
                    h.insert(add.name.clone(), value);
                }
            }
        }
    }
}
