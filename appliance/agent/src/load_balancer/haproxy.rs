//! `haproxy.cfg`: one TCP frontend per engine listener on the virtual IP, one backend with every
//! instance, checked so that only an instance serving clients gets connections.
//!
//! HAProxy runs in master-worker mode (`-W`): a reload is SIGUSR2 to the master, which starts
//! new workers on the new configuration (as `-sf` does) while the old ones finish the
//! connections they hold, so a reload drops no established connection.
//!
//! Every HAProxy process, the master too, runs as the system user `haproxy`, never root: the
//! engine ports are above 1024, and the virtual IP, which is on this host only while keepalived
//! makes it master, is bound thanks to the host's `ip_nonlocal_bind` (see
//! [`super::allow_nonlocal_bind`]) rather than `transparent` binds, which need CAP_NET_ADMIN.
//! (`user`/`group` in the global section would leave the master, which re-executes itself on
//! every reload, as root.) It reads its configuration (0644) and writes only its pid file,
//! which the agent makes for it; the directory stays root's, so HAProxy cannot replace
//! keepalived's configuration beside it.

use super::Plan;
use crate::engine::ListenerCheck;
use crate::supervisor::UnitSpec;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;

pub const CONFIG: &str = "haproxy.cfg";
pub const PID_FILE: &str = "haproxy.pid";
const HAPROXY: &str = "/usr/sbin/haproxy";
/// The system user HAProxy runs as (Debian's `haproxy` package makes it).
pub const USER: &str = "haproxy";
/// The AMQP 0-9-1 protocol header, and the start of the `connection.start` frame a broker
/// answers with (method frame, channel 0).
const AMQP_HEADER_HEX: &str = "414d515000000901";
const AMQP_START_HEX: &str = "0100000000";

pub fn render(plan: &Plan) -> String {
    let mut cfg = format!(
        "# Managed by FerryMQ for broker {id}; changes here are overwritten.\n\
         global\n\
         \x20   # No maxconn: HAProxy derives it from the file limit it is given.\n\
         \x20   log stderr format short local0 notice\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option dontlognull\n\
         \x20   # A connection sent to an instance on a host that just died (its checks have\n\
         \x20   # not failed yet) is tried again on another instance after 1 s, not held\n\
         \x20   # for 3 s per retry on the dead one.\n\
         \x20   timeout connect 1s\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         \x20   # AMQP and OpenWire connections idle between heartbeats: no short client timeout.\n\
         \x20   timeout client 2h\n\
         \x20   timeout server 2h\n\
         \x20   timeout check 2s\n\
         \x20   # An instance that stops serving loses its sessions at once (clients reconnect\n\
         \x20   # through the virtual IP to one that serves) rather than holding dead ones.\n\
         \x20   default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2 on-marked-down shutdown-sessions\n",
        id = plan.broker_id
    );
    for l in &plan.listeners {
        // The virtual IP is on this host only while keepalived makes it master; the frontend
        // binds it anyway (`ip_nonlocal_bind`) and takes connections as soon as it arrives.
        let _ = write!(
            cfg,
            "\nfrontend {name}\n\
             \x20   bind {bind}\n\
             \x20   default_backend {name}\n\
             \nbackend {name}\n\
             \x20   balance leastconn\n",
            name = l.name,
            bind = SocketAddr::new(plan.virtual_ip, l.port),
        );
        let (connect, server_check) = match l.check {
            ListenerCheck::Connect => (None, "check"),
            ListenerCheck::AmqpHeader => (Some("tcp-check connect"), "check"),
            // The check alone speaks TLS; it only asks whether the node answers AMQP, so it
            // does not verify the node's certificate (clients do, end to end).
            ListenerCheck::AmqpHeaderTls => {
                (Some("tcp-check connect ssl"), "check check-ssl verify none")
            }
        };
        if let Some(connect) = connect {
            let _ = write!(
                cfg,
                "\x20   option tcp-check\n\
                 \x20   {connect}\n\
                 \x20   tcp-check send-binary {AMQP_HEADER_HEX}\n\
                 \x20   tcp-check expect binary {AMQP_START_HEX}\n"
            );
        }
        for (i, backend) in plan.backends.iter().enumerate() {
            let _ = writeln!(
                cfg,
                "\x20   server i{i} {} {server_check}",
                SocketAddr::new(*backend, l.port)
            );
        }
    }
    cfg
}

pub fn unit_name(broker_id: &str) -> String {
    format!("{broker_id}-haproxy")
}

pub fn unit(plan: &Plan) -> UnitSpec {
    let d = |p: &Path| p.display().to_string();
    UnitSpec {
        name: unit_name(&plan.broker_id),
        program: HAPROXY.into(),
        args: vec![
            "-W".into(),
            "-f".into(),
            d(&plan.dir.join(CONFIG)),
            "-p".into(),
            d(&plan.dir.join(PID_FILE)),
        ],
        env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        // Not root: see the module's documentation.
        user: Some(USER.into()),
        working_dir: plan.dir.clone(),
        console_log: plan.dir.join("haproxy.log"),
        limits: None,
    }
}

/// `haproxy -c`: a configuration HAProxy would refuse is never reloaded into it. Run as
/// HAProxy's user when the agent is root, as HAProxy itself runs: no root HAProxy process at
/// all, and a file HAProxy could not read fails here.
pub fn check_config(path: &Path) -> Result<()> {
    let mut cmd = std::process::Command::new(HAPROXY);
    cmd.arg("-c").arg("-q").arg("-f").arg(path);
    if nix::unistd::geteuid().is_root() {
        let user = nix::unistd::User::from_name(USER)
            .context("looking up the haproxy user")?
            .with_context(|| format!("user {USER} does not exist; is HAProxy installed?"))?;
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {HAPROXY} -c"))?;
    if !out.status.success() {
        bail!(
            "HAProxy refuses {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_is_checked_with_the_protocol_header_and_the_console_by_connecting() {
        let cfg = render(&super::super::tests::plan());
        let amqp = "\nfrontend amqp\n    bind 10.0.0.100:5672\n    default_backend amqp\n\n\
                    backend amqp\n    balance leastconn\n    option tcp-check\n    tcp-check connect\n\
                    \x20   tcp-check send-binary 414d515000000901\n    tcp-check expect binary 0100000000\n\
                    \x20   server i0 10.0.0.11:5672 check\n    server i1 10.0.0.12:5672 check\n\
                    \x20   server i2 10.0.0.13:5672 check\n";
        assert!(cfg.contains(amqp), "{cfg}");
        let console =
            "\nbackend console\n    balance leastconn\n    server i0 10.0.0.11:15672 check\n";
        assert!(cfg.contains(console), "{cfg}");
        assert!(cfg.contains("on-marked-down shutdown-sessions"));
        assert!(cfg.contains("mode tcp"));
    }

    #[test]
    fn a_connection_to_a_dead_instance_is_sent_to_another() {
        let cfg = render(&super::super::tests::plan());
        for line in ["timeout connect 1s", "retries 3", "option redispatch 1"] {
            assert!(
                cfg.contains(&format!("\n    {line}\n")),
                "{line} missing: {cfg}"
            );
        }
        // HAProxy itself takes the file (skipped where it is not installed).
        if Path::new(HAPROXY).exists() {
            let path =
                std::env::temp_dir().join(format!("ferrymq-haproxy-{}.cfg", std::process::id()));
            std::fs::write(&path, &cfg).unwrap();
            let checked = check_config(&path);
            let _ = std::fs::remove_file(&path);
            checked.unwrap();
        }
    }

    #[test]
    fn the_unit_runs_master_worker_with_its_own_pid_file() {
        let u = unit(&super::super::tests::plan());
        assert_eq!(u.name, "b-1234-haproxy");
        // Never root, and nothing that needs a capability.
        assert_eq!(u.user.as_deref(), Some("haproxy"));
        let cfg = render(&super::super::tests::plan());
        assert!(!cfg.contains("transparent"), "{cfg}");
        assert!(
            !cfg.contains("\n    user ") && !cfg.contains("\n    group "),
            "{cfg}"
        );
        assert_eq!(
            u.args,
            [
                "-W",
                "-f",
                "/state/b-1234/load_balancer/haproxy.cfg",
                "-p",
                "/state/b-1234/load_balancer/haproxy.pid"
            ]
        );
    }
}
