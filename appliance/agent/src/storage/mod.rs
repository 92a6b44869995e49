//! Storage a broker keeps its data on. `block` is the EBS equivalent: a block device on the
//! host, prepared for one broker. (Shared NFS storage, the EFS equivalent, joins with
//! ActiveMQ active/standby.)

pub mod block;
