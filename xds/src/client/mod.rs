//! The xDS client: one gRPC stream to a management server (ADS, or SDS's `StreamSecrets`),
//! State-of-the-World or Delta, kept alive with jittered exponential backoff.
//!
//! The client knows the protocol, not the resources: it hands every response to its owner as an
//! [`Update`] over a channel and waits for a [`Verdict`] before it ACKs or NACKs. What to
//! subscribe to (per type: wildcard or a set of names) comes back with the verdict, or at any
//! time through a [`ClientHandle`]. Subscriptions and accepted versions survive reconnects: a new
//! stream resubscribes with the current names and, for Delta, the `initial_resource_versions`.

mod delta;
mod sotw;
pub mod transport;
pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::google::protobuf::Any;
pub use transport::{Target, Tls};

/// Which wire protocol the stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// State of the World (`GRPC`).
    Sotw,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

/// Which service the stream calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `envoy.service.discovery.v3.AggregatedDiscoveryService` (every type on one stream).
    Ads,
    /// `envoy.service.secret.v3.SecretDiscoveryService` (secrets only).
    Sds,
}

/// Reconnect backoff: full delay doubles from `base` to `max`; the actual wait is drawn
/// uniformly from the upper half of it.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay (Envoy: 500 ms).
    pub base: Duration,
    /// Ceiling (Envoy: 30 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    fn delay(&self, attempt: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let half = full / 2;
        half + full.mul_f64(rand::random::<f64>() / 2.0)
    }
}

/// How to reach the server and what to say first.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name used in logs (`ads`, `sds-grpc`, ...).
    pub name: String,
    /// Where the server listens.
    pub target: Target,
    /// TLS to it, if the cluster has a TLS transport socket.
    pub tls: Option<Tls>,
    /// SotW or Delta.
    pub protocol: Protocol,
    /// ADS or SDS.
    pub service: Service,
    /// The bootstrap `node`, sent verbatim.
    pub node: Option<Node>,
    /// Send `node` only on the first request of each stream.
    pub node_on_first_message_only: bool,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Type URLs in the order their first requests are sent (CDS before EDS before LDS ...).
    pub type_order: Vec<String>,
}

/// What the client wants of one resource type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Interest {
    /// Nothing (no request is sent for the type).
    #[default]
    None,
    /// Every resource of the type (LDS, CDS).
    Wildcard,
    /// These names (RDS, EDS, SDS).
    Names(BTreeSet<String>),
}

impl Interest {
    fn names(&self) -> Vec<String> {
        match self {
            Interest::Names(n) => n.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

/// One resource of a response.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Resource name.
    pub name: String,
    /// Its version (Delta) or the response's `version_info` (SotW).
    pub version: String,
    /// The resource itself.
    pub body: Any,
}

/// One response, in protocol-neutral form.
#[derive(Debug, Clone)]
pub struct Update {
    /// Type URL of every resource in it.
    pub type_url: String,
    /// SotW `version_info` or Delta `system_version_info`.
    pub version_info: String,
    /// Resources added or changed.
    pub resources: Vec<Resource>,
    /// Names removed: Delta's `removed_resources`, or for SotW LDS/CDS the names the previous
    /// state had and this one lacks.
    pub removed: Vec<String>,
}

/// The owner's answer to an [`Update`].
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Rejected resources: `(name, message)`. Empty means ACK.
    pub rejected: Vec<(String, String)>,
    /// New interest per type URL, applied after the ACK/NACK is sent.
    pub interest: Vec<(String, Interest)>,
}

/// What the client reports.
#[derive(Debug)]
pub enum Event {
    /// A stream is established.
    Connected,
    /// The stream ended or could not be opened; the client will retry.
    Disconnected(String),
    /// A response to apply; answer on `reply` (dropping it ends the client).
    Update {
        /// The response.
        update: Update,
        /// Where the verdict goes.
        reply: oneshot::Sender<Verdict>,
    },
}

#[derive(Debug)]
enum Command {
    Interest(String, Interest),
}

/// Changes a running client's subscriptions.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    cmds: mpsc::UnboundedSender<Command>,
}

impl ClientHandle {
    /// Subscribe to `interest` for `type_url` (replacing the previous interest).
    pub fn set_interest(&self, type_url: &str, interest: Interest) {
        let _ = self
            .cmds
            .send(Command::Interest(type_url.to_string(), interest));
    }
}

/// Per-type protocol state, kept across reconnects.
#[derive(Debug, Default)]
struct TypeState {
    interest: Interest,
    /// Interest last sent on the current stream (Delta diffs against it).
    sent: Interest,
    /// Last accepted `version_info` (SotW).
    version_info: String,
    /// Last response nonce on the current stream.
    nonce: String,
    /// Accepted resources and their versions.
    versions: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Types {
    order: Vec<String>,
    state: BTreeMap<String, TypeState>,
}

impl Types {
    fn get(&mut self, type_url: &str) -> &mut TypeState {
        if !self.order.iter().any(|t| t == type_url) {
            self.order.push(type_url.to_string());
        }
        self.state.entry(type_url.to_string()).or_default()
    }

    fn reset_stream(&mut self) {
        for s in self.state.values_mut() {
            s.nonce.clear();
            s.sent = Interest::None;
        }
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(#[from] transport::ConnectError),
    /// The RPC failed.
    #[error("rpc: {0}")]
    Status(#[from] tonic::Status),
    /// The server closed the stream.
    #[error("stream closed by the server")]
    Closed,
    /// The owner went away.
    #[error("client owner gone")]
    OwnerGone,
}

/// Start a client on the current tokio runtime. It runs until the `events` receiver is dropped.
pub fn spawn(
    cfg: ClientConfig,
    initial: Vec<(String, Interest)>,
    events: mpsc::Sender<Event>,
) -> ClientHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut types = Types {
        order: cfg.type_order.clone(),
        state: BTreeMap::new(),
    };
    for (t, i) in initial {
        types.get(&t).interest = i;
    }
    tokio::spawn(run(cfg, types, events, rx));
    ClientHandle { cmds: tx }
}

async fn run(
    cfg: ClientConfig,
    mut types: Types,
    events: mpsc::Sender<Event>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
) {
    let mut attempt = 0u32;
    loop {
        types.reset_stream();
        let mut session = Session {
            cfg: &cfg,
            types: &mut types,
            events: &events,
            cmds: &mut cmds,
            responded: false,
        };
        let result = match cfg.protocol {
            Protocol::Sotw => sotw::run(&mut session).await,
            Protocol::Delta => delta::run(&mut session).await,
        };
        if session.responded {
            attempt = 0;
        }
        let err = match result {
            Err(StreamError::OwnerGone) => return,
            Err(e) => e.to_string(),
            Ok(()) => StreamError::Closed.to_string(),
        };
        tracing::warn!(client = %cfg.name, target = %cfg.target, error = %err, "xDS stream ended; reconnecting");
        if events.send(Event::Disconnected(err)).await.is_err() {
            return;
        }
        let delay = cfg.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        // Keep taking subscription changes while waiting.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = cmds.recv() => match cmd {
                    Some(Command::Interest(t, i)) => types.get(&t).interest = i,
                    None => return,
                },
            }
        }
    }
}

/// One stream's worth of context shared by the SotW and Delta loops.
struct Session<'a> {
    cfg: &'a ClientConfig,
    types: &'a mut Types,
    events: &'a mpsc::Sender<Event>,
    cmds: &'a mut mpsc::UnboundedReceiver<Command>,
    /// Whether the server answered at least once (resets the backoff).
    responded: bool,
}

impl Session<'_> {
    /// Hand an update to the owner and wait for its verdict.
    async fn judge(&mut self, update: Update) -> Result<Verdict, StreamError> {
        let (reply, verdict) = oneshot::channel();
        self.events
            .send(Event::Update { update, reply })
            .await
            .map_err(|_| StreamError::OwnerGone)?;
        verdict.await.map_err(|_| StreamError::OwnerGone)
    }

    /// The node for the next request, if it should carry one.
    fn node(&self, first: &mut bool) -> Option<Node> {
        let send = *first || !self.cfg.node_on_first_message_only;
        *first = false;
        if send {
            self.cfg.node.clone()
        } else {
            None
        }
    }
}

/// What differs between the SotW and Delta loops: how a response is answered and how a change of
/// subscription is sent.
trait Wire {
    /// The response message of the protocol.
    type Response;

    /// Apply a response through the owner and send the ACK or NACK.
    fn respond(
        &mut self,
        s: &mut Session<'_>,
        resp: Self::Response,
    ) -> impl std::future::Future<Output = Result<(), StreamError>> + Send;

    /// Send what a new interest for `type_url` needs.
    fn change_interest(&mut self, s: &mut Session<'_>, type_url: &str, interest: Interest);
}

/// Tell the owner the stream is up, then answer responses and subscription changes until the
/// stream or the owner ends.
async fn drive<W: Wire + Send>(
    s: &mut Session<'_>,
    wire: &mut W,
    mut inbound: tonic::Streaming<W::Response>,
) -> Result<(), StreamError>
where
    W::Response: Send + 'static,
{
    s.events
        .send(Event::Connected)
        .await
        .map_err(|_| StreamError::OwnerGone)?;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg? {
                Some(resp) => wire.respond(s, resp).await?,
                None => return Err(StreamError::Closed),
            },
            cmd = s.cmds.recv() => match cmd {
                Some(Command::Interest(t, i)) => wire.change_interest(s, &t, i),
                None => return Err(StreamError::OwnerGone),
            },
        }
    }
}

/// `google.rpc.Status` for a NACK: INVALID_ARGUMENT with every rejection in the message.
fn nack_status(rejected: &[(String, String)]) -> crate::pb::google::rpc::Status {
    let message = rejected
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    crate::pb::google::rpc::Status {
        code: 3,
        message,
        details: Vec::new(),
    }
}

/// Unwrap a resource: a `envoy.service.discovery.v3.Resource` wrapper yields its name, version
/// and inner resource; anything else is named by its first field.
fn unwrap_resource(
    any: Any,
    expected_type: &str,
    default_version: &str,
) -> Result<Resource, String> {
    if any.type_url == types::RESOURCE_WRAPPER {
        let r = <crate::pb::envoy::service::discovery::v3::Resource as prost::Message>::decode(
            any.value.as_slice(),
        )
        .map_err(|e| format!("malformed Resource wrapper: {e}"))?;
        let body = r
            .resource
            .ok_or_else(|| format!("Resource '{}' has no resource", r.name))?;
        if body.type_url != expected_type {
            return Err(format!(
                "resource '{}' has type {}, expected {expected_type}",
                r.name, body.type_url
            ));
        }
        let version = if r.version.is_empty() {
            default_version.to_string()
        } else {
            r.version
        };
        return Ok(Resource {
            name: r.name,
            version,
            body,
        });
    }
    if any.type_url != expected_type {
        return Err(format!(
            "resource of type {} in a response of type {expected_type}",
            any.type_url
        ));
    }
    let name = types::resource_name(&any)?;
    Ok(Resource {
        name,
        version: default_version.to_string(),
        body: any,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_in_bounds() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 0..20 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(1));
            let d = b.delay(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }
}
