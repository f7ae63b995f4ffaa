//! etcd lock (`lock` type `etcd`), as Layotto's: a lock is the key `<keyPrefixPath><resource>`
//! holding the owner, attached to a lease of the lock's expiry, created only if absent.
//! Metadata: see [`super::etcd`]; `keyPrefixPath` defaults to `/layotto/`.

use tonic::async_trait;

use super::etcd::{self, EtcdClient};
use super::{ComponentError, Health, LockStatus, LockStore, Metadata, Result};
use crate::runtime::proto::etcd::etcdserverpb::compare::CompareResult;
use crate::runtime::proto::etcd::etcdserverpb::{RequestOp, TxnResponse};

/// Layotto's default key prefix for etcd components.
const DEFAULT_PREFIX: &str = "/layotto/";

/// Distributed locks on etcd leases.
#[derive(Debug, Clone)]
pub struct EtcdLock {
    client: EtcdClient,
    prefix: String,
}

impl EtcdLock {
    /// Connect to etcd (metadata: `endpoints`, `username`, `password`, `dialTimeout`, `timeout`,
    /// `keyPrefixPath`).
    pub async fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        let client = etcd::connect(metadata).await?;
        Ok(EtcdLock {
            client,
            prefix: etcd::key_prefix(metadata, DEFAULT_PREFIX),
        })
    }

    fn key(&self, resource: &str) -> String {
        format!("{}{resource}", self.prefix)
    }

    /// Grant the lease a hold of `expire_secs` lives on.
    async fn lease(&self, expire_secs: u32) -> Result<i64> {
        if expire_secs == 0 {
            return Err(ComponentError::InvalidArgument(
                "lock expiry must be positive".into(),
            ));
        }
        self.client.grant_lease(i64::from(expire_secs)).await
    }

    /// Run `Txn(value(key) == owner → [get key, then...]; else [get key])`: either way the first
    /// response holds the key as it was before (with its lease), or nothing if it is missing.
    async fn if_owner(&self, key: &str, owner: &str, then: Vec<RequestOp>) -> Result<TxnResponse> {
        let mut success = vec![etcd::op_get(key)];
        success.extend(then);
        self.client
            .txn(
                vec![etcd::cmp_value(key, CompareResult::Equal, owner)],
                success,
                vec![etcd::op_get(key)],
            )
            .await
    }
}

/// Why an owner check failed: the key is gone or someone else holds it.
fn not_owner(response: &TxnResponse) -> LockStatus {
    if etcd::txn_kvs(response, 0).is_empty() {
        LockStatus::LockUnexist
    } else {
        LockStatus::LockBelongToOthers
    }
}

/// The lease the key had before the txn (read by its first success op).
fn previous_lease(response: &TxnResponse) -> i64 {
    etcd::txn_kvs(response, 0).first().map_or(0, |kv| kv.lease)
}

#[async_trait]
impl LockStore for EtcdLock {
    async fn try_lock(&self, key: &str, owner: &str, expire_secs: u32) -> Result<bool> {
        let key = self.key(key);
        let lease = self.lease(expire_secs).await?;
        let result = self
            .client
            .txn(
                vec![etcd::cmp_create_revision(
                    key.as_str(),
                    CompareResult::Equal,
                    0,
                )],
                vec![etcd::op_put(key.as_str(), owner, lease)],
                Vec::new(),
            )
            .await;
        match result {
            Ok(response) if response.succeeded => Ok(true),
            Ok(_) => {
                self.client.revoke_lease_quietly(lease).await;
                Ok(false)
            }
            Err(e) => {
                // The put may or may not have happened: revoking the lease undoes it either way.
                self.client.revoke_lease_quietly(lease).await;
                Err(e)
            }
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus> {
        let key = self.key(key);
        let response = self
            .if_owner(&key, owner, vec![etcd::op_delete(key.as_str())])
            .await?;
        if !response.succeeded {
            return Ok(not_owner(&response));
        }
        self.client
            .revoke_lease_quietly(previous_lease(&response))
            .await;
        Ok(LockStatus::Success)
    }

    async fn keep_alive(&self, key: &str, owner: &str, expire_secs: u32) -> Result<LockStatus> {
        let key = self.key(key);
        let lease = self.lease(expire_secs).await?;
        // On an error the new lease is left to expire: if the put did happen, the key lives on it
        // now, and revoking it would release a lock its owner still holds.
        let response = self
            .if_owner(&key, owner, vec![etcd::op_put(key.as_str(), owner, lease)])
            .await?;
        if !response.succeeded {
            self.client.revoke_lease_quietly(lease).await;
            return Ok(not_owner(&response));
        }
        let old = previous_lease(&response);
        if old != lease {
            self.client.revoke_lease_quietly(old).await;
        }
        Ok(LockStatus::Success)
    }

    async fn health(&self) -> Health {
        self.client.health().await
    }
}
