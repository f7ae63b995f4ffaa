//! Per-method counters of the runtime API, in the proxy's stats store (so `/stats` and
//! `/stats/prometheus` show them): `runtime.rpc.<Method>.rq_total` and `.rq_error` (calls answered
//! with a non-OK gRPC status in the response headers, as every failed unary call is). Handles are
//! resolved once, when the runtime starts.

use std::collections::HashMap;

use metrics::Counter;

/// Every method of the runtime's services.
pub const METHODS: &[&str] = &[
    "SayHello",
    "InvokeService",
    "GetConfiguration",
    "SaveConfiguration",
    "DeleteConfiguration",
    "SubscribeConfiguration",
    "TryLock",
    "Unlock",
    "LockKeepAlive",
    "GetNextId",
    "GetState",
    "GetBulkState",
    "SaveState",
    "DeleteState",
    "DeleteBulkState",
    "ExecuteStateTransaction",
    "PublishEvent",
    "SubscribeTopicEvents",
    "GetFile",
    "PutFile",
    "ListFile",
    "DelFile",
    "GetFileMeta",
    "InvokeBinding",
    "GetSecret",
    "GetBulkSecret",
    "ApplyConfiguration",
];

/// Counters of one method.
#[derive(Clone)]
pub struct MethodStats {
    /// Calls.
    pub total: Counter,
    /// Calls that failed.
    pub errors: Counter,
}

impl MethodStats {
    fn new(method: &str) -> Self {
        MethodStats {
            total: crate::stats::counter(format!("runtime.rpc.{method}.rq_total")),
            errors: crate::stats::counter(format!("runtime.rpc.{method}.rq_error")),
        }
    }
}

/// The counters of every method, by name.
pub struct RpcStats {
    methods: HashMap<&'static str, MethodStats>,
    other: MethodStats,
}

impl Default for RpcStats {
    fn default() -> Self {
        RpcStats {
            methods: METHODS.iter().map(|m| (*m, MethodStats::new(m))).collect(),
            other: MethodStats::new("other"),
        }
    }
}

impl RpcStats {
    /// The counters for a request path `/<package>.<Service>/<Method>` (reflection and unknown
    /// paths count as `other`).
    pub fn for_path(&self, path: &str) -> &MethodStats {
        path.rsplit('/')
            .next()
            .and_then(|m| self.methods.get(m))
            .unwrap_or(&self.other)
    }
}
