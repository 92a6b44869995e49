//! The contract shared by the FerryMQ provider and the agents on appliance hosts.
//!
//! It holds the gRPC API (generated from `proto/ferrymq/agent/v1/agent.proto`), the catalogue of
//! instance types and engine versions both sides validate against, and the field validators
//! that refuse what Amazon MQ refuses. It knows nothing of tokio, systemd or Terraform, so the
//! provider and the agent cannot disagree about what a valid broker is.

pub mod catalogue;
pub mod channel;
pub mod configuration;
pub mod load_balancer;
pub mod recommendation;
pub mod server_certificate;
pub mod validate;
pub mod window;

/// Generated gRPC types and services of the agent API.
pub mod agent {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ferrymq.agent.v1");
}

/// The TCP port an agent serves its API on unless a host says otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 7443;
