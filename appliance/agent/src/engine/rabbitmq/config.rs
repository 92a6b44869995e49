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
         log.file.level = info\n",
        id = p.broker_id,
        amqp = super::socket(address, AMQP_PORT),
        ip = address,
        pass = p.agent_password,
    )
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
            log.file.level = info\n";
        assert_eq!(conf.contents, expected);
        assert!(!conf.contents.contains("guest"));
        assert_eq!(files[1].contents, "[rabbitmq_management].\n");
        assert!(files[3].secret && files[3].path.ends_with(".erlang.cookie"));
    }
}
