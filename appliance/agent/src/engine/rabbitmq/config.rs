//! Renders `rabbitmq.conf` and its companions from the broker's spec.

use super::{RabbitMq, AGENT_USER, AMQPS_PORT, AMQP_PORT, CONSOLE_PORT, CONSOLE_TLS_PORT};
use crate::engine::RenderedFile;
use anyhow::Result;
use std::fmt::Write as _;

pub const CONF: &str = "rabbitmq.conf";
pub const PLUGINS: &str = "enabled_plugins";
/// The management API (the console, and how the agent manages the broker) and the HTTP
/// backend that asks the agent about its own user (see `auth`).
const PLUGIN_LIST: &str = "[rabbitmq_management,rabbitmq_auth_backend_http].\n";
/// Our own (empty) env file, so Debian's `/etc/rabbitmq/rabbitmq-env.conf` cannot override
/// the node name or paths FerryMQ sets.
pub const ENV: &str = "rabbitmq-env.conf";
const COOKIE: &str = ".erlang.cookie";
/// The TLS options of a cluster node's Erlang distribution (`-ssl_dist_optfile`).
pub const DIST_OPTFILE: &str = "dist-tls.conf";

/// The suites every TLS listener (AMQPS and the HTTPS console) offers.
///
/// Without a list Erlang/OTP 25 offers everything it knows for TLS 1.2: CBC suites (with
/// SHA-1 and SHA-2 MACs, open to padding-oracle attacks and weaker than AEAD) and AES-CCM,
/// including CCM-8's short tag. Left: TLS 1.3's AES-GCM and ChaCha20-Poly1305 suites, and for
/// TLS 1.2 ECDHE (forward secrecy) with AES-GCM or ChaCha20-Poly1305, for ECDSA keys (the
/// agent's certificates) and RSA keys (a supplied certificate may have one). OTP 25 takes the
/// TLS 1.3 names as they are and the TLS 1.2 ones in OpenSSL's spelling
/// (`ssl:cipher_suites(all, 'tlsv1.3')` lists both).
pub const CIPHER_SUITES: [&str; 9] = [
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

pub fn render(node: &RabbitMq) -> Result<Vec<RenderedFile>> {
    let p = &node.placement;
    let conf = rabbitmq_conf(node)?;
    let file = |name: &str, contents: String, secret: bool| RenderedFile {
        path: p.config_dir.join(name),
        contents,
        secret,
        restart_on_change: true,
    };
    let mut files = vec![
        file(CONF, conf, true),
        file(PLUGINS, PLUGIN_LIST.into(), false),
        file(
            ENV,
            "# Managed by FerryMQ: settings come from the environment.\n".into(),
            false,
        ),
        file(COOKIE, p.cookie.clone(), true),
    ];
    if p.clustered() {
        files.push(file(
            DIST_OPTFILE,
            super::distribution::Distribution::optfile(&p.node_certificate),
            false,
        ));
    }
    Ok(files)
}

/// FerryMQ's settings, then the configuration revision's keys (checked again against the
/// allow-list, which keeps every key FerryMQ sets out of it).
fn rabbitmq_conf(node: &RabbitMq) -> Result<String> {
    let p = &node.placement;
    let mut conf = ferrymq_conf(node);
    if let Some(c) = &p.configuration {
        let settings = ferrymq_api::configuration::rabbitmq::parse(&c.data)
            .map_err(|e| anyhow::anyhow!("configuration {} revision {}: {e}", c.id, c.revision))?;
        let _ = writeln!(conf, "# configuration {} revision {}", c.id, c.revision);
        for (key, value) in settings {
            let _ = writeln!(conf, "{key} = {value}");
        }
    }
    Ok(conf)
}

fn ferrymq_conf(node: &RabbitMq) -> String {
    let p = &node.placement;
    // logs.general: RabbitMQ's log at info, else warnings and errors only.
    let log_level = if p.logs.general { "info" } else { "warning" };
    let address = p.address;
    // Memory alarm, connection and channel limits of the instance type (see `sizing`).
    let limits = crate::sizing::rabbitmq(p.instance_type);
    // The default user is created only when the node first boots with an empty database.
    // Without one RabbitMQ makes `guest`/`guest`; so it is named after the agent's user, with
    // a password nobody uses (derived from the agent's, so the file does not change from one
    // render to the next), and the agent deletes it from the internal database once the node
    // serves (`heal`): the agent itself logs in through the HTTP backend (see `auth`).
    let c = &p.certificate;
    let mut listeners = String::new();
    if p.plain_listeners {
        let _ = write!(
            listeners,
            "listeners.tcp.1 = {}\n\
             management.tcp.ip = {address}\n\
             management.tcp.port = {CONSOLE_PORT}\n",
            super::socket(address, AMQP_PORT)
        );
    } else {
        listeners.push_str("listeners.tcp = none\n");
    }
    // TLS 1.2 and 1.3 only, AEAD suites only; clients are not asked for certificates (they
    // log in with users).
    for prefix in ["ssl_options", "management.ssl"] {
        let _ = write!(
            listeners,
            "{prefix}.cacertfile = {chain}\n\
             {prefix}.certfile = {cert}\n\
             {prefix}.keyfile = {key}\n\
             {prefix}.versions.1 = tlsv1.3\n\
             {prefix}.versions.2 = tlsv1.2\n",
            chain = c.chain.display(),
            cert = c.certificate.display(),
            key = c.private_key.display(),
        );
        for (i, suite) in CIPHER_SUITES.iter().enumerate() {
            let _ = writeln!(listeners, "{prefix}.ciphers.{} = {suite}", i + 1);
        }
    }
    format!(
        "# Managed by FerryMQ for broker {id}; changes here are overwritten.\n\
         listeners.ssl.1 = {amqps}\n\
         ssl_options.verify = verify_none\n\
         ssl_options.fail_if_no_peer_cert = false\n\
         management.ssl.ip = {ip}\n\
         management.ssl.port = {CONSOLE_TLS_PORT}\n\
         {listeners}\
         default_vhost = /\n\
         default_user = {AGENT_USER}\n\
         default_pass = {boot_pass}\n\
         {auth}\
         loopback_users = none\n\
         log.console = false\n\
         log.file.level = {log_level}\n\
         total_memory_available_override_value = {memory}\n\
         vm_memory_high_watermark.absolute = {watermark}\n\
         connection_max = {connection_max}\n\
         channel_max = {channel_max}\n\
         disk_free_limit.absolute = {disk_free}\n",
        id = p.broker_id,
        amqps = super::socket(address, AMQPS_PORT),
        ip = address,
        boot_pass = boot_password(&p.agent_password),
        auth = auth_conf(&p.broker_id, super::auth::port()),
        memory = p.instance_type.memory_bytes(),
        watermark = limits.memory_high_watermark_bytes,
        connection_max = limits.connection_max,
        channel_max = limits.channel_max,
        disk_free = disk_free_limit(p.volume_bytes),
    ) + &cluster_conf(node)
}

/// The first-boot default user's password: a digest of the agent's password, which only the
/// agent knows and which the agent never logs in with.
fn boot_password(agent_password: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"ferrymq/rabbitmq-boot-user\0");
    h.update(agent_password.as_bytes());
    hex::encode(h.finalize())
}

/// The internal database first (every broker user), then the agent's endpoint on loopback
/// (see `auth`) for what it refuses, under this broker's own path. RabbitMQ goes on to the
/// second backend when the first refuses a login, so a console user's internal
/// `ferrymq-agent` with another password does not lock the agent out.
pub fn auth_conf(broker_id: &str, port: u16) -> String {
    let url = |check: &str| format!("http://127.0.0.1:{port}/auth/{broker_id}/{check}");
    format!(
        "auth_backends.1 = internal\n\
         auth_backends.2 = http\n\
         auth_http.http_method = post\n\
         auth_http.user_path = {}\n\
         auth_http.vhost_path = {}\n\
         auth_http.resource_path = {}\n\
         auth_http.topic_path = {}\n",
        url("user"),
        url("vhost"),
        url("resource"),
        url("topic"),
    )
}

/// CLUSTER_MULTI_AZ: classic peer discovery over the spec's instances. A node whose database is
/// blank joins the first listed node it can reach (the agent starts a blank non-first node only
/// once the first serves, so three blank nodes cannot form three clusters); a node that has
/// data boots as the member it was, never reset. `pause_minority` stops the node on the wrong
/// side of a partition, so it fails the load balancer's check instead of taking writes alone.
/// `net_ticktime = 10` (Erlang's default is 60): a host that vanishes without closing its
/// connections (link cut, power loss) is declared down in 7.5–12.5 s instead of up to 75 s
/// where the distribution's `TCP_USER_TIMEOUT` (see `distribution`, 3 s) does not end it first;
/// until then metadata transactions (a queue declare) wait for it. RabbitMQ advises against
/// going below 5 s (false partitions on a busy host).
fn cluster_conf(node: &RabbitMq) -> String {
    let p = &node.placement;
    if !p.clustered() {
        return String::new();
    }
    let mut conf = String::from(
        "cluster_formation.peer_discovery_backend = classic_config\n\
         cluster_partition_handling = pause_minority\n\
         net_ticktime = 10\n",
    );
    for (i, peer) in p.peers.iter().enumerate() {
        conf += &format!(
            "cluster_formation.classic_config.nodes.{} = {}\n",
            i + 1,
            super::node_name(*peer)
        );
    }
    conf
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
    use crate::engine::Engine;

    #[test]
    fn conf_binds_the_host_address_and_replaces_guest() {
        let node = RabbitMq::new(super::super::tests::placement()).expect("node");
        let files = render(&node).expect("render");
        let conf = &files[0];
        assert_eq!(
            conf.path,
            std::path::Path::new("/state/b-1/engine/rabbitmq.conf")
        );
        assert!(conf.secret);
        let tls = |prefix: &str| {
            format!(
                "{prefix}.cacertfile = /state/b-1/engine/tls/chain.pem\n\
                 {prefix}.certfile = /state/b-1/engine/tls/server.pem\n\
                 {prefix}.keyfile = /state/b-1/engine/tls/server-key.pem\n\
                 {prefix}.versions.1 = tlsv1.3\n\
                 {prefix}.versions.2 = tlsv1.2\n\
                 {prefix}.ciphers.1 = TLS_AES_256_GCM_SHA384\n\
                 {prefix}.ciphers.2 = TLS_AES_128_GCM_SHA256\n\
                 {prefix}.ciphers.3 = TLS_CHACHA20_POLY1305_SHA256\n\
                 {prefix}.ciphers.4 = ECDHE-ECDSA-AES256-GCM-SHA384\n\
                 {prefix}.ciphers.5 = ECDHE-ECDSA-AES128-GCM-SHA256\n\
                 {prefix}.ciphers.6 = ECDHE-ECDSA-CHACHA20-POLY1305\n\
                 {prefix}.ciphers.7 = ECDHE-RSA-AES256-GCM-SHA384\n\
                 {prefix}.ciphers.8 = ECDHE-RSA-AES128-GCM-SHA256\n\
                 {prefix}.ciphers.9 = ECDHE-RSA-CHACHA20-POLY1305\n"
            )
        };
        let expected = "# Managed by FerryMQ for broker b-1; changes here are overwritten.\n\
            listeners.ssl.1 = 10.9.8.7:5671\n\
            ssl_options.verify = verify_none\n\
            ssl_options.fail_if_no_peer_cert = false\n\
            management.ssl.ip = 10.9.8.7\n\
            management.ssl.port = 15671\n\
            listeners.tcp = none\n"
            .to_string()
            + &tls("ssl_options")
            + &tls("management.ssl")
            + "default_vhost = /\n\
            default_user = ferrymq-agent\n\
            default_pass = BOOT\n\
            auth_backends.1 = internal\n\
            auth_backends.2 = http\n\
            auth_http.http_method = post\n\
            auth_http.user_path = http://127.0.0.1:15699/auth/b-1/user\n\
            auth_http.vhost_path = http://127.0.0.1:15699/auth/b-1/vhost\n\
            auth_http.resource_path = http://127.0.0.1:15699/auth/b-1/resource\n\
            auth_http.topic_path = http://127.0.0.1:15699/auth/b-1/topic\n\
            loopback_users = none\n\
            log.console = false\n\
            log.file.level = warning\n\
            total_memory_available_override_value = 8589934592\n\
            vm_memory_high_watermark.absolute = 3435973836\n\
            connection_max = 5000\n\
            channel_max = 2047\n\
            disk_free_limit.absolute = 50000000\n";
        let expected = expected.replace("BOOT", &boot_password("s3cret-agent-pass"));
        assert_eq!(conf.contents, expected);
        // The agent's password is in no file: the agent logs in through the HTTP backend.
        assert!(!conf.contents.contains("s3cret-agent-pass"));
        assert_eq!(boot_password("s3cret-agent-pass").len(), 64);
        assert_eq!(node.endpoints(), ["amqps://10.9.8.7:5671"]);
        assert_eq!(node.console_url(), "https://10.9.8.7:15671");

        // Plain listeners only when asked for, beside the TLS ones.
        let mut plain = node.placement.clone();
        plain.plain_listeners = true;
        let plain = RabbitMq::new(plain).expect("node");
        let plain_conf = &render(&plain).expect("render")[0].contents;
        assert!(plain_conf.contains(
            "listeners.tcp.1 = 10.9.8.7:5672\n\
             management.tcp.ip = 10.9.8.7\n\
             management.tcp.port = 15672\n"
        ));
        assert!(
            plain_conf.contains("listeners.ssl.1 = 10.9.8.7:5671\n")
                && !plain_conf.contains("listeners.tcp = none")
        );
        assert_eq!(
            plain.endpoints(),
            ["amqps://10.9.8.7:5671", "amqp://10.9.8.7:5672"]
        );
        assert!(!conf.contents.contains("guest"));
        assert_eq!(
            files[1].contents,
            "[rabbitmq_management,rabbitmq_auth_backend_http].\n"
        );
        assert!(files[3].secret && files[3].path.ends_with(".erlang.cookie"));
    }

    #[test]
    fn every_tls_listener_offers_aead_suites_only() {
        for suite in CIPHER_SUITES {
            // TLS 1.3's suites, else ECDHE (forward secrecy) with AES-GCM or ChaCha20-Poly1305:
            // no CBC, no CCM.
            assert!(
                [
                    "TLS_AES_256_GCM_SHA384",
                    "TLS_AES_128_GCM_SHA256",
                    "TLS_CHACHA20_POLY1305_SHA256"
                ]
                .contains(&suite)
                    || (suite.starts_with("ECDHE-")
                        && (suite.contains("-GCM-") || suite.ends_with("-CHACHA20-POLY1305"))),
                "{suite}"
            );
        }
        // OTP's names: its TLS 1.2 names are OpenSSL's (`ssl:suite_to_openssl_str/1`).
        let node = RabbitMq::new(super::super::tests::placement()).expect("node");
        let conf = &render(&node).expect("render")[0].contents;
        for prefix in ["ssl_options", "management.ssl"] {
            let ciphers: Vec<&str> = conf
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{prefix}.ciphers.")))
                .collect();
            assert_eq!(ciphers.len(), CIPHER_SUITES.len(), "{prefix}: {ciphers:?}");
            let versions: Vec<&str> = conf
                .lines()
                .filter(|l| l.starts_with(&format!("{prefix}.versions.")))
                .collect();
            assert_eq!(
                versions,
                [
                    format!("{prefix}.versions.1 = tlsv1.3"),
                    format!("{prefix}.versions.2 = tlsv1.2")
                ]
            );
        }
    }

    #[test]
    fn cluster_nodes_discover_each_other_by_address() {
        let peers: Vec<std::net::IpAddr> = ["10.9.8.1", "10.9.8.2", "10.9.8.3"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        let mut p = crate::engine::activemq::tests::placement("mq.m5.large");
        p.address = peers[1];
        p.peers = peers;
        p.instance_index = 1;
        let node = RabbitMq::new(p).expect("node");
        let conf = &render(&node).expect("render")[0].contents;
        assert!(conf.ends_with(
            "disk_free_limit.absolute = 50000000\n\
             cluster_formation.peer_discovery_backend = classic_config\n\
             cluster_partition_handling = pause_minority\n\
             net_ticktime = 10\n\
             cluster_formation.classic_config.nodes.1 = rabbit@10.9.8.1\n\
             cluster_formation.classic_config.nodes.2 = rabbit@10.9.8.2\n\
             cluster_formation.classic_config.nodes.3 = rabbit@10.9.8.3\n"
        ));
        assert!(!conf.contains("COOKIE"));
    }

    #[test]
    fn configuration_keys_follow_ferrymqs_own_and_logs_set_the_level() {
        let mut p = crate::engine::activemq::tests::placement("mq.m5.large");
        p.configuration = Some(ferrymq_api::agent::ConfigurationRef {
            id: "c-1".into(),
            revision: 2,
            data: "# tuning\nconsumer_timeout = 900000\nheartbeat = 17\n".into(),
        });
        p.logs.general = true;
        let node = RabbitMq::new(p.clone()).expect("node");
        let conf = &render(&node).expect("render")[0].contents;
        assert!(conf.contains("log.file.level = info\n"));
        assert!(conf.ends_with(
            "disk_free_limit.absolute = 50000000\n\
             # configuration c-1 revision 2\n\
             consumer_timeout = 900000\n\
             heartbeat = 17\n"
        ));
        // A stored spec can never carry a key FerryMQ owns into the file.
        p.configuration = Some(ferrymq_api::agent::ConfigurationRef {
            id: "c-1".into(),
            revision: 3,
            data: "listeners.tcp.1 = 0.0.0.0:5672\n".into(),
        });
        let e = render(&RabbitMq::new(p).expect("node")).unwrap_err();
        assert!(format!("{e:#}").contains("listeners.tcp.1"));
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
