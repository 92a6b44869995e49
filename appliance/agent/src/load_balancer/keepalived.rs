//! `keepalived.conf`: the virtual IP as one VRRP instance shared by the load-balancer hosts.
//!
//! Unicast VRRP (`unicast_peer`): no multicast needed between hosts. Every host starts as
//! BACKUP with `nopreempt`, the first listed host with the highest priority: the virtual IP
//! moves only when its holder stops advertising (host or link dead, keepalived stopped), not
//! back again when it returns, so a recovering host costs clients nothing. Pid files are the
//! broker's own: several hosts may share one `/run` (network namespaces of one machine).
//!
//! keepalived tracks this host's HAProxy (`vrrp_script`): a host whose HAProxy is gone gives
//! the virtual IP up (FAULT) and a peer takes it, rather than holding an address nothing
//! answers on until the agent restarts HAProxy. Not `track_process`: it needs the kernel's
//! process-event connector, which serves the initial network namespace only.

use super::Plan;
use crate::supervisor::UnitSpec;
use std::fmt::Write as _;
use std::path::Path;

pub const CONFIG: &str = "keepalived.conf";
const KEEPALIVED: &str = "/usr/sbin/keepalived";
/// Seconds between advertisements: a dead master is replaced after about three.
const ADVERT_INT: u32 = 1;
const PGREP: &str = "/usr/bin/pgrep";
/// The HAProxy check: every second; two failures in a row (a slow `pgrep` on a loaded host is
/// not a dead HAProxy) give the address up, two successes make the host a candidate again.
const CHECK_INTERVAL: u32 = 1;
const CHECK_FALL: u32 = 2;

pub fn render(plan: &Plan) -> String {
    let index = plan
        .hosts
        .iter()
        .position(|h| *h == plan.address)
        .unwrap_or(0);
    // 200, 190, …: distinct, within VRRP's 1–254.
    let priority = 200usize.saturating_sub(10 * index).max(1);
    let mut peers = String::new();
    for peer in plan.hosts.iter().filter(|h| **h != plan.address) {
        let _ = writeln!(peers, "        {peer}");
    }
    format!(
        "# Managed by FerryMQ for broker {id}; changes here are overwritten.\n\
         global_defs {{\n\
         \x20   router_id {id}\n\
         \x20   vrrp_garp_master_delay 1\n\
         \x20   vrrp_garp_master_repeat 3\n\
         \x20   # The HAProxy check only reads /proc; it runs as root, from a root-owned path.\n\
         \x20   script_user root\n\
         \x20   enable_script_security\n\
         }}\n\
         \n\
         # This host's HAProxy, found by its configuration file: unique to host and broker.\n\
         vrrp_script haproxy {{\n\
         \x20   script \"{PGREP} -f -- {haproxy_config}\"\n\
         \x20   interval {CHECK_INTERVAL}\n\
         \x20   timeout 2\n\
         \x20   fall {CHECK_FALL}\n\
         \x20   rise 2\n\
         }}\n\
         \n\
         vrrp_instance ferrymq {{\n\
         \x20   state BACKUP\n\
         \x20   nopreempt\n\
         \x20   interface {interface}\n\
         \x20   virtual_router_id {vrid}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {ADVERT_INT}\n\
         \x20   unicast_src_ip {address}\n\
         \x20   unicast_peer {{\n\
         {peers}\
         \x20   }}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip}/{prefix} dev {interface}\n\
         \x20   }}\n\
         \x20   track_script {{\n\
         \x20       haproxy\n\
         \x20   }}\n\
         }}\n",
        id = plan.broker_id,
        interface = plan.interface,
        vrid = virtual_router_id(&plan.broker_id),
        address = plan.address,
        vip = plan.virtual_ip,
        prefix = plan.prefix_len,
        haproxy_config = plan.dir.join(super::haproxy::CONFIG).display(),
    )
}

/// 1–255, from the broker id: brokers sharing a network segment get different ids (most of
/// the time; unicast peers keep them apart anyway).
fn virtual_router_id(broker_id: &str) -> u32 {
    let sum: u32 = broker_id.bytes().map(u32::from).sum();
    sum % 255 + 1
}

pub fn unit_name(broker_id: &str) -> String {
    format!("{broker_id}-keepalived")
}

pub fn unit(plan: &Plan) -> UnitSpec {
    let d = |name: &str| plan.dir.join(name).display().to_string();
    let args = [
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
        "--use-file",
        &d(CONFIG),
        "--pid",
        &d("keepalived.pid"),
        "--vrrp_pid",
        &d("keepalived-vrrp.pid"),
        "--checkers_pid",
        &d("keepalived-checkers.pid"),
    ]
    .map(str::to_string)
    .to_vec();
    UnitSpec {
        name: unit_name(&plan.broker_id),
        program: Path::new(KEEPALIVED).into(),
        args,
        env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        // Root: it adds and removes the virtual IP and sends raw VRRP packets.
        user: None,
        working_dir: plan.dir.clone(),
        console_log: plan.dir.join("keepalived.log"),
        limits: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_vrrp_with_the_host_priority_and_the_virtual_ip() {
        let plan = super::super::tests::plan();
        let conf = render(&plan);
        for want in [
            "    state BACKUP\n    nopreempt\n    interface eth0\n",
            "    priority 190\n    advert_int 1\n    unicast_src_ip 10.0.0.12\n",
            "    unicast_peer {\n        10.0.0.11\n        10.0.0.13\n    }\n",
            "    virtual_ipaddress {\n        10.0.0.100/24 dev eth0\n    }\n",
            "    script \"/usr/bin/pgrep -f -- /state/b-1234/load_balancer/haproxy.cfg\"\n",
            "    track_script {\n        haproxy\n    }\n}\n",
        ] {
            assert!(conf.contains(want), "{want:?} not in\n{conf}");
        }
        let vrid = virtual_router_id("b-1234");
        assert!((1..=255).contains(&vrid));
        assert!(conf.contains(&format!("virtual_router_id {vrid}\n")));
        let u = unit(&plan);
        assert!(u
            .args
            .contains(&"/state/b-1234/load_balancer/keepalived.pid".to_string()));
        assert!(u.args.contains(&"--dont-fork".to_string()));
    }
}
