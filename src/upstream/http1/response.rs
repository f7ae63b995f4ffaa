//! Response heads: parsed with httparse into a `HeaderMap` whose values share the read buffer,
//! with the body's framing and the connection's keep-alive read in the same pass.

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::{protocol_error, Framing, Head, MAX_HEADERS};
use crate::upstream::UpstreamError;

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Whether a `Connection` value names only `close` and `keep-alive` (no other header to drop).
fn only_persistence_tokens(v: &HeaderValue) -> bool {
    v.as_bytes().split(|b| *b == b',').all(|t| {
        let t = t.trim_ascii();
        t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Whether a `Connection` header value lists `token`.
fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What [`parse_head`] found at the front of the buffer.
pub(super) enum Parsed {
    /// A final response head (consumed).
    Final(Head),
    /// A 1xx interim response (consumed and dropped, as Envoy does by default).
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// Parse one response head from the front of `buf`, consuming it when complete.
pub(super) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, UpstreamError> {
    let mut fields = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(protocol_error("too many response headers"))
        }
        Err(e) => return Err(protocol_error(e)),
    };
    let code = resp.code.unwrap_or(0);
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(protocol_error("101 Switching Protocols without an upgrade"));
        }
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code).map_err(protocol_error)?;
    let http10 = resp.version == Some(0);
    // Offsets into the head, so that the values can share its bytes once it is split off.
    let base = buf.as_ptr() as usize;
    let count = resp.headers.len();
    let mut small = [[0u32; 4]; 16];
    let mut large = Vec::new();
    let spans: &mut [[u32; 4]] = if count <= small.len() {
        &mut small[..count]
    } else {
        large.resize(count, [0u32; 4]);
        &mut large
    };
    for (span, f) in spans.iter_mut().zip(resp.headers.iter()) {
        let n0 = f.name.as_ptr() as usize - base;
        let v0 = f.value.as_ptr() as usize - base;
        *span = [
            n0 as u32,
            (n0 + f.name.len()) as u32,
            v0 as u32,
            (v0 + f.value.len()) as u32,
        ];
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    let mut keep_alive = !http10;
    let mut close = false;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut chunked: Option<bool> = None; // the last transfer-encoding ends in `chunked`
    for &[n0, n1, v0, v1] in spans.iter() {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| protocol_error("invalid response header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| protocol_error("invalid response header value"))?;
        if name == header::CONTENT_LENGTH {
            match parse_length(value.as_bytes()) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => bad_length = true,
            }
        } else if name == header::TRANSFER_ENCODING {
            let last = value
                .as_bytes()
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            continue; // decoded here; hop-by-hop, never forwarded
        } else if name == header::CONNECTION {
            if close || has_token(&value, "close") {
                close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(&value, "keep-alive");
            }
            if only_persistence_tokens(&value) {
                continue; // hop-by-hop and read: the forwarder would only remove it
            }
        } else if name == KEEP_ALIVE {
            continue;
        }
        headers.append(name, value);
    }
    let framing = if code == 204 || code == 304 || *method == Method::HEAD {
        Framing::Empty
    } else if let Some(chunked) = chunked {
        if http10 {
            return Err(protocol_error("transfer-encoding in an HTTP/1.0 response"));
        }
        if length.is_some() || bad_length {
            // RFC 9112 6.3: transfer-encoding wins, the length goes, and the connection is
            // not trusted with another message.
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if bad_length {
        return Err(protocol_error("invalid content-length"));
    } else {
        length.map_or(Framing::Close, Framing::Length)
    };
    Ok(Parsed::Final(Head {
        status,
        headers,
        keep_alive,
        framing,
    }))
}

/// A `content-length` value: digits, or a list of equal ones (`4, 4`).
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in v.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(wire: &[u8], method: &Method) -> Result<Option<Head>, UpstreamError> {
        let mut buf = BytesMut::from(wire);
        Ok(match parse_head(&mut buf, method)? {
            Parsed::Final(h) => Some(h),
            Parsed::Interim | Parsed::Partial => None,
        })
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let f = |wire: &[u8], m: &Method| head(wire, m).ok().flatten().map(|h| h.framing);
        let get = &Method::GET;
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", get),
            Some(Framing::Length(3))
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n",
                &Method::HEAD
            ),
            Some(Framing::Empty)
        );
        assert_eq!(
            f(b"HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\n", get),
            Some(Framing::Empty)
        );
        assert_eq!(
            f(b"HTTP/1.1 304 Not Modified\r\n\r\n", get),
            Some(Framing::Empty)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
                get
            ),
            Some(Framing::Chunked)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", get),
            Some(Framing::Close)
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\n\r\n", get), Some(Framing::Close));
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\n\r\n", get),
            Some(Framing::Length(4))
        );
        assert!(head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\n",
            get
        )
        .is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", get).is_err());
        assert!(head(
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            get
        )
        .is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\n", get).is_ok_and(|h| h.is_none()));
        assert!(head(b"HTTP/1.1 abc OK\r\n\r\n", get).is_err());
    }

    #[test]
    fn hop_by_hop_fields_that_were_read_are_not_kept() {
        let wire = b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
        let h = head(wire, &Method::GET).ok().flatten().map(|h| h.headers);
        let names: Vec<_> = h
            .iter()
            .flat_map(|h| h.keys())
            .map(|n| n.as_str())
            .collect();
        assert_eq!(names, ["x-a", "content-length"]);
        // A Connection header naming another field stays, for the hop-by-hop strip to read.
        let wire =
            b"HTTP/1.1 200 OK\r\nconnection: close, x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
        let h = head(wire, &Method::GET).ok().flatten().map(|h| h.headers);
        assert!(h.is_some_and(|h| h.contains_key(header::CONNECTION)));
    }

    #[test]
    fn transfer_encoding_overrides_and_removes_content_length() {
        let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        let Some(h) = head(wire, &Method::GET).ok().flatten() else {
            panic!("no head")
        };
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        assert!(
            !h.keep_alive,
            "a message with both is not trusted with the connection"
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let ka = |wire: &[u8]| {
            head(wire, &Method::GET)
                .ok()
                .flatten()
                .map(|h| h.keep_alive)
        };
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            Some(true)
        );
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\nconnection: Close\r\n\r\n"),
            Some(false)
        );
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\nconnection: close\r\nconnection: keep-alive\r\n\r\n"),
            Some(false)
        );
        assert_eq!(
            ka(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"),
            Some(false)
        );
        assert_eq!(
            ka(b"HTTP/1.0 200 OK\r\nconnection: foo, Keep-Alive\r\n\r\n"),
            Some(true)
        );
    }

    #[test]
    fn interim_responses_are_consumed_and_headers_share_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: b\r\nx-a: c\r\ncontent-length: 2\r\n\r\nok"[..],
        );
        assert!(matches!(
            parse_head(&mut buf, &Method::POST),
            Ok(Parsed::Interim)
        ));
        let Ok(Parsed::Final(h)) = parse_head(&mut buf, &Method::POST) else {
            panic!("no head")
        };
        assert_eq!(h.status, StatusCode::CREATED);
        let values: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["b", "c"]);
        assert_eq!(&buf[..], b"ok");
    }
}
