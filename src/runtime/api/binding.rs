//! Bindings API: InvokeBinding (output bindings).

use tonic::Status;

use super::status::{component, store};
use super::Shared;
use crate::runtime::proto::rt;

/// `InvokeBinding`.
pub async fn invoke(
    s: &Shared,
    r: rt::InvokeBindingRequest,
) -> Result<rt::InvokeBindingResponse, Status> {
    let b = store(&s.components.bindings, &r.name, "binding")?;
    let what = format!("error invoking output binding {}", r.name);
    let (data, metadata) = b
        .invoke(&r.operation, r.data.into(), &r.metadata)
        .await
        .map_err(|e| component(e, &what))?;
    Ok(rt::InvokeBindingResponse {
        data: data.to_vec(),
        metadata,
    })
}
