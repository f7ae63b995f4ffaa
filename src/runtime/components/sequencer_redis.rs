//! `redis` sequencer, as Layotto's: a counter per key, advanced with `INCR`/`INCRBY`.
//!
//! Metadata: the connection keys of [`super::redis`].

use std::sync::LazyLock;

use ::redis::Script;
use tonic::async_trait;

use super::redis::{connect, RedisConn};
use super::{ComponentError, Health, Metadata, Result, Sequencer};

/// `KEYS[1]` counter, `ARGV[1]` floor: raise the counter to the floor unless it is already there.
static ENSURE_FLOOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call("GET", KEYS[1])
if current then
  local n = tonumber(current)
  if n == nil then return redis.error_reply("sequencer value is not an integer") end
  if n >= tonumber(ARGV[1]) then return 0 end
end
redis.call("SET", KEYS[1], ARGV[1])
return 1
"#,
    )
});

/// A sequencer on one Redis server.
#[derive(Debug, Clone)]
pub struct RedisSequencer {
    conn: RedisConn,
}

impl RedisSequencer {
    /// Connect to the server named by `metadata` (`redisHost`, `redisPassword`, `db`, ...).
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        Ok(RedisSequencer {
            conn: connect(metadata).await?,
        })
    }
}

#[async_trait]
impl Sequencer for RedisSequencer {
    async fn ensure_floor(&self, key: &str, floor: i64) -> Result<()> {
        let mut call = ENSURE_FLOOR.key(key);
        call.arg(floor);
        self.conn.invoke_idempotent::<i64>(&call).await?;
        Ok(())
    }

    async fn next_id(&self, key: &str) -> Result<i64> {
        let mut cmd = ::redis::cmd("INCR");
        cmd.arg(key);
        self.conn.query(&cmd).await
    }

    async fn segment(&self, key: &str, size: u32) -> Result<(i64, i64)> {
        if size == 0 {
            return Err(ComponentError::InvalidArgument(
                "segment size must be at least 1".to_string(),
            ));
        }
        let mut cmd = ::redis::cmd("INCRBY");
        cmd.arg(key).arg(size);
        let last: i64 = self.conn.query(&cmd).await?;
        let first = last.checked_sub(i64::from(size) - 1).ok_or_else(|| {
            ComponentError::Internal(format!("redis: sequencer {key} out of range"))
        })?;
        Ok((first, last))
    }

    async fn health(&self) -> Health {
        self.conn.health().await
    }
}
