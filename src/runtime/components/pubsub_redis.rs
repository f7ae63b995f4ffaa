//! `redis` pub/sub on Redis Streams with consumer groups, as Dapr's: a topic is a stream, each
//! message an entry with field `data` (and `metadata`, a JSON object, when the publisher gave
//! any). Subscribers share the consumer group named by `consumerID`, so the instances of an app
//! split a topic's messages between them.
//!
//! Delivery is at least once. A message is acknowledged (`XACK`) only after the subscriber
//! returns [`Outcome::Done`]; anything else (a retry, a crash, a lost reply) leaves it pending in
//! the group, and every `redeliverInterval` each subscription claims (`XAUTOCLAIM`) the messages
//! pending for longer than `processingTimeout`, from any consumer of the group, and delivers them
//! again.
//!
//! Metadata, besides the connection keys of [`super::redis`]: `consumerID` (the group, default
//! `layer8`), `processingTimeout` (default 60s), `redeliverInterval` (default 15s; `0` turns
//! redelivery off, leaving unacknowledged messages pending), `concurrency` or `queueDepth` (the
//! messages handled at once per subscription, default 10) and `maxLenApprox` (trim each stream
//! to about that many entries on publish).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use ::redis::{from_redis_value, RedisError, Script};
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::async_trait;

use super::redis::{connect, duration, map_err, number, setting, RedisConn};
use super::{
    ComponentError, Delivery, Health, Metadata, Outcome, PubSub, Result, Subscriber, Subscription,
};
use crate::runtime::config::parse_duration;

const DEFAULT_GROUP: &str = "layer8";
const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REDELIVER_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_CONCURRENCY: usize = 10;
const MAX_CONCURRENCY: usize = 10_000;
/// How long one `XREADGROUP` waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// `KEYS[1]` stream, `ARGV[1]` group, `ARGV[2]` consumer: remove the consumer from the group
/// unless messages are still pending for it (removing it would drop them).
static FORGET_CONSUMER: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r#"
local pending = redis.call("XPENDING", KEYS[1], ARGV[1], "-", "+", 1, ARGV[2])
if #pending > 0 then return 0 end
return redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], ARGV[2]) + 1
"#,
    )
});

/// A pub/sub broker on one Redis server.
#[derive(Debug, Clone)]
pub struct RedisPubSub {
    conn: RedisConn,
    settings: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    group: String,
    processing_timeout: Duration,
    redeliver_interval: Option<Duration>,
    concurrency: usize,
    max_len: Option<usize>,
}

impl RedisPubSub {
    /// Connect to the server named by `metadata`; see the module docs for the keys.
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        let redeliver_interval = match setting(metadata, "redeliverInterval") {
            None => Some(DEFAULT_REDELIVER_INTERVAL),
            Some(v) => match parse_duration(v) {
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
                None => return Err(format!("redeliverInterval: invalid duration {v:?}")),
            },
        };
        let concurrency = match number::<usize>(metadata, "concurrency")? {
            Some(n) => Some(n),
            None => number::<usize>(metadata, "queueDepth")?,
        };
        let settings = Settings {
            group: setting(metadata, "consumerID")
                .unwrap_or(DEFAULT_GROUP)
                .to_string(),
            processing_timeout: duration(
                metadata,
                "processingTimeout",
                DEFAULT_PROCESSING_TIMEOUT,
            )?,
            redeliver_interval,
            concurrency: concurrency
                .unwrap_or(DEFAULT_CONCURRENCY)
                .clamp(1, MAX_CONCURRENCY),
            max_len: number::<usize>(metadata, "maxLenApprox")?.filter(|&n| n > 0),
        };
        Ok(RedisPubSub {
            conn: connect(metadata).await?,
            settings: Arc::new(settings),
        })
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, topic: &str, data: Bytes, metadata: &Metadata) -> Result<()> {
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(topic);
        if let Some(n) = self.settings.max_len {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg("data").arg(&data[..]);
        if !metadata.is_empty() {
            let json = serde_json::to_string(metadata)
                .map_err(|e| ComponentError::Internal(format!("metadata: {e}")))?;
            cmd.arg("metadata").arg(json);
        }
        // Repeating an XADD whose reply was lost duplicates the message, which at-least-once
        // delivery allows.
        let _id: String = self.conn.query_idempotent(&cmd).await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        _metadata: &Metadata,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<Subscription> {
        let consumer = Arc::new(Consumer {
            conn: self.conn.clone(),
            settings: self.settings.clone(),
            topic: topic.to_string(),
            name: format!("layer8-{}", uuid::Uuid::new_v4()),
            subscriber,
            permits: Arc::new(Semaphore::new(self.settings.concurrency)),
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        });
        // Start at the stream's end: a new group gets what is published from now on.
        consumer.ensure_group("$").await?;
        let token = CancellationToken::new();
        tokio::spawn(consumer.run(token.clone()));
        Ok(Subscription::new(token))
    }

    async fn health(&self) -> Health {
        self.conn.health().await
    }
}

/// Why reading or claiming failed.
enum Failure {
    /// The group (or the whole stream) is gone: Redis restarted without persistence, or the
    /// stream was deleted.
    NoGroup,
    /// Anything else; worth retrying after a pause.
    Other(ComponentError),
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        if e.code() == Some("NOGROUP") {
            Failure::NoGroup
        } else {
            Failure::Other(map_err(e))
        }
    }
}

impl From<ComponentError> for Failure {
    fn from(e: ComponentError) -> Self {
        Failure::Other(e)
    }
}

/// One subscription: one consumer of the group.
struct Consumer {
    conn: RedisConn,
    settings: Arc<Settings>,
    topic: String,
    name: String,
    subscriber: Arc<dyn Subscriber>,
    /// One permit per message being handled.
    permits: Arc<Semaphore>,
    /// Ids of the messages this subscription is handling, so a claim does not deliver them twice.
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Consumer {
    /// Read new messages and reclaim stale ones until `token` is cancelled; then let the
    /// messages being handled finish and leave the group if nothing is pending.
    async fn run(self: Arc<Self>, token: CancellationToken) {
        tokio::join!(self.read_loop(&token), self.reclaim_loop(&token));
        self.leave().await;
    }

    /// Create the group at `start` (`$`: new messages only; `0`: everything in the stream),
    /// creating the stream too if missing. An existing group is left as it is.
    async fn ensure_group(&self, start: &str) -> Result<()> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.topic)
            .arg(&self.settings.group)
            .arg(start)
            .arg("MKSTREAM");
        match self.conn.query_raw::<()>(&cmd).await {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(map_err(e)),
            _ => Ok(()),
        }
    }

    /// After the group was lost, create it again from the stream's start: whatever survived in
    /// the stream is delivered again rather than skipped.
    async fn recreate_group(&self) -> Result<()> {
        tracing::info!(topic = %self.topic, group = %self.settings.group, "redis pubsub: consumer group missing; creating it again");
        self.ensure_group("0").await
    }

    /// `XREADGROUP ... BLOCK` on a connection of its own, reconnecting after failures.
    async fn read_loop(self: &Arc<Self>, token: &CancellationToken) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut outage = Outage::new("reading");
        loop {
            let Some(first) = self.permit(token).await else {
                return;
            };
            let count = 1 + self.permits.available_permits();
            let read = tokio::select! {
                _ = token.cancelled() => return,
                r = self.read(&mut conn, count) => r,
            };
            let failure = match read {
                Ok(entries) => {
                    outage.recovered(self);
                    // Marked in flight at once, so a claim cannot take them while they wait.
                    let entries: Vec<_> = entries
                        .into_iter()
                        .filter_map(|e| InFlight::enter(self, &e.id).map(|g| (e, g)))
                        .collect();
                    let mut first = Some(first);
                    for (entry, guard) in entries {
                        let permit = match first.take() {
                            Some(p) => p,
                            // Cancelled: the rest stay pending and are claimed later.
                            None => match self.permit(token).await {
                                Some(p) => p,
                                None => return,
                            },
                        };
                        self.dispatch(entry, guard, permit);
                    }
                    continue;
                }
                Err(Failure::NoGroup) => match self.recreate_group().await {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                Err(Failure::Other(e)) => {
                    conn = None;
                    e
                }
            };
            if !outage.failed(self, &failure, token).await {
                return;
            }
        }
    }

    async fn read(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        count: usize,
    ) -> std::result::Result<Vec<StreamId>, Failure> {
        let conn = match conn {
            Some(c) => c,
            None => conn.insert(
                self.conn
                    .dedicated(BLOCK + self.conn.read_timeout())
                    .await?,
            ),
        };
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.settings.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.topic)
            .arg(">");
        // Nil when nothing arrived while blocking.
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect())
    }

    /// Every `redeliverInterval`, claim and deliver again what waited longer than
    /// `processingTimeout`; the first round runs at once, to pick up what a previous run left.
    async fn reclaim_loop(self: &Arc<Self>, token: &CancellationToken) {
        let Some(interval) = self.settings.redeliver_interval else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outage = Outage::new("reclaiming");
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                _ = token.cancelled() => return,
                r = self.reclaim(token) => r,
            };
            // A failed round is retried at the next tick, which paces it well enough.
            match result {
                Ok(()) => outage.recovered(self),
                Err(Failure::NoGroup) => {
                    if let Err(e) = self.recreate_group().await {
                        outage.report(self, &e);
                    }
                }
                Err(Failure::Other(e)) => outage.report(self, &e),
            }
        }
    }

    async fn reclaim(
        self: &Arc<Self>,
        token: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let min_idle =
            u64::try_from(self.settings.processing_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut cursor = "0-0".to_string();
        loop {
            let Some(first) = self.permit(token).await else {
                return Ok(());
            };
            let count = 1 + self.permits.available_permits();
            let mut cmd = ::redis::cmd("XAUTOCLAIM");
            cmd.arg(&self.topic)
                .arg(&self.settings.group)
                .arg(&self.name)
                .arg(min_idle)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count);
            let reply: StreamAutoClaimReply = self.conn.query_raw(&cmd).await?;
            let mut first = Some(first);
            for entry in reply.claimed {
                // Still being handled here (slowly): claiming only reset its idle time.
                let Some(guard) = InFlight::enter(self, &entry.id) else {
                    continue;
                };
                let permit = match first.take() {
                    Some(p) => p,
                    None => match self.permit(token).await {
                        Some(p) => p,
                        None => return Ok(()),
                    },
                };
                tracing::debug!(topic = %self.topic, id = %entry.id, "redis pubsub: redelivering");
                self.dispatch(entry, guard, permit);
            }
            if reply.next_stream_id == "0-0" || reply.next_stream_id == cursor {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
    }

    /// A handling slot, or `None` once cancelled.
    async fn permit(&self, token: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            _ = token.cancelled() => None,
            p = self.permits.clone().acquire_owned() => p.ok(),
        }
    }

    /// Hand `entry` to the subscriber on a task of its own; acknowledge it when done.
    fn dispatch(self: &Arc<Self>, entry: StreamId, guard: InFlight, permit: OwnedSemaphorePermit) {
        let this = self.clone();
        tokio::spawn(async move {
            // Dropped in reverse order: the id leaves the in-flight set, then the slot frees.
            let _permit = permit;
            let _guard = guard;
            let id = entry.id.clone();
            let msg = this.delivery(entry);
            if this.subscriber.deliver(msg).await == Outcome::Done {
                this.ack(&id).await;
            }
        });
    }

    fn delivery(&self, mut entry: StreamId) -> Delivery {
        let data = entry
            .map
            .remove("data")
            .and_then(|v| from_redis_value::<Vec<u8>>(v).ok())
            .unwrap_or_default();
        let metadata = match entry.map.remove("metadata") {
            None => Metadata::new(),
            Some(v) => from_redis_value::<String>(v)
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_else(|| {
                    tracing::debug!(topic = %self.topic, id = %entry.id, "redis pubsub: ignoring unreadable metadata");
                    Metadata::new()
                }),
        };
        Delivery {
            topic: self.topic.clone(),
            data: data.into(),
            metadata,
        }
    }

    /// `XACK`; on failure the message stays pending and is delivered again later.
    async fn ack(&self, id: &str) {
        let mut cmd = ::redis::cmd("XACK");
        cmd.arg(&self.topic).arg(&self.settings.group).arg(id);
        if let Err(e) = self.conn.query_idempotent::<i64>(&cmd).await {
            tracing::warn!(topic = %self.topic, id, error = %e, "redis pubsub: acknowledging failed; the message will be delivered again");
        }
    }

    /// Wait (at most `processingTimeout`) for the messages being handled, then remove this
    /// consumer from the group if nothing is pending for it, so ended subscriptions do not pile
    /// up in the group.
    async fn leave(&self) {
        let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            self.settings.processing_timeout,
            self.permits.acquire_many(all),
        )
        .await;
        if !matches!(drained, Ok(Ok(_))) {
            return;
        }
        let mut call = FORGET_CONSUMER.key(&self.topic);
        call.arg(&self.settings.group).arg(&self.name);
        if let Err(e) = self.conn.invoke::<i64>(&call).await {
            tracing::debug!(topic = %self.topic, consumer = %self.name, error = %e, "redis pubsub: could not leave the consumer group");
        }
    }
}

/// Marks a message as being handled by this subscription until dropped.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl InFlight {
    /// Mark `id`; `None` if it is already being handled.
    fn enter(consumer: &Consumer, id: &str) -> Option<InFlight> {
        let set = consumer.in_flight.clone();
        let fresh = set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
        fresh.then(|| InFlight {
            set,
            id: id.to_string(),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Warns once per outage and paces retries (100 ms doubling to 2 s).
struct Outage {
    what: &'static str,
    failing: bool,
    delay: Duration,
}

impl Outage {
    fn new(what: &'static str) -> Self {
        Outage {
            what,
            failing: false,
            delay: BACKOFF_MIN,
        }
    }

    fn recovered(&mut self, c: &Consumer) {
        if self.failing {
            tracing::info!(topic = %c.topic, group = %c.settings.group, "redis pubsub: {} recovered", self.what);
        }
        self.failing = false;
        self.delay = BACKOFF_MIN;
    }

    fn report(&mut self, c: &Consumer, error: &ComponentError) {
        if !self.failing {
            tracing::warn!(topic = %c.topic, group = %c.settings.group, %error, "redis pubsub: {} failed; retrying", self.what);
            self.failing = true;
        }
    }

    /// Report, then pause; `false` if cancelled meanwhile.
    async fn failed(
        &mut self,
        c: &Consumer,
        error: &ComponentError,
        token: &CancellationToken,
    ) -> bool {
        self.report(c, error);
        let delay = self.delay;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = token.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
