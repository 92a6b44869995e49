//! FerryMQ Terraform provider: `ferrymq_broker` and its data sources over plugin protocol 6.
//!
//! `tfplugin` is the only module that knows the wire protocol; resources and data sources work
//! on decoded values, and `client` is the only module that talks to agents.

pub mod client;
pub mod data_sources;
pub mod provider;
pub mod resources;
pub mod tfplugin;
pub mod validation;
