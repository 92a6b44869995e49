//! Renders `rabbitmq.conf` and its companions from the broker's spec.

use super::{RabbitMq, AGENT_USER, AMQP_PORT, CONSOLE_PORT};
use crate::engine::RenderedFile;

pub const CONF: &str = "rabbitmq.conf";
pub const PLUGINS: &str = "enabled_plugins";
/// Our own (empty) env file, so Debian's `/etc/rabbitmq/rabbitmq-env.conf` cannot override
/// the node name or paths FerryMQ sets.
pub const ENV: &str = "rabbitmq-env.conf";
const COOKIE: &str = ".erlang.cookie";

pub fn render(node: &RabbitMq) -> Vec<RenderedFile> {
    let p = &node.placement;
    let file = |name: &str, contents: String, secret: bool| RenderedFile {
        path: p.config_dir.join(name),
        contents,
        secret,
        restart_on_change: true,
    };
    vec![
        file(CONF, rabbitmq_conf(node), true),
        file(PLUGINS, "[rabbitmq_management].\n".into(), false),
        file(
            ENV,
            "# Managed by FerryMQ: settings come from the environment.\n".into(),
            false,
        ),
        file(COOKIE, p.cookie.clone(), true),
    ]
}

fn rabbitmq_conf(node: &RabbitMq) -> String {
    let p = &node.placement;
    let address = p.address;
    // Memory alarm, connection and channel limits of the instance type (see `sizing`).
    let limits = crate::sizing::rabbitmq(p.instance_type);
    // The default user is created only when the node first boots with an empty database:
    // making it the agent's own user means `guest` never exists on a FerryMQ broker.
    format!(
        "# Managed by FerryMQ for broker {id}; changes here are overwritten.\n\
         listeners.tcp.1 = {amqp}\n\
         management.tcp.ip = {ip}\n\
         management.tcp.port = {CONSOLE_PORT}\n\
         default_vhost = /\n\
         default_user = {AGENT_USER}\n\
         default_pass = {pass}\n\
         default_user_tags.administrator = true\n\
         default_permissions.configure = .*\n\
         default_permissions.read = .*\n\
         default_permissions.write = .*\n\
         loopback_users = none\n\
         log.console = false\n\
         log.file.level = info\n\
         total_memory_available_override_value = {memory}\n\
         vm_memory_high_watermark.absolute = {watermark}\n\
         connection_max = {connection_max}\n\
         channel_max = {channel_max}\n\
         disk_free_limit.absolute = {disk_free}\n",
        id = p.broker_id,
        amqp = super::socket(address, AMQP_PORT),
        ip = address,
        pass = p.agent_password,
        memory = p.instance_type.memory_bytes(),
        watermark = limits.memory_high_watermark_bytes,
        connection_max = limits.connection_max,
        channel_max = limits.channel_max,
        disk_free = disk_free_limit(p.volume_bytes),
    )
}

/// RabbitMQ's own default free-disk floor (50 MB), kept as the minimum.
const DISK_FREE_MIN: u64 = 50_000_000;
/// Above this, keeping 10 % free wastes space for nothing: the alarm only has to fire before
/// the node's writes (message store, queue indexes, Mnesia) can fill the disk.
const DISK_FREE_MAX: u64 = 5 << 30;

/// `disk_free_limit.absolute` in bytes: the free space below which RabbitMQ raises its disk
/// alarm and blocks every publishing connection (`connection.blocked`) until space is freed.
///
/// Keep 10 % of the volume free, at least RabbitMQ's default of 50 MB (so a small volume
/// still has room for the writes in flight when the alarm fires, and for Mnesia and the logs
/// while blocked) and at most 5 GiB (so a large volume is not left 10 % empty). An unknown
/// volume size (0) gets the 50 MB floor. The alarm is checked against the filesystem the node's
/// data directory is on: the broker's volume.
pub fn disk_free_limit(volume_bytes: u64) -> u64 {
    (volume_bytes / 10).clamp(DISK_FREE_MIN, DISK_FREE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_binds_the_host_address_and_replaces_guest() {
        let address = "10.9.8.7".parse().expect("ip");
        let node = RabbitMq::new(crate::engine::Placement {
            broker_id: "b-1".into(),
            address,
            config_dir: "/state/b-1/engine".into(),
            data_dir: "/state/b-1/volume/rabbitmq".into(),
            instance_type: ferrymq_api::catalogue::instance_type("mq.m5.large").expect("type"),
            volume_bytes: 0,
            users: vec![],
            agent_password: "s3cret-agent-pass".into(),
            cookie: "COOKIE".into(),
            engine_home: None,
        })
        .expect("node");
        let files = render(&node);
        let conf = &files[0];
        assert_eq!(
            conf.path,
            std::path::Path::new("/state/b-1/engine/rabbitmq.conf")
        );
        assert!(conf.secret);
        let expected = "# Managed by FerryMQ for broker b-1; changes here are overwritten.\n\
            listeners.tcp.1 = 10.9.8.7:5672\n\
            management.tcp.ip = 10.9.8.7\n\
            management.tcp.port = 15672\n\
            default_vhost = /\n\
            default_user = ferrymq-agent\n\
            default_pass = s3cret-agent-pass\n\
            default_user_tags.administrator = true\n\
            default_permissions.configure = .*\n\
            default_permissions.read = .*\n\
            default_permissions.write = .*\n\
            loopback_users = none\n\
            log.console = false\n\
            log.file.level = info\n\
            total_memory_available_override_value = 8589934592\n\
            vm_memory_high_watermark.absolute = 3435973836\n\
            connection_max = 5000\n\
            channel_max = 2047\n\
            disk_free_limit.absolute = 50000000\n";
        assert_eq!(conf.contents, expected);
        assert!(!conf.contents.contains("guest"));
        assert_eq!(files[1].contents, "[rabbitmq_management].\n");
        assert!(files[3].secret && files[3].path.ends_with(".erlang.cookie"));
    }

    #[test]
    fn disk_free_limit_keeps_a_tenth_of_the_volume_within_bounds() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        // Unknown size and small volumes: RabbitMQ's 50 MB default.
        assert_eq!(disk_free_limit(0), 50_000_000);
        assert_eq!(disk_free_limit(384 * MIB), 50_000_000);
        // 10 % in between.
        assert_eq!(disk_free_limit(20 * GIB), 2 * GIB);
        // At most 5 GiB on a large volume.
        assert_eq!(disk_free_limit(1024 * GIB), 5 * GIB);
    }
}
