//! FerryMQ Terraform provider.

pub mod tfplugin;
