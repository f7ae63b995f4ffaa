//! Generated code: the Layotto-compatible runtime API (`spec.proto.runtime.v1`) and the etcd v3
//! client API, compiled from `proto/` by `build.rs`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/runtime_api.rs"));

/// etcd's v3 API (`etcdserverpb`, `mvccpb`, `authpb`), client side.
pub mod etcd {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/etcd_api.rs"));
}

pub use spec::proto::runtime::v1 as rt;

/// The runtime API's file descriptor set (imports included), for gRPC server reflection.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/runtime_descriptor.bin"));
