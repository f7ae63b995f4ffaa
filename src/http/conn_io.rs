//! The downstream byte stream as the HTTP codec sees it: the HTTP/2 connection preface check
//! (Envoy answers a preface not followed by SETTINGS with `GOAWAY(PROTOCOL_ERROR)`; hyper's h2
//! accepts it) and, for HTTP/2, Envoy's drain "shutdown notice": a `GOAWAY` with the maximum
//! stream id sent as soon as draining starts, while the final `GOAWAY` (hyper's graceful
//! shutdown) follows only after the HCM's `drain_timeout`, so streams racing the notice are
//! still served.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const H2_MAGIC: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const PROTOCOL_ERROR: u32 = 0x1;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// The HTTP/2 magic followed by a SETTINGS frame header.
    Http2,
    /// Anything else (HTTP/1, or a connection closed early): the codec decides.
    Other,
    /// The HTTP/2 magic followed by something other than SETTINGS: answered and closed.
    Rejected,
}

/// A GOAWAY frame on stream 0.
fn goaway(last_stream_id: u32, code: u32, debug: &[u8]) -> Vec<u8> {
    let len = 8 + debug.len();
    let mut f = Vec::with_capacity(FRAME_HEADER + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&last_stream_id.to_be_bytes());
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(debug);
    f
}

/// Read the start of the connection. If it is the HTTP/2 magic, the next frame must be a
/// non-ACK SETTINGS frame on stream 0; otherwise the connection gets Envoy's answer (an empty
/// SETTINGS frame, then `GOAWAY(last 0, PROTOCOL_ERROR, "SETTINGS expected")`) and is closed.
/// Returns the bytes read (to be replayed to the codec).
pub async fn sniff<S>(stream: &mut S) -> io::Result<(Preface, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let want = H2_MAGIC.len() + FRAME_HEADER;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let n = buf.len().min(H2_MAGIC.len());
        if buf[..n] != H2_MAGIC[..n] {
            return Ok((Preface::Other, buf.into()));
        }
        if buf.len() >= want {
            break;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((Preface::Other, buf.into()));
        }
    }
    let h = &buf[H2_MAGIC.len()..want];
    let stream_id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    if h[3] == SETTINGS && h[4] & 0x1 == 0 && stream_id == 0 {
        return Ok((Preface::Http2, buf.into()));
    }
    let mut answer = vec![0, 0, 0, SETTINGS, 0, 0, 0, 0, 0];
    answer.extend_from_slice(&goaway(0, PROTOCOL_ERROR, b"SETTINGS expected"));
    stream.write_all(&answer).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok((Preface::Rejected, Bytes::new()))
}

/// Asks an HTTP/2 connection to send the GOAWAY shutdown notice.
#[derive(Debug, Default)]
pub struct Notice {
    requested: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Notice {
    /// Send the notice at the next frame boundary (wakes the connection).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }

    fn register(&self, cx: &Context<'_>) {
        if let Ok(mut w) = self.waker.lock() {
            match &*w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
    }
}

/// Where the outgoing HTTP/2 byte stream is relative to frame boundaries.
#[derive(Debug)]
struct H2Out {
    notice: Arc<Notice>,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    payload_left: usize,
    frames: u64,
    /// Notice bytes still to write (they go out before anything else once started).
    pending: Option<(Vec<u8>, usize)>,
    sent: bool,
}

impl H2Out {
    fn advance(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.payload_left > 0 {
                let k = self.payload_left.min(b.len());
                self.payload_left -= k;
                b = &b[k..];
                continue;
            }
            let k = (FRAME_HEADER - self.header_len).min(b.len());
            self.header[self.header_len..self.header_len + k].copy_from_slice(&b[..k]);
            self.header_len += k;
            b = &b[k..];
            if self.header_len == FRAME_HEADER {
                let h = &self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.header_len = 0;
                self.frames += 1;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }
}

/// The connection as handed to hyper: replays sniffed bytes, and for HTTP/2 can slip the GOAWAY
/// notice in between the codec's frames.
#[derive(Debug)]
pub struct ConnIo<S> {
    inner: S,
    replay: Bytes,
    h2: Option<H2Out>,
}

impl<S> ConnIo<S> {
    /// Wrap `inner`; `replay` is read first. `notice` (HTTP/2 only) enables the shutdown notice.
    pub fn new(inner: S, replay: Bytes, notice: Option<Arc<Notice>>) -> Self {
        ConnIo {
            inner,
            replay,
            h2: notice.map(|notice| H2Out {
                notice,
                header: [0; FRAME_HEADER],
                header_len: 0,
                payload_left: 0,
                frames: 0,
                pending: None,
                sent: false,
            }),
        }
    }
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Write the notice if it was requested and the codec's output is between frames (and past
    /// its first frame, the SETTINGS the preface requires). `Ready(Ok)` once nothing is pending.
    fn poll_notice(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(h2) = self.h2.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if !h2.sent
            && h2.frames > 0
            && h2.at_boundary()
            && h2.notice.requested.load(Ordering::SeqCst)
        {
            h2.sent = true;
            h2.pending = Some((goaway(0x7fff_ffff, 0, b""), 0));
        }
        while let Some((bytes, pos)) = h2.pending.as_mut() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    *pos += n;
                    if *pos == bytes.len() {
                        h2.pending = None;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        if let Some(h2) = &this.h2 {
            if !h2.sent {
                // The codec always has a read pending: the notice is sent from here when the
                // connection is otherwise quiet.
                h2.notice.register(cx);
            }
            if let Poll::Ready(Err(e)) = this.poll_notice(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.h2.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        std::task::ready!(this.poll_notice(cx))?;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some(h2) = this.h2.as_mut() {
            h2.advance(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.h2.is_none() {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        let buf = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, buf)
    }

    fn is_write_vectored(&self) -> bool {
        self.h2.is_none() && self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_notice(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_across_writes() {
        let mut o = ConnIo::new(tokio::io::empty(), Bytes::new(), Some(Arc::default()));
        let h2 = o.h2.as_mut().unwrap();
        // SETTINGS (6 bytes payload), then a DATA frame split mid-header and mid-payload.
        h2.advance(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        assert!(h2.at_boundary());
        h2.advance(&[0, 0, 3, 0]);
        assert!(!h2.at_boundary());
        h2.advance(&[1, 0, 0, 0, 1, b'a']);
        assert!(!h2.at_boundary());
        h2.advance(b"bc");
        assert!(h2.at_boundary());
        assert_eq!(h2.frames, 2);
    }

    #[test]
    fn goaway_frame_bytes() {
        assert_eq!(
            goaway(0x7fff_ffff, 0, b""),
            [0, 0, 8, 7, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(&goaway(0, 1, b"x")[..4], &[0, 0, 9, 7]);
    }
}
