//! etcd configuration store (`config_store` type `etcd`).
//!
//! An item is stored at `<keyPrefixPath>/<app_id>/<group>/<label>/<key>` with its content as the
//! value; non-empty tags go to the sibling key `<same>@tags` as a JSON object. Subscriptions are
//! etcd watches that survive etcd restarts: a broken stream is re-opened with backoff from the
//! revision after the last one delivered. Metadata: see [`super::etcd`]; `keyPrefixPath` defaults
//! to none.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::async_trait;
use tonic::Streaming;

use super::etcd::{self, EtcdClient};
use super::{
    ComponentError, ConfigItem, ConfigQuery, ConfigStore, Health, Metadata, Result, Subscription,
};
use crate::runtime::proto::etcd::etcdserverpb::{
    RangeRequest, RequestOp, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::runtime::proto::etcd::mvccpb::event::EventType;
use crate::runtime::proto::etcd::mvccpb::Event;

/// Suffix of the key holding an item's tags.
const TAGS_SUFFIX: &str = "@tags";
/// Group used when a request leaves it empty.
const DEFAULT_GROUP: &str = "default";
/// Items per transaction: two ops each, under etcd's default limit of 128 ops.
const TXN_ITEMS: usize = 64;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Configuration items kept in etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfigStore {
    client: EtcdClient,
    /// `keyPrefixPath` normalized to start and end with `/` (`/` when unset).
    prefix: String,
}

impl EtcdConfigStore {
    /// Connect to etcd (metadata: `endpoints`, `username`, `password`, `dialTimeout`, `timeout`,
    /// `keyPrefixPath`).
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        let client = etcd::connect(metadata).await?;
        Ok(EtcdConfigStore {
            client,
            prefix: etcd::key_prefix(metadata, ""),
        })
    }

    /// `<prefix>/<app_id>/<group>/<label>/`: where the items of one app/group/label live.
    fn base(&self, app_id: &str, group: &str, label: &str) -> String {
        let group = if group.is_empty() {
            DEFAULT_GROUP
        } else {
            group
        };
        format!("{}{app_id}/{group}/{label}/", self.prefix)
    }
}

fn tags_key(key: &str) -> String {
    format!("{key}{TAGS_SUFFIX}")
}

fn effective_group(group: &str) -> &str {
    if group.is_empty() {
        DEFAULT_GROUP
    } else {
        group
    }
}

/// Tags from their stored JSON object; non-string values keep their JSON text. Unreadable tags
/// are dropped (with a log) rather than failing the read.
fn parse_tags(key: &str, raw: &[u8]) -> Metadata {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(raw) {
        Ok(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(key, error = %e, "etcd config store: ignoring tags that are not a JSON object");
            Metadata::new()
        }
    }
}

/// `keys` without duplicates, first occurrence kept.
fn unique<'a>(keys: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let mut seen = HashSet::new();
    keys.into_iter()
        .filter(|k| seen.insert(k.as_str()))
        .collect()
}

#[async_trait]
impl ConfigStore for EtcdConfigStore {
    async fn get(&self, query: &ConfigQuery) -> Result<Vec<ConfigItem>> {
        let base = self.base(&query.app_id, &query.group, &query.label);
        let item = |key: String, content: &[u8], tags: Metadata| ConfigItem {
            key,
            content: String::from_utf8_lossy(content).into_owned(),
            group: effective_group(&query.group).to_string(),
            label: query.label.clone(),
            tags,
            metadata: Metadata::new(),
        };

        if query.keys.is_empty() {
            let kvs = self.client.get_prefix(base.as_bytes()).await?;
            let mut tags: HashMap<String, Metadata> = HashMap::new();
            let mut values = Vec::new();
            for kv in &kvs {
                let full = String::from_utf8_lossy(&kv.key);
                let Some(key) = full.strip_prefix(&base) else {
                    continue;
                };
                match key.strip_suffix(TAGS_SUFFIX) {
                    Some(owner) => {
                        tags.insert(owner.to_string(), parse_tags(&full, &kv.value));
                    }
                    None => values.push((key.to_string(), &kv.value)),
                }
            }
            return Ok(values
                .into_iter()
                .map(|(key, value)| {
                    let t = tags.remove(&key).unwrap_or_default();
                    item(key, value, t)
                })
                .collect());
        }

        let mut items = Vec::new();
        for chunk in unique(&query.keys).chunks(TXN_ITEMS) {
            let ops: Vec<RequestOp> = chunk
                .iter()
                .flat_map(|k| {
                    let stored = format!("{base}{k}");
                    [etcd::op_get(tags_key(&stored)), etcd::op_get(stored)]
                })
                .collect();
            let response = self.client.txn(Vec::new(), ops, Vec::new()).await?;
            for (i, key) in chunk.iter().enumerate() {
                let Some(kv) = etcd::txn_kvs(&response, 2 * i + 1).first() else {
                    continue;
                };
                let tags = etcd::txn_kvs(&response, 2 * i)
                    .first()
                    .map(|t| parse_tags(key, &t.value))
                    .unwrap_or_default();
                items.push(item((*key).clone(), &kv.value, tags));
            }
        }
        Ok(items)
    }

    async fn save(&self, app_id: &str, items: Vec<ConfigItem>) -> Result<()> {
        if items.iter().any(|i| i.key.is_empty()) {
            return Err(ComponentError::InvalidArgument(
                "configuration item key is empty".into(),
            ));
        }
        // etcd rejects a txn writing one key twice: the last item for a key wins.
        let mut seen = HashSet::new();
        let mut writes: Vec<(String, &ConfigItem)> = items
            .iter()
            .rev()
            .map(|i| {
                (
                    format!("{}{}", self.base(app_id, &i.group, &i.label), i.key),
                    i,
                )
            })
            .filter(|(stored, _)| seen.insert(stored.clone()))
            .collect();
        writes.reverse();

        for chunk in writes.chunks(TXN_ITEMS) {
            let mut ops = Vec::with_capacity(2 * chunk.len());
            for (stored, item) in chunk {
                ops.push(etcd::op_put(stored.as_str(), item.content.as_str(), 0));
                if item.tags.is_empty() {
                    ops.push(etcd::op_delete(tags_key(stored)));
                } else {
                    let json = serde_json::to_string(&item.tags)
                        .map_err(|e| ComponentError::Internal(format!("encoding tags: {e}")))?;
                    ops.push(etcd::op_put(tags_key(stored), json, 0));
                }
            }
            self.client.txn(Vec::new(), ops, Vec::new()).await?;
        }
        Ok(())
    }

    async fn delete(&self, query: &ConfigQuery) -> Result<()> {
        let base = self.base(&query.app_id, &query.group, &query.label);
        if query.keys.is_empty() {
            let end = etcd::prefix_end(base.as_bytes());
            self.client.delete_range(base, end).await?;
            return Ok(());
        }
        for chunk in unique(&query.keys).chunks(TXN_ITEMS) {
            let ops = chunk
                .iter()
                .flat_map(|k| {
                    let stored = format!("{base}{k}");
                    [etcd::op_delete(tags_key(&stored)), etcd::op_delete(stored)]
                })
                .collect();
            self.client.txn(Vec::new(), ops, Vec::new()).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        query: &ConfigQuery,
        tx: mpsc::Sender<Vec<ConfigItem>>,
    ) -> Result<Subscription> {
        let base = self.base(&query.app_id, &query.group, &query.label);
        // Watch from the revision after now, so nothing written after this call is missed.
        let from = self.client.current_revision().await? + 1;
        let targets = if query.keys.is_empty() {
            vec![Target {
                key: base.clone().into_bytes(),
                range_end: etcd::prefix_end(base.as_bytes()),
                next_rev: from,
            }]
        } else {
            unique(&query.keys)
                .into_iter()
                .map(|k| Target {
                    key: format!("{base}{k}").into_bytes(),
                    range_end: Vec::new(),
                    next_rev: from,
                })
                .collect()
        };
        let watcher = Watcher {
            client: self.client.clone(),
            targets,
            base,
            group: effective_group(&query.group).to_string(),
            label: query.label.clone(),
            tx,
            token: CancellationToken::new(),
            backoff: BACKOFF_START,
        };
        let stream = watcher.open().await?;
        let token = watcher.token.clone();
        tokio::spawn(watcher.run(stream));
        Ok(Subscription::new(token))
    }

    async fn health(&self) -> Health {
        self.client.health().await
    }
}

// ------------------------------------------------------------------------------- subscription

/// One etcd watcher of a subscription: a key or a prefix range.
struct Target {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The revision to resume from: one past the last delivered.
    next_rev: i64,
}

/// An open watch stream and which watch id is which target.
struct WatchStream {
    /// The request side; dropping it would half-close the stream.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    /// Created responses seen so far: etcd answers create requests in order.
    created: usize,
    ids: HashMap<i64, usize>,
}

/// Why [`Watcher::drive`] returned.
enum Outcome {
    /// The subscription ended (cancelled, or the receiver is gone).
    Stop,
    /// The stream broke; re-open it.
    Broken(String),
}

/// The task behind one subscription.
struct Watcher {
    client: EtcdClient,
    targets: Vec<Target>,
    /// Stored-key prefix stripped to get an item's key.
    base: String,
    group: String,
    label: String,
    tx: mpsc::Sender<Vec<ConfigItem>>,
    token: CancellationToken,
    backoff: Duration,
}

impl Watcher {
    /// Open a stream with one watcher per target, each from its `next_rev`.
    async fn open(&self) -> Result<WatchStream> {
        let creates: Vec<WatchCreateRequest> = self
            .targets
            .iter()
            .map(|t| WatchCreateRequest {
                key: t.key.clone(),
                range_end: t.range_end.clone(),
                start_revision: t.next_rev,
                ..Default::default()
            })
            .collect();
        let (requests, responses) = self.client.watch(&creates).await?;
        Ok(WatchStream {
            _requests: requests,
            responses,
            created: 0,
            ids: HashMap::new(),
        })
    }

    /// Deliver changes until the subscription ends, re-opening the stream whenever it breaks.
    async fn run(mut self, mut stream: WatchStream) {
        loop {
            match self.drive(&mut stream).await {
                Outcome::Stop => return,
                Outcome::Broken(reason) => {
                    tracing::warn!(prefix = %self.base, %reason, "etcd config watch broken; re-establishing");
                }
            }
            loop {
                tokio::select! {
                    _ = self.token.cancelled() => return,
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(self.backoff) => {}
                }
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                match self.open().await {
                    Ok(s) => {
                        stream = s;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(prefix = %self.base, error = %e, "etcd config watch: reconnect failed")
                    }
                }
            }
        }
    }

    /// Read `stream` and forward its events until it breaks or the subscription ends.
    async fn drive(&mut self, stream: &mut WatchStream) -> Outcome {
        loop {
            let message = tokio::select! {
                _ = self.token.cancelled() => return Outcome::Stop,
                _ = self.tx.closed() => return Outcome::Stop,
                m = stream.responses.message() => m,
            };
            let response = match message {
                Ok(Some(r)) => r,
                Ok(None) => return Outcome::Broken("stream closed by etcd".into()),
                Err(status) => return Outcome::Broken(etcd::map_err(status).to_string()),
            };

            if response.created {
                let index = stream.created;
                stream.created += 1;
                if response.canceled {
                    // Typically a permission error, e.g. an auth token that expired meanwhile.
                    if let Err(e) = self.client.refresh_token(self.client.current_token()).await {
                        tracing::debug!(error = %e, "etcd config watch: re-authentication failed");
                    }
                    return Outcome::Broken(format!("watch refused: {}", response.cancel_reason));
                }
                stream.ids.insert(response.watch_id, index);
                if stream.created == self.targets.len() {
                    self.backoff = BACKOFF_START;
                }
                continue;
            }

            let Some(&index) = stream.ids.get(&response.watch_id) else {
                continue;
            };
            let Some(target) = self.targets.get_mut(index) else {
                continue;
            };
            if response.canceled {
                if response.compact_revision > 0 {
                    // The history we needed is gone: resume from the oldest revision kept.
                    target.next_rev = target.next_rev.max(response.compact_revision);
                    return Outcome::Broken(format!(
                        "revisions before {} were compacted; some changes were not delivered",
                        response.compact_revision
                    ));
                }
                return Outcome::Broken(format!("watch cancelled: {}", response.cancel_reason));
            }

            let items = self.items(index, response.events).await;
            if items.is_empty() {
                continue;
            }
            tokio::select! {
                _ = self.token.cancelled() => return Outcome::Stop,
                sent = self.tx.send(items) => if sent.is_err() { return Outcome::Stop },
            }
        }
    }

    /// The items for `events` of target `index`, advancing its resume revision.
    async fn items(&mut self, index: usize, events: Vec<Event>) -> Vec<ConfigItem> {
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            let Some(kv) = event.kv else { continue };
            if let Some(target) = self.targets.get_mut(index) {
                target.next_rev = target.next_rev.max(kv.mod_revision + 1);
            }
            let full = String::from_utf8_lossy(&kv.key).into_owned();
            let Some(key) = full.strip_prefix(&self.base) else {
                continue;
            };
            if key.ends_with(TAGS_SUFFIX) {
                continue;
            }
            let (content, tags) = if event.r#type == EventType::Delete as i32 {
                (String::new(), Metadata::new())
            } else {
                let tags = self.tags_at(&full, kv.mod_revision).await;
                (String::from_utf8_lossy(&kv.value).into_owned(), tags)
            };
            items.push(ConfigItem {
                key: key.to_string(),
                content,
                group: self.group.clone(),
                label: self.label.clone(),
                tags,
                metadata: Metadata::new(),
            });
        }
        items
    }

    /// The tags of `stored` as of `revision` (written in the same transaction as the content),
    /// or the current ones when that revision was compacted.
    async fn tags_at(&self, stored: &str, revision: i64) -> Metadata {
        let key = tags_key(stored).into_bytes();
        let at = RangeRequest {
            key: key.clone(),
            revision,
            ..Default::default()
        };
        let kv = match self.client.range(at).await {
            Ok(r) => r.kvs.into_iter().next(),
            Err(_) => self.client.get(key).await.ok().flatten(),
        };
        kv.map(|kv| parse_tags(stored, &kv.value))
            .unwrap_or_default()
    }
}
