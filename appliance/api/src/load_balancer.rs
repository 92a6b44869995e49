//! Dedicated load-balancer hosts: `load_balancer.hosts` that are no instance's host. The
//! provider sends each the broker's spec as a load-balancer-only spec (`load_balancer_host_index`
//! set); its agent runs HAProxy and keepalived for the broker and nothing else.

use crate::agent::BrokerSpec;
use crate::validate::host_address;
use std::net::IpAddr;

/// The load-balancer hosts no instance runs on, with their index in `load_balancer.hosts`.
pub fn dedicated_hosts(spec: &BrokerSpec) -> Vec<(usize, String)> {
    let Some(lb) = &spec.load_balancer else {
        return vec![];
    };
    let instances: Vec<Option<IpAddr>> = spec
        .instances
        .iter()
        .map(|i| host_address(&i.host).ok())
        .collect();
    lb.hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| !instances.contains(&host_address(h).ok()))
        .map(|(i, h)| (i, h.clone()))
        .collect()
}

/// The spec a dedicated load-balancer host gets: the broker's, as `load_balancer.hosts[index]`,
/// without what only an engine needs (users and their passwords, the cluster secret, the
/// server certificate and its key, configuration data): a host keeps no secret it does not use.
pub fn dedicated_spec(spec: &BrokerSpec, index: usize) -> BrokerSpec {
    BrokerSpec {
        load_balancer_host_index: Some(index as u32),
        instance_index: 0,
        users: vec![],
        standalone_users: vec![],
        cluster_secret: String::new(),
        server_certificate: None,
        configuration: None,
        reboot_id: String::new(),
        ..spec.clone()
    }
}

/// Whether the spec is a dedicated load-balancer host's.
pub fn is_dedicated(spec: &BrokerSpec) -> bool {
    spec.load_balancer_host_index.is_some()
}

/// The address of a dedicated host's spec: `load_balancer.hosts[load_balancer_host_index]`.
pub fn dedicated_address(spec: &BrokerSpec) -> Result<IpAddr, String> {
    let index = spec
        .load_balancer_host_index
        .ok_or("the spec is not a load-balancer host's")?;
    let host = spec
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.hosts.get(index as usize))
        .ok_or_else(|| {
            format!("load_balancer_host_index {index} is outside load_balancer.hosts")
        })?;
    host_address(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Instance, LoadBalancer, ServerCertificate, User};

    #[test]
    fn a_dedicated_host_gets_no_secret_and_knows_its_address() {
        let spec = BrokerSpec {
            broker_id: "b-1".into(),
            instances: vec![Instance {
                host: "10.0.0.1:7443".into(),
                volume: "/dev/loop0".into(),
            }],
            users: vec![User {
                username: "app".into(),
                password: "a-secret-password".into(),
                ..Default::default()
            }],
            cluster_secret: "s".into(),
            server_certificate: Some(ServerCertificate {
                private_key_pem: "key".into(),
                ..Default::default()
            }),
            load_balancer: Some(LoadBalancer {
                virtual_ip: "10.0.0.100".into(),
                hosts: vec!["10.0.0.1".into(), "10.0.0.9:7443".into()],
            }),
            ..Default::default()
        };
        assert_eq!(dedicated_hosts(&spec), [(1, "10.0.0.9:7443".to_string())]);
        assert!(!is_dedicated(&spec));
        let lb = dedicated_spec(&spec, 1);
        assert!(is_dedicated(&lb));
        assert!(lb.users.is_empty() && lb.cluster_secret.is_empty());
        assert!(lb.server_certificate.is_none());
        assert_eq!(lb.load_balancer, spec.load_balancer);
        assert_eq!(dedicated_address(&lb), Ok("10.0.0.9".parse().expect("ip")));
        assert!(dedicated_address(&spec).is_err());
    }
}
