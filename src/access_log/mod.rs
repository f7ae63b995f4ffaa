//! Access logging (`envoy.access_loggers.file`, `stdout`, `stderr`), as configured on an HTTP
//! connection manager or a `tcp_proxy`: a [`record::Record`] per stream, [`filter`]s that pick
//! the streams, a compiled [`format`] that renders the line, and a [`sink`] that writes it off
//! the request path.
//!
//! Nothing here runs for a listener without access logs: the HTTP path only starts a record
//! when its connection manager has loggers.

pub mod filter;
pub mod format;
pub mod record;
pub mod render;
pub mod sink;
pub mod time;

use std::sync::Arc;

use crate::listener::ConnInfo;

pub use record::{Flags, Record};

/// One configured access log.
#[derive(Debug)]
pub struct AccessLog {
    /// `filter`, if any.
    pub filter: Option<filter::Filter>,
    /// The line's format.
    pub format: format::Format,
    /// Where lines go.
    pub sink: Arc<sink::Sink>,
}

/// The access logs of one listener, connection manager or `tcp_proxy`, with the headers their
/// formats and filters read: a record copies only those.
#[derive(Debug, Default)]
pub struct AccessLogs {
    logs: Vec<AccessLog>,
    /// Request headers read by `%REQ()%` and header filters.
    pub request_headers: Vec<http::HeaderName>,
    /// Response headers read by `%RESP()%` and gRPC status filters.
    pub response_headers: Vec<http::HeaderName>,
}

impl AccessLogs {
    /// Collect the logs and the headers they read.
    pub fn new(logs: Vec<AccessLog>) -> AccessLogs {
        let mut set = AccessLogs {
            logs,
            ..Default::default()
        };
        let mut req = Vec::new();
        let mut resp = Vec::new();
        for log in &set.logs {
            log.format.headers(&mut req, &mut resp);
            if let Some(f) = &log.filter {
                f.headers(&mut req, &mut resp);
            }
        }
        for n in req {
            if !set.request_headers.contains(&n) {
                set.request_headers.push(n);
            }
        }
        for n in resp {
            if !set.response_headers.contains(&n) {
                set.response_headers.push(n);
            }
        }
        set
    }

    /// Whether there is no log (the request path then keeps no record).
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The logs.
    pub fn logs(&self) -> &[AccessLog] {
        &self.logs
    }

    /// Write a stream's line to every log whose filter accepts it.
    pub fn emit(&self, r: &Record, conn: &ConnInfo) {
        for log in &self.logs {
            if log.filter.as_ref().is_none_or(|f| f.allows(r)) {
                log.sink.write(log.format.render(r, conn));
            }
        }
    }
}

pub use sink::{flush_all, reopen_all};
