//! Terraform plugin protocol 6 for FerryMQ's provider.
//!
//! Resources implement [`Provider`] in terms of [`Value`]s, [`Schema`]s and
//! [`Diagnostics`]; [`serve`] does everything Terraform expects of a plugin
//! process: the go-plugin handshake, mutual TLS, the tfplugin6 gRPC service,
//! go-plugin's helper services, and decoding/encoding values with the
//! schemas. See `provider/examples/toy_provider.rs` for a complete example.

mod convert;
pub mod diagnostics;
mod goplugin;
#[cfg(test)]
mod grpc_tests;
pub mod handshake;
mod incoming;
pub mod json;
pub mod msgpack;
pub mod proto;
mod provider;
pub mod schema;
mod server;
mod service;
pub mod tls;
pub mod value;

pub use diagnostics::{has_errors, AttributePath, Diagnostic, Diagnostics, PathStep, Severity};
pub use provider::{
    default_upgrade_resource_state, ApplyRequest, ApplyResponse, ImportedResource, PlanRequest,
    PlanResponse, Provider, ReadResponse,
};
pub use schema::{Attribute, Block, NestedBlock, Nesting, Schema, Type};
pub use server::{init_logging, serve};
pub use value::{Value, ValueError};
