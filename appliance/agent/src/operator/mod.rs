//! Commands an operator runs against a broker's agents from a workstation (with the provider's
//! credentials), rather than anything an agent does for itself.

pub mod reboot;
pub mod renew;

use anyhow::{Context, Result};
use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::channel::{agent_address, agent_channel};
use std::time::Duration;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The operator's mutual-TLS material (PEM).
pub struct Credentials {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Credentials {
    /// From PEM text or a file path in each of `FERRYMQ_CA_CERT`, `FERRYMQ_CLIENT_CERT` and
    /// `FERRYMQ_CLIENT_KEY` (the provider's variables).
    pub fn from_env() -> Result<Self> {
        let read = |var: &str| -> Result<String> {
            let value = std::env::var(var)
                .with_context(|| format!("{var} is not set (PEM text or a file path)"))?;
            if value.trim_start().starts_with("-----BEGIN") {
                return Ok(value);
            }
            std::fs::read_to_string(value.trim())
                .with_context(|| format!("{var}: reading {:?}", value.trim()))
        };
        Ok(Credentials {
            ca_cert: read("FERRYMQ_CA_CERT")?,
            client_cert: read("FERRYMQ_CLIENT_CERT")?,
            client_key: read("FERRYMQ_CLIENT_KEY")?,
        })
    }

    /// A client of the agent at `host` (IP[:PORT]) with these credentials.
    pub fn client(&self, host: &str) -> Result<AgentClient<tonic::transport::Channel>> {
        let channel = agent_channel(
            &agent_address(host),
            &self.ca_cert,
            &self.client_cert,
            &self.client_key,
            CALL_TIMEOUT,
        )
        .map_err(anyhow::Error::msg)?;
        Ok(AgentClient::new(channel))
    }
}
