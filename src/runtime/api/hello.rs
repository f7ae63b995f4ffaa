//! SayHello and the Lifecycle API (`ApplyConfiguration` changes a hello component's greeting).

use tonic::Status;

use super::Shared;
use crate::runtime::proto::rt;

/// `SayHello`: echoes `data` back.
pub fn say_hello(s: &Shared, r: rt::SayHelloRequest) -> Result<rt::SayHelloResponse, Status> {
    let hellos = &s.components.hellos;
    let h = if r.service_name.is_empty() && hellos.len() == 1 {
        hellos.values().next()
    } else {
        hellos.get(&r.service_name)
    };
    let h = h.ok_or_else(|| Status::unknown("no instance found"))?;
    Ok(rt::SayHelloResponse {
        hello: h.say_hello(&r.name),
        data: r.data,
    })
}

/// `Lifecycle.ApplyConfiguration`.
pub fn apply(
    s: &Shared,
    r: rt::DynamicConfiguration,
) -> Result<rt::ApplyConfigurationResponse, Status> {
    let c = r
        .component_config
        .ok_or_else(|| Status::invalid_argument("component_config is required"))?;
    match c.kind.as_str() {
        "" => Err(Status::invalid_argument("kind is required")),
        "hello" | "hellos" => {
            let h = s.components.hellos.get(&c.name).ok_or_else(|| {
                Status::invalid_argument(format!("hello component {} not found", c.name))
            })?;
            if let Some(g) = c.metadata.get("hello") {
                h.set_greeting(g);
            }
            Ok(rt::ApplyConfigurationResponse {})
        }
        other => Err(Status::invalid_argument(format!(
            "component kind {other} does not support dynamic configuration"
        ))),
    }
}
