//! Compiles the runtime API protos (`proto/runtime/v1`, Layotto-compatible) and the etcd v3 client
//! API (`proto/etcd`) with the pure-Rust `protox` compiler: no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for dir in ["runtime/v1", "etcd"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    // The runtime API: layer8 serves Runtime and Lifecycle and calls the app's AppCallback.
    let runtime = protox::compile(
        [
            "runtime/v1/runtime.proto",
            "runtime/v1/appcallback.proto",
            "runtime/v1/lifecycle.proto",
        ],
        [&root],
    )?;
    // The descriptor set (imports included) backs gRPC server reflection, so grpcurl and other
    // tools can call the runtime without the .proto files.
    {
        use prost::Message;
        let out = PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(out.join("runtime_descriptor.bin"), runtime.encode_to_vec())?;
    }
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        // Smaller per-call buffers than tonic's default codec (see src/runtime/codec.rs).
        .codec_path("crate::runtime::codec::RuntimeCodec")
        .include_file("runtime_api.rs")
        .compile_fds(runtime)?;

    // etcd's KV, Watch and Lease services, client side only (configuration, lock, sequencer).
    let etcd = protox::compile(["rpc.proto"], [root.join("etcd")])?;
    tonic_build::configure()
        .build_server(false)
        .include_file("etcd_api.rs")
        .compile_fds(etcd)?;
    // When this build happened, for the actuator's `/actuator/info` (`compiled`).
    let compiled = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=LAYER8_COMPILED={}", compiled.trim());
    Ok(())
}
