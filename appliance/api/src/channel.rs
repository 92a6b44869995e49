//! Connecting to an agent: the one way both the provider and a peer agent reach a host, so the
//! address rules and the mutual-TLS setup cannot drift apart.

use crate::DEFAULT_AGENT_PORT;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The address of a host's agent: `instance.host` with the default port when none is given.
pub fn agent_address(host: &str) -> String {
    if host.parse::<std::net::SocketAddr>().is_ok() {
        host.to_string()
    } else if let Ok(ip) = host.parse::<std::net::Ipv6Addr>() {
        format!("[{ip}]:{DEFAULT_AGENT_PORT}")
    } else {
        format!("{host}:{DEFAULT_AGENT_PORT}")
    }
}

/// A lazily connecting channel to the agent at `address` (from [`agent_address`]), verifying
/// its certificate against the deployment CA and presenting our own; `timeout` bounds each call.
pub fn agent_channel(
    address: &str,
    ca_cert_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    timeout: Duration,
) -> Result<Channel, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_cert_pem))
        .identity(Identity::from_pem(cert_pem, key_pem));
    Ok(Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| format!("agent address {address:?}: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("TLS for {address}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_port_is_added_only_when_missing() {
        assert_eq!(agent_address("10.0.0.1"), "10.0.0.1:7443");
        assert_eq!(agent_address("10.0.0.1:9000"), "10.0.0.1:9000");
        assert_eq!(agent_address("fd00::1"), "[fd00::1]:7443");
        assert_eq!(agent_address("agent.example"), "agent.example:7443");
    }
}
