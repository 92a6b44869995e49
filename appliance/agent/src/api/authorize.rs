//! Who may call what on the agent API.
//!
//! The operator (the provider, `reboot`, `pki renew`) may call everything. A host may call only
//! what the rolling rules make it ask its peers: a broker's status, for a broker whose instances
//! include that host. Everything else is refused, so a stolen host's certificate reads one
//! broker's status on the hosts it already shares that broker with, and changes nothing.

use crate::pki::identity::Role;
use ferrymq_api::agent::BrokerSpec;
use std::net::IpAddr;

/// A call, as far as authorization needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call<'a> {
    /// `GetBroker`: the one peer call.
    BrokerStatus { broker_id: &'a str },
    /// Any other RPC, by name: operator only.
    Operator(&'static str),
}

impl std::fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::BrokerStatus { broker_id } => write!(f, "GetBroker {broker_id}"),
            Call::Operator(name) => f.write_str(name),
        }
    }
}

/// Whether `role` may make `call`; `spec` is this host's spec of the broker the call names
/// (None when it has none). The error says why, for the caller and the log.
pub fn permits(role: &Role, call: Call<'_>, spec: Option<&BrokerSpec>) -> Result<(), String> {
    match (role, call) {
        (Role::Operator, _) => Ok(()),
        (Role::Host(addresses), Call::BrokerStatus { broker_id }) => match spec {
            Some(spec) if serves(spec, addresses) => Ok(()),
            _ => Err(format!(
                "{role} may read only the brokers it is an instance of, and it is not one of {broker_id}'s instances"
            )),
        },
        (Role::Host(_), Call::Operator(name)) => Err(format!(
            "{role} may not call {name}: hosts make peer calls only (GetBroker); {name} needs the operator's certificate"
        )),
        (Role::Monitoring, call) => Err(format!(
            "{role} may read metrics only, not call {call}"
        )),
    }
}

/// Whether one of `addresses` is an instance of the broker.
fn serves(spec: &BrokerSpec, addresses: &[IpAddr]) -> bool {
    spec.instances
        .iter()
        .filter_map(|i| ferrymq_api::validate::host_address(&i.host).ok())
        .any(|ip| addresses.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_api::agent::Instance;

    fn spec(hosts: &[&str]) -> BrokerSpec {
        BrokerSpec {
            broker_id: "b-1".into(),
            instances: hosts
                .iter()
                .map(|h| Instance {
                    host: h.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn host(ip: &str) -> Role {
        Role::Host(vec![ip.parse().expect("ip")])
    }

    #[test]
    fn the_operator_may_call_everything() {
        for call in [
            Call::Operator("ApplyBroker"),
            Call::Operator("DeleteBrokerUser"),
            Call::BrokerStatus { broker_id: "b-9" },
        ] {
            assert_eq!(permits(&Role::Operator, call, None), Ok(()));
        }
    }

    #[test]
    fn a_host_reads_only_brokers_it_shares() {
        let pair = spec(&["10.0.0.2", "10.0.0.3:7443"]);
        let status = Call::BrokerStatus { broker_id: "b-1" };
        assert_eq!(permits(&host("10.0.0.3"), status, Some(&pair)), Ok(()));
        assert_eq!(permits(&host("10.0.0.2"), status, Some(&pair)), Ok(()));
        let err = permits(&host("10.0.0.4"), status, Some(&pair)).expect_err("not its broker");
        assert!(
            err.contains("host 10.0.0.4") && err.contains("b-1"),
            "{err}"
        );
        assert!(permits(&host("10.0.0.3"), status, None).is_err());
    }

    #[test]
    fn a_monitoring_certificate_calls_nothing() {
        let pair = spec(&["10.0.0.2"]);
        let status = Call::BrokerStatus { broker_id: "b-1" };
        assert!(permits(&Role::Monitoring, status, Some(&pair)).is_err());
        assert!(permits(&Role::Monitoring, Call::Operator("GetHostFacts"), None).is_err());
    }

    #[test]
    fn a_host_changes_nothing() {
        let pair = spec(&["10.0.0.2", "10.0.0.3"]);
        for name in [
            "ApplyBroker",
            "DeleteBroker",
            "RebootBroker",
            "ApplyBrokerUser",
            "DeleteBrokerUser",
            "GetBrokerUser",
            "PutConfiguration",
            "GetHostFacts",
            "InstallHostCertificates",
        ] {
            let err =
                permits(&host("10.0.0.3"), Call::Operator(name), Some(&pair)).expect_err(name);
            assert!(err.contains(name), "{err}");
        }
    }
}
