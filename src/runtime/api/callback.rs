//! The app's side of pub/sub: layer8 dials the app's `AppCallback` (at `grpc_callback_host:port`),
//! asks `ListTopicSubscriptions`, subscribes each topic, and delivers with `OnTopicEvent`.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{async_trait, Code};

use super::pubsub::{outcome, to_event};
use crate::runtime::components::registry::Components;
use crate::runtime::components::{Delivery, Outcome, Subscriber, Subscription};
use crate::runtime::proto::rt;
use crate::runtime::proto::rt::app_callback_client::AppCallbackClient;
use crate::stats;

/// Delivers one subscription's messages to the app.
struct AppSubscriber {
    pubsub: String,
    client: AppCallbackClient<Channel>,
}

#[async_trait]
impl Subscriber for AppSubscriber {
    async fn deliver(&self, msg: Delivery) -> Outcome {
        let ev = to_event(&self.pubsub, &msg);
        let mut client = self.client.clone();
        match client.on_topic_event(ev).await {
            Ok(resp) => {
                let status = resp.into_inner().status;
                let out = outcome(Some(status));
                if status == rt::topic_event_response::TopicEventResponseStatus::Drop as i32 {
                    stats::counter("runtime.pubsub.drop").increment(1);
                }
                out
            }
            // An app without OnTopicEvent drops the message, as in Layotto.
            Err(s) if s.code() == Code::Unimplemented => Outcome::Done,
            Err(s) => {
                tracing::debug!(pubsub = %self.pubsub, topic = %msg.topic, error = %s, "OnTopicEvent failed; will redeliver");
                stats::counter("runtime.pubsub.retry").increment(1);
                Outcome::Retry
            }
        }
    }
}

/// Dial the app and subscribe what it asks for, retrying until the app answers. The returned
/// subscriptions live as long as the runtime.
pub async fn subscribe_app(
    components: Arc<Components>,
    subscriptions: Arc<tokio::sync::Mutex<Vec<Subscription>>>,
) {
    let app = &components.app;
    if app.callback_port == 0 || components.pubsubs.is_empty() {
        return;
    }
    let uri = format!("http://{}:{}", app.callback_host, app.callback_port);
    let Ok(endpoint) = Endpoint::from_shared(uri.clone()) else {
        tracing::error!(%uri, "bad app callback address");
        return;
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy();
    let client = AppCallbackClient::new(channel);
    let mut backoff = Duration::from_millis(100);
    let subs = loop {
        match client.clone().list_topic_subscriptions(()).await {
            Ok(r) => break r.into_inner().subscriptions,
            Err(e) => {
                tracing::info!(%uri, error = %e, "app callback not ready; retrying ListTopicSubscriptions");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    for s in subs {
        let Some(ps) = components.pubsubs.get(&s.pubsub_name) else {
            tracing::warn!(pubsub = %s.pubsub_name, topic = %s.topic, "app subscribes to an unknown pubsub; ignored");
            continue;
        };
        let sub = Arc::new(AppSubscriber {
            pubsub: s.pubsub_name.clone(),
            client: client.clone(),
        });
        match ps.inner.subscribe(&s.topic, &s.metadata, sub).await {
            Ok(h) => {
                tracing::info!(pubsub = %s.pubsub_name, topic = %s.topic, "app subscribed");
                subscriptions.lock().await.push(h);
            }
            Err(e) => {
                tracing::error!(pubsub = %s.pubsub_name, topic = %s.topic, error = %e, "subscription failed")
            }
        }
    }
}
