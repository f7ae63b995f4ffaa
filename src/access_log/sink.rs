//! Access log files. A worker pushes its line onto the file's lock-free queue; a writer thread
//! per file writes the queue out every `--file-flush-interval-msec` (Envoy's default: 10 s), or
//! as soon as 64 KiB are waiting, and once more at exit. One sink per path, shared by every
//! logger and config generation that names it. SIGUSR1 reopens every file (log rotation), as
//! it does in Envoy.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crossbeam_queue::SegQueue;

/// Bytes waiting that make the writer flush before its interval ends (Envoy's 64 KiB).
const FLUSH_AT: usize = 64 * 1024;

/// The flush interval in milliseconds (`--file-flush-interval-msec`).
static FLUSH_MS: AtomicU64 = AtomicU64::new(10_000);

/// Every open sink, by path (config time only).
static SINKS: OnceLock<Mutex<HashMap<String, Weak<Sink>>>> = OnceLock::new();

/// Set the flush interval (from the command line, before any sink is made).
pub fn set_flush_interval(d: Duration) {
    FLUSH_MS.store(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
        Ordering::Relaxed,
    );
}

/// One access log file.
#[derive(Debug)]
pub struct Sink {
    path: String,
    queue: SegQueue<String>,
    pending: AtomicUsize,
    file: Mutex<File>,
    writer: OnceLock<std::thread::Thread>,
    closed: AtomicBool,
}

impl Sink {
    /// The sink for `path`, opened (append, created if missing) on first use.
    pub fn open(path: &str) -> std::io::Result<Arc<Sink>> {
        let sinks = SINKS.get_or_init(Default::default);
        let mut sinks = sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sinks.get(path).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        let sink = Arc::new(Sink {
            path: path.to_string(),
            queue: SegQueue::new(),
            pending: AtomicUsize::new(0),
            file: Mutex::new(file),
            writer: OnceLock::new(),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&sink);
        let handle = std::thread::Builder::new()
            .name("layer8-access-log".into())
            .spawn(move || writer(weak))?;
        let _ = sink.writer.set(handle.thread().clone());
        sinks.retain(|_, w| w.strong_count() > 0);
        sinks.insert(path.to_string(), Arc::downgrade(&sink));
        Ok(sink)
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Queue one line (it carries its own newline).
    pub fn write(&self, line: String) {
        let len = line.len();
        self.queue.push(line);
        let before = self.pending.fetch_add(len, Ordering::Relaxed);
        if before < FLUSH_AT && before + len >= FLUSH_AT {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
        }
    }

    /// Write out what is queued, then open the path again: after a rotation renamed the file,
    /// later lines go to a new file at the path.
    pub fn reopen(&self) {
        self.flush();
        match OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
        {
            Ok(f) => *self.file.lock().unwrap_or_else(|e| e.into_inner()) = f,
            Err(e) => {
                tracing::warn!(path = %self.path, error = %e, "access log not reopened");
            }
        }
    }

    /// Write out whatever is queued.
    pub fn flush(&self) {
        let mut buf = Vec::new();
        while let Some(line) = self.queue.pop() {
            self.pending.fetch_sub(line.len(), Ordering::Relaxed);
            buf.extend_from_slice(line.as_bytes());
        }
        if buf.is_empty() {
            return;
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&buf).and_then(|()| file.flush()) {
            tracing::warn!(path = %self.path, error = %e, "access log write failed");
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
        self.flush();
    }
}

/// The writer thread of one sink: flush every interval (or when woken), until the sink is gone.
fn writer(sink: Weak<Sink>) {
    loop {
        std::thread::park_timeout(Duration::from_millis(FLUSH_MS.load(Ordering::Relaxed)));
        let Some(s) = sink.upgrade() else { return };
        if s.closed.load(Ordering::Relaxed) {
            return;
        }
        s.flush();
    }
}

/// Every sink still in use.
fn live() -> Vec<Arc<Sink>> {
    let Some(sinks) = SINKS.get() else {
        return Vec::new();
    };
    sinks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect()
}

/// Write out every sink's queue (at exit).
pub fn flush_all() {
    for s in live() {
        s.flush();
    }
}

/// Reopen every access log file (SIGUSR1).
pub fn reopen_all() {
    for s in live() {
        s.reopen();
    }
}
