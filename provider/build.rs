//! Generates the gRPC code for Terraform's plugin protocol 6 and go-plugin's
//! helper services.
//!
//! The `.proto` files are parsed with `protox` (pure Rust) so neither a
//! developer machine nor CI needs `protoc` installed.

use std::path::PathBuf;

const PROTOS: &[&str] = &["tfplugin6.proto", "plugin.proto", "health.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&proto_dir])?;
    tonic_prost_build::configure()
        // Clients are only used by the in-process tests, but generating them
        // unconditionally keeps the build script simple.
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
