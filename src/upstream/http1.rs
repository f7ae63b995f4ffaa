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
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::cluster::Host;
use super::pool::{ConnGuard, PooledBody, UpstreamBody, UpstreamError};

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

fn protocol_error(what: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Reset(format!("protocol error: {what}"))
}

impl Conn {
    pub(super) fn new(io: Stream, guard: ConnGuard) -> Box<Self> {
        Box::new(Conn {
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
                            return Poll::Ready(Err(UpstreamError::Reset(
                                "request body longer than its content-length".into(),
                            )));
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
                    if framing == Framing::Chunked {
                        self.wbuf.extend_from_slice(b"0\r\n\r\n");
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
    headers.remove(header::TRANSFER_ENCODING);
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
enum Parsed {
    /// A final response head (consumed).
    Final(Head),
    /// A 1xx interim response (consumed and dropped, as Envoy does by default).
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// Parse one response head from the front of `buf`, consuming it when complete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, UpstreamError> {
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
fn parse_length(v: &[u8]) -> Option<u64> {
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

/// Chunked body decoder states (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
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
enum Decoder {
    Length(u64),
    Chunked(Chunk),
    Close,
}

/// What the decoder made of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

impl Decoder {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
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
    conn: Option<Box<Conn>>,
    decoder: Decoder,
    /// Where the connection goes back to, when the response allows reuse.
    host: Option<Arc<Host>>,
}

impl BodyStream {
    fn finish(&mut self) {
        let (Some(conn), Some(host)) = (self.conn.take(), self.host.take()) else {
            self.conn = None;
            return;
        };
        if conn.rbuf.is_empty() {
            super::pool::release(&host, conn);
        }
    }

    pub(super) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_end()
    }

    pub(super) fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }

    pub(super) fn poll_frame(
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
