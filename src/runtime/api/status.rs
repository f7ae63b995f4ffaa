//! gRPC status codes as Layotto uses them: store not configured -> FailedPrecondition, unknown
//! store or bad argument -> InvalidArgument, etag mismatch -> Aborted, store down -> Unavailable.

use std::collections::HashMap;

use tonic::Status;

use crate::runtime::components::ComponentError;

/// A component error as a gRPC status; `what` says which call and store.
pub fn component(e: ComponentError, what: &str) -> Status {
    let msg = format!("{what}: {e}");
    match e {
        ComponentError::Unavailable(_) => Status::unavailable(msg),
        ComponentError::EtagMismatch(_) => Status::aborted(msg),
        ComponentError::EtagInvalid(_) | ComponentError::InvalidArgument(_) => {
            Status::invalid_argument(msg)
        }
        ComponentError::NotFound(_) => Status::not_found(msg),
        ComponentError::Unimplemented(_) => Status::unimplemented(msg),
        ComponentError::Internal(_) => Status::internal(msg),
    }
}

/// Look up store `name` of API `api` (`state`, `lock`, ...).
pub fn store<'a, T>(map: &'a HashMap<String, T>, name: &str, api: &str) -> Result<&'a T, Status> {
    if map.is_empty() {
        return Err(Status::failed_precondition(format!(
            "{api} store is not configured"
        )));
    }
    if name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{api} store name is empty"
        )));
    }
    map.get(name)
        .ok_or_else(|| Status::invalid_argument(format!("{api} store {name} is not found")))
}

/// Reject an empty required field.
pub fn required(value: &str, field: &str, store: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!(
            "{field} is empty in store {store}"
        )))
    } else {
        Ok(())
    }
}
