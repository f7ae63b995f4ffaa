//! `in-memory` pub/sub: fan-out to every current subscriber of a topic, redelivering a message
//! the subscriber asks to retry after `redeliverInterval` (default 1 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::async_trait;

use super::{Delivery, Health, Metadata, Outcome, PubSub, Result, Subscriber, Subscription};
use crate::runtime::config::parse_duration;

type Queue = mpsc::UnboundedSender<Delivery>;

/// An in-process broker. Messages published while nobody subscribes are dropped, as in Dapr's.
#[derive(Debug)]
pub struct MemoryPubSub {
    topics: Mutex<HashMap<String, Vec<(u64, Queue)>>>,
    next_id: std::sync::atomic::AtomicU64,
    redeliver: Duration,
}

impl MemoryPubSub {
    /// A broker; `redeliverInterval` in `metadata` sets the retry delay.
    pub fn new(metadata: &Metadata) -> std::result::Result<Arc<Self>, String> {
        let redeliver = match metadata.get("redeliverInterval") {
            Some(s) => {
                parse_duration(s).ok_or_else(|| format!("redeliverInterval: bad duration '{s}'"))?
            }
            None => Duration::from_secs(1),
        };
        Ok(Arc::new(MemoryPubSub {
            topics: Mutex::new(HashMap::new()),
            next_id: Default::default(),
            redeliver,
        }))
    }
}

#[async_trait]
impl PubSub for MemoryPubSub {
    async fn publish(&self, topic: &str, data: Bytes, metadata: &Metadata) -> Result<()> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = topics.get_mut(topic) {
            subs.retain(|(_, q)| {
                q.send(Delivery {
                    topic: topic.to_string(),
                    data: data.clone(),
                    metadata: metadata.clone(),
                })
                .is_ok()
            });
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        _metadata: &Metadata,
        subscriber: Arc<dyn Subscriber>,
    ) -> Result<Subscription> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_string())
            .or_default()
            .push((id, tx.clone()));
        let token = CancellationToken::new();
        let cancelled = token.clone();
        let redeliver = self.redeliver;
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = cancelled.cancelled() => break,
                    m = rx.recv() => match m { Some(m) => m, None => break },
                };
                let outcome = tokio::select! {
                    _ = cancelled.cancelled() => break,
                    o = subscriber.deliver(msg.clone()) => o,
                };
                if outcome == Outcome::Retry {
                    let again = tx.clone();
                    let stop = cancelled.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep(redeliver) => { let _ = again.send(msg); }
                        }
                    });
                }
            }
        });
        Ok(Subscription::new(token))
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}
