//! Managed resources, one file each.

pub mod broker;
pub mod configuration;
