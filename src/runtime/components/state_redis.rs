//! `redis` state store, laid out as Dapr's: each key is a hash with fields `data` (the bytes)
//! and `version` (an integer); the etag is the version. Writes run as one Lua script, so a
//! transaction checks every condition before it writes anything and applies atomically.
//!
//! Metadata: the connection keys of [`super::redis`].

use std::sync::LazyLock;

use ::redis::Script;
use tonic::async_trait;

use super::redis::{connect, RedisConn};
use super::{
    ComponentError, Health, Metadata, Result, StateOp, StateStore, StateValue, WriteCondition,
};

/// The Lua script every write runs (through `EVALSHA`). It checks every operation's condition,
/// then applies them all. `KEYS[i]` is operation i's key; `ARGV` holds one triple per operation:
/// `set`/`del`, the condition (`always`, `absent` or the expected version) and the data. Returns
/// 0, or the index of the first failed condition. A key holding something other than a hash
/// matches no etag, and a set replaces it. Public so that benchmarks can time the same command
/// against Redis alone.
pub const WRITE_SCRIPT: &str = r#"
local function version(key)
  local t = redis.call("TYPE", key)["ok"]
  if t == "none" then return nil end
  if t ~= "hash" then return -1 end
  return tonumber(redis.call("HGET", key, "version")) or 0
end
for i = 1, #KEYS do
  local cond = ARGV[3 * i - 1]
  if cond == "absent" then
    if version(KEYS[i]) ~= nil then return i end
  elseif cond ~= "always" then
    local v = version(KEYS[i])
    if v == nil or v ~= tonumber(cond) then return i end
  end
end
for i = 1, #KEYS do
  local key = KEYS[i]
  if ARGV[3 * i - 2] == "set" then
    local v = version(key)
    if v == -1 then
      redis.call("DEL", key)
      v = nil
    end
    redis.call("HSET", key, "data", ARGV[3 * i], "version", string.format("%d", (v or 0) + 1))
  else
    redis.call("DEL", key)
  end
end
return 0
"#;

static WRITE: LazyLock<Script> = LazyLock::new(|| Script::new(WRITE_SCRIPT));

/// A state store on one Redis server.
#[derive(Debug, Clone)]
pub struct RedisState {
    conn: RedisConn,
}

impl RedisState {
    /// Connect to the server named by `metadata` (`redisHost`, `redisPassword`, `db`, ...).
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        Ok(RedisState {
            conn: connect(metadata).await?,
        })
    }

    async fn write(&self, ops: &[StateOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut call = WRITE.prepare_invoke();
        for op in ops {
            let (kind, key, condition, data): (_, _, _, &[u8]) = match op {
                StateOp::Upsert {
                    key,
                    value,
                    condition,
                } => ("set", key, condition, &value[..]),
                StateOp::Delete { key, condition } => ("del", key, condition, &[][..]),
            };
            call.key(key.as_str())
                .arg(kind)
                .arg(condition_arg(condition)?)
                .arg(data);
        }
        match self.conn.invoke::<usize>(&call).await? {
            0 => Ok(()),
            i => {
                let key = match ops.get(i - 1) {
                    Some(StateOp::Upsert { key, .. } | StateOp::Delete { key, .. }) => key.clone(),
                    None => String::new(),
                };
                Err(ComponentError::EtagMismatch(key))
            }
        }
    }
}

/// The script's form of a condition; an etag must be a version this store handed out.
fn condition_arg(condition: &WriteCondition) -> Result<String> {
    match condition {
        WriteCondition::Always => Ok("always".to_string()),
        WriteCondition::Absent => Ok("absent".to_string()),
        WriteCondition::EtagEquals(etag) => etag
            .trim()
            .parse::<u64>()
            .map(|v| v.to_string())
            .map_err(|_| ComponentError::EtagInvalid(etag.clone())),
    }
}

#[async_trait]
impl StateStore for RedisState {
    async fn get(&self, key: &str) -> Result<Option<StateValue>> {
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(key).arg("data").arg("version");
        let (data, version): (Option<Vec<u8>>, Option<String>) =
            self.conn.query_idempotent(&cmd).await?;
        Ok(data.map(|data| StateValue {
            data: data.into(),
            // As the script reads it: a missing or unreadable version counts as 0.
            etag: version
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                .to_string(),
        }))
    }

    async fn apply(&self, op: StateOp) -> Result<()> {
        self.write(std::slice::from_ref(&op)).await
    }

    async fn transact(&self, ops: Vec<StateOp>) -> Result<()> {
        self.write(&ops).await
    }

    async fn health(&self) -> Health {
        self.conn.health().await
    }
}
