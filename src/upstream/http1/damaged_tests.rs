//! Damaged upstream responses. The response-head parser and the body decoders get valid
//! responses with random damage (bytes changed, inserted, deleted, repeated, cut off), handed
//! over in random read sizes, as the connection reads them. Whatever the bytes, the outcome is
//! a response, an error or a wait for more bytes: no panic, no more body than the framing
//! allows, no empty data frame, and no bytes made up.

use bytes::BytesMut;
use http::Method;

use super::body::{Chunk, Decoded, Decoder};
use super::response::{parse_head, Parsed};
use super::{Framing, MAX_HEAD_BYTES};

/// Valid responses and the bodies they carry.
const CORPUS: &[(&[u8], &[u8])] = &[
    (
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nserver: nginx\r\n\r\nhello",
        b"hello",
    ),
    (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        b"hello world",
    ),
    (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        b"ok",
    ),
    (
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nx",
        b"x",
    ),
    (b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", b""),
    (
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
        b"until the end",
    ),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc", b"abc"),
    (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"abc",
    ),
];

/// xorshift64*: seeded, so a failing case can be replayed from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A byte, often one that means something to HTTP/1 framing.
    fn byte(&mut self) -> u8 {
        const SPECIAL: &[u8] = b"\r\n:; \t,0123456789abcdefABCDEF\x00\x7f\xff";
        if self.below(2) == 0 {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            self.next() as u8
        }
    }
}

/// What a response came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Error,
    /// The bytes ran out before the response (head or body) was whole.
    Incomplete,
    Complete(Vec<u8>),
}

/// Read one response from `wire` as the connection does, `read()` bytes at a time, checking
/// the decoders' promises on the way.
fn read_response(wire: &[u8], read: &mut impl FnMut() -> usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut rest = wire;
    let mut fill = |buf: &mut BytesMut| -> bool {
        if rest.is_empty() {
            return false;
        }
        let n = read().clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        true
    };
    let head = loop {
        match parse_head(&mut buf, &Method::GET) {
            Err(_) => return Outcome::Error,
            Ok(Parsed::Final(head)) => break head,
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) => {
                if buf.len() > MAX_HEAD_BYTES || !fill(&mut buf) {
                    return Outcome::Incomplete;
                }
            }
        }
    };
    let (mut decoder, limit) = match head.framing {
        Framing::Empty => return Outcome::Complete(Vec::new()),
        Framing::Length(n) => (Decoder::Length(n), Some(n)),
        Framing::Chunked => (
            Decoder::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            None,
        ),
        Framing::Close => (Decoder::Close, None),
    };
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Err(_) => return Outcome::Error,
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "an empty data frame");
                body.extend_from_slice(&data);
                if let Some(limit) = limit {
                    assert!(body.len() as u64 <= limit, "more body than content-length");
                }
                assert!(body.len() <= wire.len(), "more body than bytes received");
            }
            Ok(Decoded::End) => return Outcome::Complete(body),
            Ok(Decoded::NeedMore) if fill(&mut buf) => {}
            // The upstream closed: that ends a close-delimited body, and cuts any other short.
            Ok(Decoded::NeedMore) if matches!(decoder, Decoder::Close) => {
                return Outcome::Complete(body)
            }
            Ok(Decoded::NeedMore) => return Outcome::Incomplete,
        }
    }
}

#[test]
fn valid_responses_decode_in_any_read_size() {
    for (wire, expected) in CORPUS {
        for size in 1..=wire.len() {
            let got = read_response(wire, &mut || size);
            assert_eq!(
                got,
                Outcome::Complete(expected.to_vec()),
                "{:?} read {size} bytes at a time",
                String::from_utf8_lossy(wire)
            );
        }
    }
}

#[test]
fn damaged_responses_are_answered_without_panics_or_overruns() {
    let mut rng = Rng(0x6c61_7965_7238_0001);
    let (mut errors, mut incomplete, mut complete) = (0, 0, 0);
    for _ in 0..100_000 {
        let (wire, _) = CORPUS[rng.below(CORPUS.len())];
        let mut wire = wire.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(wire.len());
            match rng.below(5) {
                0 => wire[at] = rng.byte(),
                1 => wire.insert(at, rng.byte()),
                2 if wire.len() > 1 => {
                    wire.remove(at);
                }
                3 => wire.truncate(at),
                _ => {
                    let end = (at + 1 + rng.below(8)).min(wire.len());
                    let piece = wire[at..end].to_vec();
                    wire.splice(at..at, piece);
                }
            }
            if wire.is_empty() {
                wire.push(rng.byte());
            }
        }
        let max_read = 1 + rng.below(wire.len());
        let mut reads = Rng(rng.next() | 1);
        match read_response(&wire, &mut || 1 + reads.below(max_read)) {
            Outcome::Error => errors += 1,
            Outcome::Incomplete => incomplete += 1,
            Outcome::Complete(_) => complete += 1,
        }
    }
    // Each outcome is reached often: the damage exercises every path, not one.
    assert!(
        errors > 5000 && incomplete > 5000 && complete > 5000,
        "errors {errors}, incomplete {incomplete}, complete {complete}"
    );
}
