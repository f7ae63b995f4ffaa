//! Retry budget (circuit breaker `max_retries`) and jittered exponential back-off.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::model::route::*;
use crate::upstream::Cluster;

pub(super) fn take_retry(cluster: &Cluster) -> bool {
    let c = &cluster.circuit;
    if c.retries.load(Ordering::Relaxed) >= cluster.config.thresholds.max_retries {
        cluster.stats.rq_retry_overflow.increment(1);
        return false;
    }
    c.retries.fetch_add(1, Ordering::Relaxed);
    cluster.stats.rq_retry.increment(1);
    // The retry budget is held only while backing off and re-sending; released right away here
    // because attempts are sequential within one request.
    c.retries.fetch_sub(1, Ordering::Relaxed);
    true
}

pub(super) async fn backoff(r: Option<&RetryPolicy>, attempt: u32, deadline: Option<Instant>) {
    let Some(r) = r else { return };
    let ceiling = r
        .base_interval
        .saturating_mul(1 << attempt.min(10))
        .min(r.max_interval);
    let ms = ceiling.as_millis().max(1) as u64;
    let mut wait = Duration::from_millis(rand::random_range(0..ms));
    if let Some(d) = deadline {
        wait = wait.min(d.saturating_duration_since(Instant::now()));
    }
    tokio::time::sleep(wait).await;
}
