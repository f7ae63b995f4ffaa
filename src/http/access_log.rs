//! The end of a logged request: the response body counts what it sends downstream and, once it
//! ends or is dropped, completes the request's record and writes its access log line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body_util::Either;
use hyper::body::{Body, Frame, SizeHint};

use super::local_reply::Flag;
use super::{ConnCtx, RespBody};
use crate::access_log::{Flags, Record};

/// A response body whose request is access-logged.
#[derive(Debug)]
pub struct LoggedBody {
    inner: RespBody,
    record: Option<Box<Record>>,
    ctx: Arc<ConnCtx>,
    ended: bool,
}

/// The access log flag and `%RESPONSE_CODE_DETAILS%` of a local reply's flag.
fn flag_facts(f: Flag) -> (u16, &'static str) {
    match f {
        Flag::NoRoute => (Flags::NO_ROUTE, "route_not_found"),
        Flag::NoCluster => (Flags::NO_CLUSTER, "cluster_not_found"),
        Flag::NoHealthyUpstream => (Flags::NO_HEALTHY_UPSTREAM, "no_healthy_upstream"),
        Flag::ConnectFailure => (
            Flags::CONNECT_FAILURE,
            "upstream_reset_before_response_started{remote_connection_failure}",
        ),
        Flag::Overflow => (
            Flags::OVERFLOW,
            "upstream_reset_before_response_started{overflow}",
        ),
        Flag::Timeout => (Flags::UPSTREAM_TIMEOUT, "response_timeout"),
        Flag::Reset => (
            Flags::CONNECTION_TERMINATION,
            "upstream_reset_before_response_started{connection_termination}",
        ),
        Flag::ProtocolError => (Flags::PROTOCOL_ERROR, "codec_error"),
    }
}

/// A record for a request starting now (kept off the hot path: only logged requests get here).
#[cold]
#[inline(never)]
pub fn start(version: http::Version, ctx: &ConnCtx) -> Box<Record> {
    let mut r = Box::new(Record::start());
    r.protocol = Some(match version {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    });
    if ctx.info.transport == "tls" {
        r.scheme = "https";
    }
    r
}

/// Take the response into the record and wrap its body so the line is written at its end.
#[cold]
#[inline(never)]
pub fn wrap(
    resp: Response<RespBody>,
    mut record: Box<Record>,
    ctx: Arc<ConnCtx>,
) -> Response<RespBody> {
    if let Some(f) = resp.extensions().get::<Flag>() {
        let (bit, details) = flag_facts(*f);
        record.flags.set(bit);
        if record.details.is_none() {
            record.details = Some(details.into());
        }
    } else if record.details.is_none() && record.upstream_host.is_some() {
        record.details = Some("via_upstream".into());
    }
    record.response(
        resp.status(),
        resp.headers(),
        &ctx.hcm.access_logs.response_headers,
    );
    resp.map(|inner| {
        Either::Right(Either::Right(Box::new(LoggedBody {
            inner,
            record: Some(record),
            ctx,
            ended: false,
        })))
    })
}

impl LoggedBody {
    fn finish(&mut self) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        if !self.ended && !self.inner.is_end_stream() {
            // The downstream went away before the response was sent in full.
            r.flags.set(Flags::DOWNSTREAM_TERMINATION);
        }
        r.duration = Some(r.started.elapsed());
        if let Some(t) = &r.request_body {
            // A streamed body counts through its tracker; a buffered one (for a retry) was
            // counted when the router collected it.
            r.bytes_received = r.bytes_received.max(t.received());
            r.request_duration = r.request_duration.or_else(|| t.completed_after());
        }
        self.ctx.hcm.access_logs.emit(&r, &self.ctx.info);
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = crate::upstream::pool::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(rec) = this.record.as_deref_mut() {
                    if let Some(d) = f.data_ref() {
                        rec.bytes_sent += d.len() as u64;
                    } else if let Some(t) = f.trailers_ref() {
                        rec.trailers = Some(t.clone());
                    }
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(rec) = this.record.as_deref_mut() {
                    rec.flags.set(Flags::CONNECTION_TERMINATION);
                }
            }
            Poll::Pending => {}
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

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}
