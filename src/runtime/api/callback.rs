//! The app's side of pub/sub: layer8 dials the app's `AppCallback` (at `grpc_callback_host:port`),
//! asks `ListTopicSubscriptions`, subscribes each topic, and delivers with `OnTopicEvent`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
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

/// How long one AppCallback call may take: shorter than a broker's default `processingTimeout`
/// (60 s), so another replica does not reclaim a message still being delivered here.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Dial the app and subscribe what it asks for, retrying until the app answers (and each
/// subscription until its broker accepts it). Stops when `stop` is cancelled. The
/// subscriptions live as long as the runtime.
pub async fn subscribe_app(
    components: Arc<Components>,
    subscriptions: Arc<tokio::sync::Mutex<Vec<Subscription>>>,
    stop: CancellationToken,
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
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy();
    let client = AppCallbackClient::new(channel);
    let mut backoff = Backoff::default();
    let subs = loop {
        match client.clone().list_topic_subscriptions(()).await {
            Ok(r) => break r.into_inner().subscriptions,
            // An app without ListTopicSubscriptions subscribes to nothing.
            Err(s) if s.code() == Code::Unimplemented => return,
            Err(e) => {
                tracing::info!(%uri, error = %e, "app callback not ready; retrying ListTopicSubscriptions");
                if !backoff.wait(&stop).await {
                    return;
                }
            }
        }
    };
    for s in subs {
        let Some(ps) = components.pubsubs.get(&s.pubsub_name) else {
            tracing::warn!(pubsub = %s.pubsub_name, topic = %s.topic, "app subscribes to an unknown pubsub; ignored");
            continue;
        };
        let mut backoff = Backoff::default();
        loop {
            let sub = Arc::new(AppSubscriber {
                pubsub: s.pubsub_name.clone(),
                client: client.clone(),
            });
            match ps.inner.subscribe(&s.topic, &s.metadata, sub).await {
                Ok(h) => {
                    tracing::info!(pubsub = %s.pubsub_name, topic = %s.topic, "app subscribed");
                    let mut held = subscriptions.lock().await;
                    if stop.is_cancelled() {
                        return;
                    }
                    held.push(h);
                    break;
                }
                Err(e) => {
                    tracing::warn!(pubsub = %s.pubsub_name, topic = %s.topic, error = %e, "subscription failed; retrying");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Exponential backoff from 100 ms to 5 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(100))
    }
}

impl Backoff {
    /// Sleep the current delay and double it; false if `stop` fired first.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = stop.cancelled() => false,
        }
    }
}
