//! Secrets API: GetSecret, GetBulkSecret.

use tonic::Status;

use super::status::store;
use super::Shared;
use crate::runtime::components::registry::Secrets;
use crate::runtime::proto::rt;

/// `GetSecret`.
pub fn get(s: &Shared, r: rt::GetSecretRequest) -> Result<rt::GetSecretResponse, Status> {
    let st = store(&s.components.secrets, &r.store_name, "secret")?;
    let data = match st {
        Secrets::Env(e) => e.get(&r.key),
        Secrets::File(f) => f.get(&r.key).ok_or_else(|| {
            Status::not_found(format!(
                "failed getting secret with key {} from secret store {}: secret not found",
                r.key, r.store_name
            ))
        })?,
    };
    Ok(rt::GetSecretResponse { data })
}

/// `GetBulkSecret`.
pub fn bulk(s: &Shared, r: rt::GetBulkSecretRequest) -> Result<rt::GetBulkSecretResponse, Status> {
    let st = store(&s.components.secrets, &r.store_name, "secret")?;
    let all = match st {
        Secrets::Env(e) => e.bulk(),
        Secrets::File(f) => f.bulk(),
    };
    Ok(rt::GetBulkSecretResponse {
        data: all
            .into_iter()
            .map(|(k, secrets)| (k, rt::SecretResponse { secrets }))
            .collect(),
    })
}
