//! `ferrymq_engine_versions`: the versions of an engine FerryMQ runs, with their protocols.

use crate::tfplugin::{
    Attribute, AttributePath, Block, Diagnostic, Diagnostics, Schema, Type, Value,
};
use ferrymq_api::catalogue::{self, EngineType};

pub const TYPE_NAME: &str = "ferrymq_engine_versions";

pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .attribute(Attribute::computed("id", Type::String))
            .attribute(
                Attribute::required("engine_type", Type::String)
                    .description("ActiveMQ or RabbitMQ."),
            )
            .attribute(Attribute::computed(
                "engine_versions",
                Type::list(Type::object([
                    ("version", Type::String),
                    ("source", Type::String),
                    ("protocols", Type::list(Type::String)),
                ])),
            )),
    )
}

pub fn read(config: Value) -> (Value, Diagnostics) {
    let engine = match config
        .get("engine_type")
        .as_str()
        .unwrap_or_default()
        .parse::<EngineType>()
    {
        Ok(e) => e,
        Err(m) => {
            return (
                Value::Null,
                vec![Diagnostic::error("Invalid engine_type", m)
                    .at(AttributePath::root("engine_type"))],
            )
        }
    };
    let versions = catalogue::engine_versions(engine)
        .map(|v| {
            Value::object([
                ("version", Value::string(v.version)),
                ("source", Value::string(v.source)),
                (
                    "protocols",
                    Value::List(v.protocols.iter().map(|p| Value::string(*p)).collect()),
                ),
            ])
        })
        .collect();
    let state = config
        .with("id", engine.as_str())
        .with("engine_versions", Value::List(versions));
    (state, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_versions_come_from_the_catalogue() {
        let (v, d) = read(Value::object([("engine_type", Value::string("rabbitmq"))]));
        assert!(d.is_empty());
        let first = &v.get("engine_versions").as_list().expect("list")[0];
        assert_eq!(first.get("version").as_str(), Some("3.10.8"));
    }
}
