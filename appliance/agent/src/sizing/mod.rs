//! Instance size: the one place that maps an Amazon MQ instance type to what a broker may use on
//! this host — the engines' own limits (RabbitMQ memory watermark and connection/channel
//! limits, ActiveMQ heap and `maximumConnections`), the supervisor's resource limits (cgroup CPU
//! quota and memory maximum), and whether the host is big enough for the type at all.

use crate::supervisor::ResourceLimits;
use ferrymq_api::catalogue::{gib, InstanceType};
use std::fs;

/// RabbitMQ's memory alarm as a share of the type's memory: RabbitMQ's own default relative
/// watermark (0.4), which Amazon MQ keeps, applied to the type rather than to the host.
const RABBITMQ_WATERMARK_NUM: u64 = 2;
const RABBITMQ_WATERMARK_DEN: u64 = 5;
/// RabbitMQ's own default `channel_max` (channels per connection) in 3.10.
const RABBITMQ_DEFAULT_CHANNEL_MAX: u32 = 2047;
/// The share of the type's memory a host must report (MemTotal leaves out what the kernel
/// reserves, so an 8 GiB machine shows about 7.7 GiB): 95 %.
const HOST_MEMORY_SLACK_PERCENT: u64 = 95;

/// RabbitMQ's limits for a type, as rendered into `rabbitmq.conf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RabbitMqLimits {
    /// `vm_memory_high_watermark.absolute`, in bytes.
    pub memory_high_watermark_bytes: u64,
    /// `connection_max`: Amazon MQ's connections per node.
    pub connection_max: u32,
    /// `channel_max` (per connection). Amazon MQ publishes channels per node, which 3.10 cannot
    /// enforce; a connection never gets more than the node's whole budget nor more than
    /// RabbitMQ's default.
    pub channel_max: u32,
    /// Amazon MQ's queue quota. RabbitMQ 3.10.8 has no node-wide queue limit in
    /// `rabbitmq.conf` (`cluster_queue_limit` came with 3.13/4.x): the engine sets it as the
    /// default vhost's `max-queues` limit through the management API, as Amazon MQ does.
    pub queues: u32,
}

pub fn rabbitmq(t: &InstanceType) -> RabbitMqLimits {
    RabbitMqLimits {
        memory_high_watermark_bytes: t.memory_bytes() * RABBITMQ_WATERMARK_NUM
            / RABBITMQ_WATERMARK_DEN,
        connection_max: t.quotas.rabbitmq_connections_per_node,
        channel_max: t
            .quotas
            .rabbitmq_channels_per_node
            .min(RABBITMQ_DEFAULT_CHANNEL_MAX),
        queues: t.quotas.rabbitmq_queues,
    }
}

/// The JVM's maximum heap for ActiveMQ: half the type's memory (as Amazon MQ sizes it), never
/// below 64 MiB.
pub fn activemq_heap_mib(t: &InstanceType) -> u64 {
    (t.memory_mib / 2).max(64)
}

/// ActiveMQ `maximumConnections` per transport connector: Amazon MQ's quota per protocol.
pub fn activemq_max_connections(t: &InstanceType) -> u32 {
    t.quotas.activemq_connections_per_protocol
}

/// What the supervisor confines the engine to: the type's vCPUs and memory.
pub fn resource_limits(t: &InstanceType) -> ResourceLimits {
    ResourceLimits {
        cpus: t.vcpus,
        memory_bytes: t.memory_bytes(),
    }
}

/// This host's CPUs and memory (bytes).
pub fn host_capacity() -> (u32, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_total(&m))
        .unwrap_or(0);
    (cpus, memory)
}

fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a host with fewer CPUs or less memory than the type, naming both figures.
pub fn check_host_fits(t: &InstanceType, cpus: u32, memory_bytes: u64) -> Result<(), String> {
    let enough_memory = memory_bytes * 100 >= t.memory_bytes() * HOST_MEMORY_SLACK_PERCENT;
    if cpus >= t.vcpus && enough_memory {
        return Ok(());
    }
    Err(format!(
        "host has {} and {} memory; {} needs {} and {}",
        plural(cpus, "CPU"),
        gib(memory_bytes),
        t.name,
        plural(t.vcpus, "CPU"),
        gib(t.memory_bytes()),
    ))
}

fn plural(n: u32, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_api::catalogue::instance_type;

    const GIB: u64 = 1 << 30;

    fn t(name: &str) -> &'static InstanceType {
        instance_type(name).expect(name)
    }

    #[test]
    fn rabbitmq_limits_follow_the_type() {
        let large = rabbitmq(t("mq.m5.large"));
        assert_eq!(large.memory_high_watermark_bytes, 8 * GIB * 2 / 5);
        assert_eq!(large.connection_max, 5_000);
        assert_eq!(large.channel_max, 2047);
        assert_eq!(large.queues, 30_000);
        let micro = rabbitmq(t("mq.t3.micro"));
        assert_eq!(micro.memory_high_watermark_bytes, 429_496_729);
        assert_eq!(micro.connection_max, 500);
        assert_eq!(micro.channel_max, 1_500);
    }

    #[test]
    fn activemq_heap_is_half_the_memory_and_connections_the_quota() {
        assert_eq!(activemq_heap_mib(t("mq.t3.micro")), 512);
        assert_eq!(activemq_heap_mib(t("mq.m5.large")), 4096);
        assert_eq!(activemq_max_connections(t("mq.t3.micro")), 300);
        assert_eq!(activemq_max_connections(t("mq.m5.xlarge")), 2000);
    }

    #[test]
    fn resource_limits_are_the_types_cpus_and_memory() {
        assert_eq!(
            resource_limits(t("mq.m5.large")),
            ResourceLimits {
                cpus: 2,
                memory_bytes: 8 * GIB
            }
        );
    }

    #[test]
    fn small_hosts_are_refused_with_both_figures() {
        let host_mem = 23 * GIB + 400 * 1024 * 1024;
        let err = check_host_fits(t("mq.m5.xlarge"), 2, host_mem).unwrap_err();
        assert_eq!(
            err,
            "host has 2 CPUs and 23.4 GiB memory; mq.m5.xlarge needs 4 CPUs and 16 GiB"
        );
        assert!(check_host_fits(t("mq.m5.large"), 2, host_mem).is_ok());
        assert!(check_host_fits(t("mq.t3.micro"), 2, host_mem).is_ok());
        // Too little memory alone is refused too; a host short only by the kernel's share is not.
        let err = check_host_fits(t("mq.m5.large"), 8, 4 * GIB).unwrap_err();
        assert!(
            err.contains("4 GiB memory") && err.contains("8 GiB"),
            "{err}"
        );
        assert!(check_host_fits(t("mq.m5.large"), 2, 7_900 * 1024 * 1024).is_ok());
        assert!(check_host_fits(t("mq.m5.large"), 1, 64 * GIB)
            .unwrap_err()
            .starts_with("host has 1 CPU and 64 GiB"));
    }

    #[test]
    fn this_hosts_capacity_is_read() {
        let (cpus, mem) = host_capacity();
        assert!(cpus >= 1 && mem > 0);
        assert_eq!(meminfo_total("MemTotal: 2048 kB\n"), Some(2048 * 1024));
    }
}
