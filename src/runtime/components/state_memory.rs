//! `in-memory` state store: a map guarded by one mutex, with numeric etags.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::async_trait;

use super::{ComponentError, Health, Result, StateOp, StateStore, StateValue, WriteCondition};

/// An in-process state store. Each write bumps the key's version, which is its etag.
#[derive(Debug, Default)]
pub struct MemoryState {
    items: Mutex<HashMap<String, (bytes::Bytes, u64)>>,
}

impl MemoryState {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn check(
    items: &HashMap<String, (bytes::Bytes, u64)>,
    key: &str,
    cond: &WriteCondition,
) -> Result<()> {
    let current = items.get(key).map(|(_, v)| *v);
    match cond {
        WriteCondition::Always => Ok(()),
        WriteCondition::Absent if current.is_none() => Ok(()),
        WriteCondition::Absent => Err(ComponentError::EtagMismatch(key.to_string())),
        WriteCondition::EtagEquals(e) => {
            let want: u64 = e
                .parse()
                .map_err(|_| ComponentError::EtagInvalid(e.clone()))?;
            if current == Some(want) {
                Ok(())
            } else {
                Err(ComponentError::EtagMismatch(key.to_string()))
            }
        }
    }
}

fn run(items: &mut HashMap<String, (bytes::Bytes, u64)>, op: StateOp) {
    match op {
        StateOp::Upsert { key, value, .. } => {
            let version = items.get(&key).map_or(0, |(_, v)| *v) + 1;
            items.insert(key, (value, version));
        }
        StateOp::Delete { key, .. } => {
            items.remove(&key);
        }
    }
}

fn condition(op: &StateOp) -> (&str, &WriteCondition) {
    match op {
        StateOp::Upsert { key, condition, .. } | StateOp::Delete { key, condition } => {
            (key, condition)
        }
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn get(&self, key: &str) -> Result<Option<StateValue>> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items.get(key).map(|(data, v)| StateValue {
            data: data.clone(),
            etag: v.to_string(),
        }))
    }

    async fn apply(&self, op: StateOp) -> Result<()> {
        self.transact(vec![op]).await
    }

    async fn transact(&self, ops: Vec<StateOp>) -> Result<()> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for op in &ops {
            let (key, cond) = condition(op);
            check(&items, key, cond)?;
        }
        for op in ops {
            run(&mut items, op);
        }
        Ok(())
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}
