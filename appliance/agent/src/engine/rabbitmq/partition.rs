//! Healing a network partition that RabbitMQ 3.10 keeps after the network is back.
//!
//! A link cut shorter than the failure detection (`net_ticktime`: 7.5–12.5 s) is noticed by some
//! nodes and not others. A node that saw a peer go down and reconnect records the peer as
//! partitioned (mnesia's `inconsistent_database`), and under `pause_minority` nothing clears
//! that but restarting one side: the cut node never saw itself in a minority, so it never paused.
//! Until then the two keep diverging views (a quorum queue declared on one fails with
//! `cluster_not_formed`). RabbitMQ's advice is to restart the nodes of the partition trusted
//! least; here each agent decides from the same cluster-wide view, so exactly one node restarts
//! its application per round.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

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
/// The node with the most partitioned peers restarts (the one the others lost; it rejoins the
/// majority's view), on a tie the one with the greatest name. Every member reports the same
/// lists through any node, so every agent picks the same node and two never restart at once.
pub fn node_to_restart(view: &[NodeView]) -> Option<String> {
    // Partitions are symmetric in effect: one side reporting the other is enough.
    let mut edges: BTreeSet<(&str, &str)> = BTreeSet::new();
    for node in view {
        for peer in &node.partitions {
            let (a, b) = (node.name.as_str(), peer.as_str());
            edges.insert(if a < b { (a, b) } else { (b, a) });
        }
    }
    let mut degree: BTreeMap<&str, usize> = BTreeMap::new();
    for (a, b) in &edges {
        *degree.entry(a).or_default() += 1;
        *degree.entry(b).or_default() += 1;
    }
    degree
        .into_iter()
        .max_by(|(a, da), (b, db)| da.cmp(db).then(a.cmp(b)))
        .map(|(name, _)| name.to_string())
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
    fn the_node_both_others_lost_restarts() {
        // c was cut off; a and b each saw it go and come back, c saw neither.
        let view = [
            node("rabbit@a", &["rabbit@c"]),
            node("rabbit@b", &["rabbit@c"]),
            node("rabbit@c", &[]),
        ];
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@c"));
    }

    #[test]
    fn one_sided_reports_count_as_the_partition() {
        // Only a noticed b; b and c noticed nothing: one of the two restarts, the greater name.
        let view = [
            node("rabbit@a", &["rabbit@b"]),
            node("rabbit@b", &[]),
            node("rabbit@c", &[]),
        ];
        assert_eq!(node_to_restart(&view).as_deref(), Some("rabbit@b"));
        // The same edge reported from both sides is one edge.
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
}
