//! RabbitMQ configuration data: `rabbitmq.conf` lines (`key = value`, `#` comments), limited
//! to keys FerryMQ does not own. Listeners, paths, cluster formation, TLS, the default user,
//! logging and the limits of the instance type (memory watermark, `connection_max`,
//! `channel_max`, `disk_free_limit`) are rendered by the agent and refused here, so a
//! configuration can never move a listener or a data directory.

/// How a value is checked before it reaches cuttlefish, with the bounds of RabbitMQ 3.10's own
/// validators (`rabbit.schema`): a value cuttlefish refuses stops the node at its next start,
/// which for a revision is inside the maintenance window, so it is refused here, at plan.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A whole number in `min..=max`.
    Integer {
        min: u64,
        max: u64,
    },
    /// A decimal strictly between 0 and 1, written with a point (cuttlefish's `float`).
    Ratio,
    Bool,
}

const ANY: Kind = Kind::Integer {
    min: 0,
    max: u64::MAX,
};

/// Keys a configuration may set (Amazon MQ's configurable `rabbitmq.conf` keys, and a few
/// more tuning keys RabbitMQ 3.10 knows).
const KEYS: &[(&str, Kind)] = &[
    (
        "consumer_timeout",
        Kind::Integer {
            min: 1,
            max: u64::MAX,
        },
    ),
    ("heartbeat", ANY),
    ("frame_max", ANY),
    ("handshake_timeout", ANY),
    ("collect_statistics_interval", ANY),
    ("queue_index_embed_msgs_below", ANY),
    (
        "mirroring_sync_batch_size",
        Kind::Integer {
            min: 1,
            max: 1_000_000,
        },
    ),
    (
        "max_message_size",
        Kind::Integer {
            min: 1,
            max: 512 * 1024 * 1024,
        },
    ),
    ("vm_memory_high_watermark_paging_ratio", Kind::Ratio),
    (
        "management.restrictions.operator_policy_changes.disabled",
        Kind::Bool,
    ),
    (
        "quorum_queue.property_equivalence.relaxed_checks_on_redeclaration",
        Kind::Bool,
    ),
];

/// Parses and checks the data; returns the settings in order. The error names the line and key.
pub fn parse(data: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in data.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {n}: {line:?} is not `key = value`"));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
            let allowed: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "line {n}: key {key:?} is not allowed in a FerryMQ configuration (FerryMQ owns \
                 listeners, paths, clustering, TLS, users, logging and the instance type's \
                 limits); allowed keys: {}",
                allowed.join(", ")
            ));
        };
        let ok = match *kind {
            Kind::Integer { min, max } => {
                value.parse::<u64>().is_ok_and(|n| (min..=max).contains(&n))
            }
            Kind::Ratio => {
                value.contains('.') && value.parse::<f64>().is_ok_and(|r| r > 0.0 && r < 1.0)
            }
            Kind::Bool => matches!(value, "true" | "false"),
        };
        if !ok {
            let want = match *kind {
                Kind::Integer { min: 0, max } if max == u64::MAX => "a whole number".to_string(),
                Kind::Integer { min, max } if max == u64::MAX => {
                    format!("a whole number of at least {min}")
                }
                Kind::Integer { min, max } => format!("a whole number from {min} to {max}"),
                Kind::Ratio => "a decimal between 0 and 1, such as 0.5".to_string(),
                Kind::Bool => "true or false".to_string(),
            };
            return Err(format!("line {n}: {key} = {value:?} must be {want}"));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("line {n}: key {key:?} is set twice"));
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_keys_are_kept_in_order() {
        let c = parse("# tuning\nconsumer_timeout = 900000\n\nheartbeat=30\n").expect("valid");
        assert_eq!(
            c,
            [
                ("consumer_timeout".to_string(), "900000".to_string()),
                ("heartbeat".to_string(), "30".to_string())
            ]
        );
    }

    #[test]
    fn owned_keys_and_bad_values_are_refused_by_name() {
        for key in [
            "listeners.tcp.1",
            "management.tcp.port",
            "ssl_options.cacertfile",
            "cluster_formation.peer_discovery_backend",
            "default_user",
            "channel_max",
            "log.file.level",
        ] {
            let e = parse(&format!("{key} = 1\n")).unwrap_err();
            assert!(e.contains(&format!("key {key:?} is not allowed")), "{e}");
        }
        assert!(parse("heartbeat = soon")
            .unwrap_err()
            .contains("whole number"));
        for ratio in ["1.5", "1", "0", "1.0"] {
            assert!(
                parse(&format!("vm_memory_high_watermark_paging_ratio = {ratio}"))
                    .unwrap_err()
                    .contains("between 0 and 1"),
                "{ratio}"
            );
        }
        assert!(parse("vm_memory_high_watermark_paging_ratio = 0.75").is_ok());
        // RabbitMQ's own bounds, which would otherwise stop the node at its next start.
        let e = parse("max_message_size = 999999999999").unwrap_err();
        assert!(
            e.contains("max_message_size") && e.contains("from 1 to 536870912"),
            "{e}"
        );
        assert!(parse("max_message_size = 536870912").is_ok());
        assert!(parse("mirroring_sync_batch_size = 0")
            .unwrap_err()
            .contains("from 1 to 1000000"));
        assert!(parse("consumer_timeout = 0")
            .unwrap_err()
            .contains("at least 1"));
        assert!(parse("heartbeat").unwrap_err().contains("line 1"));
        assert!(parse("heartbeat = 1\nheartbeat = 2")
            .unwrap_err()
            .contains("twice"));
    }
}
