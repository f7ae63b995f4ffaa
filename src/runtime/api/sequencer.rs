//! Sequencer API: GetNextId. STRONG asks the store every time; WEAK (the proto default) hands out
//! ids from a segment reserved in the store, so most calls never leave the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tonic::Status;

use super::status::{component, store};
use super::Shared;
use crate::runtime::proto::rt;

/// The ids left in one reserved segment: `(next, last)`, empty when `next > last`.
type Segment = Arc<tokio::sync::Mutex<(i64, i64)>>;

/// Ids reserved per `(store, stored key)` for WEAK requests.
#[derive(Debug, Default)]
pub struct SegmentCache {
    segments: std::sync::Mutex<HashMap<(String, String), Segment>>,
    /// Cache size that triggers the next sweep (at least [`SEGMENT_CACHE_SWEEP_AT`]).
    sweep_at: AtomicUsize,
}

/// Cache size at which used-up segments are swept.
const SEGMENT_CACHE_SWEEP_AT: usize = 4096;

/// How many ids a WEAK segment reserves.
pub const SEGMENT_SIZE: u32 = 20;

/// `GetNextId`.
pub async fn next_id(s: &Shared, r: rt::GetNextIdRequest) -> Result<rt::GetNextIdResponse, Status> {
    let st = store(&s.components.sequencers, &r.store_name, "sequencer")?;
    if r.key.is_empty() {
        return Err(Status::invalid_argument(format!(
            "Key is empty in sequencer store {}",
            r.store_name
        )));
    }
    let key = st
        .prefix
        .scoped_key("sequencer", &r.key, &s.components.app.app_id, &r.store_name);
    let what = || format!("GetNextId in sequencer store {}", r.store_name);
    let strong = r
        .options
        .as_ref()
        .is_some_and(|o| o.increment() == rt::sequencer_options::AutoIncrement::Strong);
    if strong {
        let id = st
            .inner
            .next_id(&key)
            .await
            .map_err(|e| component(e, &what()))?;
        return Ok(rt::GetNextIdResponse { next_id: id });
    }
    let slot = {
        let mut map = s
            .segments
            .segments
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let sweep_at = s
            .segments
            .sweep_at
            .load(Ordering::Relaxed)
            .max(SEGMENT_CACHE_SWEEP_AT);
        if map.len() >= sweep_at {
            // Many keys: forget the segments no call is using. Their unused ids become a gap;
            // WEAK ids stay unique and increasing, since the store's counter has moved past
            // them. The next sweep waits until the cache has doubled, so a cache of live keys
            // is not rescanned on every call.
            map.retain(|_, seg| Arc::strong_count(seg) > 1);
            s.segments.sweep_at.store(map.len() * 2, Ordering::Relaxed);
        }
        map.entry((r.store_name.clone(), key.clone()))
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new((1, 0))))
            .clone()
    };
    let mut seg = slot.lock().await;
    if seg.0 > seg.1 {
        *seg = st
            .inner
            .segment(&key, SEGMENT_SIZE)
            .await
            .map_err(|e| component(e, &what()))?;
    }
    let id = seg.0;
    seg.0 = seg.0.saturating_add(1);
    Ok(rt::GetNextIdResponse { next_id: id })
}
