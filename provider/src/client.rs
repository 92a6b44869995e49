//! The provider's side of the agent API: mutual TLS to one agent, errors sorted into the cases
//! a resource must tell apart, and waiting for a broker to reach a state.

use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::{
    ApplyBrokerRequest, ApplyBrokerUserRequest, BrokerSpec, BrokerState, BrokerStatus,
    BrokerUserStatus, ConfigurationRevision, DeleteBrokerRequest, DeleteBrokerUserRequest,
    DeleteConfigurationRequest, GetBrokerRequest, GetBrokerUserRequest, GetConfigurationRequest,
    PutConfigurationRequest, User,
};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// PEM material for mutual TLS with the agents.
#[derive(Clone)]
pub struct Credentials {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    /// The provider's `bundle_mirror` (empty: none), sent with every broker spec: agents fetch
    /// engine bundles they lack from it.
    pub bundle_mirror: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host answers but has no such broker.
    #[error("{0}")]
    NotFound(String),
    /// The agent refused the request as it is; retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// The agent could not be reached or failed; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::NotFound => ClientError::NotFound(msg),
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::AlreadyExists => ClientError::Refused(msg),
            Code::Unauthenticated => {
                ClientError::Refused(format!("agent refused our certificate: {msg}"))
            }
            // Whoever answers shows a certificate the deployment CA did not issue for this
            // address (another host's broker CA outside its names, another CA): not the host's
            // agent. Retrying would only keep talking to it; nothing was sent.
            Code::Unavailable if msg.contains("invalid peer certificate") => {
                ClientError::Refused(format!(
                    "the agent's certificate does not verify against the deployment CA for this address ({msg}): it is not this host's agent; nothing was sent to it"
                ))
            }
            code => ClientError::Unavailable(format!("{code:?}: {msg}")),
        }
    }
}

pub use ferrymq_api::channel::agent_address;

pub struct Agent {
    address: String,
    client: AgentClient<Channel>,
}

impl Agent {
    /// Prepares a connection to the agent of `host` (connects lazily, on first call).
    pub fn new(host: &str, creds: &Credentials) -> anyhow::Result<Self> {
        let address = agent_address(host);
        let channel = ferrymq_api::channel::agent_channel(
            &address,
            &creds.ca_cert,
            &creds.client_cert,
            &creds.client_key,
            Duration::from_secs(120),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Agent {
            address,
            client: AgentClient::new(channel),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn unavailable(&self, e: ClientError) -> ClientError {
        match e {
            ClientError::Unavailable(m) => {
                ClientError::Unavailable(format!("agent {}: {m}", self.address))
            }
            other => other,
        }
    }

    pub async fn apply(&self, spec: BrokerSpec) -> Result<BrokerStatus, ClientError> {
        let mut c = self.client.clone();
        c.apply_broker(ApplyBrokerRequest { spec: Some(spec) })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.unavailable(s.into()))
    }

    pub async fn get(&self, broker_id: &str) -> Result<BrokerStatus, ClientError> {
        let mut c = self.client.clone();
        c.get_broker(GetBrokerRequest {
            broker_id: broker_id.to_string(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| self.unavailable(s.into()))
    }

    /// Deletes the broker from this host; true when it existed.
    pub async fn delete(&self, broker_id: &str) -> Result<bool, ClientError> {
        let mut c = self.client.clone();
        c.delete_broker(DeleteBrokerRequest {
            broker_id: broker_id.to_string(),
        })
        .await
        .map(|r| r.into_inner().existed)
        .map_err(|s| self.unavailable(s.into()))
    }

    /// Stores a user applied on its own (`ferrymq_user`) with the broker on this host.
    pub async fn apply_user(
        &self,
        broker_id: &str,
        user: User,
    ) -> Result<BrokerUserStatus, ClientError> {
        let mut c = self.client.clone();
        c.apply_broker_user(ApplyBrokerUserRequest {
            broker_id: broker_id.to_string(),
            user: Some(user),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| self.unavailable(s.into()))
    }

    /// The user as the broker's engine has it (NotFound when it has none).
    pub async fn get_user(
        &self,
        broker_id: &str,
        username: &str,
    ) -> Result<BrokerUserStatus, ClientError> {
        let mut c = self.client.clone();
        c.get_broker_user(GetBrokerUserRequest {
            broker_id: broker_id.to_string(),
            username: username.to_string(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| self.unavailable(s.into()))
    }

    pub async fn delete_user(&self, broker_id: &str, username: &str) -> Result<bool, ClientError> {
        let mut c = self.client.clone();
        c.delete_broker_user(DeleteBrokerUserRequest {
            broker_id: broker_id.to_string(),
            username: username.to_string(),
        })
        .await
        .map(|r| r.into_inner().existed)
        .map_err(|s| self.unavailable(s.into()))
    }

    /// Polls until the broker is RUNNING as observed for at least `generation` of its spec
    /// (the one just applied, not the one before). Fails at once on CREATION_FAILED (the
    /// agent's message says why) and when `timeout` runs out (with the last state seen); an
    /// unreachable agent is retried until then.
    pub async fn wait_running(
        &self,
        broker_id: &str,
        generation: u64,
        timeout: Duration,
    ) -> Result<BrokerStatus, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.get(broker_id).await {
                Ok(status) if status.observed_generation < generation => {
                    format!("waiting for the agent to take up spec generation {generation}")
                }
                Ok(status) if status.state == BrokerState::Running as i32 => return Ok(status),
                Ok(status) if status.state == BrokerState::CreationFailed as i32 => {
                    return Err(ClientError::Refused(format!(
                        "broker {broker_id} on {} failed: {}",
                        self.address, status.message
                    )))
                }
                Ok(status) => describe(&status),
                Err(ClientError::Unavailable(m)) => m,
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(format!(
                    "broker {broker_id} on {} was not RUNNING after {}s: {last}",
                    self.address,
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Configuration revisions (`ferrymq_configuration`) kept by the agent.
impl Agent {
    pub async fn put_configuration(
        &self,
        revision: ConfigurationRevision,
    ) -> Result<ConfigurationRevision, ClientError> {
        let mut c = self.client.clone();
        c.put_configuration(PutConfigurationRequest {
            revision: Some(revision),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| self.unavailable(s.into()))
    }

    /// One revision; 0: the latest.
    pub async fn get_configuration(
        &self,
        id: &str,
        revision: u32,
    ) -> Result<ConfigurationRevision, ClientError> {
        let mut c = self.client.clone();
        c.get_configuration(GetConfigurationRequest {
            id: id.to_string(),
            revision,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| self.unavailable(s.into()))
    }

    pub async fn delete_configuration(&self, id: &str) -> Result<bool, ClientError> {
        let mut c = self.client.clone();
        c.delete_configuration(DeleteConfigurationRequest { id: id.to_string() })
            .await
            .map(|r| r.into_inner().existed)
            .map_err(|s| self.unavailable(s.into()))
    }
}

fn describe(status: &BrokerStatus) -> String {
    let state = BrokerState::try_from(status.state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| status.state.to_string());
    if status.message.is_empty() {
        state
    } else {
        format!("{state}: {}", status.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_sort_into_cases() {
        assert!(matches!(
            ClientError::from(tonic::Status::not_found("x")),
            ClientError::NotFound(_)
        ));
        assert!(matches!(
            ClientError::from(tonic::Status::failed_precondition("x")),
            ClientError::Refused(_)
        ));
        assert!(matches!(
            ClientError::from(tonic::Status::unavailable("x")),
            ClientError::Unavailable(_)
        ));
        // What tonic reports when the agent's certificate is refused: an impostor, not a host
        // that is down.
        assert!(matches!(
            ClientError::from(tonic::Status::unavailable(
                "invalid peer certificate: Other(OtherError(NameConstraintViolation))"
            )),
            ClientError::Refused(m) if m.contains("not this host's agent")
        ));
    }
}
