//! The application runtime: Layotto's gRPC API served on an internal listener.
pub mod proto;
