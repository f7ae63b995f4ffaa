//! Retry buffering for streamed request bodies, as Envoy's router does it: the body streams
//! upstream as it arrives while a copy is kept, so a retry can send it again (the copy, then
//! whatever has not arrived yet). Beyond [`REPLAY_LIMIT`] the copy is dropped and the request is
//! no longer retried. Small bodies of known length are collected before the first attempt
//! instead (see `forward`); this covers chunked HTTP/1.1 bodies and HTTP/2 streams, gRPC among
//! them, which must not wait for their end before going upstream.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};

use super::stream_timeout::TrackedBody;

/// Most bytes of a streamed request body kept for a retry (Envoy's default connection buffer
/// limit).
pub const REPLAY_LIMIT: usize = 1024 * 1024;

/// Errors of a replayed body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct State {
    /// The part of the downstream body that has not arrived yet (`None` once it ended).
    rest: Option<TrackedBody>,
    /// The data received so far, frame by frame (emptied on overflow).
    copy: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    overflow: bool,
    failed: bool,
    /// The attempt allowed to read: an older attempt's body that is still being polled (an
    /// HTTP/2 stream hyper has not dropped yet) must not take frames or wake-ups from it.
    current: u32,
    /// The current attempt's task while it waits for the downstream body: woken when a retry
    /// supersedes it, so it ends (and its HTTP/2 stream is reset) instead of waiting forever.
    waiting: Option<std::task::Waker>,
}

/// A downstream request body shared by the attempts of one request.
#[derive(Debug, Clone)]
pub struct Replay(Arc<Mutex<State>>);

impl Replay {
    /// Start keeping a copy of `body` as it streams.
    pub fn new(body: TrackedBody) -> Replay {
        Replay(Arc::new(Mutex::new(State {
            rest: Some(body),
            copy: Vec::new(),
            trailers: None,
            size: 0,
            overflow: false,
            failed: false,
            current: 0,
            waiting: None,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response is on its way downstream: no retry will come, so stop keeping a copy
    /// (a long gRPC stream would otherwise hold up to [`REPLAY_LIMIT`] until it ends).
    pub fn commit(&self) {
        let mut s = self.state();
        s.overflow = true;
        s.copy = Vec::new();
    }

    /// Whether another attempt can still send the whole body.
    pub fn can_replay(&self) -> bool {
        let s = self.state();
        !s.overflow && !s.failed
    }

    /// The body of the next attempt: what arrived so far, then the rest as it arrives. `None`
    /// when the body can no longer be sent whole.
    pub fn attempt(&self) -> Option<AttemptBody> {
        let mut s = self.state();
        if s.overflow || s.failed {
            return None;
        }
        s.current += 1;
        if let Some(w) = s.waiting.take() {
            w.wake();
        }
        Some(AttemptBody {
            shared: self.0.clone(),
            generation: s.current,
            next: 0,
            trailers_sent: false,
        })
    }
}

/// One attempt's view of a [`Replay`] body.
#[derive(Debug)]
pub struct AttemptBody {
    shared: Arc<Mutex<State>>,
    generation: u32,
    /// Index in the copy of the next frame to send.
    next: usize,
    trailers_sent: bool,
}

impl AttemptBody {
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let mut guard = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        if s.current != this.generation {
            return Poll::Ready(Some(Err("request body superseded by a retry".into())));
        }
        if let Some(data) = s.copy.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
        }
        let Some(rest) = s.rest.as_mut() else {
            if s.failed {
                return Poll::Ready(Some(Err("downstream request body failed".into())));
            }
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = &s.trailers {
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
            }
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if polled.is_pending() {
            if !s.waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waiting = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        match std::task::ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    s.size += data.len();
                    if s.overflow || s.size > REPLAY_LIMIT {
                        s.overflow = true;
                        s.copy = Vec::new();
                        this.next = 0;
                    } else {
                        s.copy.push(data.clone());
                        this.next += 1;
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                s.rest = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                s.rest = None;
                s.failed = true;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.state();
        s.current == self.generation
            && self.next >= s.copy.len()
            && s.rest.is_none()
            && !s.failed
            && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.state();
        let replayed: u64 = s.copy[self.next.min(s.copy.len())..]
            .iter()
            .map(|b| b.len() as u64)
            .sum();
        match &s.rest {
            None => SizeHint::with_exact(replayed),
            Some(rest) => match rest.size_hint().exact() {
                Some(n) => SizeHint::with_exact(replayed + n),
                None => SizeHint::default(),
            },
        }
    }
}
