//! Storage a broker keeps its data on: `block`, the EBS equivalent (a block device on the host,
//! prepared for one broker), and `shared`, the EFS equivalent (an NFS export or an already
//! shared directory that the instances of an active/standby broker both use).

pub mod block;
pub mod shared;
