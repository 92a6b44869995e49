//! Reading the status of the broker's other instances from their agents, with this host's own
//! certificate (host certificates are also client certificates for exactly this).

use super::roll::PeerView;
use crate::pki;
use anyhow::{Context, Result};
use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::{BrokerSpec, GetBrokerRequest};
use ferrymq_api::channel::{agent_address, agent_channel};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a peer gets to answer before it counts as unreachable (and holds the roll-out).
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Peers {
    tls_dir: PathBuf,
}

impl Peers {
    /// The credentials in the agent's TLS directory (the ones it serves with), read for every
    /// call so that a renewed certificate is presented at once.
    pub fn from_tls_dir(dir: &Path) -> Result<Self> {
        let peers = Peers {
            tls_dir: dir.to_path_buf(),
        };
        peers.credentials()?;
        Ok(peers)
    }

    fn credentials(&self) -> Result<[String; 3]> {
        let read = |name: &str| {
            let path = self.tls_dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok([
            read(pki::CA_CERT)?,
            read(pki::AGENT_CERT)?,
            read(pki::AGENT_KEY)?,
        ])
    }

    /// The status every other instance of `spec` reports for the broker.
    pub async fn view(&self, spec: &BrokerSpec) -> Vec<PeerView> {
        let own = spec.instance_index as usize;
        let mut views = Vec::new();
        for (index, instance) in spec.instances.iter().enumerate() {
            if index == own {
                continue;
            }
            let status = self.status(&instance.host, &spec.broker_id).await;
            views.push(PeerView { index, status });
        }
        views
    }

    async fn status(
        &self,
        host: &str,
        broker_id: &str,
    ) -> Result<ferrymq_api::agent::BrokerStatus, String> {
        let address = agent_address(host);
        let [ca_cert, cert, key] = self.credentials().map_err(|e| format!("{e:#}"))?;
        let channel = agent_channel(&address, &ca_cert, &cert, &key, PEER_TIMEOUT)?;
        AgentClient::new(channel)
            .get_broker(GetBrokerRequest {
                broker_id: broker_id.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}
