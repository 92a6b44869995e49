//! Commands an operator runs against a broker's agents from a workstation (with the provider's
//! credentials), rather than anything an agent does for itself.

pub mod reboot;
