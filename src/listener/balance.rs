//! Spreading a listener's connections over the workers.
//!
//! Each worker accepts on its own `SO_REUSEPORT` socket, and the kernel picks the socket by a hash
//! of the connection's addresses. Over a few long-lived connections (an app's HTTP/2 or gRPC
//! channels to its sidecar, a load generator's) that hash is lumpy: four connections land 3/1 or
//! 4/0 on two workers more often than 2/2, and one core then does most of the work. So an
//! accepted connection goes to the worker with the fewest active connections of this listener,
//! as Envoy's `connection_balance_config: exact_balance` does; on a tie it stays on the
//! worker that accepted it, so balanced load costs no hand-off. The counts are atomics, read and
//! updated once per connection, never per request.
//!
//! A listener that only serves the runtime API is the exception
//! ([`WorkerPlacement::FirstWorker`](crate::model::listener::WorkerPlacement)): unless it has a
//! `connection_balance_config`, all its connections stay on the first worker. The runtime's calls
//! are short and wait on a store; on one worker they share one pipelined connection per store
//! and wake one thread. Spread over the two workers of a two-core host, the same Redis calls
//! cost 22-30% more CPU each, made 4-12 times the context switches, and ran 19-31% fewer per
//! second with a longer tail (`benches/runtime_cpu.sh`, docs/benchmarks.md).
//!
//! Stats, as Envoy names them: `listener.<address>.downstream_cx_active` and `.downstream_cx_destroy`,
//! and per worker
//! `listener.<address>.worker_<id>.downstream_cx_active` and `.downstream_cx_total`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Active-connection counts of one listener, one per worker.
#[derive(Debug)]
pub struct Balancer {
    workers: Box<[Worker]>,
    active: metrics::Gauge,
    destroyed: metrics::Counter,
}

#[derive(Debug)]
struct Worker {
    active: AtomicUsize,
    active_gauge: metrics::Gauge,
    total: metrics::Counter,
}

impl Balancer {
    /// Counts for `workers` workers (at least one) of the listener whose stats start with
    /// `stat_prefix` (`listener.<address>`).
    pub fn new(stat_prefix: &str, workers: usize) -> Arc<Balancer> {
        let stat = |i: usize, s: &str| format!("{stat_prefix}.worker_{i}.{s}");
        Arc::new(Balancer {
            workers: (0..workers.max(1))
                .map(|i| Worker {
                    active: AtomicUsize::new(0),
                    active_gauge: crate::stats::gauge(stat(i, "downstream_cx_active")),
                    total: crate::stats::counter(stat(i, "downstream_cx_total")),
                })
                .collect(),
            active: crate::stats::gauge(format!("{stat_prefix}.downstream_cx_active")),
            destroyed: crate::stats::counter(format!("{stat_prefix}.downstream_cx_destroy")),
        })
    }

    /// The worker a connection accepted on worker `me` should be served on: the one with the
    /// fewest active connections, `me` itself when none has fewer.
    pub fn pick(&self, me: usize) -> usize {
        let load = |i: usize| self.workers[i].active.load(Ordering::Relaxed);
        let me = me.min(self.workers.len() - 1);
        let least = (0..self.workers.len())
            .min_by_key(|&i| load(i))
            .unwrap_or(me);
        if load(least) < load(me) {
            least
        } else {
            me
        }
    }

    /// Count a connection on `worker` until the returned guard drops (the connection ends).
    pub fn enter(self: &Arc<Self>, worker: usize) -> Active {
        let worker = worker.min(self.workers.len() - 1);
        let w = &self.workers[worker];
        w.active.fetch_add(1, Ordering::Relaxed);
        w.active_gauge.increment(1.0);
        w.total.increment(1);
        self.active.increment(1.0);
        Active {
            balancer: self.clone(),
            worker,
        }
    }
}

/// One connection counted by a [`Balancer`]; dropping it ends the count.
#[derive(Debug)]
pub struct Active {
    balancer: Arc<Balancer>,
    worker: usize,
}

impl Drop for Active {
    fn drop(&mut self) {
        let w = &self.balancer.workers[self.worker];
        w.active.fetch_sub(1, Ordering::Relaxed);
        w.active_gauge.decrement(1.0);
        self.balancer.active.decrement(1.0);
        self.balancer.destroyed.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewest_active_wins_and_ties_stay_local() {
        let b = Balancer::new("listener.test_balance", 3);
        assert_eq!(b.pick(1), 1, "all idle: stay");
        let a = b.enter(1);
        assert_eq!(b.pick(1), 0, "worker 1 busier than 0");
        let c = b.enter(0);
        assert_eq!(b.pick(0), 2);
        let d = b.enter(2);
        assert_eq!(b.pick(2), 2, "1/1/1: stay");
        drop(a);
        assert_eq!(b.pick(0), 1, "worker 1's connection ended");
        drop((c, d));
        assert_eq!(b.pick(2), 2);
        assert_eq!(b.pick(7), 2, "out-of-range worker clamps");
    }
}
