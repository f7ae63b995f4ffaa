//! Header handling shared by requests and responses: hop-by-hop removal, configured header
//! mutations, `x-forwarded-*` and `x-request-id`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::listener::ConnInfo;
use crate::model::route::{AppendAction, HeaderFormat, HeaderOps};

/// Header names the proxy sets itself, parsed once (a `&str` name is parsed and hashed on every
/// use).
pub mod names {
    use http::header::HeaderName;

    /// `keep-alive`.
    pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    /// `proxy-connection`.
    pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    /// `x-forwarded-proto`.
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    /// `x-forwarded-for`.
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    /// `x-forwarded-host`.
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    /// `x-forwarded-client-cert`.
    pub const X_FORWARDED_CLIENT_CERT: HeaderName =
        HeaderName::from_static("x-forwarded-client-cert");
    /// `x-request-id`.
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    /// `x-envoy-expected-rq-timeout-ms`.
    pub const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
        HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
    /// `x-envoy-original-path`.
    pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
    /// `x-envoy-original-host`.
    pub const X_ENVOY_ORIGINAL_HOST: HeaderName = HeaderName::from_static("x-envoy-original-host");
    /// `x-envoy-upstream-service-time`.
    pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
        HeaderName::from_static("x-envoy-upstream-service-time");
    /// `x-envoy-overloaded`.
    pub const X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
}

const HOPS: usize = 6;

static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    names::KEEP_ALIVE,
    names::PROXY_CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// The [`HOP_BY_HOP`] index of a header name as sent (any case), looking at the length before
/// comparing.
fn hop_index(name: &[u8]) -> Option<usize> {
    let is = |i: usize| name.eq_ignore_ascii_case(HOP_BY_HOP[i].as_str().as_bytes());
    match name.len() {
        2 if is(5) => Some(5),
        7 if is(4) => Some(4),
        10 if is(0) => Some(0),
        10 if is(1) => Some(1),
        16 if is(2) => Some(2),
        17 if is(3) => Some(3),
        _ => None,
    }
}

/// Whether `name` is present. For the handful of headers a message carries, a scan of the
/// names costs less than the hash that `HeaderMap::contains_key` computes first.
pub fn has(h: &HeaderMap, name: &HeaderName) -> bool {
    if h.keys_len() > 12 {
        return h.contains_key(name);
    }
    h.keys().any(|k| k == name)
}

/// Remove hop-by-hop headers (and those named in `Connection`). `te: trailers` survives, as it
/// must for gRPC; `upgrade` survives when `keep_upgrade` is set.
///
/// Runs on every request and response, so it looks before it touches: one pass over the names
/// present, and removals (each a hash lookup) only for headers that are there.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let mut present = [false; HOPS];
    for name in h.keys() {
        // Standard names compare as enum tags; only the two custom ones compare as text.
        let i = if *name == header::CONNECTION {
            0
        } else if *name == header::TRANSFER_ENCODING {
            3
        } else if *name == header::UPGRADE {
            4
        } else if *name == header::TE {
            5
        } else {
            match name.as_str() {
                "keep-alive" => 1,
                "proxy-connection" => 2,
                _ => continue,
            }
        };
        present[i] = true;
    }
    if present == [false; HOPS] {
        return;
    }
    // Headers named in `Connection` beyond the fixed list (rare): parsed only then.
    let mut named: Vec<HeaderName> = Vec::new();
    if present[0] {
        for v in h.get_all(header::CONNECTION) {
            for token in v.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || hop_index(token).is_some()
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(token) {
                    named.push(n);
                }
            }
        }
    }
    let te_trailers = present[5]
        && h.get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (n, here) in HOP_BY_HOP.iter().zip(present) {
        if !here || keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION) {
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

/// A duration in whole milliseconds as a header value (`x-envoy-upstream-service-time`,
/// `x-envoy-expected-rq-timeout-ms`). Small values, and the last large one (a route's timeout),
/// are kept per thread, so the usual request formats and allocates nothing.
pub fn millis(d: std::time::Duration) -> HeaderValue {
    const SMALL: u64 = 100;
    thread_local! {
        static SMALL_VALUES: Vec<HeaderValue> = (0..SMALL).map(HeaderValue::from).collect();
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms < SMALL {
        if let Ok(v) = SMALL_VALUES.try_with(|s| s[ms as usize].clone()) {
            return v;
        }
    }
    LAST.try_with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((k, v)) if *k == ms => v.clone(),
            _ => {
                let v = HeaderValue::from(ms);
                *last = Some((ms, v.clone()));
                v
            }
        }
    })
    .unwrap_or_else(|_| HeaderValue::from(ms))
}

/// Whether any of these (response) mutations reads a request header (`%REQ(...)%`), so the
/// request's headers must be kept until the response.
pub fn reads_request_headers(ops: &[&HeaderOps]) -> bool {
    ops.iter().any(|ops| {
        ops.add
            .iter()
            .any(|a| matches!(a.value, HeaderFormat::RequestHeader(_)))
    })
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

const XFCC: http::HeaderName = names::X_FORWARDED_CLIENT_CERT;

/// `x-forwarded-client-cert` as `forward_client_cert_details` says: a client can only vouch for
/// certificates over mutual TLS, so on other connections the header is dropped (except in
/// ALWAYS_FORWARD_ONLY mode).
fn forward_client_cert(h: &mut http::HeaderMap, ctx: &super::ConnCtx) {
    use crate::model::listener::XfccMode as M;
    let mtls = ctx.info.tls.as_ref().is_some_and(|t| t.peer.is_some());
    match ctx.hcm.xfcc.mode {
        M::AlwaysForwardOnly => {}
        M::ForwardOnly if mtls => {}
        M::AppendForward if mtls => {
            let Some(ours) = &ctx.xfcc else { return };
            let value = match h.get(XFCC) {
                Some(prev) if !prev.is_empty() => {
                    let mut v = prev.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(ours.as_bytes());
                    HeaderValue::from_bytes(&v).unwrap_or_else(|_| ours.clone())
                }
                _ => ours.clone(),
            };
            h.insert(XFCC, value);
        }
        M::SanitizeSet if mtls => match &ctx.xfcc {
            Some(ours) => {
                h.insert(XFCC, ours.clone());
            }
            None => {
                h.remove(XFCC);
            }
        },
        _ => {
            if has(h, &XFCC) {
                h.remove(XFCC);
            }
        }
    }
}

/// A fresh `x-request-id`: a random (version 4) UUID, lower-case and hyphenated.
fn request_id() -> HeaderValue {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut id);
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `x-forwarded-proto`, `x-forwarded-for`, `x-forwarded-client-cert`, `x-request-id` and `via`,
/// as the connection manager's settings ask.
pub(crate) fn add_forwarding_headers(h: &mut http::HeaderMap, ctx: &super::ConnCtx) {
    let hcm = &ctx.hcm;
    let proto = if ctx.info.transport == "tls" {
        "https"
    } else {
        "http"
    };
    if hcm.use_remote_address {
        h.insert(names::X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        if !hcm.skip_xff_append {
            let peer = ctx.info.peer.ip().to_string();
            let value = match h.get(names::X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(existing) => format!("{existing}, {peer}"),
                None => peer,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(names::X_FORWARDED_FOR, v);
            }
        }
    } else if let http::header::Entry::Vacant(e) = h.entry(names::X_FORWARDED_PROTO) {
        e.insert(HeaderValue::from_static(proto));
    }
    forward_client_cert(h, ctx);
    if hcm.generate_request_id {
        let regenerate = hcm.use_remote_address && !hcm.preserve_external_request_id;
        match h.entry(names::X_REQUEST_ID) {
            http::header::Entry::Occupied(mut e) if regenerate => {
                e.insert(request_id());
            }
            http::header::Entry::Occupied(_) => {}
            http::header::Entry::Vacant(e) => {
                e.insert(request_id());
            }
        }
    }
    if let Some(via) = &hcm.via {
        h.append(header::VIA, via.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        h.keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn has_finds_names_in_small_and_large_maps() {
        let small = map(&[("x-forwarded-client-cert", "a"), ("upgrade", "ws")]);
        assert!(has(&small, &XFCC));
        assert!(has(&small, &header::UPGRADE));
        assert!(!has(&small, &header::TRANSFER_ENCODING));
        let mut large = map(&[("x-forwarded-client-cert", "a")]);
        for i in 0..20 {
            large.insert(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        assert!(has(&large, &XFCC));
        assert!(!has(&large, &header::UPGRADE));
    }

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "Keep-Alive, X-Private ,close"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["host", "x-kept"]);
    }

    #[test]
    fn te_trailers_survives_and_upgrade_is_kept_when_asked() {
        let mut h = map(&[
            ("te", "Trailers"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("te").unwrap(), "trailers");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["te"]);
    }

    #[test]
    fn a_map_without_hop_by_hop_headers_is_untouched() {
        let mut h = map(&[("host", "a"), ("x-a", "1"), ("x-a", "2")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&[("host", "a"), ("x-a", "1"), ("x-a", "2")]));
    }

    #[test]
    fn millis_values() {
        use std::time::Duration;
        assert_eq!(millis(Duration::from_micros(999)), "0");
        assert_eq!(millis(Duration::from_millis(99)), "99");
        assert_eq!(millis(Duration::from_millis(15000)), "15000");
        assert_eq!(millis(Duration::from_millis(15000)), "15000");
        assert_eq!(millis(Duration::from_millis(250)), "250");
    }
}
