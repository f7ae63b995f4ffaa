//! Rendering a compiled [`Format`](super::format::Format) for one stream: each operator's value
//! written straight into the line (text), or typed into a JSON object.

use super::format::{JsonValue, Operator, Piece};
use super::record::Record;
use crate::listener::ConnInfo;

/// A rendered value: text, a number, or missing (`-` in text, `null` in JSON).
#[derive(Debug, PartialEq)]
pub enum Value {
    /// No value.
    Missing,
    /// A number (kept a number in JSON).
    Number(u64),
    /// Text.
    Text(String),
}

/// What an operator wrote into the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    /// No value (`-` in text, `null` in JSON).
    Nothing,
    /// A number (kept a number in JSON).
    Number,
    /// Text.
    Text,
}

fn num(out: &mut String, n: u64) -> Wrote {
    out.push_str(itoa::Buffer::new().format(n));
    Wrote::Number
}

fn text(out: &mut String, s: Option<&str>) -> Wrote {
    match s {
        Some(s) if !s.is_empty() => {
            out.push_str(s);
            Wrote::Text
        }
        _ => Wrote::Nothing,
    }
}

fn ms(out: &mut String, d: Option<std::time::Duration>) -> Wrote {
    match d {
        Some(d) => num(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => Wrote::Nothing,
    }
}

fn addr(out: &mut String, a: Option<std::net::SocketAddr>, port: bool) -> Wrote {
    use std::fmt::Write as _;
    let Some(a) = a else { return Wrote::Nothing };
    match a {
        // The common case, written digit by digit: `Display` goes through the formatting
        // machinery for every octet (a few hundred instructions per address, and Istio's
        // format prints three).
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            if port {
                out.push(':');
                out.push_str(digits.format(v4.port()));
            }
        }
        std::net::SocketAddr::V6(_) => {
            let _ = if port {
                write!(out, "{a}")
            } else {
                write!(out, "{}", a.ip())
            };
        }
    }
    Wrote::Text
}

/// A fact of the downstream peer's certificate.
fn peer(out: &mut String, c: &ConnInfo, f: impl Fn(&crate::tls::PeerCert) -> String) -> Wrote {
    let v = c.tls.as_ref().and_then(|t| t.peer.as_deref()).map(f);
    text(out, v.as_deref())
}

/// Append the value of one operator to `out`.
fn write(op: &Operator, r: &Record, c: &ConnInfo, out: &mut String) -> Wrote {
    use Operator as O;
    match op {
        O::StartTime(f) => {
            f.render_into(r.start, out);
            Wrote::Text
        }
        O::Header(source, main, alt) => {
            let v = r
                .header(*source, main)
                .filter(|v| !v.is_empty())
                .or_else(|| alt.as_ref().and_then(|a| r.header(*source, a)));
            text(out, v.as_deref())
        }
        O::Protocol => text(out, r.protocol),
        O::UpstreamProtocol => text(out, r.upstream_protocol),
        O::ResponseCode => num(out, u64::from(r.status)),
        O::ResponseFlags => {
            if r.flags.write_short(out) {
                Wrote::Text
            } else {
                Wrote::Nothing
            }
        }
        O::ResponseFlagsLong => text(out, Some(&r.flags.long())),
        O::ResponseCodeDetails => text(out, r.details.as_deref()),
        O::ConnectionTerminationDetails => Wrote::Nothing,
        O::UpstreamTransportFailureReason => text(out, r.transport_failure.as_deref()),
        O::BytesReceived => num(out, r.bytes_received),
        O::BytesSent => num(out, r.bytes_sent),
        O::Duration => ms(out, r.duration),
        O::RequestDuration => ms(out, r.request_duration),
        O::ResponseDuration => ms(out, r.response_duration),
        O::ResponseTxDuration => ms(
            out,
            r.duration
                .zip(r.response_duration)
                .map(|(d, first)| d.saturating_sub(first)),
        ),
        O::UpstreamHost { port } => match &r.upstream_host {
            Some(h) if !*port => match h.parse::<std::net::SocketAddr>() {
                Ok(a) => addr(out, Some(a), false),
                Err(_) => text(out, Some(h)),
            },
            h => text(out, h.as_deref()),
        },
        O::UpstreamCluster => text(out, r.upstream_cluster.as_deref()),
        O::UpstreamLocalAddress { port } => addr(out, r.upstream_local, *port),
        O::UpstreamRequestAttemptCount => num(out, u64::from(r.attempts)),
        O::DownstreamLocalAddress { port } => addr(out, Some(c.destination()), *port),
        O::DownstreamLocalPort => num(out, u64::from(c.destination().port())),
        O::DownstreamRemoteAddress { port } => addr(out, Some(c.peer), *port),
        O::DownstreamRemotePort => num(out, u64::from(c.peer.port())),
        O::RequestedServerName => text(out, c.sni.as_deref()),
        O::DownstreamPeerUriSan => peer(out, c, |p| p.uri_sans.join(",")),
        O::DownstreamPeerDnsSan => peer(out, c, |p| p.dns_sans.join(",")),
        O::DownstreamPeerSubject => peer(out, c, |p| p.subject.clone()),
        O::DownstreamPeerFingerprint256 => peer(out, c, |p| p.sha256.clone()),
        O::DownstreamLocalUriSan => text(out, c.tls.as_ref().and_then(|t| t.local_id.as_deref())),
        O::RouteName => text(out, r.route_name.as_deref()),
        O::Hostname(h) => text(out, Some(h)),
        O::Environment(v) => text(out, v.as_deref()),
        O::Unavailable => Wrote::Nothing,
    }
}

/// The value of one operator for one record (JSON keeps numbers numbers).
pub fn value(op: &Operator, r: &Record, c: &ConnInfo) -> Value {
    let mut s = String::new();
    match write(op, r, c, &mut s) {
        Wrote::Nothing => Value::Missing,
        Wrote::Number => Value::Number(s.parse().unwrap_or(0)),
        Wrote::Text => Value::Text(s),
    }
}

fn truncate(s: &str, max: Option<usize>) -> &str {
    match max {
        Some(m) if s.len() > m => {
            let mut end = m;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &s[..end]
        }
        _ => s,
    }
}

/// Render text pieces into `out`, `-` for missing values.
pub fn render_text(pieces: &[Piece], r: &Record, c: &ConnInfo, out: &mut String) {
    for p in pieces {
        match p {
            Piece::Literal(l) => out.push_str(l),
            Piece::Op { op, max } => {
                let start = out.len();
                if write(op, r, c, out) == Wrote::Nothing {
                    out.push('-');
                } else if max.is_some() {
                    let keep = truncate(&out[start..], *max).len();
                    out.truncate(start + keep);
                }
            }
        }
    }
}

/// JSON rendering options of a format.
#[derive(Clone, Copy)]
pub(super) struct JsonOpts {
    /// Leave out missing values.
    pub(super) omit_empty: bool,
    /// Every value as a string (the deprecated `json_format`).
    pub(super) stringify: bool,
}

fn json_value(v: &JsonValue, r: &Record, c: &ConnInfo, o: JsonOpts) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    match v {
        JsonValue::Literal(l) => Some(l.clone()),
        JsonValue::Object(fields) => Some(J::Object(json_fields(fields, r, c, o))),
        JsonValue::Template(pieces) => {
            if let [Piece::Op { op, max }] = pieces.as_slice() {
                return match value(op, r, c) {
                    Value::Missing if o.omit_empty => None,
                    Value::Missing if o.stringify => Some(J::String("-".into())),
                    Value::Missing => Some(J::Null),
                    Value::Number(n) if o.stringify => Some(J::String(n.to_string())),
                    Value::Number(n) => Some(J::from(n)),
                    Value::Text(t) => Some(J::String(truncate(&t, *max).to_string())),
                };
            }
            let mut s = String::new();
            render_text(pieces, r, c, &mut s);
            Some(J::String(s))
        }
    }
}

pub(super) fn json_fields(
    fields: &[(String, JsonValue)],
    r: &Record,
    c: &ConnInfo,
    o: JsonOpts,
) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (k, v) in fields {
        if let Some(v) = json_value(v, r, c, o) {
            map.insert(k.clone(), v);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo", Some(2)), "h");
        assert_eq!(truncate("hello", Some(3)), "hel");
        assert_eq!(truncate("hi", Some(3)), "hi");
    }

    #[test]
    fn addresses_print_as_display_does() {
        for a in [
            "0.0.0.0:0",
            "10.244.1.7:8080",
            "127.0.0.1:65535",
            "255.255.255.255:1",
            "[::1]:15001",
            "[fe80::1:2]:443",
        ] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            for port in [true, false] {
                let mut out = String::new();
                assert_eq!(addr(&mut out, Some(a), port), Wrote::Text);
                let expected = if port {
                    a.to_string()
                } else {
                    a.ip().to_string()
                };
                assert_eq!(out, expected, "{a} port {port}");
            }
        }
        assert_eq!(addr(&mut String::new(), None, true), Wrote::Nothing);
    }
}
