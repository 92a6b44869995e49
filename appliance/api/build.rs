//! Compiles the agent API with `protox` (pure Rust) so no `protoc` is needed on a build machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/ferrymq/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // The agent stores specs as JSON on the host, so the messages carry serde derives.
    tonic_prost_build::configure()
        .type_attribute(
            ".ferrymq.agent.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".ferrymq.agent.v1", "#[serde(default)]")
        .compile_fds(descriptors)?;
    Ok(())
}
