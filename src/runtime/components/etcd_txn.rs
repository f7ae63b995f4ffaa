//! Builders for etcd transactions (compares and ops) and key ranges, used by the etcd
//! components through [`super::etcd`].

use crate::runtime::proto::etcd::etcdserverpb::compare::{
    CompareResult, CompareTarget, TargetUnion,
};
use crate::runtime::proto::etcd::etcdserverpb::request_op::Request as Op;
use crate::runtime::proto::etcd::etcdserverpb::response_op::Response as OpResponse;
use crate::runtime::proto::etcd::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnResponse,
};
use crate::runtime::proto::etcd::mvccpb::KeyValue;

/// Compare `key`'s create revision with `revision` (0 means the key does not exist).
pub fn cmp_create_revision(
    key: impl Into<Vec<u8>>,
    result: CompareResult,
    revision: i64,
) -> Compare {
    compare(
        key,
        CompareTarget::Create,
        result,
        TargetUnion::CreateRevision(revision),
    )
}

/// Compare `key`'s mod revision with `revision`.
pub fn cmp_mod_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: i64) -> Compare {
    compare(
        key,
        CompareTarget::Mod,
        result,
        TargetUnion::ModRevision(revision),
    )
}

/// Compare `key`'s value with `value` (always false when the key does not exist).
pub fn cmp_value(
    key: impl Into<Vec<u8>>,
    result: CompareResult,
    value: impl Into<Vec<u8>>,
) -> Compare {
    compare(
        key,
        CompareTarget::Value,
        result,
        TargetUnion::Value(value.into()),
    )
}

fn compare(
    key: impl Into<Vec<u8>>,
    target: CompareTarget,
    result: CompareResult,
    value: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(value),
    }
}

/// A txn op reading `key`.
pub fn op_get(key: impl Into<Vec<u8>>) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

/// A txn op writing `value` at `key`, attached to `lease` (0 for none).
pub fn op_put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: i64) -> RequestOp {
    let put = PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..Default::default()
    };
    RequestOp {
        request: Some(Op::RequestPut(put)),
    }
}

/// A txn op deleting `key`.
pub fn op_delete(key: impl Into<Vec<u8>>) -> RequestOp {
    let delete = DeleteRangeRequest {
        key: key.into(),
        ..Default::default()
    };
    RequestOp {
        request: Some(Op::RequestDeleteRange(delete)),
    }
}

/// The key-values read by the `index`-th op of a txn's response (empty if that op was no read).
pub fn txn_kvs(response: &TxnResponse, index: usize) -> &[KeyValue] {
    match response
        .responses
        .get(index)
        .and_then(|r| r.response.as_ref())
    {
        Some(OpResponse::ResponseRange(range)) => &range.kvs,
        _ => &[],
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `WithPrefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from `prefix` on.
    vec![0]
}
