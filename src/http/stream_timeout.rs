//! Per-request timers of the HTTP connection manager: `request_timeout` (the whole request must
//! arrive in time) and `stream_idle_timeout` (no activity on the stream for too long). Both end
//! in Envoy's `408` local replies ("request timeout" / "stream timeout") while the response has
//! not started; the router's own timeouts (route, per-try) cover the upstream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Progress of one request, shared by the request body and the watchdog.
#[derive(Debug)]
pub struct StreamTracker {
    start: Instant,
    /// Milliseconds since `start` of the last downstream activity.
    last: AtomicU64,
    /// The request body has been received in full.
    done: AtomicBool,
    /// Request body bytes received (for `%BYTES_RECEIVED%`).
    received: AtomicU64,
}

impl StreamTracker {
    /// A tracker for a request that starts now; `complete` if it has no body.
    pub fn new(complete: bool) -> Arc<StreamTracker> {
        Arc::new(StreamTracker {
            start: Instant::now(),
            last: AtomicU64::new(0),
            done: AtomicBool::new(complete),
            received: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Request body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Milliseconds from the start to the end of the request body, once it has ended.
    pub fn completed_after(&self) -> Option<Duration> {
        self.done
            .load(Ordering::Relaxed)
            .then(|| Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Mark the request body as fully received.
    pub fn complete(&self) {
        self.touch();
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Why the watchdog fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// `request_timeout`.
    Request,
    /// `stream_idle_timeout`.
    Idle,
}

/// Resolves when a timer expires (never, if neither is set).
pub async fn watchdog(
    t: Arc<StreamTracker>,
    request: Option<Duration>,
    idle: Option<Duration>,
) -> Expired {
    loop {
        let now = t.start.elapsed();
        let req_deadline = request.filter(|_| !t.done.load(Ordering::Relaxed));
        let idle_deadline = idle.map(|i| Duration::from_millis(t.last.load(Ordering::Relaxed)) + i);
        if req_deadline.is_some_and(|d| now >= d) {
            return Expired::Request;
        }
        if idle_deadline.is_some_and(|d| now >= d) {
            return Expired::Idle;
        }
        let next = match (req_deadline, idle_deadline) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return std::future::pending().await,
        };
        tokio::time::sleep(next.saturating_sub(now)).await;
    }
}

/// The downstream request body on its way upstream, reporting progress to its tracker.
#[derive(Debug)]
pub struct TrackedBody {
    inner: Incoming,
    tracker: Option<Arc<StreamTracker>>,
}

impl TrackedBody {
    /// Wrap `inner`; without a tracker it is a plain pass-through.
    pub fn new(inner: Incoming, tracker: Option<Arc<StreamTracker>>) -> TrackedBody {
        TrackedBody { inner, tracker }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(t) = &this.tracker {
            if let Poll::Ready(Some(Ok(f))) = &r {
                if let Some(d) = f.data_ref() {
                    t.received.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            match &r {
                Poll::Ready(None) => t.complete(),
                Poll::Ready(Some(_)) if this.inner.is_end_stream() => t.complete(),
                Poll::Ready(Some(_)) => t.touch(),
                Poll::Pending => {}
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
