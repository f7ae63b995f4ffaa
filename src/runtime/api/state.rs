//! State API: Get, GetBulk, Save, Delete, DeleteBulk, ExecuteStateTransaction.

use futures_util::stream::{self, StreamExt};
use tonic::Status;

use super::status::{component, store};
use super::Shared;
use crate::runtime::components::registry::Named;
use crate::runtime::components::{Concurrency, StateOp, StateStore};
use crate::runtime::proto::rt;

type Store = Named<dyn StateStore>;

fn lookup<'a>(s: &'a Shared, name: &str) -> Result<&'a Store, Status> {
    store(&s.components.state, name, "state")
}

fn stored_key(s: &Shared, st: &Store, name: &str, key: &str) -> Result<String, Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(format!(
            "key is empty in state store {name}"
        )));
    }
    if key.contains("||") {
        return Err(Status::invalid_argument(format!(
            "input key/keyPrefix '{key}' can't contain '||'"
        )));
    }
    Ok(st.prefix.state_key(key, &s.components.app.app_id, name))
}

fn concurrency(o: Option<&rt::StateOptions>) -> Concurrency {
    match o.map(|o| o.concurrency()) {
        Some(rt::state_options::StateConcurrency::ConcurrencyFirstWrite) => Concurrency::FirstWrite,
        Some(rt::state_options::StateConcurrency::ConcurrencyLastWrite) => Concurrency::LastWrite,
        _ => Concurrency::Unspecified,
    }
}

fn upsert(s: &Shared, st: &Store, name: &str, item: rt::StateItem) -> Result<StateOp, Status> {
    let key = stored_key(s, st, name, &item.key)?;
    let etag = item.etag.as_ref().map(|e| e.value.as_str());
    Ok(StateOp::Upsert {
        key,
        value: item.value.into(),
        condition: concurrency(item.options.as_ref()).condition(etag),
    })
}

fn delete(
    s: &Shared,
    st: &Store,
    name: &str,
    key: &str,
    etag: Option<&rt::Etag>,
    options: Option<&rt::StateOptions>,
) -> Result<StateOp, Status> {
    Ok(StateOp::Delete {
        key: stored_key(s, st, name, key)?,
        condition: concurrency(options).condition(etag.map(|e| e.value.as_str())),
    })
}

/// `GetState`: a missing key is an empty response.
pub async fn get(s: &Shared, r: rt::GetStateRequest) -> Result<rt::GetStateResponse, Status> {
    let st = lookup(s, &r.store_name)?;
    let key = stored_key(s, st, &r.store_name, &r.key)?;
    match st.inner.get(&key).await.map_err(|e| {
        component(
            e,
            &format!("fail to get {} from state store {}", r.key, r.store_name),
        )
    })? {
        Some(v) => Ok(rt::GetStateResponse {
            data: v.data.into(),
            etag: v.etag,
            metadata: Default::default(),
        }),
        None => Ok(rt::GetStateResponse::default()),
    }
}

/// `GetBulkState`: keys fetched `parallelism` at a time (default 10), in request order; a key
/// that fails carries its error instead of failing the call.
pub async fn get_bulk(
    s: &Shared,
    r: rt::GetBulkStateRequest,
) -> Result<rt::GetBulkStateResponse, Status> {
    let st = lookup(s, &r.store_name)?;
    let parallelism = usize::try_from(r.parallelism)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(10);
    let mut keys = Vec::with_capacity(r.keys.len());
    for k in &r.keys {
        keys.push((k.clone(), stored_key(s, st, &r.store_name, k)?));
    }
    let items = stream::iter(keys)
        .map(|(key, stored)| async move {
            match st.inner.get(&stored).await {
                Ok(Some(v)) => rt::BulkStateItem {
                    key,
                    data: v.data.into(),
                    etag: v.etag,
                    ..Default::default()
                },
                Ok(None) => rt::BulkStateItem {
                    key,
                    ..Default::default()
                },
                Err(e) => rt::BulkStateItem {
                    key,
                    error: e.to_string(),
                    ..Default::default()
                },
            }
        })
        .buffered(parallelism)
        .collect()
        .await;
    Ok(rt::GetBulkStateResponse { items })
}

/// `SaveState`: each item under its own concurrency and etag.
pub async fn save(s: &Shared, r: rt::SaveStateRequest) -> Result<(), Status> {
    let st = lookup(s, &r.store_name)?;
    for item in r.states {
        let op = upsert(s, st, &r.store_name, item)?;
        st.inner.apply(op).await.map_err(|e| {
            component(
                e,
                &format!("failed saving state in state store {}", r.store_name),
            )
        })?;
    }
    Ok(())
}

/// `DeleteState`.
pub async fn delete_one(s: &Shared, r: rt::DeleteStateRequest) -> Result<(), Status> {
    let st = lookup(s, &r.store_name)?;
    let op = delete(
        s,
        st,
        &r.store_name,
        &r.key,
        r.etag.as_ref(),
        r.options.as_ref(),
    )?;
    st.inner
        .apply(op)
        .await
        .map_err(|e| component(e, &format!("failed deleting state with key {}", r.key)))
}

/// `DeleteBulkState`.
pub async fn delete_bulk(s: &Shared, r: rt::DeleteBulkStateRequest) -> Result<(), Status> {
    let st = lookup(s, &r.store_name)?;
    for item in r.states {
        let op = delete(
            s,
            st,
            &r.store_name,
            &item.key,
            item.etag.as_ref(),
            item.options.as_ref(),
        )?;
        st.inner
            .apply(op)
            .await
            .map_err(|e| component(e, &format!("failed deleting state with key {}", item.key)))?;
    }
    Ok(())
}

/// `ExecuteStateTransaction`: all operations or none.
pub async fn transact(s: &Shared, r: rt::ExecuteStateTransactionRequest) -> Result<(), Status> {
    let st = lookup(s, &r.store_name)?;
    let mut ops = Vec::with_capacity(r.operations.len());
    for op in r.operations {
        let item = op
            .request
            .ok_or_else(|| Status::invalid_argument("transaction operation without request"))?;
        ops.push(match op.operation_type.as_str() {
            "upsert" => upsert(s, st, &r.store_name, item)?,
            "delete" => delete(
                s,
                st,
                &r.store_name,
                &item.key,
                item.etag.as_ref(),
                item.options.as_ref(),
            )?,
            other => {
                return Err(Status::unimplemented(format!(
                    "operation type {other} not supported"
                )))
            }
        });
    }
    st.inner.transact(ops).await.map_err(|e| {
        component(
            e,
            &format!(
                "error while executing state transaction in {}",
                r.store_name
            ),
        )
    })
}
