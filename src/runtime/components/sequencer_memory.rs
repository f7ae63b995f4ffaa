//! `in-memory` sequencer: a counter per key, starting at 1.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::async_trait;

use super::{Health, Result, Sequencer};

/// An in-process sequencer.
#[derive(Debug, Default)]
pub struct MemorySequencer {
    counters: Mutex<HashMap<String, i64>>,
}

impl MemorySequencer {
    /// Counters all at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Sequencer for MemorySequencer {
    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let v = c.entry(key.to_string()).or_insert(0);
        *v = (*v).max(floor);
        Ok(())
    }

    async fn next_id(&self, key: &str) -> Result<i64> {
        Ok(self.segment(key, 1).await?.0)
    }

    async fn segment(&self, key: &str, size: u32) -> Result<(i64, i64)> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let v = c.entry(key.to_string()).or_insert(0);
        let last = v.checked_add(i64::from(size.max(1))).ok_or_else(|| {
            super::ComponentError::Internal(format!("sequencer {key} overflowed"))
        })?;
        let first = *v + 1;
        *v = last;
        Ok((first, last))
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}
