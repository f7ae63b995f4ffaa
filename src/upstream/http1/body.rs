//! Response bodies still arriving on a pooled connection: the content-length, chunked and
//! close-delimited decoders, and the body that gives its connection back at the end.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use super::{read_some, Conn};
use crate::upstream::cluster::Host;

/// Chunked body decoder states (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    Size { value: u64, digits: u8 },
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

impl Chunk {
    fn step(self, b: u8) -> Result<Chunk, &'static str> {
        use Chunk::*;
        Ok(match (self, b) {
            (Size { value, digits }, b) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err("chunk size too large");
                }
                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                Size {
                    value: value << 4 | d,
                    digits: digits + 1,
                }
            }
            (Size { digits: 0, .. }, _) => return Err("invalid chunk size"),
            (Size { value, .. } | SizeSpace(value), b' ' | b'\t') => SizeSpace(value),
            (Size { value, .. } | SizeSpace(value), b';') => Extension(value),
            (Size { value, .. } | SizeSpace(value), b'\r') => SizeLf(value),
            (Size { .. } | SizeSpace(_), _) => return Err("invalid chunk size"),
            (Extension(_), b'\n') => return Err("newline in chunk extension"),
            (Extension(value), b'\r') => SizeLf(value),
            (Extension(value), _) => Extension(value),
            (SizeLf(0), b'\n') => TrailerStart,
            (SizeLf(value), b'\n') => Data(value),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size {
                value: 0,
                digits: 0,
            },
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerLine, b'\n') => TrailerStart,
            (TrailerStart | TrailerLine, _) => TrailerLine,
            (EndLf, b'\n') => Done,
            _ => return Err("invalid chunked encoding"),
        })
    }
}

/// How much of a response body is left.
#[derive(Debug)]
pub(super) enum Decoder {
    Length(u64),
    Chunked(Chunk),
    Close,
}

/// What the decoder made of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

impl Decoder {
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        match self {
            Decoder::Length(0) => Ok(Decoded::End),
            Decoder::Length(rem) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (*rem).min(buf.len() as u64);
                *rem -= n;
                Ok(Decoded::Data(buf.split_to(n as usize).freeze()))
            }
            Decoder::Close if buf.is_empty() => Ok(Decoded::NeedMore),
            Decoder::Close => Ok(Decoded::Data(buf.split().freeze())),
            Decoder::Chunked(state) => loop {
                match *state {
                    Chunk::Done => return Ok(Decoded::End),
                    Chunk::Data(0) => *state = Chunk::DataCr,
                    Chunk::Data(rem) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let n = rem.min(buf.len() as u64);
                        *state = Chunk::Data(rem - n);
                        return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                    }
                    s => {
                        let Some(&b) = buf.first() else {
                            return Ok(Decoded::NeedMore);
                        };
                        buf.advance(1);
                        *state = s.step(b)?;
                    }
                }
            },
        }
    }

    fn is_end(&self) -> bool {
        matches!(self, Decoder::Length(0) | Decoder::Chunked(Chunk::Done))
    }
}

/// A response body still arriving: it owns its connection, and gives it back to the pool
/// when read to its end (a body dropped early closes the connection).
#[derive(Debug)]
pub struct BodyStream {
    pub(super) conn: Option<Box<Conn>>,
    pub(super) decoder: Decoder,
    /// Where the connection goes back to, when the response allows reuse.
    pub(super) host: Option<Arc<Host>>,
}

impl BodyStream {
    fn finish(&mut self) {
        let (Some(conn), Some(host)) = (self.conn.take(), self.host.take()) else {
            self.conn = None;
            return;
        };
        if conn.rbuf.is_empty() {
            crate::upstream::pool::release(&host, conn);
        }
    }

    pub(in crate::upstream) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_end()
    }

    pub(in crate::upstream) fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    pub(in crate::upstream) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.rbuf) {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_end() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))));
                }
            }
            match std::task::ready!(read_some(&mut conn.io, &mut conn.rbuf, cx)) {
                Ok(0) if matches!(self.decoder, Decoder::Close) => {
                    self.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed before the end of the response body",
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8], split: usize) -> Result<Vec<u8>, &'static str> {
        let mut d = Decoder::Chunked(Chunk::Size {
            value: 0,
            digits: 0,
        });
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = wire;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => {
                    if rest.is_empty() {
                        return Err("incomplete");
                    }
                    let n = split.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire =
            b"5\r\nhello\r\n1;ext=\"a b\"\r\n \r\nA  \r\n0123456789\r\n0\r\nx-t: 1\r\ny: 2\r\n\r\n";
        for split in 1..wire.len() {
            assert_eq!(
                decode_all(wire, split).as_deref(),
                Ok(&b"hello 0123456789"[..]),
                "split {split}"
            );
        }
        assert_eq!(decode_all(b"0\r\n\r\n", 1), Ok(Vec::new()));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"5;a\nb\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\r\r",
        ] {
            assert!(
                decode_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
