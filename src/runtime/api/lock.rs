//! Lock API: TryLock, Unlock, LockKeepAlive.

use tonic::Status;

use super::status::{component, store};
use super::Shared;
use crate::runtime::components::registry::Named;
use crate::runtime::components::{LockStatus, LockStore};
use crate::runtime::proto::rt;

struct Checked<'a> {
    st: &'a Named<dyn LockStore>,
    key: String,
}

fn check<'a>(
    s: &'a Shared,
    name: &str,
    resource: &str,
    owner: &str,
    expire: Option<i32>,
) -> Result<Checked<'a>, Status> {
    let st = store(&s.components.locks, name, "lock")?;
    if resource.is_empty() {
        return Err(Status::invalid_argument(format!(
            "ResourceId is empty in lock store {name}"
        )));
    }
    if owner.is_empty() {
        return Err(Status::invalid_argument(format!(
            "LockOwner is empty in lock store {name}"
        )));
    }
    if expire.is_some_and(|e| e <= 0) {
        return Err(Status::invalid_argument(format!(
            "Expire is not positive in lock store {name}"
        )));
    }
    let key = st
        .prefix
        .scoped_key("lock", resource, &s.components.app.app_id, name);
    Ok(Checked { st, key })
}

fn expire(e: i32) -> u32 {
    u32::try_from(e).unwrap_or(1)
}

/// `TryLock`.
pub async fn try_lock(s: &Shared, r: rt::TryLockRequest) -> Result<rt::TryLockResponse, Status> {
    let c = check(
        s,
        &r.store_name,
        &r.resource_id,
        &r.lock_owner,
        Some(r.expire),
    )?;
    let success =
        c.st.inner
            .try_lock(&c.key, &r.lock_owner, expire(r.expire))
            .await
            .map_err(|e| component(e, &format!("TryLock in lock store {}", r.store_name)))?;
    Ok(rt::TryLockResponse { success })
}

/// The wire value of a lock status: `UnlockResponse.Status` and `LockKeepAliveResponse.Status`
/// share their numbering (SUCCESS, LOCK_UNEXIST, LOCK_BELONG_TO_OTHERS).
fn status_code(s: LockStatus) -> i32 {
    use rt::unlock_response::Status as S;
    match s {
        LockStatus::Success => S::Success as i32,
        LockStatus::LockUnexist => S::LockUnexist as i32,
        LockStatus::LockBelongToOthers => S::LockBelongToOthers as i32,
    }
}

/// `Unlock`.
pub async fn unlock(s: &Shared, r: rt::UnlockRequest) -> Result<rt::UnlockResponse, Status> {
    let c = check(s, &r.store_name, &r.resource_id, &r.lock_owner, None)?;
    let st =
        c.st.inner
            .unlock(&c.key, &r.lock_owner)
            .await
            .map_err(|e| component(e, &format!("Unlock in lock store {}", r.store_name)))?;
    Ok(rt::UnlockResponse {
        status: status_code(st),
    })
}

/// `LockKeepAlive`: extends the owner's lock to `expire` seconds from now.
pub async fn keep_alive(
    s: &Shared,
    r: rt::LockKeepAliveRequest,
) -> Result<rt::LockKeepAliveResponse, Status> {
    let c = check(
        s,
        &r.store_name,
        &r.resource_id,
        &r.lock_owner,
        Some(r.expire),
    )?;
    let st =
        c.st.inner
            .keep_alive(&c.key, &r.lock_owner, expire(r.expire))
            .await
            .map_err(|e| component(e, &format!("LockKeepAlive in lock store {}", r.store_name)))?;
    Ok(rt::LockKeepAliveResponse {
        status: status_code(st),
    })
}
