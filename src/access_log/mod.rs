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

/// Write a stream's line to every log whose filter accepts it.
pub fn emit(logs: &[AccessLog], r: &Record, conn: &ConnInfo) {
    for log in logs {
        if log.filter.as_ref().is_none_or(|f| f.allows(r)) {
            log.sink.write(log.format.render(r, conn));
        }
    }
}

pub use sink::flush_all;
