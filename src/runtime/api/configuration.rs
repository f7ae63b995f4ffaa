//! Configuration API: Get, Save, Delete and the streaming Subscribe.

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::status::{component, store};
use super::Shared;
use crate::runtime::components::{ConfigItem, ConfigQuery};
use crate::runtime::proto::rt;

/// The SubscribeConfiguration response stream.
pub type ConfigStream =
    Pin<Box<dyn Stream<Item = Result<rt::SubscribeConfigurationResponse, Status>> + Send>>;

fn app_id(s: &Shared, requested: &str) -> String {
    if requested.is_empty() {
        s.components.app.app_id.clone()
    } else {
        requested.to_string()
    }
}

fn to_proto(i: ConfigItem) -> rt::ConfigurationItem {
    rt::ConfigurationItem {
        key: i.key,
        content: i.content,
        group: i.group,
        label: i.label,
        tags: i.tags,
        metadata: i.metadata,
    }
}

/// `GetConfiguration`.
pub async fn get(
    s: &Shared,
    r: rt::GetConfigurationRequest,
) -> Result<rt::GetConfigurationResponse, Status> {
    let st = store(&s.components.config, &r.store_name, "configuration")?;
    let q = ConfigQuery {
        app_id: app_id(s, &r.app_id),
        group: r.group,
        label: r.label,
        keys: r.keys,
    };
    let what = format!("GetConfiguration from store {}", r.store_name);
    let items = st.inner.get(&q).await.map_err(|e| component(e, &what))?;
    Ok(rt::GetConfigurationResponse {
        items: items.into_iter().map(to_proto).collect(),
    })
}

/// `SaveConfiguration`.
pub async fn save(s: &Shared, r: rt::SaveConfigurationRequest) -> Result<(), Status> {
    let st = store(&s.components.config, &r.store_name, "configuration")?;
    let items = r
        .items
        .into_iter()
        .map(|i| {
            if i.key.is_empty() {
                return Err(Status::invalid_argument("configuration item key is empty"));
            }
            Ok(ConfigItem {
                key: i.key,
                content: i.content,
                group: i.group,
                label: i.label,
                tags: i.tags,
                metadata: i.metadata,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let what = format!("SaveConfiguration to store {}", r.store_name);
    st.inner
        .save(&app_id(s, &r.app_id), items)
        .await
        .map_err(|e| component(e, &what))
}

/// `DeleteConfiguration`.
pub async fn delete(s: &Shared, r: rt::DeleteConfigurationRequest) -> Result<(), Status> {
    let st = store(&s.components.config, &r.store_name, "configuration")?;
    let q = ConfigQuery {
        app_id: app_id(s, &r.app_id),
        group: r.group,
        label: r.label,
        keys: r.keys,
    };
    let what = format!("DeleteConfiguration in store {}", r.store_name);
    st.inner.delete(&q).await.map_err(|e| component(e, &what))
}

/// `SubscribeConfiguration`: every request message adds a subscription; changes stream back
/// until the client closes its side.
pub async fn subscribe(
    s: &Shared,
    mut input: Streaming<rt::SubscribeConfigurationRequest>,
) -> Result<ConfigStream, Status> {
    let (out_tx, out_rx) = mpsc::channel::<Result<rt::SubscribeConfigurationResponse, Status>>(64);
    let components = s.components.clone();
    let default_app = s.components.app.app_id.clone();
    tokio::spawn(async move {
        let mut subs = Vec::new();
        loop {
            let req = match input.message().await {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            let st = match store(&components.config, &req.store_name, "configuration") {
                Ok(st) => st,
                Err(e) => {
                    let _ = out_tx.send(Err(e)).await;
                    break;
                }
            };
            let app = if req.app_id.is_empty() {
                default_app.clone()
            } else {
                req.app_id.clone()
            };
            let q = ConfigQuery {
                app_id: app.clone(),
                group: req.group,
                label: req.label,
                keys: req.keys,
            };
            let (tx, mut rx) = mpsc::channel::<Vec<ConfigItem>>(64);
            match st.inner.subscribe(&q, tx).await {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    let what = format!("SubscribeConfiguration to store {}", req.store_name);
                    let _ = out_tx.send(Err(component(e, &what))).await;
                    break;
                }
            }
            let out = out_tx.clone();
            let store_name = req.store_name.clone();
            tokio::spawn(async move {
                while let Some(items) = rx.recv().await {
                    let msg = rt::SubscribeConfigurationResponse {
                        store_name: store_name.clone(),
                        app_id: app.clone(),
                        items: items.into_iter().map(to_proto).collect(),
                    };
                    if out.send(Ok(msg)).await.is_err() {
                        break;
                    }
                }
            });
        }
        // Keep the subscriptions while the client still listens.
        if !subs.is_empty() {
            out_tx.closed().await;
        }
        drop(subs);
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        out_rx,
    )))
}
