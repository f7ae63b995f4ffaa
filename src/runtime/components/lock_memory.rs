//! `in-memory` lock store: owner and expiry per resource.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::async_trait;

use super::{Health, LockStatus, LockStore, Result};

/// Table size at which expired entries are swept on the next lock.
const PURGE_AT: usize = 4096;

/// An in-process lock table. Expired entries count as free.
#[derive(Debug, Default)]
pub struct MemoryLock {
    locks: Mutex<HashMap<String, (String, Instant)>>,
    /// Table size that triggers the next sweep (at least [`PURGE_AT`]).
    purge_at: AtomicUsize,
}

impl MemoryLock {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn held<'a>(
        locks: &'a HashMap<String, (String, Instant)>,
        key: &str,
    ) -> Option<&'a (String, Instant)> {
        locks.get(key).filter(|(_, until)| *until > Instant::now())
    }
}

#[async_trait]
impl LockStore for MemoryLock {
    async fn try_lock(&self, key: &str, owner: &str, expire_secs: u32) -> Result<bool> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Self::held(&locks, key).is_some() {
            return Ok(false);
        }
        let now = Instant::now();
        if locks.len() >= self.purge_at.load(Ordering::Relaxed).max(PURGE_AT) {
            // Expired locks count as free; forget them so many short-lived resources do not
            // grow the table forever. The next sweep waits until the table has doubled, so a
            // table of live locks is not rescanned on every call.
            locks.retain(|_, (_, until)| *until > now);
            self.purge_at.store(locks.len() * 2, Ordering::Relaxed);
        }
        let until = now + Duration::from_secs(u64::from(expire_secs));
        locks.insert(key.to_string(), (owner.to_string(), until));
        Ok(true)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        match Self::held(&locks, key) {
            None => {
                locks.remove(key);
                Ok(LockStatus::LockUnexist)
            }
            Some((o, _)) if o != owner => Ok(LockStatus::LockBelongToOthers),
            Some(_) => {
                locks.remove(key);
                Ok(LockStatus::Success)
            }
        }
    }

    async fn keep_alive(&self, key: &str, owner: &str, expire_secs: u32) -> Result<LockStatus> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        match Self::held(&locks, key) {
            None => Ok(LockStatus::LockUnexist),
            Some((o, _)) if o != owner => Ok(LockStatus::LockBelongToOthers),
            Some(_) => {
                let until = Instant::now() + Duration::from_secs(u64::from(expire_secs));
                locks.insert(key.to_string(), (owner.to_string(), until));
                Ok(LockStatus::Success)
            }
        }
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}
