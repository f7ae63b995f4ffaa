//! The etcd v3 client shared by the etcd components (`configuration_etcd`, `lock_etcd`,
//! `sequencer_etcd`): one gRPC channel, optional username/password authentication, a deadline on
//! every call, and the small KV/lease/txn helpers the components are built from.
//!
//! Metadata (Layotto's names): `endpoints` (required; `host:port` or `http://host:port`, several
//! separated by `,` or `;`), `username`, `password`, `dialTimeout` (default 5 s; `5s`, `500ms` or
//! plain seconds), `timeout` (per call, default 3 s), `keyPrefixPath` (read by the components).

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use super::{ComponentError, Health, Metadata, Result};
use crate::runtime::proto::etcd::etcdserverpb::auth_client::AuthClient;
use crate::runtime::proto::etcd::etcdserverpb::kv_client::KvClient;
use crate::runtime::proto::etcd::etcdserverpb::lease_client::LeaseClient;
use crate::runtime::proto::etcd::etcdserverpb::watch_client::WatchClient;
use crate::runtime::proto::etcd::etcdserverpb::watch_request::RequestUnion;
use crate::runtime::proto::etcd::etcdserverpb::{
    AuthenticateRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::runtime::proto::etcd::mvccpb::KeyValue;

pub use super::etcd_txn::*;

const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The key the health check and the connect probe read (it need not exist).
const PROBE_KEY: &[u8] = b"layer8-health";

/// The gRPC service every etcd client stub runs on: the channel plus the auth-token header.
pub type EtcdService = InterceptedService<Channel, AuthToken>;

/// A connected etcd client. Cheap to clone: clones share the channel and the auth token.
#[derive(Clone)]
pub struct EtcdClient {
    channel: Channel,
    auth: AuthToken,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("auth", &self.auth.state.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Adds etcd's `token` header to every request once authenticated; does nothing when no
/// username is configured.
#[derive(Clone, Default)]
pub struct AuthToken {
    state: Option<Arc<AuthState>>,
}

struct AuthState {
    username: String,
    password: String,
    token: ArcSwapOption<MetadataValue<Ascii>>,
    /// Serializes re-authentication so an expired token is refreshed once, not per caller.
    refresh: tokio::sync::Mutex<()>,
}

impl Interceptor for AuthToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, Status> {
        if let Some(token) = self.state.as_ref().and_then(|s| s.token.load_full()) {
            request.metadata_mut().insert("token", (*token).clone());
        }
        Ok(request)
    }
}

/// Connect to etcd as `metadata` describes; see [`EtcdClient::connect`].
pub async fn connect(metadata: &Metadata) -> std::result::Result<EtcdClient, String> {
    EtcdClient::connect(metadata).await
}

impl EtcdClient {
    /// Connect to the first endpoint that answers within `dialTimeout`, authenticate when
    /// `username` is set, and check the connection with a read, so a wrong address or bad
    /// credentials fail here rather than on the first request.
    pub async fn connect(metadata: &Metadata) -> std::result::Result<EtcdClient, String> {
        let endpoints =
            parse_endpoints(meta(metadata, "endpoints").ok_or("endpoints is required")?)?;
        let dial_timeout = duration_setting(metadata, "dialTimeout", DEFAULT_DIAL_TIMEOUT)?;
        let timeout = duration_setting(metadata, "timeout", DEFAULT_CALL_TIMEOUT)?;
        let auth = match meta(metadata, "username") {
            Some(user) => AuthToken {
                state: Some(Arc::new(AuthState {
                    username: user.to_string(),
                    password: metadata.get("password").cloned().unwrap_or_default(),
                    token: ArcSwapOption::empty(),
                    refresh: tokio::sync::Mutex::new(()),
                })),
            },
            None => AuthToken::default(),
        };

        let mut failures = Vec::new();
        for (uri, shown) in &endpoints {
            let attempt =
                tokio::time::timeout(dial_timeout, Self::dial(uri, dial_timeout, &auth, timeout));
            match attempt.await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => failures.push(format!("cannot connect to etcd at {shown}: {e}")),
                Err(_) => failures.push(format!(
                    "cannot connect to etcd at {shown}: no answer within {dial_timeout:?}"
                )),
            }
        }
        Err(failures.join("; "))
    }

    /// Open a channel to one endpoint, authenticate, and probe it.
    async fn dial(
        uri: &str,
        dial_timeout: Duration,
        auth: &AuthToken,
        timeout: Duration,
    ) -> std::result::Result<EtcdClient, String> {
        let endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|e| error_chain(&e))?
            .connect_timeout(dial_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            // Pings only while a stream (a watch) is open, so a dead server is noticed; etcd
            // rejects pings more frequent than 5 s and pings on idle connections.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
        let client = EtcdClient {
            channel,
            auth: auth.clone(),
            timeout,
        };
        if let Some(state) = &client.auth.state {
            client
                .authenticate(state)
                .await
                .map_err(|e| format!("authentication as {:?} failed: {e}", state.username))?;
        }
        client
            .range(RangeRequest {
                key: PROBE_KEY.to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(client)
    }

    /// Ask etcd for a token with the configured credentials and use it from now on.
    async fn authenticate(&self, state: &AuthState) -> Result<()> {
        let request = AuthenticateRequest {
            name: state.username.clone(),
            password: state.password.clone(),
        };
        let mut auth = AuthClient::new(self.channel.clone());
        let response = tokio::time::timeout(self.timeout, auth.authenticate(request))
            .await
            .map_err(|_| timed_out(self.timeout))?
            .map_err(map_err)?
            .into_inner();
        let token = MetadataValue::try_from(response.token.as_str())
            .map_err(|_| ComponentError::Internal("etcd: the auth token is not ASCII".into()))?;
        state.token.store(Some(Arc::new(token)));
        Ok(())
    }

    /// Replace the auth token `stale` (the one a failed call carried) with a fresh one, unless
    /// another caller already did. A no-op without credentials.
    pub async fn refresh_token(&self, stale: Option<Arc<MetadataValue<Ascii>>>) -> Result<()> {
        let Some(state) = &self.auth.state else {
            return Ok(());
        };
        let _guard = state.refresh.lock().await;
        let current = state.token.load_full();
        let unchanged = match (&current, &stale) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            self.authenticate(state).await?;
        }
        Ok(())
    }

    /// The auth token requests currently carry.
    pub fn current_token(&self) -> Option<Arc<MetadataValue<Ascii>>> {
        self.auth.state.as_ref().and_then(|s| s.token.load_full())
    }

    /// A KV client on the shared channel.
    pub fn kv_client(&self) -> KvClient<EtcdService> {
        KvClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// A Watch client on the shared channel.
    pub fn watch_client(&self) -> WatchClient<EtcdService> {
        WatchClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// A Lease client on the shared channel.
    pub fn lease_client(&self) -> LeaseClient<EtcdService> {
        LeaseClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    /// The per-call deadline (`timeout` metadata).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Run one RPC under the per-call deadline, mapping its error; an expired auth token is
    /// refreshed and the call retried once. `call` is given a clone of this client.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(EtcdClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        self.call_within(self.timeout, call).await
    }

    async fn call_within<T, F, Fut>(&self, limit: Duration, mut call: F) -> Result<T>
    where
        F: FnMut(EtcdClient) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let mut refreshed = false;
        loop {
            let token = self.current_token();
            match tokio::time::timeout(limit, call(self.clone())).await {
                Err(_) => return Err(timed_out(limit)),
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status))
                    if !refreshed && self.auth.state.is_some() && is_stale_token(&status) =>
                {
                    self.refresh_token(token).await?;
                    refreshed = true;
                }
                Ok(Err(status)) => return Err(map_err(status)),
            }
        }
    }

    /// `Range`.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.call(|c| {
            let request = request.clone();
            async move { c.kv_client().range(request).await }
        })
        .await
    }

    /// The key-value at `key`, if any.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>> {
        let response = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Every key-value whose key starts with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<Vec<KeyValue>> {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        Ok(self
            .range(RangeRequest {
                key,
                range_end,
                ..Default::default()
            })
            .await?
            .kvs)
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<i64> {
        let request = RangeRequest {
            key: PROBE_KEY.to_vec(),
            count_only: true,
            ..Default::default()
        };
        let response = self.range(request).await?;
        response
            .header
            .map(|h| h.revision)
            .ok_or_else(|| ComponentError::Internal("etcd: response without header".into()))
    }

    /// `Put` `value` at `key`, attached to `lease` (0 for none).
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<()> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        };
        self.call(|c| {
            let request = request.clone();
            async move { c.kv_client().put(request).await }
        })
        .await
        .map(drop)
    }

    /// Delete every key in `[key, range_end)` (just `key` when `range_end` is empty); returns how
    /// many were deleted.
    pub async fn delete_range(&self, key: impl Into<Vec<u8>>, range_end: Vec<u8>) -> Result<i64> {
        let request = DeleteRangeRequest {
            key: key.into(),
            range_end,
            ..Default::default()
        };
        let response = self
            .call(|c| {
                let request = request.clone();
                async move { c.kv_client().delete_range(request).await }
            })
            .await?;
        Ok(response.deleted)
    }

    /// `Txn`: when every comparison holds run `success`, else `failure`.
    pub async fn txn(
        &self,
        compare: Vec<Compare>,
        success: Vec<RequestOp>,
        failure: Vec<RequestOp>,
    ) -> Result<TxnResponse> {
        let request = TxnRequest {
            compare,
            success,
            failure,
        };
        self.call(|c| {
            let request = request.clone();
            async move { c.kv_client().txn(request).await }
        })
        .await
    }

    /// Grant a lease of `ttl_secs` seconds (etcd may round it up to its minimum); returns its id.
    pub async fn grant_lease(&self, ttl_secs: i64) -> Result<i64> {
        let request = LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        };
        let response = self
            .call(|c| async move { c.lease_client().lease_grant(request).await })
            .await?;
        if !response.error.is_empty() {
            return Err(ComponentError::Internal(format!(
                "etcd: {}",
                response.error
            )));
        }
        Ok(response.id)
    }

    /// Revoke lease `id`, deleting the keys attached to it. A lease that is already gone is fine.
    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        let request = LeaseRevokeRequest { id };
        match self
            .call(|c| async move { c.lease_client().lease_revoke(request).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(ComponentError::Internal(m)) if m.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Revoke lease `id` when it is not 0, logging (not returning) a failure: the lease expires
    /// on its own anyway.
    pub async fn revoke_lease_quietly(&self, id: i64) {
        if id != 0 {
            if let Err(e) = self.revoke_lease(id).await {
                tracing::debug!(lease = id, error = %e, "etcd: lease revoke failed; it will expire");
            }
        }
    }

    /// Open a watch stream with one watcher per request in `creates`. Returns the request side
    /// (keep it alive as long as the stream) and the responses.
    pub async fn watch(
        &self,
        creates: &[WatchCreateRequest],
    ) -> Result<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>)> {
        self.call(|c| {
            let (tx, rx) = mpsc::channel(creates.len().max(1));
            for create in creates {
                let request = WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(create.clone())),
                };
                // Cannot fail: the channel has room for every request and `rx` is alive.
                let _ = tx.try_send(request);
            }
            async move {
                let response = c.watch_client().watch(ReceiverStream::new(rx)).await?;
                Ok(response.map(|stream| (tx, stream)))
            }
        })
        .await
    }

    /// Whether etcd answers a read within a second.
    pub async fn health(&self) -> Health {
        let request = RangeRequest {
            key: PROBE_KEY.to_vec(),
            count_only: true,
            ..Default::default()
        };
        let result = self
            .call_within(HEALTH_TIMEOUT, |c| {
                let request = request.clone();
                async move { c.kv_client().range(request).await }
            })
            .await;
        match result {
            Ok(_) => Health::Up,
            Err(e) => Health::Down(e.to_string()),
        }
    }
}

/// Map an etcd call's status: connection trouble (unavailable, deadline exceeded, cancelled,
/// transport failures) is [`ComponentError::Unavailable`], anything else
/// [`ComponentError::Internal`].
pub fn map_err(s: Status) -> ComponentError {
    let message = if s.message().is_empty() {
        s.code().description()
    } else {
        s.message()
    };
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            ComponentError::Unavailable(format!("etcd: {message}"))
        }
        Code::Unknown if is_transport_error(&s) => {
            ComponentError::Unavailable(format!("etcd: {message}"))
        }
        _ => ComponentError::Internal(format!("etcd: {message}")),
    }
}

/// Whether an `Unknown` status was made on this side of the connection (tonic reports transport
/// failures that way), not sent by etcd.
fn is_transport_error(s: &Status) -> bool {
    let m = s.message();
    StdError::source(s).is_some()
        || m.contains("transport error")
        || m.contains("Service was not ready")
        || m.contains("connection")
        || m.contains("h2 protocol error")
        || m.contains("broken pipe")
}

/// Whether etcd rejected the call's auth token as expired or outdated.
fn is_stale_token(s: &Status) -> bool {
    let m = s.message();
    m.contains("invalid auth token") || m.contains("revision of auth store is old")
}

fn timed_out(limit: Duration) -> ComponentError {
    ComponentError::Unavailable(format!("etcd: no answer within {limit:?}"))
}

// ---------------------------------------------------------------------------------- metadata

/// A metadata value, trimmed; `None` when missing or blank.
pub fn meta<'a>(metadata: &'a Metadata, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// `keyPrefixPath` (or `default`) as Layotto normalizes it: starting and ending with `/`.
pub fn key_prefix(metadata: &Metadata, default: &str) -> String {
    let raw = meta(metadata, "keyPrefixPath").unwrap_or(default);
    let mut prefix = String::with_capacity(raw.len() + 2);
    if !raw.starts_with('/') {
        prefix.push('/');
    }
    prefix.push_str(raw);
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

/// `(uri, as given)` for each endpoint of the `endpoints` list.
fn parse_endpoints(list: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut endpoints = Vec::new();
    for raw in list
        .split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let uri = if raw.starts_with("https://") {
            return Err(format!(
                "etcd endpoint {raw}: TLS is not supported; use http://"
            ));
        } else if raw.starts_with("http://") {
            raw.to_string()
        } else if raw.contains("://") {
            return Err(format!(
                "etcd endpoint {raw}: expected host:port or http://host:port"
            ));
        } else {
            format!("http://{raw}")
        };
        endpoints.push((uri, raw.to_string()));
    }
    if endpoints.is_empty() {
        return Err("endpoints is required".into());
    }
    Ok(endpoints)
}

fn duration_setting(
    metadata: &Metadata,
    key: &str,
    default: Duration,
) -> std::result::Result<Duration, String> {
    match meta(metadata, key) {
        None => Ok(default),
        Some(v) => parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
            format!("invalid {key} {v:?}: expected e.g. 5s, 500ms or a number of seconds")
        }),
    }
}

/// `500ms`, `5s`, `1m` or a plain number of seconds (fractions allowed).
fn parse_duration(v: &str) -> Option<Duration> {
    let (number, unit) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let secs = number.trim().parse::<f64>().ok()? * unit;
    Duration::try_from_secs_f64(secs).ok()
}

/// An error and its sources, joined by `: ` (tonic's transport errors say little at the top).
fn error_chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1"), None);
    }

    #[test]
    fn endpoints() {
        let parsed = parse_endpoints("127.0.0.1:2379; http://h:1 ,").unwrap();
        assert_eq!(parsed[0].0, "http://127.0.0.1:2379");
        assert_eq!(parsed[1].0, "http://h:1");
        assert!(parse_endpoints(" , ").is_err());
        assert!(parse_endpoints("https://h:1").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
        let mut m = Metadata::new();
        assert_eq!(key_prefix(&m, "/layotto/"), "/layotto/");
        assert_eq!(key_prefix(&m, ""), "/");
        m.insert("keyPrefixPath".into(), "seq".into());
        assert_eq!(key_prefix(&m, ""), "/seq/");
    }

    #[test]
    fn status_mapping() {
        assert!(matches!(
            map_err(Status::unavailable("down")),
            ComponentError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(Status::unknown("Service was not ready: transport error")),
            ComponentError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(Status::invalid_argument("bad")),
            ComponentError::Internal(_)
        ));
    }
}
