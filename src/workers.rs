//! Worker threads: one single-threaded tokio runtime per `--concurrency` slot, as Envoy runs one
//! event loop per worker. A downstream connection, its requests and the upstream connections it
//! uses live on one worker, so the hot path never hops between cores; each listener gets one
//! `SO_REUSEPORT` socket per worker, and the accept loops spread connections over the workers
//! (`listener::balance`).
//!
//! Without registered workers (in-process tests) everything runs on the caller's runtime.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Handle;

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    static WORKER_ID: Cell<usize> = const { Cell::new(0) };
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Start `n` worker threads and register them. Call once, before any config is loaded.
pub fn start(n: usize) -> std::io::Result<()> {
    let mut handles = Vec::with_capacity(n);
    for id in 0..n.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        handles.push(rt.handle().clone());
        // A timer anchor: with a timer always due within a second, the worker's time driver
        // never parks without a deadline, so arming a per-request timeout (a Redis reply's, a
        // stream's) is a local insert, not an eventfd write to wake its own event loop.
        rt.spawn(async {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        std::thread::Builder::new()
            .name(format!("layer8-worker-{id}"))
            .spawn(move || {
                WORKER_ID.with(|w| w.set(id));
                ON_WORKER.with(|w| w.set(true));
                rt.block_on(std::future::pending::<()>());
            })?;
    }
    let _ = WORKERS.set(handles);
    Ok(())
}

/// The registered worker runtimes (empty when none were started).
pub fn handles() -> &'static [Handle] {
    WORKERS.get().map_or(&[], |v| v.as_slice())
}

/// Number of per-worker slots that per-worker state (connection pools) needs.
pub fn count() -> usize {
    handles().len().max(1)
}

/// This thread's worker index (0 outside workers).
pub fn current() -> usize {
    WORKER_ID.with(|w| w.get())
}

/// A per-thread slot index for state that must live on the runtime using it: the worker index
/// on a worker thread, [`count`] on any other thread (the main runtime, in-process tests).
/// Size tables of such state with [`slots`].
pub fn slot() -> usize {
    if ON_WORKER.with(|w| w.get()) {
        current()
    } else {
        count()
    }
}

/// Number of [`slot`] values: one per worker plus one for every other thread.
pub fn slots() -> usize {
    count() + 1
}
