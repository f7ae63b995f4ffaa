//! Component contracts: what each runtime API needs from the store behind it. One trait per
//! building block; each implementation lives in its own module, named `<api>_<store>` and picked by
//! the `type` in the runtime config ([`registry`]).

pub mod binding_http;
pub mod configuration_etcd;
pub mod configuration_memory;
pub mod etcd;
pub mod etcd_txn;
pub mod file_local;
pub mod hello;
pub mod lock_etcd;
pub mod lock_memory;
pub mod lock_redis;
pub mod pubsub_memory;
pub mod pubsub_redis;
pub mod redis;
pub mod registry;
pub mod secret_env;
pub mod secret_file;
pub mod sequencer_etcd;
pub mod sequencer_memory;
pub mod sequencer_redis;
pub mod state_memory;
pub mod state_redis;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::async_trait;

/// Metadata as Layotto passes it: string keys and values.
pub type Metadata = HashMap<String, String>;

/// What can go wrong inside a component. The API layer maps each to the gRPC code Layotto uses.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The store cannot be reached (connection refused, timed out, reset).
    #[error("{0}")]
    Unavailable(String),
    /// A write's etag did not match the stored one (or first-write found the key present).
    #[error("possible etag mismatch: {0}")]
    EtagMismatch(String),
    /// An etag that is not one this store hands out.
    #[error("invalid etag: {0}")]
    EtagInvalid(String),
    /// A request the component cannot serve as asked.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An operation the component does not implement.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else the store reported.
    #[error("{0}")]
    Internal(String),
}

/// Component result.
pub type Result<T> = std::result::Result<T, ComponentError>;

/// A component's health, for the actuator's readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Up,
    /// Not serving, with the reason.
    Down(String),
}

// ------------------------------------------------------------------------------------ state

/// Write concurrency, as in `StateOptions.StateConcurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Not given: an etag, when present, is checked.
    #[default]
    Unspecified,
    /// First write wins: the etag must match; with no etag the key must not exist.
    FirstWrite,
    /// Last write wins: etags are ignored.
    LastWrite,
}

impl Concurrency {
    /// The condition a write runs under, given the request's etag.
    pub fn condition(self, etag: Option<&str>) -> WriteCondition {
        match (self, etag) {
            (Concurrency::LastWrite, _) => WriteCondition::Always,
            (_, Some(e)) if !e.is_empty() => WriteCondition::EtagEquals(e.to_string()),
            (Concurrency::FirstWrite, _) => WriteCondition::Absent,
            _ => WriteCondition::Always,
        }
    }
}

/// When a state write may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Unconditionally.
    Always,
    /// Only if the stored etag equals this one.
    EtagEquals(String),
    /// Only if the key does not exist.
    Absent,
}

/// A stored value and its etag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue {
    /// The bytes saved.
    pub data: Bytes,
    /// The etag of this version.
    pub etag: String,
}

/// One operation of a state transaction (or a plain save/delete).
#[derive(Debug, Clone)]
pub enum StateOp {
    /// Save `value` at `key` if `condition` holds.
    Upsert {
        /// Stored key (prefix already applied).
        key: String,
        /// Value.
        value: Bytes,
        /// When the write may happen.
        condition: WriteCondition,
    },
    /// Delete `key` if `condition` holds (deleting a missing key succeeds when unconditional).
    Delete {
        /// Stored key (prefix already applied).
        key: String,
        /// When the delete may happen.
        condition: WriteCondition,
    },
}

/// A state store (`state` in the runtime config). Keys reaching it already carry the
/// `keyPrefix` the API applied.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The value at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<StateValue>>;
    /// Apply one operation.
    async fn apply(&self, op: StateOp) -> Result<()>;
    /// Apply all operations atomically: every condition is checked before anything is written.
    async fn transact(&self, ops: Vec<StateOp>) -> Result<()>;
    /// Whether the store is reachable.
    async fn health(&self) -> Health;
}

// ----------------------------------------------------------------------------------- pubsub

/// A message delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The payload as published (the CloudEvents envelope JSON).
    pub data: Bytes,
    /// Metadata stored with the message.
    pub metadata: Metadata,
}

/// What the subscriber did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed (or dropped on purpose): acknowledge, never redeliver.
    Done,
    /// Not processed: deliver again later.
    Retry,
}

/// Receives messages for one subscription; the component acknowledges after it returns `Done`.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Handle one message.
    async fn deliver(&self, msg: Delivery) -> Outcome;
}

/// Ends a subscription when dropped or cancelled. The component's delivery task watches the
/// token it was given with [`Subscription::new`].
#[derive(Debug)]
pub struct Subscription {
    token: CancellationToken,
}

impl Subscription {
    /// A subscription whose task stops when `token` is cancelled.
    pub fn new(token: CancellationToken) -> Self {
        Subscription { token }
    }

    /// End the subscription now.
    pub fn cancel(&self) {
        self.token.cancel();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A pub/sub broker (`pub_subs` in the runtime config).
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Publish `data` on `topic`. Returns once the broker has accepted it.
    async fn publish(&self, topic: &str, data: Bytes, metadata: &Metadata) -> Result<()>;
    /// Deliver `topic`'s messages to `subscriber` until the returned handle is dropped.
    /// Delivery is at least once: a message is redelivered until the subscriber returns `Done`.
    async fn subscribe(
        &self,
        topic: &str,
        metadata: &Metadata,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<Subscription>;
    /// Whether the broker is reachable.
    async fn health(&self) -> Health;
}

// ---------------------------------------------------------------------------------- lock

/// Result of an unlock or keep-alive, as in `UnlockResponse.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockStatus {
    /// Done.
    Success,
    /// No such lock (never taken, released or expired).
    LockUnexist,
    /// Held by another owner.
    LockBelongToOthers,
}

/// A distributed lock store (`lock` in the runtime config). Keys already carry the prefix.
#[async_trait]
pub trait LockStore: Send + Sync {
    /// Take `key` for `owner` for `expire_secs` seconds if nobody holds it. Not reentrant.
    async fn try_lock(&self, key: &str, owner: &str, expire_secs: u32) -> Result<bool>;
    /// Release `key` if `owner` holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus>;
    /// Extend `owner`'s hold on `key` to `expire_secs` seconds from now.
    async fn keep_alive(&self, key: &str, owner: &str, expire_secs: u32) -> Result<LockStatus>;
    /// Whether the store is reachable.
    async fn health(&self) -> Health;
}

// ---------------------------------------------------------------------------------- sequencer

/// A sequencer store (`sequencer` in the runtime config). Keys already carry the prefix.
#[async_trait]
pub trait Sequencer: Send + Sync {
    /// Raise `key`'s counter so the next id is greater than `floor` (the `biggerThan` config).
    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()>;
    /// The next id for `key`: unique and increasing.
    async fn next_id(&self, key: &str) -> Result<i64>;
    /// Reserve `size` ids at once; returns the inclusive range `(first, last)`.
    async fn segment(&self, key: &str, size: u32) -> Result<(i64, i64)>;
    /// Whether the store is reachable.
    async fn health(&self) -> Health;
}

// --------------------------------------------------------------------------- configuration

/// A configuration item, as in `ConfigurationItem`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigItem {
    /// Key.
    pub key: String,
    /// Value.
    pub content: String,
    /// Group.
    pub group: String,
    /// Label.
    pub label: String,
    /// Tags.
    pub tags: Metadata,
    /// Metadata.
    pub metadata: Metadata,
}

/// Which items a configuration request addresses.
#[derive(Debug, Clone, Default)]
pub struct ConfigQuery {
    /// App id (part of the stored key).
    pub app_id: String,
    /// Group (`default` when empty).
    pub group: String,
    /// Label.
    pub label: String,
    /// Keys; empty means every key of the app/group/label.
    pub keys: Vec<String>,
}

/// A configuration store (`config_store` in the runtime config).
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// The items named by `query`.
    async fn get(&self, query: &ConfigQuery) -> Result<Vec<ConfigItem>>;
    /// Save items under `app_id`.
    async fn save(&self, app_id: &str, items: Vec<ConfigItem>) -> Result<()>;
    /// Delete the items named by `query`.
    async fn delete(&self, query: &ConfigQuery) -> Result<()>;
    /// Send every change of an item named by `query` to `tx` (a deleted item arrives with empty
    /// content) until the handle is dropped or `tx` closes.
    async fn subscribe(
        &self,
        query: &ConfigQuery,
        tx: mpsc::Sender<Vec<ConfigItem>>,
    ) -> Result<Subscription>;
    /// Whether the store is reachable.
    async fn health(&self) -> Health;
}
