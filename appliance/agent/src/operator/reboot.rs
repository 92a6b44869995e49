//! `ferrymq-agent reboot`: Amazon MQ's RebootBroker for a FerryMQ broker. The operator's
//! credentials (the provider's: deployment CA, client certificate and key) ask every host of the
//! broker to reboot it under one reboot id; the agents then restart their engines one at a time
//! by the rolling rules (the standby first, a cluster in instance order), as for a window-bound
//! change. The command waits until every host has restarted and serves again.

use anyhow::{bail, Context, Result};
use ferrymq_api::agent::{BrokerState, BrokerStatus, GetBrokerRequest, RebootBrokerRequest};
use std::time::{Duration, Instant};

pub use super::Credentials;

const POLL: Duration = Duration::from_secs(2);

/// A reboot id unique enough for one broker: the time it was asked for.
pub fn new_reboot_id() -> String {
    format!("reboot-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Whether `status` shows the host done with `reboot_id`: it serves, and its maintenance
/// history records the reboot.
fn rebooted(status: &BrokerStatus, reboot_id: &str) -> bool {
    status.state == BrokerState::Running as i32
        && status
            .maintenance_history
            .iter()
            .any(|e| e.change.contains(&format!("-> {reboot_id} ")))
}

/// Asks each host to reboot the broker, then waits (up to `timeout`) until all have.
pub async fn reboot(
    creds: &Credentials,
    broker_id: &str,
    hosts: &[String],
    timeout: Duration,
) -> Result<String> {
    if hosts.is_empty() {
        bail!("give the broker's hosts with --host (every instance's agent address)");
    }
    let reboot_id = new_reboot_id();
    for host in hosts {
        creds
            .client(host)?
            .reboot_broker(RebootBrokerRequest {
                broker_id: broker_id.to_string(),
                reboot_id: reboot_id.clone(),
            })
            .await
            .with_context(|| format!("asking {host} to reboot {broker_id}"))?;
        println!("{host}: reboot {reboot_id} asked for");
    }
    let deadline = Instant::now() + timeout;
    let mut done = vec![false; hosts.len()];
    while done.iter().any(|d| !d) {
        if Instant::now() > deadline {
            let left: Vec<&str> = hosts
                .iter()
                .zip(&done)
                .filter(|(_, d)| !**d)
                .map(|(h, _)| h.as_str())
                .collect();
            bail!(
                "reboot {reboot_id} not finished after {} s on {}",
                timeout.as_secs(),
                left.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
        for (host, done) in hosts.iter().zip(done.iter_mut()).filter(|(_, d)| !**d) {
            let status = creds
                .client(host)?
                .get_broker(GetBrokerRequest {
                    broker_id: broker_id.to_string(),
                })
                .await;
            if let Ok(status) = status {
                if rebooted(status.get_ref(), &reboot_id) {
                    println!("{host}: rebooted and serving");
                    *done = true;
                }
            }
        }
    }
    Ok(reboot_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_api::agent::MaintenanceEvent;

    #[test]
    fn a_host_is_done_once_it_serves_with_the_reboot_in_its_history() {
        let mut s = BrokerStatus {
            state: BrokerState::RebootInProgress as i32,
            ..Default::default()
        };
        s.maintenance_history.push(MaintenanceEvent {
            at: "2026-11-22T07:00:00Z".into(),
            change: "reboot:  -> reboot-1 (RebootBroker)".into(),
        });
        assert!(!rebooted(&s, "reboot-1"));
        s.state = BrokerState::Running as i32;
        assert!(rebooted(&s, "reboot-1"));
        assert!(!rebooted(&s, "reboot-2"));
        assert!(new_reboot_id().starts_with("reboot-2"));
    }
}
