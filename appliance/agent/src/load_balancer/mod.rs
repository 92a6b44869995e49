//! The network load balancer in front of a broker (Amazon MQ's NLB): HAProxy in TCP mode on
//! each load-balancer host, forwarding every listener of the engine to the instances that pass
//! its health check, and keepalived holding the virtual IP on one of those hosts at a time.
//!
//! This module renders the two configurations and describes the two processes from a plan
//! (virtual IP, hosts, backends, listeners); it knows ports, not brokers. The reconciler writes
//! the files, runs the units and reloads them (`reconcile::load_balancer`).

mod haproxy;
mod keepalived;

use crate::engine::{Listener, RenderedFile};
use crate::supervisor::UnitSpec;
use anyhow::{bail, Context, Result};
use ferrymq_api::agent::BrokerSpec;
use ferrymq_api::validate::host_address;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use haproxy::{check_config, USER as HAPROXY_USER};

/// What this host runs for the broker's load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub broker_id: String,
    /// Configuration and pid files: per broker and host (`/run` is shared between the network
    /// namespaces of the acceptance hosts, so nothing goes there).
    pub dir: PathBuf,
    pub virtual_ip: IpAddr,
    /// This host's address, among `hosts`.
    pub address: IpAddr,
    /// Every host running the load balancer, in the spec's order (earlier: higher priority).
    pub hosts: Vec<IpAddr>,
    /// The broker's instances: HAProxy's servers.
    pub backends: Vec<IpAddr>,
    pub listeners: Vec<Listener>,
    /// The interface holding `address`, and its prefix length: the virtual IP goes there.
    pub interface: String,
    pub prefix_len: u8,
}

impl Plan {
    /// The plan for this host, `None` when the broker has no load balancer or this host is not
    /// one of its hosts.
    pub fn for_host(
        spec: &BrokerSpec,
        address: IpAddr,
        dir: PathBuf,
        listeners: Vec<Listener>,
    ) -> Result<Option<Plan>> {
        let Some(lb) = &spec.load_balancer else {
            return Ok(None);
        };
        let addresses = |hosts: &mut dyn Iterator<Item = &str>| -> Result<Vec<IpAddr>> {
            hosts
                .map(|h| host_address(h).map_err(anyhow::Error::msg))
                .collect()
        };
        let backends = addresses(&mut spec.instances.iter().map(|i| i.host.as_str()))?;
        let hosts = if lb.hosts.is_empty() {
            backends.clone()
        } else {
            addresses(&mut lb.hosts.iter().map(String::as_str))?
        };
        if !hosts.contains(&address) {
            return Ok(None);
        }
        let virtual_ip: IpAddr = lb
            .virtual_ip
            .parse()
            .with_context(|| format!("virtual_ip {:?}", lb.virtual_ip))?;
        let (interface, prefix_len) = interface_of(address)?;
        Ok(Some(Plan {
            broker_id: spec.broker_id.clone(),
            dir,
            virtual_ip,
            address,
            hosts,
            backends,
            listeners,
            interface,
            prefix_len,
        }))
    }

    pub fn haproxy_config(&self) -> RenderedFile {
        RenderedFile {
            path: self.dir.join(haproxy::CONFIG),
            contents: haproxy::render(self),
            secret: false,
            restart_on_change: false, // reloaded: established connections stay
        }
    }

    pub fn keepalived_config(&self) -> RenderedFile {
        RenderedFile {
            path: self.dir.join(keepalived::CONFIG),
            contents: keepalived::render(self),
            secret: false,
            restart_on_change: false, // reloaded with SIGHUP
        }
    }

    /// Where HAProxy's master writes its pid: the one file HAProxy writes, made for it by the
    /// agent (see `haproxy`'s module documentation).
    pub fn haproxy_pid_file(&self) -> PathBuf {
        self.dir.join(haproxy::PID_FILE)
    }

    pub fn haproxy_unit(&self) -> UnitSpec {
        haproxy::unit(self)
    }

    pub fn keepalived_unit(&self) -> UnitSpec {
        keepalived::unit(self)
    }
}

/// The units of a broker's load balancer, in stop order (keepalived first: the virtual IP
/// leaves before the proxy behind it).
pub fn unit_names(broker_id: &str) -> [String; 2] {
    [
        keepalived::unit_name(broker_id),
        haproxy::unit_name(broker_id),
    ]
}

/// The engine's client endpoints with the virtual IP in place of the instance's address:
/// `amqp://10.0.0.11:5672` becomes `amqp://VIP:5672`.
pub fn endpoints_through(endpoints: &[String], virtual_ip: IpAddr) -> Vec<String> {
    endpoints
        .iter()
        .filter_map(|e| {
            let (scheme, rest) = e.split_once("://")?;
            let socket: SocketAddr = rest.split('/').next()?.parse().ok()?;
            Some(format!(
                "{scheme}://{}",
                SocketAddr::new(virtual_ip, socket.port())
            ))
        })
        .collect()
}

/// Lets HAProxy, running without privileges, bind the virtual IP while it is on another host:
/// `net.ipv4.ip_nonlocal_bind` (or IPv6's) set to 1 in this host's network namespace, as
/// keepalived setups do. The alternative, `transparent` binds, needs CAP_NET_ADMIN.
pub fn allow_nonlocal_bind(virtual_ip: IpAddr) -> Result<()> {
    allow_nonlocal_bind_in(Path::new("/proc/sys"), virtual_ip)
}

fn allow_nonlocal_bind_in(proc_sys: &Path, virtual_ip: IpAddr) -> Result<()> {
    let key = match virtual_ip {
        IpAddr::V4(_) => "net/ipv4/ip_nonlocal_bind",
        IpAddr::V6(_) => "net/ipv6/ip_nonlocal_bind",
    };
    let path = proc_sys.join(key);
    let current =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if current.trim() != "1" {
        std::fs::write(&path, "1\n").with_context(|| format!("writing 1 to {}", path.display()))?;
        tracing::info!(
            setting = key,
            "non-local binds allowed, for HAProxy's virtual IP"
        );
    }
    Ok(())
}

/// The interface holding `address` in this network namespace, and its prefix length, from
/// `ip -o addr show`.
fn interface_of(address: IpAddr) -> Result<(String, u8)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .context("running ip -o addr show")?;
    if !out.status.success() {
        bail!(
            "ip -o addr show: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_interface(&String::from_utf8_lossy(&out.stdout), address)
        .with_context(|| format!("no interface of this host holds {address}"))
}

/// One line per address: `2: eth0    inet 10.0.0.11/24 brd … scope global eth0 …`.
fn parse_interface(ip_output: &str, address: IpAddr) -> Option<(String, u8)> {
    ip_output.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _index = fields.next()?;
        let name = fields.next()?.split('@').next()?.to_string();
        let _family = fields.next()?;
        let (ip, prefix) = fields.next()?.split_once('/')?;
        (ip.parse::<IpAddr>().ok()? == address).then_some((name, prefix.parse().ok()?))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::ListenerCheck;

    pub fn plan() -> Plan {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        Plan {
            broker_id: "b-1234".into(),
            dir: "/state/b-1234/load_balancer".into(),
            virtual_ip: ip("10.0.0.100"),
            address: ip("10.0.0.12"),
            hosts: vec![ip("10.0.0.11"), ip("10.0.0.12"), ip("10.0.0.13")],
            backends: vec![ip("10.0.0.11"), ip("10.0.0.12"), ip("10.0.0.13")],
            listeners: vec![
                Listener {
                    name: "amqp",
                    port: 5672,
                    check: ListenerCheck::AmqpHeader,
                },
                Listener {
                    name: "console",
                    port: 15672,
                    check: ListenerCheck::Connect,
                },
            ],
            interface: "eth0".into(),
            prefix_len: 24,
        }
    }

    #[test]
    fn nonlocal_binds_are_allowed_for_the_virtual_ips_family() {
        let dir = std::env::temp_dir().join(format!("ferrymq-sysctl-{}", std::process::id()));
        for family in ["ipv4", "ipv6"] {
            std::fs::create_dir_all(dir.join("net").join(family)).expect("mkdir");
            std::fs::write(dir.join(format!("net/{family}/ip_nonlocal_bind")), "0\n")
                .expect("write");
        }
        let read = |family: &str| {
            std::fs::read_to_string(dir.join(format!("net/{family}/ip_nonlocal_bind")))
                .expect("read")
        };
        allow_nonlocal_bind_in(&dir, "10.0.0.100".parse().expect("ip")).expect("v4");
        assert_eq!(
            (read("ipv4").as_str(), read("ipv6").as_str()),
            ("1\n", "0\n")
        );
        allow_nonlocal_bind_in(&dir, "fd00::100".parse().expect("ip")).expect("v6");
        assert_eq!(read("ipv6"), "1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endpoints_go_through_the_virtual_ip() {
        let vip = "10.0.0.100".parse().expect("ip");
        let got = endpoints_through(
            &[
                "amqp://10.0.0.11:5672".into(),
                "stomp://10.0.0.11:61614".into(),
            ],
            vip,
        );
        assert_eq!(got, ["amqp://10.0.0.100:5672", "stomp://10.0.0.100:61614"]);
    }

    #[test]
    fn the_interface_is_found_by_address() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0@if12    inet 10.79.3.11/24 scope global eth0\\       valid_lft forever\n\
                   2: eth0@if12    inet 10.79.3.100/24 scope global secondary eth0\n";
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            parse_interface(out, ip("10.79.3.11")),
            Some(("eth0".into(), 24))
        );
        assert_eq!(parse_interface(out, ip("10.79.3.12")), None);
    }

    #[test]
    fn hosts_default_to_the_instances_and_others_run_nothing() {
        let spec = BrokerSpec {
            broker_id: "b-1".into(),
            instances: ["127.0.0.1", "10.0.0.2"]
                .iter()
                .map(|h| ferrymq_api::agent::Instance {
                    host: h.to_string(),
                    volume: "/dev/loop0".into(),
                })
                .collect(),
            load_balancer: Some(ferrymq_api::agent::LoadBalancer {
                virtual_ip: "10.0.0.100".into(),
                hosts: vec![],
            }),
            ..Default::default()
        };
        let local = "127.0.0.1".parse().expect("ip");
        let plan = Plan::for_host(&spec, local, "/x".into(), vec![])
            .expect("plan")
            .expect("this host runs it");
        assert_eq!(plan.hosts, plan.backends);
        assert_eq!(plan.interface, "lo");
        let mut other = spec.clone();
        other.load_balancer.as_mut().expect("lb").hosts = vec!["10.0.0.2".into()];
        assert_eq!(
            Plan::for_host(&other, local, "/x".into(), vec![]).expect("plan"),
            None
        );
    }
}
