//! `ferrymq_instance_types`: Amazon MQ instance types FerryMQ offers, optionally for one engine.

use crate::tfplugin::{
    Attribute, AttributePath, Block, Diagnostic, Diagnostics, Schema, Type, Value,
};
use ferrymq_api::catalogue::{self, EngineType};

pub const TYPE_NAME: &str = "ferrymq_instance_types";

pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .attribute(Attribute::computed("id", Type::String))
            .attribute(
                Attribute::optional("engine_type", Type::String)
                    .description("Only types that run this engine."),
            )
            .attribute(Attribute::computed(
                "instance_types",
                Type::list(Type::object([
                    ("name", Type::String),
                    ("vcpus", Type::Number),
                    ("memory_mib", Type::Number),
                    ("engine_types", Type::list(Type::String)),
                    // Amazon MQ's per-type quotas (single-instance brokers).
                    ("rabbitmq_connections_per_node", Type::Number),
                    ("rabbitmq_channels_per_node", Type::Number),
                    ("rabbitmq_queues", Type::Number),
                    ("rabbitmq_consumers_per_channel", Type::Number),
                    ("rabbitmq_shovels", Type::Number),
                    ("activemq_connections_per_protocol", Type::Number),
                ])),
            )),
    )
}

pub fn read(config: Value) -> (Value, Diagnostics) {
    let engine = match config
        .get("engine_type")
        .as_str()
        .map(str::parse::<EngineType>)
    {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(m)) => {
            return (
                Value::Null,
                vec![Diagnostic::error("Invalid engine_type", m)
                    .at(AttributePath::root("engine_type"))],
            )
        }
    };
    let types = catalogue::INSTANCE_TYPES
        .iter()
        .filter(|t| engine.is_none_or(|e| t.engines.contains(&e)))
        .map(|t| {
            Value::object([
                ("name", Value::string(t.name)),
                ("vcpus", Value::from(t.vcpus)),
                ("memory_mib", Value::from(t.memory_mib)),
                (
                    "engine_types",
                    Value::List(
                        t.engines
                            .iter()
                            .map(|e| Value::string(e.as_str()))
                            .collect(),
                    ),
                ),
                (
                    "rabbitmq_connections_per_node",
                    Value::from(t.quotas.rabbitmq_connections_per_node),
                ),
                (
                    "rabbitmq_channels_per_node",
                    Value::from(t.quotas.rabbitmq_channels_per_node),
                ),
                ("rabbitmq_queues", Value::from(t.quotas.rabbitmq_queues)),
                (
                    "rabbitmq_consumers_per_channel",
                    Value::from(t.quotas.rabbitmq_consumers_per_channel),
                ),
                ("rabbitmq_shovels", Value::from(t.quotas.rabbitmq_shovels)),
                (
                    "activemq_connections_per_protocol",
                    Value::from(t.quotas.activemq_connections_per_protocol),
                ),
            ])
        })
        .collect();
    let id = engine.map(|e| e.as_str()).unwrap_or("all");
    let state = config
        .with("id", id)
        .with("instance_types", Value::List(types));
    (state, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_catalogue_and_filters_by_engine() {
        let (all, d) = read(Value::object([("engine_type", Value::Null)]));
        assert!(d.is_empty());
        let names: Vec<_> = all
            .get("instance_types")
            .as_list()
            .expect("list")
            .iter()
            .map(|t| t.get("name").as_str().unwrap_or_default().to_string())
            .collect();
        assert!(names.contains(&"mq.m5.large".to_string()));
        let micro = all
            .get("instance_types")
            .as_list()
            .expect("list")
            .iter()
            .find(|t| t.get("name").as_str() == Some("mq.t3.micro"))
            .expect("micro")
            .clone();
        assert_eq!(
            micro.get("rabbitmq_connections_per_node"),
            &Value::from(500u32)
        );
        assert_eq!(micro.get("rabbitmq_shovels"), &Value::from(150u32));
        assert_eq!(
            micro.get("activemq_connections_per_protocol"),
            &Value::from(300u32)
        );
        let (_, d) = read(Value::object([("engine_type", Value::string("Kafka"))]));
        assert!(d[0].detail.contains("\"Kafka\""));
    }
}
