//! Managed resources, one file each.

pub mod broker;
pub mod broker_user;
pub mod configuration;
