//! Broker configurations (`ferrymq_configuration`, Amazon MQ's `aws_mq_configuration`): what a
//! user may put in one, checked by the provider at plan time and by the agent again before
//! anything reaches an engine.
//!
//! FerryMQ renders the parts of each engine's configuration it owns (listeners, paths, store
//! locks, limits of the instance type, users, TLS, logging); a configuration only adds what
//! Amazon MQ lets its users tune. Each engine's allow-list lives in its own module and parses
//! the data into what the agent merges into the files it renders.

pub mod activemq;
pub mod rabbitmq;

use crate::catalogue::EngineType;

/// Configuration ids are `c-` and letters, digits and dashes: they name files on hosts.
pub fn id(id: &str) -> Result<(), String> {
    let rest = id.strip_prefix("c-").filter(|r| !r.is_empty());
    match rest {
        Some(r) if r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && id.len() <= 64 => {
            Ok(())
        }
        _ => Err(format!(
            "configuration id {id:?} must be \"c-\" followed by letters, digits and dashes"
        )),
    }
}

/// Amazon MQ configuration names: 1–150 characters of letters, digits, `-`, `_`, `.`, `~`.
pub fn name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 150 {
        return Err(format!("name {name:?} must be 1 to 150 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Err(format!(
            "name {name:?} contains {c:?}; only letters, digits, '-', '_', '.' and '~' are allowed"
        ));
    }
    Ok(())
}

/// Refuses data the engine's allow-list does not accept; the message names the offending
/// element, attribute or key.
pub fn data(engine: EngineType, data: &str) -> Result<(), String> {
    if data.trim().is_empty() {
        return Err("data is empty".into());
    }
    match engine {
        EngineType::ActiveMq => activemq::parse(data).map(drop),
        EngineType::RabbitMq => rabbitmq::parse(data).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(id("c-1234-abcd").is_ok());
        assert!(id("b-1234").is_err());
        assert!(id("c-../x").is_err());
        assert!(name("orders.conf_v2~x").is_ok());
        assert!(name("").is_err());
        assert!(name("a b").unwrap_err().contains("' '"));
    }

    #[test]
    fn data_is_checked_per_engine() {
        assert!(data(EngineType::RabbitMq, "consumer_timeout = 60000\n").is_ok());
        assert!(data(EngineType::ActiveMq, "consumer_timeout = 60000\n").is_err());
        assert!(data(EngineType::RabbitMq, "  \n").is_err());
    }
}
