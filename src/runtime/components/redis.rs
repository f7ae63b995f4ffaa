//! Shared Redis plumbing for the `*_redis` components: the connection (one reconnecting
//! [`ConnectionManager`] per component), the metadata keys Layotto's Redis components read, and
//! the mapping of [`RedisError`] to [`ComponentError`].
//!
//! Metadata: `redisHost` (required, `host:port`), `redisPassword`, `redisUsername`, `db`,
//! `dialTimeout` (default 5s), `readTimeout` (default 3s), `maxRetries` (reconnect attempts,
//! default 3), `maxRetryBackoff` (longest pause between them, default 2s), `enableTLS` (only
//! `false` is supported). Durations are written `"500ms"`, `"5s"`, `"1m"` or as plain seconds.
//!
//! Needs Redis 6 or later: the shared connection speaks RESP3 (`HELLO 3`).

use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ErrorKind, FromRedisValue,
    IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo, RedisError, RedisResult,
    ScriptInvocation, ServerErrorKind,
};

use super::{ComponentError, Health, Metadata, Result};
use crate::runtime::config::parse_duration;

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_MAX_RETRIES: usize = 3;
const DEFAULT_MAX_RETRY_BACKOFF: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to one Redis server, shared by every call of a component. Cheap to clone.
///
/// Commands are multiplexed over a [`ConnectionManager`], which reconnects by itself when the
/// connection drops (a Redis restart fails the calls in flight, and the next ones reconnect).
/// Each worker thread gets its own manager, opened on first use there, so a call never hops to
/// another thread's event loop and back.
/// A connection attempt is bounded by `dialTimeout`, a reply by `readTimeout`, and a whole call
/// (a reconnect it waits for included) by their sum.
#[derive(Clone, Debug)]
pub struct RedisConn {
    managers: Arc<[OnceCell<ConnectionManager>]>,
    shared_client: Client,
    manager_config: ConnectionManagerConfig,
    client: Client,
    addr: String,
    dial_timeout: Duration,
    read_timeout: Duration,
}

/// Connect to the server named by `metadata` (see the module docs for the keys). Fails when the
/// metadata is invalid or the server cannot be reached within `dialTimeout`.
pub async fn connect(metadata: &Metadata) -> std::result::Result<RedisConn, String> {
    let addr = setting(metadata, "redisHost").ok_or("redisHost is required")?;
    let (host, port) = split_host_port(addr)?;
    if flag(metadata, "enableTLS")? {
        return Err("enableTLS: TLS connections to redis are not supported".to_string());
    }
    let db = number::<i64>(metadata, "db")?.unwrap_or(0);
    let dial_timeout = duration(metadata, "dialTimeout", DEFAULT_DIAL_TIMEOUT)?;
    let read_timeout = duration(metadata, "readTimeout", DEFAULT_READ_TIMEOUT)?;
    let max_retries = number::<usize>(metadata, "maxRetries")?.unwrap_or(DEFAULT_MAX_RETRIES);
    let max_backoff = duration(metadata, "maxRetryBackoff", DEFAULT_MAX_RETRY_BACKOFF)?;

    let mut settings = RedisConnectionInfo::default().set_db(db);
    if let Some(username) = setting(metadata, "redisUsername") {
        settings = settings.set_username(username);
    }
    if let Some(password) = setting(metadata, "redisPassword") {
        settings = settings.set_password(password);
    }
    // TCP_NODELAY: a command is one small write that must leave now, not wait for an ACK.
    let info = ConnectionAddr::Tcp(host, port)
        .into_connection_info()
        .map_err(|e| format!("redisHost {addr:?}: {e}"))?
        .set_tcp_settings(tcp_settings(dial_timeout + read_timeout));
    // The shared connection speaks RESP3: there the manager learns of a dropped connection as
    // it happens and reconnects at once, instead of failing the next call first. Dedicated
    // connections stay on RESP2, whose stream replies the `streams` types parse.
    let client = Client::open(info.clone().set_redis_settings(settings.clone()))
        .map_err(|e| format!("redisHost {addr:?}: {e}"))?;
    let shared_client =
        Client::open(info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP3)))
            .map_err(|e| format!("redisHost {addr:?}: {e}"))?;
    let cannot = |e: &RedisError| {
        let why = if e.is_connection_refusal() {
            "connection refused".to_string()
        } else if e.is_timeout() {
            format!("timed out after {dial_timeout:?}")
        } else {
            e.to_string()
        };
        format!("cannot connect to redis at {addr}: {why}")
    };

    // One plain attempt first: it fails fast with the real reason (refused, auth, bad db), where
    // the manager would retry with backoff and report only the last error.
    let probe_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(dial_timeout))
        .set_response_timeout(Some(read_timeout));
    let probe = tokio::time::timeout(
        dial_timeout,
        shared_client.get_multiplexed_async_connection_with_config(&probe_config),
    )
    .await;
    match probe {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(cannot(&e)),
        Err(_) => {
            return Err(format!(
                "cannot connect to redis at {addr}: timed out after {dial_timeout:?}"
            ))
        }
    }

    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(dial_timeout))
        .set_response_timeout(Some(read_timeout))
        .set_number_of_retries(max_retries)
        .set_max_delay(max_backoff);
    Ok(RedisConn {
        managers: (0..crate::workers::slots())
            .map(|_| OnceCell::new())
            .collect(),
        shared_client,
        manager_config,
        client,
        addr: addr.to_string(),
        dial_timeout,
        read_timeout,
    })
}

/// TCP settings for every Redis connection: `TCP_NODELAY` (a command is one small write that must
/// leave now), and keepalive probes plus `TCP_USER_TIMEOUT`, so a server that vanished without a
/// reset (host down, address moved) is noticed and the manager reconnects, instead of every call
/// timing out on a dead socket until the kernel gives up.
fn tcp_settings(user_timeout: Duration) -> ::redis::io::tcp::TcpSettings {
    let keepalive = ::redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(2));
    ::redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(user_timeout)
}

impl RedisConn {
    /// The `host:port` connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The `readTimeout`: how long a reply is awaited.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Run `cmd` on the shared connection.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.call(Request::Cmd(cmd), false).await
    }

    /// Run `cmd`, which must be safe to repeat, on the shared connection; when the connection
    /// turns out to have dropped (Redis restarted since the last call), run it once more on the
    /// new connection the manager opens.
    pub async fn query_idempotent<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.call(Request::Cmd(cmd), true).await
    }

    /// Run a Lua script on the shared connection (loading it first if the server lacks it).
    pub async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> Result<T> {
        self.call(Request::Script(script), false).await
    }

    /// Run a Lua script that is safe to repeat, retrying once after a dropped connection as
    /// [`RedisConn::query_idempotent`] does.
    pub async fn invoke_idempotent<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.call(Request::Script(script), true).await
    }

    /// Run `cmd` on the shared connection as [`RedisConn::query`] does, but hand back the
    /// Redis error itself, for callers that look at its code (`BUSYGROUP`, `NOGROUP`, ...).
    pub async fn query_raw<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        self.send(Request::Cmd(cmd), false).await
    }

    async fn call<T: FromRedisValue>(&self, request: Request<'_>, repeatable: bool) -> Result<T> {
        self.send(request, repeatable).await.map_err(map_err)
    }

    /// Send `request`, bounded by `dialTimeout + readTimeout` in all (a reconnect the manager
    /// is waiting for included); once more if it could not be sent, or, with `repeatable`,
    /// after a dropped connection.
    async fn send<T: FromRedisValue>(
        &self,
        request: Request<'_>,
        repeatable: bool,
    ) -> RedisResult<T> {
        let attempt = async {
            let mut conn = self.manager().await?;
            match request.send(&mut conn).await {
                // Refused: the (re)connection failed, so nothing was sent; the manager is
                // reconnecting again and the request may go on the new connection. A dropped
                // connection may have taken the request with it, so only a repeatable one
                // is sent again.
                Err(e)
                    if e.is_connection_refusal() || (repeatable && e.is_connection_dropped()) =>
                {
                    request.send(&mut conn).await
                }
                other => other,
            }
        };
        // The whole call, a reconnect it waits for included, is bounded (the manager alone
        // would retry a dead server with backoff for much longer).
        tokio::time::timeout(self.dial_timeout + self.read_timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut).into()))
    }

    /// This thread's manager, connecting it on first use.
    async fn manager(&self) -> RedisResult<ConnectionManager> {
        let slot = &self.managers[crate::workers::slot() % self.managers.len()];
        slot.get_or_try_init(|| {
            ConnectionManager::new_with_config(
                self.shared_client.clone(),
                self.manager_config.clone(),
            )
        })
        .await
        .cloned()
    }

    /// Open a connection of its own (for blocking commands, which would stall the shared one),
    /// bounded by `dialTimeout`; its calls time out after `response_timeout`.
    pub async fn dedicated(&self, response_timeout: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.dial_timeout))
            .set_response_timeout(Some(response_timeout));
        match tokio::time::timeout(
            self.dial_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(conn) => conn.map_err(map_err),
            Err(_) => Err(ComponentError::Unavailable(format!(
                "redis: cannot connect to {}: timed out after {:?}",
                self.addr, self.dial_timeout
            ))),
        }
    }

    /// `PING`, bounded by one second.
    pub async fn health(&self) -> Health {
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(HEALTH_TIMEOUT, self.query_idempotent::<String>(&ping)).await {
            Ok(Ok(_)) => Health::Up,
            Ok(Err(e)) => Health::Down(e.to_string()),
            Err(_) => Health::Down(format!("redis: PING to {} timed out", self.addr)),
        }
    }
}

/// A command or a script invocation.
enum Request<'a> {
    Cmd(&'a Cmd),
    Script(&'a ScriptInvocation<'a>),
}

impl Request<'_> {
    async fn send<T: FromRedisValue>(&self, conn: &mut ConnectionManager) -> RedisResult<T> {
        match self {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Script(script) => script.invoke_async(conn).await,
        }
    }
}

/// Map a Redis error: the server unreachable, the connection lost, a timeout or a server not
/// ready yet (`LOADING`, `TRYAGAIN`, ...) become [`ComponentError::Unavailable`]; anything else
/// (a script error, a command on a key of the wrong type, ...) [`ComponentError::Internal`].
pub fn map_err(e: RedisError) -> ComponentError {
    // I/O covers a refused, dropped or timed-out connection.
    let unavailable = e.is_io_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        );
    if unavailable {
        ComponentError::Unavailable(format!("redis: {e}"))
    } else {
        ComponentError::Internal(format!("redis: {e}"))
    }
}

// ------------------------------------------------------------------------------ metadata

/// The value of `key`, trimmed, or `None` when absent or empty.
pub fn setting<'a>(metadata: &'a Metadata, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// `key` parsed as a number, `None` when absent or empty.
pub fn number<T: FromStr>(
    metadata: &Metadata,
    key: &str,
) -> std::result::Result<Option<T>, String> {
    setting(metadata, key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{key}: invalid number {v:?}"))
        })
        .transpose()
}

/// `key` parsed as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case);
/// `false` when absent or empty.
pub fn flag(metadata: &Metadata, key: &str) -> std::result::Result<bool, String> {
    match setting(metadata, key)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some(v) => Err(format!("{key}: invalid boolean {v:?}")),
    }
}

/// `key` parsed with [`parse_duration`] (`"500ms"`, `"5s"`, `"1m"`, plain seconds); `default`
/// when absent, empty or zero.
pub fn duration(
    metadata: &Metadata,
    key: &str,
    default: Duration,
) -> std::result::Result<Duration, String> {
    match setting(metadata, key) {
        None => Ok(default),
        Some(v) => match parse_duration(v) {
            Some(d) if d.is_zero() => Ok(default),
            Some(d) => Ok(d),
            None => Err(format!("{key}: invalid duration {v:?}")),
        },
    }
}

/// Split `host:port` (`[v6]:port` for IPv6); a missing port means 6379.
fn split_host_port(addr: &str) -> std::result::Result<(String, u16), String> {
    let bad = || format!("redisHost {addr:?}: expected host:port");
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match addr.rsplit_once(':') {
            // A bare IPv6 address has more than one colon and no port.
            Some((host, _)) if host.contains(':') => (addr, None),
            Some((host, port)) => (host, Some(port)),
            None => (addr, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse()
            .map_err(|_| format!("redisHost {addr:?}: invalid port {p:?}"))?,
    };
    Ok((host.to_string(), port))
}
