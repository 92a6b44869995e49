//! Healing a network partition that RabbitMQ 3.10 keeps after the network is back.
//!
//! A link cut about as long as the failure detection (a tick or a message to a peer
//! unacknowledged for 3 s, see `distribution`) is noticed by some nodes and not others. A node that saw a peer go down and reconnect records the peer as
//! partitioned (mnesia's `inconsistent_database`), and under `pause_minority` nothing clears
//! that but a restart: the cut node never saw itself in a minority, so it never paused. Until
//! then the two keep diverging views (a quorum queue declared on one fails with
//! `cluster_not_formed`).
//!
//! The node that restarts is one that *reports* a partition: its own list starts empty with its
//! application (`rabbit_node_monitor` starts with it). Restarting the node it reports clears
//! the list only if the reporter sees that node's application go down while it still counts it
//! as running, which it often does not: in the lab a reported node restarted three times in a
//! row and the reporter kept its list. Each agent decides from the same cluster-wide view, so
//! one node restarts its application per round.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One entry of `GET /api/nodes`: a member with the peers it reports being partitioned from.
/// Its `running` is not used: in this state each side reports the other as not running.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    pub name: String,
    #[serde(default)]
    pub partitions: Vec<String>,
}

/// The node that should restart its application to end a partition that outlived the network
/// fault, or `None` when no member reports one. The caller checks first that the fault is over
/// (every peer answers): while it lasts, `pause_minority` is the mechanism, and partitions are
/// only recorded once the nodes see each other again.
///
/// Of the nodes reporting a partition, the one reporting the most peers restarts (it disagrees
/// with the most members), on a tie the one with the greatest name.
pub fn node_to_restart(view: &[NodeView]) -> Option<String> {
    view.iter()
        .filter(|node| !node.partitions.is_empty())
        .max_by(|a, b| (a.partitions.len(), &a.name).cmp(&(b.partitions.len(), &b.name)))
        .map(|node| node.name.clone())
}

/// The partitions in `rabbitmqctl cluster_status --formatter json`: `partitions` maps each
/// running member that reports one to the peers it is partitioned from (`{}` when none).
pub fn from_cluster_status(json: &[u8]) -> anyhow::Result<Vec<NodeView>> {
    #[derive(Deserialize)]
    struct ClusterStatus {
        #[serde(default)]
        partitions: BTreeMap<String, Vec<String>>,
    }
    let status: ClusterStatus = serde_json::from_slice(json)
        .map_err(|e| anyhow::anyhow!("rabbitmqctl cluster_status gave no JSON status: {e}"))?;
    Ok(status
        .partitions
        .into_iter()
        .map(|(name, partitions)| NodeView { name, partitions })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, partitions: &[&str]) -> NodeView {
        NodeView {
            name: name.into(),
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_whole_cluster_restarts_nothing() {
        let view = [
            node("rabbit@a", &[]),
            node("rabbit@b", &[]),
            node("rabbit@c", &[]),
        ];
        assert_eq!(node_to_restart(&view), None);
    }

    #[test]
    fn the_node_reporting_the_most_peers_restarts() {
        // a was cut off and came back: it saw both others go, and each of them saw a go.
        let view = [
            node("rabbit@a", &["rabbit@b", "rabbit@c"]),
            node("rabbit@b", &["rabbit@a"]),
            node("rabbit@c", &["rabbit@a"]),
        ];
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@a"));
    }

    #[test]
    fn a_reported_node_that_reports_nothing_does_not_restart() {
        // c was cut off; a and b each saw it go and come back, c saw neither. Restarting c
        // would not clear a's or b's list: one of them restarts, the greater name first.
        let view = [
            node("rabbit@a", &["rabbit@c"]),
            node("rabbit@b", &["rabbit@c"]),
            node("rabbit@c", &[]),
        ];
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@b"));
        // Once b restarted, a is the one left.
        let view = [
            node("rabbit@a", &["rabbit@c"]),
            node("rabbit@b", &[]),
            node("rabbit@c", &[]),
        ];
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@a"));
    }

    #[test]
    fn a_partition_reported_from_both_sides_restarts_one() {
        let view = [
            node("rabbit@a", &["rabbit@b"]),
            node("rabbit@b", &["rabbit@a"]),
            node("rabbit@c", &[]),
        ];
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@b"));
    }

    #[test]
    fn the_management_api_shape_decodes() {
        let body = r#"[{"name":"rabbit@10.0.0.1","running":true,"partitions":["rabbit@10.0.0.2"]},
                       {"name":"rabbit@10.0.0.2","running":true,"partitions":[]},
                       {"name":"rabbit@10.0.0.3","running":false}]"#;
        let view: Vec<NodeView> = serde_json::from_str(body).unwrap();
        assert_eq!(view[0].partitions, ["rabbit@10.0.0.2"]);
        assert!(view[2].partitions.is_empty());
    }

    #[test]
    fn cluster_status_partitions_decode() {
        let body = br#"{"alarms":[],"disk_nodes":["rabbit@10.0.0.1","rabbit@10.0.0.2"],
                        "partitions":{"rabbit@10.0.0.1":["rabbit@10.0.0.2"]},
                        "running_nodes":["rabbit@10.0.0.1","rabbit@10.0.0.2"]}"#;
        let view = from_cluster_status(body).unwrap();
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@10.0.0.1"));
        let whole = br#"{"partitions":{},"running_nodes":["rabbit@10.0.0.1"]}"#;
        assert_eq!(node_to_restart(&from_cluster_status(whole).unwrap()), None);
        assert!(from_cluster_status(b"Error: unable to perform an operation").is_err());
    }
}
