//! What one stream (an HTTP request, or a TCP connection) leaves for its access log line:
//! Envoy's `StreamInfo`, kept only while access logging is configured.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::format::{HeaderRef, HeaderSource};

/// Envoy's response flags, in the order Envoy prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u16);

/// (bit, short code, long name), in Envoy's print order.
const FLAGS: [(u16, &str, &str); 11] = [
    (Flags::NO_HEALTHY_UPSTREAM, "UH", "NoHealthyUpstream"),
    (Flags::UPSTREAM_TIMEOUT, "UT", "UpstreamRequestTimeout"),
    (Flags::CONNECT_FAILURE, "UF", "UpstreamConnectionFailure"),
    (
        Flags::CONNECTION_TERMINATION,
        "UC",
        "UpstreamConnectionTermination",
    ),
    (Flags::OVERFLOW, "UO", "UpstreamOverflow"),
    (Flags::NO_ROUTE, "NR", "NoRouteFound"),
    (
        Flags::DOWNSTREAM_TERMINATION,
        "DC",
        "DownstreamConnectionTermination",
    ),
    (Flags::RETRY_LIMIT, "URX", "UpstreamRetryLimitExceeded"),
    (Flags::STREAM_IDLE_TIMEOUT, "SI", "StreamIdleTimeout"),
    (Flags::PROTOCOL_ERROR, "DPE", "DownstreamProtocolError"),
    (Flags::NO_CLUSTER, "NC", "NoClusterFound"),
];

impl Flags {
    /// UH.
    pub const NO_HEALTHY_UPSTREAM: u16 = 1;
    /// UT.
    pub const UPSTREAM_TIMEOUT: u16 = 1 << 1;
    /// UF.
    pub const CONNECT_FAILURE: u16 = 1 << 2;
    /// UC.
    pub const CONNECTION_TERMINATION: u16 = 1 << 3;
    /// UO.
    pub const OVERFLOW: u16 = 1 << 4;
    /// NR.
    pub const NO_ROUTE: u16 = 1 << 5;
    /// DC.
    pub const DOWNSTREAM_TERMINATION: u16 = 1 << 6;
    /// URX.
    pub const RETRY_LIMIT: u16 = 1 << 7;
    /// SI.
    pub const STREAM_IDLE_TIMEOUT: u16 = 1 << 8;
    /// DPE.
    pub const PROTOCOL_ERROR: u16 = 1 << 9;
    /// NC.
    pub const NO_CLUSTER: u16 = 1 << 10;

    /// Set a flag.
    pub fn set(&mut self, bit: u16) {
        self.0 |= bit;
    }

    /// Whether any flag is set.
    pub fn any(self) -> bool {
        self.0 != 0
    }

    /// Whether any of `bits` is set.
    pub fn intersects(self, bits: u16) -> bool {
        self.0 & bits != 0
    }

    /// The bit for a short code (`NR`), for `response_flag_filter`.
    pub fn bit(code: &str) -> Option<u16> {
        FLAGS.iter().find(|f| f.1 == code).map(|f| f.0)
    }

    /// Whether `code` is one of Envoy's flags (layer8 may never set it).
    pub fn known(code: &str) -> bool {
        Flags::bit(code).is_some()
            || [
                "LH", "LR", "UR", "DI", "FI", "RL", "UAEX", "RLSE", "IH", "UMSDR", "RFCF", "NFCF",
                "DT", "UPE", "OM", "DF", "DO", "DR",
            ]
            .contains(&code)
    }

    fn join(self, pick: impl Fn(&(u16, &'static str, &'static str)) -> &'static str) -> String {
        let mut s = String::new();
        for f in FLAGS.iter().filter(|f| self.0 & f.0 != 0) {
            if !s.is_empty() {
                s.push(',');
            }
            s.push_str(pick(f));
        }
        s
    }

    /// `%RESPONSE_FLAGS%`: `UF,URX`, empty when none.
    pub fn short(self) -> String {
        self.join(|f| f.1)
    }

    /// Append the short codes to `out`; false when there is none.
    pub fn write_short(self, out: &mut String) -> bool {
        let mut first = true;
        for f in FLAGS.iter().filter(|f| self.0 & f.0 != 0) {
            if !first {
                out.push(',');
            }
            out.push_str(f.1);
            first = false;
        }
        !first
    }

    /// `%RESPONSE_FLAGS_LONG%`.
    pub fn long(self) -> String {
        self.join(|f| f.2)
    }
}

/// One stream's facts for its log line.
#[derive(Debug)]
pub struct Record {
    /// When the stream started (wall clock, for `%START_TIME%`).
    pub start: SystemTime,
    /// When the stream started (monotonic, for durations).
    pub started: Instant,
    /// `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'static str>,
    /// The protocol spoken upstream.
    pub upstream_protocol: Option<&'static str>,
    /// Request method.
    pub method: Option<Method>,
    /// Request path with query, as forwarded.
    pub path: Option<String>,
    /// Request authority, as forwarded.
    pub authority: Option<String>,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The request headers the logs read (every value, in order): as forwarded once the
    /// router has built the upstream request, as received before.
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    /// Response status (0 until one is known, as Envoy logs it).
    pub status: u16,
    /// The response headers the logs read, as sent downstream.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Response trailers.
    pub trailers: Option<HeaderMap>,
    /// Response flags.
    pub flags: Flags,
    /// `%RESPONSE_CODE_DETAILS%`.
    pub details: Option<Cow<'static, str>>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub transport_failure: Option<String>,
    /// The upstream host of the last attempt (`ip:port`, or a socket path).
    pub upstream_host: Option<String>,
    /// The upstream's local address.
    pub upstream_local: Option<SocketAddr>,
    /// The cluster picked.
    pub upstream_cluster: Option<Arc<str>>,
    /// The route's name.
    pub route_name: Option<String>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Body bytes received from downstream.
    pub bytes_received: u64,
    /// Body bytes sent downstream.
    pub bytes_sent: u64,
    /// Start to the end of the request.
    pub request_duration: Option<Duration>,
    /// A streamed request body's progress (bytes and end), read when the line is written.
    pub request_body: Option<Arc<crate::http::stream_timeout::StreamTracker>>,
    /// Start to the first byte of the response (its headers).
    pub response_duration: Option<Duration>,
    /// Start to the end of the stream.
    pub duration: Option<Duration>,
}

impl Record {
    /// A record for a stream starting now.
    pub fn start() -> Record {
        Record {
            start: SystemTime::now(),
            started: Instant::now(),
            protocol: None,
            upstream_protocol: None,
            method: None,
            path: None,
            authority: None,
            scheme: "http",
            request_headers: Vec::new(),
            status: 0,
            response_headers: Vec::new(),
            trailers: None,
            flags: Flags::default(),
            details: None,
            transport_failure: None,
            upstream_host: None,
            upstream_local: None,
            upstream_cluster: None,
            route_name: None,
            attempts: 0,
            bytes_received: 0,
            bytes_sent: 0,
            request_duration: None,
            request_body: None,
            response_duration: None,
            duration: None,
        }
    }

    /// Take the request line and the `wanted` headers as they stand now.
    pub fn request(
        &mut self,
        method: &Method,
        path: &str,
        authority: &str,
        headers: &HeaderMap,
        wanted: &[HeaderName],
    ) {
        self.method = Some(method.clone());
        self.path = Some(path.to_string());
        self.authority = Some(authority.to_string());
        copy(&mut self.request_headers, headers, wanted);
    }

    /// Take the response status and the `wanted` headers as sent downstream.
    pub fn response(&mut self, status: StatusCode, headers: &HeaderMap, wanted: &[HeaderName]) {
        self.status = status.as_u16();
        copy(&mut self.response_headers, headers, wanted);
        self.response_duration = Some(self.started.elapsed());
    }

    /// A header value for `%REQ%`, `%RESP%`, `%TRAILER%`.
    pub fn header(&self, source: HeaderSource, h: &HeaderRef) -> Option<Cow<'_, str>> {
        let list = match source {
            HeaderSource::Request => {
                match h {
                    HeaderRef::Method => return self.method.as_ref().map(|m| m.as_str().into()),
                    HeaderRef::Path => return self.path.as_deref().map(Cow::Borrowed),
                    HeaderRef::Authority => return self.authority.as_deref().map(Cow::Borrowed),
                    HeaderRef::Scheme => return self.method.as_ref().map(|_| self.scheme.into()),
                    HeaderRef::Status => return None,
                    HeaderRef::Named(_) => {}
                }
                &self.request_headers
            }
            HeaderSource::Response => {
                if let HeaderRef::Status = h {
                    return (self.status != 0).then(|| self.status.to_string().into());
                }
                &self.response_headers
            }
            HeaderSource::Trailer => {
                let HeaderRef::Named(n) = h else { return None };
                return self.trailers.as_ref()?.get(n).map(text);
            }
        };
        let HeaderRef::Named(n) = h else { return None };
        list.iter().find(|(k, _)| k == n).map(|(_, v)| text(v))
    }
}

/// A header value as text (invalid UTF-8 replaced).
fn text(v: &HeaderValue) -> Cow<'_, str> {
    match v.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

/// Copy every value of the `wanted` headers.
fn copy(out: &mut Vec<(HeaderName, HeaderValue)>, headers: &HeaderMap, wanted: &[HeaderName]) {
    out.clear();
    for n in wanted {
        for v in headers.get_all(n) {
            out.push((n.clone(), v.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_in_envoy_order() {
        let mut f = Flags::default();
        assert_eq!(f.short(), "");
        f.set(Flags::RETRY_LIMIT);
        f.set(Flags::CONNECT_FAILURE);
        assert_eq!(f.short(), "UF,URX");
        assert_eq!(
            f.long(),
            "UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
        );
        assert_eq!(Flags::bit("NR"), Some(Flags::NO_ROUTE));
        assert!(Flags::known("DR") && !Flags::known("XX"));
    }
}
