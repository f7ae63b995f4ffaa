//! The upstream HTTP/1.1 client codec: a pooled connection that writes a request and reads its
//! response inside the request's own task.
//!
//! hyper's client connection runs a task per connection and talks to the request through a
//! channel; on a proxy's hot path that was a third of the work per request. Here the request
//! head is encoded straight from the `HeaderMap`, the response head is parsed with `httparse`
//! into header values that share the read buffer, and a body that arrived with its head goes
//! back downstream as one frame, its connection already returned to the pool. Upgrades
//! (websocket) still go through hyper's client, which hands over the upgraded socket.
//!
//! Framing follows RFC 9112 as hyper's client does: a request body is sent with its
//! `content-length` when it is known, else chunked (GET, HEAD and CONNECT never send one); a
//! response has no body after HEAD or with 1xx/204/304, a chunked body when
//! `transfer-encoding` ends in `chunked`, else a `content-length` body, else one that ends at
//! close. Chunked trailers are read and dropped, as Envoy does without `enable_trailers`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::cluster::Host;
use super::pool::{ConnGuard, PooledBody, UpstreamBody, UpstreamError};

mod body;
#[cfg(test)]
mod damaged_tests;
mod response;

pub use body::BodyStream;
use body::{Chunk, Decoder};
use response::{parse_head, parse_length, Parsed};

/// Most response header fields accepted (hyper's and Envoy's default).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted before the exchange fails.
const MAX_HEAD_BYTES: usize = 96 * 1024;
/// Read buffer space asked for before each read.
const READ_CHUNK: usize = 8 * 1024;
/// A request body up to this size is written together with its head, in one `writev`.
const INLINE_BODY: usize = 16 * 1024;

/// An upstream socket: TCP or a Unix domain socket.
#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// The socket's local address (TCP only).
    pub(super) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// Whether an idle connection still looks open. tokio clears a socket's read readiness on a
    /// short read, so a connection whose last response was read whole is "not ready" until the
    /// peer sends something: usually its FIN. Only then does this cost a `recv`.
    fn idle_ok(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let ready = match self {
            Stream::Tcp(s) => s.poll_read_ready(&mut cx),
            Stream::Unix(s) => s.poll_read_ready(&mut cx),
        };
        match ready {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                let r = match self {
                    Stream::Tcp(s) => s.try_read(&mut probe),
                    Stream::Unix(s) => s.try_read(&mut probe),
                };
                // EOF, an error, or bytes nobody asked for: the connection is unusable.
                matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// An upstream HTTP/1.1 connection between requests: its socket, the bytes read past the last
/// response (none on a healthy connection), and a write buffer kept for the next request head.
#[derive(Debug)]
pub struct Conn {
    io: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Requests carried so far.
    pub(super) used: u32,
    /// When it last went idle.
    pub(super) idle_since: Instant,
    guard: ConnGuard,
    /// The local address of its socket (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub(super) local: Option<std::net::SocketAddr>,
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// A response body that ends when the upstream closes.
    Close,
}

/// The parsed head of a final (non-1xx) response.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    keep_alive: bool,
    framing: Framing,
}

fn length_mismatch() -> UpstreamError {
    UpstreamError::Reset("request body length differs from its content-length".into())
}

fn protocol_error(what: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Reset(format!("protocol error: {what}"))
}

impl Conn {
    pub(super) fn new(io: Stream, guard: ConnGuard) -> Box<Self> {
        Box::new(Conn {
            local: io.local_addr(),
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            used: 0,
            idle_since: Instant::now(),
            guard,
        })
    }

    /// The cluster the connection belongs to.
    pub(super) fn cluster(&self) -> &super::Cluster {
        self.guard.cluster()
    }

    /// Whether a pooled connection can take another request.
    pub(super) fn idle_ok(&mut self) -> bool {
        self.rbuf.is_empty() && self.io.idle_ok()
    }

    /// Send `req` and read the response head. The response body reads from this connection; it
    /// comes back to `host`'s pool when the body is read to its end, the response allowed
    /// keep-alive, and `max` requests were not reached.
    pub(super) async fn send(
        mut self: Box<Self>,
        req: Request<UpstreamBody>,
        host: Arc<Host>,
        max: Option<u32>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let (parts, mut body) = req.into_parts();
        let mut headers = parts.headers;
        let framing = request_framing(&parts.method, &mut headers, &body);
        self.wbuf.clear();
        encode_head(&mut self.wbuf, &parts.method, &parts.uri, &headers);
        let early = self
            .write_request(framing, &mut body, &parts.method)
            .await?;
        if self.wbuf.capacity() > INLINE_BODY {
            self.wbuf = Vec::new();
        }
        self.used += 1;

        // A response that came before the request body was sent whole leaves the connection
        // unusable for another request.
        let sent_whole = early.is_none();
        let head = match early {
            Some(head) => head,
            None => self.read_head(&parts.method).await?,
        };
        let reusable = sent_whole
            && head.keep_alive
            && head.framing != Framing::Close
            && max.is_none_or(|m| self.used < m);
        let mut resp = Response::new(PooledBody::empty());
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        if parts
            .extensions
            .get::<super::pool::WantLocalAddr>()
            .is_some()
        {
            resp.extensions_mut()
                .insert(super::pool::UpstreamLocalAddr(self.local));
        }
        let framing = head.framing;
        // The common case: the whole body arrived with the head. It goes down as one frame
        // and the connection goes back to the pool before the response is even returned.
        let whole = match framing {
            Framing::Empty => Some(Bytes::new()),
            Framing::Length(n) if self.rbuf.len() as u64 >= n => {
                Some(self.rbuf.split_to(n as usize).freeze())
            }
            _ => None,
        };
        if let Some(data) = whole {
            if reusable && self.rbuf.is_empty() {
                super::pool::release(&host, self);
            }
            *resp.body_mut() = PooledBody::ready(data);
            return Ok(resp);
        }
        let decoder = match framing {
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            Framing::Close | Framing::Empty => Decoder::Close,
        };
        *resp.body_mut() = PooledBody::stream(BodyStream {
            conn: Some(self),
            decoder,
            host: reusable.then_some(host),
        });
        Ok(resp)
    }

    /// Write the request (its head is in `wbuf`). A streamed body is written while watching
    /// for a response: one that arrives first is returned.
    async fn write_request(
        &mut self,
        framing: Framing,
        body: &mut UpstreamBody,
        method: &Method,
    ) -> Result<Option<Head>, UpstreamError> {
        use http_body_util::BodyExt;
        if !matches!(body, UpstreamBody::Buffered(_)) {
            return self.write_streamed(framing, body, method).await;
        }
        // A buffered body is ready: head and body leave in one write.
        let io_err = |e: io::Error| UpstreamError::Reset(e.to_string());
        let data = match body.frame().await {
            Some(Ok(f)) => f.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        };
        if let Framing::Length(n) = framing {
            if data.len() as u64 != n {
                // Sent as is, the upstream would read the next request from the wrong byte.
                return Err(length_mismatch());
            }
        }
        if framing == Framing::Empty || data.is_empty() {
            return self
                .io
                .write_all(&self.wbuf)
                .await
                .map_err(io_err)
                .map(|_| None);
        }
        if framing == Framing::Chunked {
            chunk_header(&mut self.wbuf, data.len());
        }
        if data.len() <= INLINE_BODY {
            self.wbuf.extend_from_slice(&data);
        } else {
            let mut both = (&self.wbuf[..]).chain(data);
            self.io.write_all_buf(&mut both).await.map_err(io_err)?;
            self.wbuf.clear();
        }
        if framing == Framing::Chunked {
            self.wbuf.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        self.io
            .write_all(&self.wbuf)
            .await
            .map_err(io_err)
            .map(|_| None)
    }

    /// A streamed body: the head, then each frame as it arrives, while the socket is also read:
    /// an upstream may answer before it has the whole body (a 401 or 413 for an upload), as
    /// hyper's client and Envoy allow. Such a response is returned and the rest of the body is
    /// not sent.
    async fn write_streamed(
        &mut self,
        framing: Framing,
        body: &mut UpstreamBody,
        method: &Method,
    ) -> Result<Option<Head>, UpstreamError> {
        let mut written = 0; // of `wbuf`
        let mut body_done = framing == Framing::Empty;
        let mut sent = 0u64; // body bytes
        std::future::poll_fn(|cx| loop {
            // Out: what is buffered.
            let mut write_error = None;
            while written < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[written..]) {
                    Poll::Ready(Ok(0)) => {
                        write_error = Some("upstream connection closed".to_string());
                        break;
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(e)) => {
                        write_error = Some(e.to_string());
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let flushed = written == self.wbuf.len();
            if flushed && body_done {
                return Poll::Ready(Ok(None));
            }
            // In: a response that does not wait for the body.
            loop {
                if !self.rbuf.is_empty() {
                    match parse_head(&mut self.rbuf, method)? {
                        Parsed::Final(head) => return Poll::Ready(Ok(Some(head))),
                        Parsed::Interim => continue,
                        Parsed::Partial if self.rbuf.len() > MAX_HEAD_BYTES => {
                            return Poll::Ready(Err(protocol_error("response headers too large")));
                        }
                        Parsed::Partial => {}
                    }
                }
                match read_some(&mut self.io, &mut self.rbuf, cx) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(UpstreamError::Reset(
                            "connection closed before the response".into(),
                        )))
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(UpstreamError::Reset(e.to_string())))
                    }
                    Poll::Pending => break,
                }
            }
            if let Some(e) = write_error {
                return Poll::Ready(Err(UpstreamError::Reset(e)));
            }
            if !flushed {
                return Poll::Pending;
            }
            // More body.
            self.wbuf.clear();
            written = 0;
            match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // request trailers: not forwarded over HTTP/1.1
                    };
                    if data.is_empty() {
                        continue;
                    }
                    sent += data.len() as u64;
                    match framing {
                        Framing::Length(n) if sent > n => {
                            return Poll::Ready(Err(length_mismatch()));
                        }
                        Framing::Chunked => {
                            chunk_header(&mut self.wbuf, data.len());
                            self.wbuf.extend_from_slice(&data);
                            self.wbuf.extend_from_slice(b"\r\n");
                        }
                        _ => self.wbuf.extend_from_slice(&data),
                    }
                }
                None => {
                    match framing {
                        Framing::Chunked => self.wbuf.extend_from_slice(b"0\r\n\r\n"),
                        Framing::Length(n) if sent != n => {
                            return Poll::Ready(Err(length_mismatch()));
                        }
                        _ => {}
                    }
                    body_done = true;
                }
                Some(Err(e)) => return Poll::Ready(Err(UpstreamError::Reset(e.to_string()))),
            }
        })
        .await
    }

    /// Read until a final response head is parsed; 1xx interim responses are skipped.
    async fn read_head(&mut self, method: &Method) -> Result<Head, UpstreamError> {
        loop {
            while !self.rbuf.is_empty() {
                match parse_head(&mut self.rbuf, method)? {
                    Parsed::Final(head) => return Ok(head),
                    Parsed::Interim => continue,
                    Parsed::Partial if self.rbuf.len() > MAX_HEAD_BYTES => {
                        return Err(protocol_error("response headers too large"));
                    }
                    Parsed::Partial => break,
                }
            }
            let n = std::future::poll_fn(|cx| read_some(&mut self.io, &mut self.rbuf, cx))
                .await
                .map_err(|e| UpstreamError::Reset(e.to_string()))?;
            if n == 0 {
                return Err(UpstreamError::Reset(
                    "connection closed before the response".into(),
                ));
            }
        }
    }
}

fn read_some(io: &mut Stream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

fn chunk_header(buf: &mut Vec<u8>, len: usize) {
    use std::io::Write;
    let _ = write!(buf, "{len:x}\r\n");
}

/// Decide the request body's framing as hyper's client does, fixing the headers to match.
fn request_framing(method: &Method, headers: &mut HeaderMap, body: &UpstreamBody) -> Framing {
    if crate::http::headers::has(headers, &header::TRANSFER_ENCODING) {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if body.is_end_stream() {
        return Framing::Empty;
    }
    if let Some(n) = content_length(headers).ok().flatten() {
        return Framing::Length(n);
    }
    headers.remove(header::CONTENT_LENGTH);
    match body.size_hint().exact() {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            Framing::Length(n)
        }
        None if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => Framing::Empty,
        None => {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Framing::Chunked
        }
    }
}

/// `content-length`: `Ok(None)` when absent, an error when invalid or when several differ.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = parse_length(v.as_bytes()).ok_or(())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

fn encode_head(buf: &mut Vec<u8>, method: &Method, uri: &http::Uri, headers: &HeaderMap) {
    buf.reserve(64 + headers.len() * 32);
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    match (uri.authority(), uri.path_and_query()) {
        (Some(a), _) if *method == Method::CONNECT => buf.extend_from_slice(a.as_str().as_bytes()),
        (_, Some(pq)) => buf.extend_from_slice(pq.as_str().as_bytes()),
        _ => buf.push(b'/'),
    }
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_framing_matches_hyper() {
        let full = |s: &'static str| UpstreamBody::full(Bytes::from(s));
        let mut h = HeaderMap::new();
        assert_eq!(
            request_framing(&Method::GET, &mut h, &full("")),
            Framing::Empty
        );
        assert!(h.is_empty());
        assert_eq!(
            request_framing(&Method::POST, &mut h, &full("abc")),
            Framing::Length(3)
        );
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert_eq!(
            request_framing(&Method::PUT, &mut h, &full("abcd")),
            Framing::Length(4)
        );
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
        let mut out = Vec::new();
        let uri: http::Uri = "/a?b=c".parse().unwrap_or_default();
        encode_head(&mut out, &Method::PUT, &uri, &h);
        assert_eq!(out, b"PUT /a?b=c HTTP/1.1\r\ncontent-length: 4\r\n\r\n");
    }
}
