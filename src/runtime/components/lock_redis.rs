//! `redis` lock store, as Layotto's standalone Redis lock: a lock is a string key holding its
//! owner, taken with `SET key owner NX EX expire`; unlock and keep-alive check the owner in Lua.
//!
//! Metadata: the connection keys of [`super::redis`].

use std::sync::LazyLock;

use ::redis::Script;
use tonic::async_trait;

use super::redis::{connect, RedisConn};
use super::{ComponentError, Health, LockStatus, LockStore, Metadata, Result};

/// `KEYS[1]` lock, `ARGV[1]` owner: 1 released, -1 no such lock, -2 held by another owner.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owner = redis.call("GET", KEYS[1])
if not owner then return -1 end
if owner ~= ARGV[1] then return -2 end
redis.call("DEL", KEYS[1])
return 1
"#,
    )
});

/// `KEYS[1]` lock, `ARGV[1]` owner, `ARGV[2]` seconds: 1 extended, -1 no such lock, -2 held by
/// another owner.
static KEEP_ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owner = redis.call("GET", KEYS[1])
if not owner then return -1 end
if owner ~= ARGV[1] then return -2 end
redis.call("EXPIRE", KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// A lock store on one Redis server.
#[derive(Debug, Clone)]
pub struct RedisLock {
    conn: RedisConn,
}

impl RedisLock {
    /// Connect to the server named by `metadata` (`redisHost`, `redisPassword`, `db`, ...).
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        Ok(RedisLock {
            conn: connect(metadata).await?,
        })
    }
}

/// Redis rejects `EX 0`; say so before asking it.
fn check_expire(expire_secs: u32) -> Result<()> {
    if expire_secs == 0 {
        return Err(ComponentError::InvalidArgument(
            "expire must be at least 1 second".to_string(),
        ));
    }
    Ok(())
}

fn status(code: i64) -> Result<LockStatus> {
    match code {
        1 => Ok(LockStatus::Success),
        -1 => Ok(LockStatus::LockUnexist),
        -2 => Ok(LockStatus::LockBelongToOthers),
        other => Err(ComponentError::Internal(format!(
            "redis: unexpected lock script result {other}"
        ))),
    }
}

#[async_trait]
impl LockStore for RedisLock {
    async fn try_lock(&self, key: &str, owner: &str, expire_secs: u32) -> Result<bool> {
        check_expire(expire_secs)?;
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(key).arg(owner).arg("NX").arg("EX").arg(expire_secs);
        // "OK" when taken, nil when somebody holds it.
        let reply: Option<String> = self.conn.query(&cmd).await?;
        Ok(reply.is_some())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus> {
        status(self.conn.invoke(UNLOCK.key(key).arg(owner)).await?)
    }

    async fn keep_alive(&self, key: &str, owner: &str, expire_secs: u32) -> Result<LockStatus> {
        check_expire(expire_secs)?;
        status(
            self.conn
                .invoke(KEEP_ALIVE.key(key).arg(owner).arg(expire_secs))
                .await?,
        )
    }

    async fn health(&self) -> Health {
        self.conn.health().await
    }
}
