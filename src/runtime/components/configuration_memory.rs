//! `in-memory` configuration store, with subscriptions notified on every save and delete.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::async_trait;

use super::{ConfigItem, ConfigQuery, ConfigStore, Health, Result, Subscription};

type Key = (String, String, String, String);

/// An in-process configuration store keyed by (app_id, group, label, key).
#[derive(Debug)]
pub struct MemoryConfigStore {
    items: Arc<Mutex<BTreeMap<Key, ConfigItem>>>,
    changes: broadcast::Sender<(String, ConfigItem)>,
}

impl Default for MemoryConfigStore {
    fn default() -> Self {
        MemoryConfigStore {
            items: Arc::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

impl MemoryConfigStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn group(g: &str) -> String {
    if g.is_empty() {
        "default".into()
    } else {
        g.to_string()
    }
}

fn matches(q: &ConfigQuery, app_id: &str, item: &ConfigItem) -> bool {
    app_id == q.app_id
        && item.group == group(&q.group)
        && (q.label.is_empty() || item.label == q.label)
        && (q.keys.is_empty() || q.keys.contains(&item.key))
}

#[async_trait]
impl ConfigStore for MemoryConfigStore {
    async fn get(&self, q: &ConfigQuery) -> Result<Vec<ConfigItem>> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items
            .iter()
            .filter(|((app, ..), item)| matches(q, app, item))
            .map(|(_, i)| i.clone())
            .collect())
    }

    async fn save(&self, app_id: &str, items: Vec<ConfigItem>) -> Result<()> {
        let mut store = self.items.lock().unwrap_or_else(|p| p.into_inner());
        for mut item in items {
            item.group = group(&item.group);
            let k = (
                app_id.to_string(),
                item.group.clone(),
                item.label.clone(),
                item.key.clone(),
            );
            store.insert(k, item.clone());
            let _ = self.changes.send((app_id.to_string(), item));
        }
        Ok(())
    }

    async fn delete(&self, q: &ConfigQuery) -> Result<()> {
        let mut store = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<Key> = store
            .iter()
            .filter(|((app, ..), item)| matches(q, app, item))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(mut item) = store.remove(&k) {
                item.content.clear();
                let _ = self.changes.send((k.0, item));
            }
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        q: &ConfigQuery,
        tx: mpsc::Sender<Vec<ConfigItem>>,
    ) -> Result<Subscription> {
        let mut rx = self.changes.subscribe();
        let q = q.clone();
        let items = self.items.clone();
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tx.closed() => break,
                    c = rx.recv() => c,
                };
                match change {
                    Ok((app, item)) if matches(&q, &app, &item) => {
                        if tx.send(vec![item]).await.is_err() {
                            break;
                        }
                    }
                    // Fell behind and missed changes: send the current value of every item
                    // the subscription covers instead.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let mut now: Vec<ConfigItem> = items
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .iter()
                            .filter(|((app, ..), item)| matches(&q, app, item))
                            .map(|(_, i)| i.clone())
                            .collect();
                        // A named key that is gone may have been deleted in what was missed:
                        // report it as deleted (empty content), as a live delete would be.
                        for key in &q.keys {
                            if !now.iter().any(|i| &i.key == key) {
                                now.push(ConfigItem {
                                    key: key.clone(),
                                    group: group(&q.group),
                                    label: q.label.clone(),
                                    ..Default::default()
                                });
                            }
                        }
                        if !now.is_empty() && tx.send(now).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Subscription::new(token))
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}
