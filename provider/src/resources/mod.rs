//! Managed resources, one file each.

pub mod broker;
