//! Compiles the agent API with `protox` (pure Rust) so no `protoc` is needed on a build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/ferrymq/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
