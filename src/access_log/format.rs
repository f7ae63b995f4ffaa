//! Envoy's substitution format strings (`%COMMAND(arg):max%`), compiled once per config and
//! rendered per log line, as text or as a JSON object.

use http::header::HeaderName;

use super::record::Record;
use super::render::{json_fields, render_text, JsonOpts};
use super::time::TimeFormat;
use crate::listener::ConnInfo;

/// A compiled format: text pieces or JSON fields.
#[derive(Debug)]
pub enum Format {
    /// A format string.
    Text(Vec<Piece>),
    /// A format dictionary, rendered as one JSON object per line.
    Json {
        /// Fields in config order.
        fields: Vec<(String, JsonValue)>,
        /// `omit_empty_values`: leave out fields whose value is missing.
        omit_empty: bool,
        /// The deprecated untyped `json_format`: every value is a string.
        stringify: bool,
    },
}

/// A JSON field's template.
#[derive(Debug)]
pub enum JsonValue {
    /// A string with operators (a lone operator keeps its value's JSON type).
    Template(Vec<Piece>),
    /// A nested object.
    Object(Vec<(String, JsonValue)>),
    /// A literal number, boolean or null from the config.
    Literal(serde_json::Value),
}

/// One piece of a format string.
#[derive(Debug)]
pub enum Piece {
    /// Text copied as is.
    Literal(String),
    /// A command operator, its value truncated to `max` bytes when given.
    Op {
        /// What to print.
        op: Operator,
        /// `:Z`, the maximum length.
        max: Option<usize>,
    },
}

/// Which header map `%REQ%`, `%RESP%` and `%TRAILER%` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSource {
    /// Request headers (as forwarded, after the router's changes).
    Request,
    /// Response headers.
    Response,
    /// Response trailers.
    Trailer,
}

/// A request header reference: a pseudo-header or a header name.
#[derive(Debug, Clone)]
pub enum HeaderRef {
    /// `:method`.
    Method,
    /// `:path` (with query).
    Path,
    /// `:authority` (or `host`).
    Authority,
    /// `:scheme`.
    Scheme,
    /// `:status` (response only).
    Status,
    /// Any other header.
    Named(HeaderName),
}

/// The command operators layer8 renders.
#[derive(Debug)]
pub enum Operator {
    /// `%START_TIME%`, `%START_TIME(fmt)%`.
    StartTime(TimeFormat),
    /// `%REQ(X?Y)%`, `%RESP(X?Y)%`, `%TRAILER(X?Y)%`.
    Header(HeaderSource, HeaderRef, Option<HeaderRef>),
    /// `%PROTOCOL%`.
    Protocol,
    /// `%UPSTREAM_PROTOCOL%`.
    UpstreamProtocol,
    /// `%RESPONSE_CODE%`.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`.
    ResponseFlags,
    /// `%RESPONSE_FLAGS_LONG%`.
    ResponseFlagsLong,
    /// `%RESPONSE_CODE_DETAILS%`.
    ResponseCodeDetails,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    ConnectionTerminationDetails,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    UpstreamTransportFailureReason,
    /// `%BYTES_RECEIVED%`.
    BytesReceived,
    /// `%BYTES_SENT%`.
    BytesSent,
    /// `%DURATION%`.
    Duration,
    /// `%REQUEST_DURATION%`.
    RequestDuration,
    /// `%RESPONSE_DURATION%`.
    ResponseDuration,
    /// `%RESPONSE_TX_DURATION%`.
    ResponseTxDuration,
    /// `%UPSTREAM_HOST%` / `%UPSTREAM_REMOTE_ADDRESS%`.
    UpstreamHost { port: bool },
    /// `%UPSTREAM_CLUSTER%`.
    UpstreamCluster,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    UpstreamLocalAddress { port: bool },
    /// `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`.
    UpstreamRequestAttemptCount,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%` (the original destination when known).
    DownstreamLocalAddress { port: bool },
    /// `%DOWNSTREAM_LOCAL_PORT%`.
    DownstreamLocalPort,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` / `%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%`.
    DownstreamRemoteAddress { port: bool },
    /// `%DOWNSTREAM_REMOTE_PORT%`.
    DownstreamRemotePort,
    /// `%REQUESTED_SERVER_NAME%`.
    RequestedServerName,
    /// `%DOWNSTREAM_PEER_URI_SAN%` (all, comma-separated).
    DownstreamPeerUriSan,
    /// `%DOWNSTREAM_PEER_DNS_SAN%`.
    DownstreamPeerDnsSan,
    /// `%DOWNSTREAM_PEER_SUBJECT%`.
    DownstreamPeerSubject,
    /// `%DOWNSTREAM_PEER_FINGERPRINT_256%`.
    DownstreamPeerFingerprint256,
    /// `%DOWNSTREAM_LOCAL_URI_SAN%`.
    DownstreamLocalUriSan,
    /// `%ROUTE_NAME%`.
    RouteName,
    /// `%HOSTNAME%`.
    Hostname(String),
    /// `%ENVIRONMENT(X)%`, read once when the config is compiled.
    Environment(Option<String>),
    /// An operator Envoy knows that layer8 does not record: always `-`.
    Unavailable,
}

/// Operators Envoy accepts that layer8 prints as `-` (listed so that a typo is still an error).
const KNOWN_UNAVAILABLE: &[&str] = &[
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_LOCAL_DNS_SAN",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_PEER_URI_SAN",
    "UPSTREAM_TLS_VERSION",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "REQ_WITHOUT_QUERY",
    "GRPC_STATUS",
    "GRPC_STATUS_NUMBER",
    "STREAM_ID",
    "UNIQUE_ID",
    "CONNECTION_ID",
    "UPSTREAM_CONNECTION_ID",
    "VIRTUAL_CLUSTER_NAME",
    "UPSTREAM_HOST_NAME",
    "REQUEST_HEADERS_BYTES",
    "RESPONSE_HEADERS_BYTES",
    "REQUEST_TX_DURATION",
    "ROUNDTRIP_DURATION",
    "TRACE_ID",
];

/// A format string that cannot be compiled (Envoy rejects the config for it too).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// `%` not starting a valid command.
    #[error("invalid command at position {0}: {1}")]
    Syntax(usize, String),
    /// A command Envoy does not have.
    #[error("unknown command operator {0}")]
    Unknown(String),
    /// A bad argument.
    #[error("{0}")]
    Argument(String),
}

/// Envoy's default format, used when none is configured.
pub const DEFAULT_TEXT: &str =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Compile a format string.
pub fn parse(s: &str) -> Result<Vec<Piece>, FormatError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            let next = s[i..].find('%').map_or(s.len(), |n| i + n);
            literal.push_str(&s[i..next]);
            i = next;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            literal.push('%');
            i += 2;
            continue;
        }
        // %NAME%, %NAME(arg)%, %NAME(arg):max%, %NAME:max%
        let start = i + 1;
        let mut j = start;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        let name = &s[start..j];
        let syntax = || FormatError::Syntax(i, s[i..].chars().take(40).collect());
        if name.is_empty() {
            return Err(syntax());
        }
        let mut arg = None;
        if b.get(j) == Some(&b'(') {
            let close = s[j..].find(')').map(|n| j + n).ok_or_else(syntax)?;
            arg = Some(&s[j + 1..close]);
            j = close + 1;
        }
        let mut max = None;
        if b.get(j) == Some(&b':') {
            let d0 = j + 1;
            let mut d1 = d0;
            while d1 < b.len() && b[d1].is_ascii_digit() {
                d1 += 1;
            }
            max = Some(s[d0..d1].parse::<usize>().map_err(|_| syntax())?);
            j = d1;
        }
        if b.get(j) != Some(&b'%') {
            return Err(syntax());
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Op {
            op: operator(name, arg)?,
            max,
        });
        i = j + 1;
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn header_ref(name: &str) -> Result<HeaderRef, FormatError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        ":method" => HeaderRef::Method,
        ":path" => HeaderRef::Path,
        ":authority" | "host" => HeaderRef::Authority,
        ":scheme" => HeaderRef::Scheme,
        ":status" => HeaderRef::Status,
        n => HeaderRef::Named(
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| FormatError::Argument(format!("invalid header name '{name}'")))?,
        ),
    })
}

fn header_op(source: HeaderSource, arg: Option<&str>) -> Result<Operator, FormatError> {
    let arg = arg
        .filter(|a| !a.is_empty())
        .ok_or_else(|| FormatError::Argument("a header operator needs a header name".into()))?;
    let (main, alt) = match arg.split_once('?') {
        Some((m, a)) => (m, Some(a)),
        None => (arg, None),
    };
    Ok(Operator::Header(
        source,
        header_ref(main)?,
        alt.map(header_ref).transpose()?,
    ))
}

fn operator(name: &str, arg: Option<&str>) -> Result<Operator, FormatError> {
    use Operator as O;
    Ok(match name {
        "START_TIME" => O::StartTime(TimeFormat::parse(arg.unwrap_or(""))),
        "REQ" | "REQUEST_HEADER" => header_op(HeaderSource::Request, arg)?,
        "RESP" | "RESPONSE_HEADER" => header_op(HeaderSource::Response, arg)?,
        "TRAILER" | "RESPONSE_TRAILER" => header_op(HeaderSource::Trailer, arg)?,
        "PROTOCOL" => O::Protocol,
        "UPSTREAM_PROTOCOL" => O::UpstreamProtocol,
        "RESPONSE_CODE" => O::ResponseCode,
        "RESPONSE_FLAGS" => O::ResponseFlags,
        "RESPONSE_FLAGS_LONG" => O::ResponseFlagsLong,
        "RESPONSE_CODE_DETAILS" => O::ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => O::ConnectionTerminationDetails,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => O::UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => O::BytesReceived,
        "BYTES_SENT" => O::BytesSent,
        "DURATION" => O::Duration,
        "REQUEST_DURATION" => O::RequestDuration,
        "RESPONSE_DURATION" => O::ResponseDuration,
        "RESPONSE_TX_DURATION" => O::ResponseTxDuration,
        "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => O::UpstreamHost { port: true },
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => O::UpstreamHost { port: false },
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => O::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => O::UpstreamLocalAddress { port: true },
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => O::UpstreamLocalAddress { port: false },
        "UPSTREAM_REQUEST_ATTEMPT_COUNT" => O::UpstreamRequestAttemptCount,
        "DOWNSTREAM_LOCAL_ADDRESS" => O::DownstreamLocalAddress { port: true },
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => O::DownstreamLocalAddress { port: false },
        "DOWNSTREAM_LOCAL_PORT" => O::DownstreamLocalPort,
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            O::DownstreamRemoteAddress { port: true }
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            O::DownstreamRemoteAddress { port: false }
        }
        "DOWNSTREAM_REMOTE_PORT" | "DOWNSTREAM_DIRECT_REMOTE_PORT" => O::DownstreamRemotePort,
        "REQUESTED_SERVER_NAME" => O::RequestedServerName,
        "DOWNSTREAM_PEER_URI_SAN" => O::DownstreamPeerUriSan,
        "DOWNSTREAM_PEER_DNS_SAN" => O::DownstreamPeerDnsSan,
        "DOWNSTREAM_PEER_SUBJECT" => O::DownstreamPeerSubject,
        "DOWNSTREAM_PEER_FINGERPRINT_256" => O::DownstreamPeerFingerprint256,
        "DOWNSTREAM_LOCAL_URI_SAN" => O::DownstreamLocalUriSan,
        "ROUTE_NAME" => O::RouteName,
        "HOSTNAME" => O::Hostname(crate::server::hostname()),
        "ENVIRONMENT" => {
            let var = arg
                .filter(|a| !a.is_empty())
                .ok_or_else(|| FormatError::Argument("ENVIRONMENT needs a variable name".into()))?;
            O::Environment(std::env::var(var).ok())
        }
        n if KNOWN_UNAVAILABLE.contains(&n) => O::Unavailable,
        n => return Err(FormatError::Unknown(n.to_string())),
    })
}

/// Whether a format mentions an operator layer8 prints as `-` only (for the startup notes).
pub fn has_unavailable(pieces: &[Piece]) -> bool {
    pieces.iter().any(|p| {
        matches!(
            p,
            Piece::Op {
                op: Operator::Unavailable,
                ..
            }
        )
    })
}

fn piece_headers(pieces: &[Piece], req: &mut Vec<HeaderName>, resp: &mut Vec<HeaderName>) {
    for p in pieces {
        if let Piece::Op {
            op: Operator::Header(source, main, alt),
            ..
        } = p
        {
            for h in std::iter::once(main).chain(alt.iter()) {
                if let HeaderRef::Named(n) = h {
                    match source {
                        HeaderSource::Request => req.push(n.clone()),
                        HeaderSource::Response => resp.push(n.clone()),
                        HeaderSource::Trailer => {}
                    }
                }
            }
        }
    }
}

fn json_headers(
    fields: &[(String, JsonValue)],
    req: &mut Vec<HeaderName>,
    resp: &mut Vec<HeaderName>,
) {
    for (_, v) in fields {
        match v {
            JsonValue::Template(p) => piece_headers(p, req, resp),
            JsonValue::Object(f) => json_headers(f, req, resp),
            JsonValue::Literal(_) => {}
        }
    }
}

impl Format {
    /// The request and response headers this format reads.
    pub fn headers(&self, req: &mut Vec<HeaderName>, resp: &mut Vec<HeaderName>) {
        match self {
            Format::Text(p) => piece_headers(p, req, resp),
            Format::Json { fields, .. } => json_headers(fields, req, resp),
        }
    }

    /// One log line (text formats carry their own newline; JSON gets one).
    pub fn render(&self, r: &Record, c: &ConnInfo) -> String {
        match self {
            Format::Text(pieces) => {
                let mut s = String::with_capacity(256);
                render_text(pieces, r, c, &mut s);
                s
            }
            Format::Json {
                fields,
                omit_empty,
                stringify,
            } => {
                let o = JsonOpts {
                    omit_empty: *omit_empty,
                    stringify: *stringify,
                };
                let map = json_fields(fields, r, c, o);
                let mut s = serde_json::Value::Object(map).to_string();
                s.push('\n');
                s
            }
        }
    }
}

/// Compile a format dictionary (a `google.protobuf.Struct` as JSON).
pub fn parse_json(
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<(String, JsonValue)>, FormatError> {
    let mut out = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        let compiled = match v {
            serde_json::Value::String(s) => JsonValue::Template(parse(s)?),
            serde_json::Value::Object(o) => JsonValue::Object(parse_json(o)?),
            serde_json::Value::Array(_) => {
                return Err(FormatError::Argument(format!(
                    "json_format field '{k}': lists are not supported"
                )))
            }
            other => JsonValue::Literal(other.clone()),
        };
        out.push((k.clone(), compiled));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operators_arguments_and_lengths() {
        let p = parse("a %%b %REQ(X-A?:PATH):5% %START_TIME(%Y-%m)% %DURATION%\n").unwrap();
        assert!(matches!(&p[0], Piece::Literal(l) if l == "a %b "));
        assert!(matches!(
            &p[1],
            Piece::Op {
                op: Operator::Header(
                    HeaderSource::Request,
                    HeaderRef::Named(_),
                    Some(HeaderRef::Path)
                ),
                max: Some(5)
            }
        ));
        assert!(matches!(
            &p[3],
            Piece::Op {
                op: Operator::StartTime(_),
                max: None
            }
        ));
        assert!(matches!(&p[6], Piece::Literal(l) if l == "\n"));
        assert_eq!(p.len(), 7);
        assert!(parse(DEFAULT_TEXT).is_ok());
    }

    #[test]
    fn rejects_what_envoy_rejects() {
        assert!(matches!(parse("%NOPE%"), Err(FormatError::Unknown(n)) if n == "NOPE"));
        assert!(matches!(parse("%REQ(a%"), Err(FormatError::Syntax(0, _))));
        assert!(matches!(parse("x %"), Err(FormatError::Syntax(2, _))));
        assert!(matches!(parse("%REQ%"), Err(FormatError::Argument(_))));
        assert!(matches!(
            parse("%DURATION:x%"),
            Err(FormatError::Syntax(..))
        ));
        assert!(matches!(
            parse("%DYNAMIC_METADATA(istio)%").unwrap()[0],
            Piece::Op {
                op: Operator::Unavailable,
                ..
            }
        ));
    }
}
