//! etcd sequencer (`sequencer` type `etcd`): a key's counter is the decimal value stored at
//! `<keyPrefixPath><key>`, advanced by compare-and-swap on the key's revision so concurrent
//! clients never hand out the same id. Metadata: see [`super::etcd`]; `keyPrefixPath` defaults
//! to `/layotto/`.

use tonic::async_trait;

use super::etcd::{self, EtcdClient};
use super::{ComponentError, Health, Metadata, Result, Sequencer};
use crate::runtime::proto::etcd::etcdserverpb::compare::CompareResult;
use crate::runtime::proto::etcd::mvccpb::KeyValue;

/// Layotto's default key prefix for etcd components.
const DEFAULT_PREFIX: &str = "/layotto/";
/// Compare-and-swap attempts before giving up on a key under heavy contention.
const MAX_ATTEMPTS: usize = 1000;

/// Sequences kept as counters in etcd.
#[derive(Debug, Clone)]
pub struct EtcdSequencer {
    client: EtcdClient,
    prefix: String,
}

impl EtcdSequencer {
    /// Connect to etcd (metadata: `endpoints`, `username`, `password`, `dialTimeout`, `timeout`,
    /// `keyPrefixPath`).
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        let client = etcd::connect(metadata).await?;
        Ok(EtcdSequencer {
            client,
            prefix: etcd::key_prefix(metadata, DEFAULT_PREFIX),
        })
    }

    /// Replace `key`'s counter `v` with `next(v)` atomically, unless `next` returns `None`;
    /// returns the counter before and after (equal when unchanged).
    async fn update(
        &self,
        key: &str,
        next: impl Fn(i64) -> Result<Option<i64>>,
    ) -> Result<(i64, i64)> {
        let stored = format!("{}{key}", self.prefix);
        let mut current = self.client.get(stored.as_str()).await?;
        for _ in 0..MAX_ATTEMPTS {
            let (value, guard) = match &current {
                None => (
                    0,
                    etcd::cmp_create_revision(stored.as_str(), CompareResult::Equal, 0),
                ),
                Some(kv) => (
                    counter(&stored, kv)?,
                    etcd::cmp_mod_revision(stored.as_str(), CompareResult::Equal, kv.mod_revision),
                ),
            };
            let Some(new) = next(value)? else {
                return Ok((value, value));
            };
            let response = self
                .client
                .txn(
                    vec![guard],
                    vec![etcd::op_put(stored.as_str(), new.to_string(), 0)],
                    vec![etcd::op_get(stored.as_str())],
                )
                .await?;
            if response.succeeded {
                return Ok((value, new));
            }
            // Someone else moved the counter: retry from what they wrote.
            current = etcd::txn_kvs(&response, 0).first().cloned();
        }
        Err(ComponentError::Unavailable(format!(
            "etcd: sequencer key {stored} is too contended ({MAX_ATTEMPTS} attempts)"
        )))
    }
}

/// The counter stored in `kv` (an empty value counts as 0).
fn counter(stored: &str, kv: &KeyValue) -> Result<i64> {
    let text = String::from_utf8_lossy(&kv.value);
    match text.trim() {
        "" => Ok(0),
        t => t.parse().map_err(|_| {
            ComponentError::Internal(format!(
                "etcd: sequencer key {stored} does not hold a number: {t:?}"
            ))
        }),
    }
}

#[async_trait]
impl Sequencer for EtcdSequencer {
    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        self.update(key, |v| Ok((v < floor).then_some(floor)))
            .await
            .map(drop)
    }

    async fn next_id(&self, key: &str) -> Result<i64> {
        self.segment(key, 1).await.map(|(first, _)| first)
    }

    async fn segment(&self, key: &str, size: u32) -> Result<(i64, i64)> {
        if size == 0 {
            return Err(ComponentError::InvalidArgument(
                "segment size must be positive".into(),
            ));
        }
        let size = i64::from(size);
        let (before, after) = self
            .update(key, |v| {
                v.checked_add(size).map(Some).ok_or_else(|| {
                    ComponentError::Internal(format!("etcd: sequencer key {key} is exhausted"))
                })
            })
            .await?;
        Ok((before + 1, after))
    }

    async fn health(&self) -> Health {
        self.client.health().await
    }
}
