//! RabbitMQ's figures through its management API (`/api/overview`, `/api/nodes/NODE`,
//! `/api/queues`), as Amazon MQ publishes them for RabbitMQ brokers. The management plugin
//! refreshes them every `collect_statistics_interval` (5 s by default).

use super::management::Management;
use crate::metrics::Sample;
use anyhow::Result;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Overview {
    object_totals: ObjectTotals,
    queue_totals: QueueTotals,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ObjectTotals {
    connections: f64,
    channels: f64,
    queues: f64,
    consumers: f64,
    exchanges: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct QueueTotals {
    messages: f64,
    messages_ready: f64,
    messages_unacknowledged: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Node {
    mem_used: f64,
    mem_limit: f64,
    disk_free: f64,
    disk_free_limit: f64,
    fd_used: f64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Queue {
    name: String,
    vhost: String,
    messages: f64,
    messages_ready: f64,
    messages_unacknowledged: f64,
    consumers: f64,
}

pub async fn samples(management: &Management, node: &str) -> Result<Vec<Sample>> {
    let overview: Overview = management.get("/overview").await?;
    let node: Node = management.get(&format!("/nodes/{}", encode(node))).await?;
    let queues: Vec<Queue> = management
        .get("/queues?columns=name,vhost,messages,messages_ready,messages_unacknowledged,consumers")
        .await?;
    Ok(from(&overview, &node, &queues))
}

fn from(overview: &Overview, node: &Node, queues: &[Queue]) -> Vec<Sample> {
    let g = Sample::gauge;
    let (o, t) = (&overview.object_totals, &overview.queue_totals);
    let mut out = vec![
        g(
            "ferrymq_rabbitmq_mem_used_bytes",
            "RabbitMQMemUsed: memory used by the node.",
            node.mem_used,
        ),
        g(
            "ferrymq_rabbitmq_mem_limit_bytes",
            "RabbitMQMemLimit: the node's memory alarm threshold.",
            node.mem_limit,
        ),
        g(
            "ferrymq_rabbitmq_disk_free_bytes",
            "RabbitMQDiskFree: free space on the node's data volume.",
            node.disk_free,
        ),
        g(
            "ferrymq_rabbitmq_disk_free_limit_bytes",
            "RabbitMQDiskFreeLimit: the node's free-disk alarm threshold.",
            node.disk_free_limit,
        ),
        g(
            "ferrymq_rabbitmq_fd_used",
            "RabbitMQFdUsed: file descriptors used by the node.",
            node.fd_used,
        ),
        g(
            "ferrymq_rabbitmq_messages",
            "MessageCount: messages in all queues (ready and unacknowledged).",
            t.messages,
        ),
        g(
            "ferrymq_rabbitmq_messages_ready",
            "MessageReadyCount: messages ready for delivery.",
            t.messages_ready,
        ),
        g(
            "ferrymq_rabbitmq_messages_unacknowledged",
            "MessageUnacknowledgedCount: messages delivered and not yet acknowledged.",
            t.messages_unacknowledged,
        ),
        g(
            "ferrymq_rabbitmq_connections",
            "ConnectionCount: open client connections.",
            o.connections,
        ),
        g(
            "ferrymq_rabbitmq_channels",
            "ChannelCount: open channels.",
            o.channels,
        ),
        g("ferrymq_rabbitmq_queues", "QueueCount: queues.", o.queues),
        g(
            "ferrymq_rabbitmq_consumers",
            "ConsumerCount: consumers on all queues.",
            o.consumers,
        ),
        g(
            "ferrymq_rabbitmq_exchanges",
            "ExchangeCount: exchanges.",
            o.exchanges,
        ),
    ];
    for q in queues {
        let per_queue = |name, help, value| {
            g(name, help, value)
                .label("vhost", q.vhost.clone())
                .label("queue", q.name.clone())
        };
        out.extend([
            per_queue(
                "ferrymq_rabbitmq_queue_messages",
                "MessageCount (per queue): the queue's depth, ready and unacknowledged.",
                q.messages,
            ),
            per_queue(
                "ferrymq_rabbitmq_queue_messages_ready",
                "MessageReadyCount (per queue).",
                q.messages_ready,
            ),
            per_queue(
                "ferrymq_rabbitmq_queue_messages_unacknowledged",
                "MessageUnacknowledgedCount (per queue).",
                q.messages_unacknowledged,
            ),
            per_queue(
                "ferrymq_rabbitmq_queue_consumers",
                "ConsumerCount (per queue).",
                q.consumers,
            ),
        ]);
    }
    out
}

/// A path segment with everything but letters, digits, `-`, `.` and `_` percent-encoded
/// (`rabbit@10.0.0.1` → `rabbit%4010.0.0.1`).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_json_becomes_amazon_mq_figures() {
        let overview: Overview = serde_json::from_str(
            r#"{"object_totals":{"connections":2,"channels":3,"queues":1,"consumers":1,"exchanges":7},
                "queue_totals":{"messages":5,"messages_ready":4,"messages_unacknowledged":1}}"#,
        )
        .expect("overview");
        let node: Node = serde_json::from_str(
            r#"{"mem_used":1000,"mem_limit":4000,"disk_free":9000,"disk_free_limit":50,"fd_used":40,"other":1}"#,
        )
        .expect("node");
        // A queue the management plugin has no figures for yet reports 0.
        let queues: Vec<Queue> = serde_json::from_str(
            r#"[{"name":"orders","vhost":"/","messages":5},{"name":"new","vhost":"/"}]"#,
        )
        .expect("queues");
        let s = from(&overview, &node, &queues);
        let value = |name: &str, queue: Option<&str>| {
            s.iter()
                .find(|x| {
                    x.name == name
                        && queue
                            .is_none_or(|q| x.labels.iter().any(|(k, v)| *k == "queue" && v == q))
                })
                .map(|x| x.value)
        };
        assert_eq!(value("ferrymq_rabbitmq_mem_used_bytes", None), Some(1000.0));
        assert_eq!(
            value("ferrymq_rabbitmq_disk_free_limit_bytes", None),
            Some(50.0)
        );
        assert_eq!(value("ferrymq_rabbitmq_connections", None), Some(2.0));
        assert_eq!(value("ferrymq_rabbitmq_messages", None), Some(5.0));
        assert_eq!(
            value("ferrymq_rabbitmq_queue_messages", Some("orders")),
            Some(5.0)
        );
        assert_eq!(
            value("ferrymq_rabbitmq_queue_messages", Some("new")),
            Some(0.0)
        );
        assert_eq!(encode("rabbit@fd00::1"), "rabbit%40fd00%3A%3A1");
    }
}
