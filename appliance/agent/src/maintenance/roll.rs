//! Whose turn it is: the rolling rules that keep a multi-instance broker available while the
//! agents apply window-bound changes, each agent deciding from its peers' reported status.
//!
//! The order is fixed by what the peers report, so two agents never both decide to go:
//! - active/standby: the standby first (the active keeps serving); the active only once every
//!   peer is back, RUNNING as standby with nothing pending — its restart is then the controlled
//!   failover to the already-upgraded standby;
//! - cluster: one node at a time in instance order, each only once every other node runs and
//!   every earlier node has nothing pending.
//!
//! A host counts as done only after it served again with the change (the agent records what it
//! runs only in a RUNNING pass), so a host restarting, or whose agent restarted mid-way, reports
//! "not running" or "pending" and holds everyone else back. An unreachable peer holds too: going
//! down while a peer's state is unknown could take both down.

use crate::reconcile::ROLE_STANDBY;
use ferrymq_api::agent::{BrokerSpec, BrokerState, BrokerStatus};
use ferrymq_api::catalogue::DeploymentMode;

/// What this host knows of one peer: its index in `spec.instances` and its last status, or why
/// it could not be read.
pub struct PeerView {
    pub index: usize,
    pub status: Result<BrokerStatus, String>,
}

/// `Ok` when this host may apply its window-bound changes now, else why it waits.
pub fn may_go(spec: &BrokerSpec, own_role: &str, peers: &[PeerView]) -> Result<(), String> {
    let mode: DeploymentMode = match spec.deployment_mode.parse() {
        Ok(mode) => mode,
        Err(_) => return Ok(()),
    };
    if spec.instances.len() < 2 {
        return Ok(());
    }
    let mut running_peers = Vec::new();
    for peer in peers {
        let host = spec
            .instances
            .get(peer.index)
            .map_or("?", |i| i.host.as_str());
        match &peer.status {
            Err(why) => return Err(format!("waiting: peer {host} cannot be read ({why})")),
            Ok(status) if status.state != BrokerState::Running as i32 => {
                return Err(format!(
                    "waiting: peer {host} is {}",
                    BrokerState::try_from(status.state)
                        .map_or("in an unknown state", |s| s.as_str_name())
                ))
            }
            Ok(status) if !same_desired(spec, status) => {
                // Its last status predates the spec we act on: what it will do is unknown yet.
                return Err(format!(
                    "waiting: peer {host} has not reported on this change yet"
                ));
            }
            Ok(status) => running_peers.push((peer.index, host, status)),
        }
    }
    let own = spec.instance_index as usize;
    match mode {
        DeploymentMode::ActiveStandbyMultiAz => {
            if own_role == ROLE_STANDBY {
                return Ok(());
            }
            for (_, host, status) in &running_peers {
                if !status.pending_changes.is_empty() {
                    return Err(format!(
                        "waiting: the standby {host} applies its changes first"
                    ));
                }
                if status.role != ROLE_STANDBY {
                    return Err(format!(
                        "waiting: peer {host} is not a ready standby to fail over to (role {:?})",
                        status.role
                    ));
                }
            }
            Ok(())
        }
        _ => {
            for (index, host, status) in &running_peers {
                if *index < own && !status.pending_changes.is_empty() {
                    return Err(format!("waiting: node {host} goes first"));
                }
            }
            Ok(())
        }
    }
}

/// Whether the peer's status was observed for the same window-bound values we act on.
fn same_desired(spec: &BrokerSpec, status: &BrokerStatus) -> bool {
    status.spec.as_ref().is_some_and(|theirs| {
        let revision =
            |s: &BrokerSpec| s.configuration.as_ref().map(|c| (c.id.clone(), c.revision));
        theirs.host_instance_type == spec.host_instance_type
            && theirs.engine_version == spec.engine_version
            && revision(theirs) == revision(spec)
            && theirs.reboot_id == spec.reboot_id
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    const ROLE_ACTIVE: &str = "active";
    use ferrymq_api::agent::Instance;

    fn spec(mode: &str, n: usize, own: u32) -> BrokerSpec {
        BrokerSpec {
            deployment_mode: mode.into(),
            instances: (0..n)
                .map(|i| Instance {
                    host: format!("10.0.0.{}", i + 1),
                    volume: String::new(),
                })
                .collect(),
            instance_index: own,
            ..Default::default()
        }
    }

    fn peer(index: usize, state: BrokerState, role: &str, pending: bool) -> PeerView {
        PeerView {
            index,
            status: Ok(BrokerStatus {
                spec: Some(BrokerSpec::default()),
                state: state as i32,
                role: role.into(),
                pending_changes: if pending {
                    vec!["x: a -> b".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
        }
    }

    const AS: &str = "ACTIVE_STANDBY_MULTI_AZ";

    #[test]
    fn a_single_instance_always_goes() {
        assert!(may_go(&spec("SINGLE_INSTANCE", 1, 0), ROLE_ACTIVE, &[]).is_ok());
    }

    #[test]
    fn the_standby_goes_first_while_the_active_serves() {
        let s = spec(AS, 2, 1);
        let active = peer(0, BrokerState::Running, ROLE_ACTIVE, true);
        assert!(may_go(&s, ROLE_STANDBY, &[active]).is_ok());
        // ... but not while the active is down.
        let down = peer(0, BrokerState::RebootInProgress, "", true);
        assert!(may_go(&s, ROLE_STANDBY, &[down])
            .unwrap_err()
            .contains("REBOOT_IN_PROGRESS"));
    }

    #[test]
    fn the_active_waits_for_the_standby_to_be_done_and_back() {
        let s = spec(AS, 2, 0);
        let pending = peer(1, BrokerState::Running, ROLE_STANDBY, true);
        assert!(may_go(&s, ROLE_ACTIVE, &[pending])
            .unwrap_err()
            .contains("first"));
        let restarting = peer(1, BrokerState::RebootInProgress, "", false);
        assert!(may_go(&s, ROLE_ACTIVE, &[restarting]).is_err());
        let done = peer(1, BrokerState::Running, ROLE_STANDBY, false);
        assert!(may_go(&s, ROLE_ACTIVE, &[done]).is_ok());
    }

    #[test]
    fn a_peer_that_has_not_seen_the_change_holds() {
        let s = spec(AS, 2, 0);
        let mut stale = peer(1, BrokerState::Running, ROLE_STANDBY, false);
        if let Ok(status) = &mut stale.status {
            status.spec = Some(BrokerSpec {
                host_instance_type: "mq.m5.large".into(),
                ..Default::default()
            });
        }
        assert!(may_go(&s, ROLE_ACTIVE, &[stale])
            .unwrap_err()
            .contains("not reported"));
    }

    #[test]
    fn an_unreachable_peer_holds_everyone() {
        let s = spec(AS, 2, 1);
        let gone = PeerView {
            index: 0,
            status: Err("connection refused".into()),
        };
        assert!(may_go(&s, ROLE_STANDBY, &[gone])
            .unwrap_err()
            .contains("10.0.0.1"));
    }

    #[test]
    fn a_cluster_goes_one_node_at_a_time_in_order() {
        let c = "CLUSTER_MULTI_AZ";
        let r = BrokerState::Running;
        // Node 0 goes first.
        assert!(may_go(
            &spec(c, 3, 0),
            ROLE_ACTIVE,
            &[peer(1, r, ROLE_ACTIVE, true), peer(2, r, ROLE_ACTIVE, true)]
        )
        .is_ok());
        // Node 1 waits for node 0, and for node 0 to be back.
        assert!(may_go(
            &spec(c, 3, 1),
            ROLE_ACTIVE,
            &[peer(0, r, ROLE_ACTIVE, true), peer(2, r, ROLE_ACTIVE, true)]
        )
        .is_err());
        assert!(may_go(
            &spec(c, 3, 1),
            ROLE_ACTIVE,
            &[
                peer(0, BrokerState::RebootInProgress, "", false),
                peer(2, r, ROLE_ACTIVE, true)
            ]
        )
        .is_err());
        assert!(may_go(
            &spec(c, 3, 1),
            ROLE_ACTIVE,
            &[
                peer(0, r, ROLE_ACTIVE, false),
                peer(2, r, ROLE_ACTIVE, true)
            ]
        )
        .is_ok());
    }
}
