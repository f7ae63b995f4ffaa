//! Pub/sub API: PublishEvent (wrapped in a CloudEvents 1.0 envelope) and the streaming
//! SubscribeTopicEvents, which needs no app server.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{async_trait, Status, Streaming};

use super::status::{component, store};
use super::Shared;
use crate::runtime::components::{Delivery, Metadata, Outcome, PubSub, Subscriber};
use crate::runtime::proto::rt;

/// CloudEvents `type` of events the runtime publishes (Layotto's).
pub const EVENT_TYPE: &str = "com.runtime.event.sent";
/// CloudEvents `source` of events the runtime publishes (Layotto's).
pub const EVENT_SOURCE: &str = "runtime";
const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// The SubscribeTopicEvents response stream.
pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<rt::SubscribeTopicEventsResponse, Status>> + Send>>;

/// Wrap `data` in a CloudEvents envelope (or take it as the envelope when it already is one).
pub fn envelope(
    pubsub: &str,
    topic: &str,
    data: &[u8],
    content_type: &str,
) -> Result<Vec<u8>, Status> {
    if content_type.starts_with(CLOUDEVENTS_JSON) {
        let mut v: Value = serde_json::from_slice(data).map_err(|e| {
            Status::invalid_argument(format!("data is not a CloudEvents JSON envelope: {e}"))
        })?;
        if let Some(o) = v.as_object_mut() {
            o.entry("id")
                .or_insert_with(|| json!(uuid::Uuid::new_v4().to_string()));
            o.entry("specversion").or_insert_with(|| json!("1.0"));
            o.entry("source").or_insert_with(|| json!(EVENT_SOURCE));
            o.entry("type").or_insert_with(|| json!(EVENT_TYPE));
            o.insert("topic".into(), json!(topic));
            o.insert("pubsubname".into(), json!(pubsub));
        }
        return Ok(v.to_string().into_bytes());
    }
    let content_type = if content_type.is_empty() {
        "text/plain"
    } else {
        content_type
    };
    let mut ev = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "source": EVENT_SOURCE,
        "type": EVENT_TYPE,
        "specversion": "1.0",
        "datacontenttype": content_type,
        "topic": topic,
        "pubsubname": pubsub,
    });
    let is_json = content_type.contains("json");
    let payload = match (is_json, std::str::from_utf8(data)) {
        (true, Ok(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => Some(("data", v)),
            Err(_) => Some(("data", json!(s))),
        },
        (false, Ok(s)) => Some(("data", json!(s))),
        (_, Err(_)) => Some(("data_base64", json!(BASE64.encode(data)))),
    };
    if let (Some((k, v)), Some(o)) = (payload, ev.as_object_mut()) {
        o.insert(k.into(), v);
    }
    Ok(ev.to_string().into_bytes())
}

/// A delivered envelope as the app sees it (`TopicEventRequest`).
pub fn to_event(pubsub: &str, d: &Delivery) -> rt::TopicEventRequest {
    let v: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let json_data = field("datacontenttype").contains("json");
    let data = match (v.get("data"), v.get("data_base64")) {
        // JSON data goes to the app as JSON (a string keeps its quotes), as Dapr does.
        (Some(Value::String(s)), _) if !json_data => s.clone().into_bytes(),
        (Some(other), _) => other.to_string().into_bytes(),
        (None, Some(Value::String(b))) => BASE64.decode(b).unwrap_or_default(),
        // Not an envelope (published by something else): pass the bytes through.
        _ if v.is_null() => d.data.to_vec(),
        _ => Vec::new(),
    };
    let mut metadata = d.metadata.clone();
    metadata.insert("pubsubName".into(), pubsub.to_string());
    rt::TopicEventRequest {
        id: field("id"),
        source: field("source"),
        r#type: field("type"),
        spec_version: field("specversion"),
        data_content_type: field("datacontenttype"),
        topic: d.topic.clone(),
        data,
        pubsub_name: pubsub.to_string(),
        metadata,
    }
}

/// `PublishEvent`.
pub async fn publish(s: &Shared, r: rt::PublishEventRequest) -> Result<(), Status> {
    if s.components.pubsubs.is_empty() {
        return Err(Status::failed_precondition("pubsub is not configured"));
    }
    if r.pubsub_name.is_empty() {
        return Err(Status::invalid_argument("pubsub name is empty"));
    }
    let ps = store(&s.components.pubsubs, &r.pubsub_name, "pubsub")?;
    if r.topic.is_empty() {
        return Err(Status::invalid_argument(format!(
            "topic is empty in pubsub {}",
            r.pubsub_name
        )));
    }
    let body = envelope(&r.pubsub_name, &r.topic, &r.data, &r.data_content_type)?;
    let what = format!(
        "error when publish to topic {} in pubsub {}",
        r.topic, r.pubsub_name
    );
    ps.inner
        .publish(&r.topic, Bytes::from(body), &r.metadata)
        .await
        .map_err(|e| component(e, &what))
}

/// How long a SubscribeTopicEvents client may take to take and answer one event before it is
/// redelivered: shorter than a broker's default `processingTimeout` (60 s), so another replica
/// does not reclaim a message this one is still waiting on.
pub const STREAM_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Waiters for the client's verdicts, by event id (ids can repeat: a redelivered or
/// republished event keeps its id, so each id holds a queue).
type Pending = Arc<Mutex<HashMap<String, VecDeque<oneshot::Sender<i32>>>>>;

/// Sends each message down a SubscribeTopicEvents stream and waits for the client's verdict.
struct StreamSubscriber {
    pubsub: String,
    out: mpsc::Sender<Result<rt::SubscribeTopicEventsResponse, Status>>,
    pending: Pending,
    /// Cancelled when the client's side of the stream ends.
    gone: CancellationToken,
    /// Where DROPped events go, if the client asked for a dead-letter topic.
    dead_letter: Option<(Arc<dyn PubSub>, String)>,
}

#[async_trait]
impl Subscriber for StreamSubscriber {
    async fn deliver(&self, msg: Delivery) -> Outcome {
        use rt::subscribe_topic_events_response::SubscribeTopicEventsResponseType as R;
        use rt::topic_event_response::TopicEventResponseStatus as S;
        if self.gone.is_cancelled() {
            return Outcome::Retry;
        }
        let mut ev = to_event(&self.pubsub, &msg);
        if ev.id.is_empty() {
            ev.id = uuid::Uuid::new_v4().to_string();
        }
        let (tx, rx) = oneshot::channel();
        let id = ev.id.clone();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .push_back(tx);
        let resp = rt::SubscribeTopicEventsResponse {
            subscribe_topic_events_response_type: Some(R::EventMessage(ev)),
        };
        // One deadline for sending the event and hearing back: a client that stops reading
        // (its stream stalled by flow control) must not hold the delivery forever.
        let exchange = async {
            self.out.send(Ok(resp)).await.ok()?;
            rx.await.ok()
        };
        let verdict = tokio::select! {
            v = tokio::time::timeout(STREAM_ACK_TIMEOUT, exchange) => v.ok().flatten(),
            _ = self.gone.cancelled() => None,
        };
        if verdict.is_none() {
            // No answer: forget this waiter (the queue entry of a closed oneshot).
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(q) = pending.get_mut(&id) {
                q.retain(|w| !w.is_closed());
                if q.is_empty() {
                    pending.remove(&id);
                }
            }
        }
        if verdict == Some(S::Drop as i32) {
            if let Some((ps, topic)) = &self.dead_letter {
                if ps
                    .publish(topic, msg.data.clone(), &msg.metadata)
                    .await
                    .is_err()
                {
                    return Outcome::Retry;
                }
            }
        }
        outcome(verdict)
    }
}

/// An app's verdict as a delivery outcome: SUCCESS and DROP end delivery, RETRY (or no answer)
/// redelivers.
pub fn outcome(status: Option<i32>) -> Outcome {
    use rt::topic_event_response::TopicEventResponseStatus as S;
    match status.map(S::try_from) {
        Some(Ok(S::Success)) | Some(Ok(S::Drop)) => Outcome::Done,
        _ => Outcome::Retry,
    }
}

/// `SubscribeTopicEvents`: the first message subscribes, later ones report on each event.
pub async fn subscribe_stream(
    s: &Shared,
    mut input: Streaming<rt::SubscribeTopicEventsRequest>,
) -> Result<EventStream, Status> {
    use rt::subscribe_topic_events_request::SubscribeTopicEventsRequestType as Q;
    use rt::subscribe_topic_events_response::SubscribeTopicEventsResponseType as R;
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("SubscribeTopicEvents stream is empty"))?;
    let Some(Q::InitialRequest(init)) = first.subscribe_topic_events_request_type else {
        return Err(Status::invalid_argument(
            "the first SubscribeTopicEvents message must be initial_request",
        ));
    };
    if s.components.pubsubs.is_empty() {
        return Err(Status::failed_precondition("pubsub is not configured"));
    }
    let ps = store(&s.components.pubsubs, &init.pubsub_name, "pubsub")?;
    if init.topic.is_empty() {
        return Err(Status::invalid_argument("topic is empty"));
    }
    let (out_tx, out_rx) = mpsc::channel(64);
    // The initial response goes first, before any event can.
    let _ = out_tx
        .send(Ok(rt::SubscribeTopicEventsResponse {
            subscribe_topic_events_response_type: Some(R::InitialResponse(
                rt::SubscribeTopicEventsResponseInitial {},
            )),
        }))
        .await;
    let pending: Pending = Arc::default();
    let gone = CancellationToken::new();
    let dead_letter = init
        .dead_letter_topic
        .clone()
        .filter(|t| !t.is_empty())
        .map(|t| (ps.inner.clone(), t));
    let sub = Arc::new(StreamSubscriber {
        pubsub: init.pubsub_name.clone(),
        out: out_tx.clone(),
        pending: pending.clone(),
        gone: gone.clone(),
        dead_letter,
    });
    let meta: Metadata = init.metadata.clone();
    let what = format!(
        "subscribe to topic {} in pubsub {}",
        init.topic, init.pubsub_name
    );
    let subscription = ps
        .inner
        .subscribe(&init.topic, &meta, sub)
        .await
        .map_err(|e| component(e, &what))?;
    tokio::spawn(async move {
        let _subscription = subscription;
        let _gone = gone.clone().drop_guard();
        loop {
            let msg = tokio::select! {
                m = input.message() => m,
                _ = out_tx.closed() => break,
            };
            match msg {
                Ok(Some(rt::SubscribeTopicEventsRequest {
                    subscribe_topic_events_request_type: Some(Q::EventProcessed(p)),
                })) => {
                    let waiter = {
                        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                        let w = pending.get_mut(&p.id).and_then(VecDeque::pop_front);
                        if pending.get(&p.id).is_some_and(VecDeque::is_empty) {
                            pending.remove(&p.id);
                        }
                        w
                    };
                    if let Some(w) = waiter {
                        let _ = w.send(p.status.map_or(0, |s| s.status));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // The client is gone: unanswered deliveries end (and are redelivered), the
        // subscription ends with this task.
        pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
        out_rx,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let e = envelope("ps", "t", b"{\"a\":1}", "application/json").unwrap();
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["data"], json!({"a": 1}));
        assert_eq!(v["type"], EVENT_TYPE);
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["topic"], "t");
        let d = Delivery {
            topic: "t".into(),
            data: e.into(),
            metadata: Metadata::new(),
        };
        let ev = to_event("ps", &d);
        assert_eq!(ev.data, b"{\"a\":1}");
        assert_eq!(ev.metadata["pubsubName"], "ps");
        let bin = envelope("ps", "t", &[0xff, 0x00, 0x10], "application/octet-stream").unwrap();
        let d = Delivery {
            topic: "t".into(),
            data: bin.into(),
            metadata: Metadata::new(),
        };
        assert_eq!(to_event("ps", &d).data, vec![0xff, 0x00, 0x10]);
    }
}
