//! `ferrymq_instance_type_recommendation`: the smallest instance type for a workload, from
//! Amazon MQ's quotas and the throughput FerryMQ's benchmark measured (see
//! `ferrymq_api::recommendation`). A workload no type can carry fails the plan, naming the
//! attribute that is too much.

use crate::tfplugin::{
    Attribute, AttributePath, Block, Diagnostic, Diagnostics, Schema, Type, Value,
};
use ferrymq_api::catalogue::{DeploymentMode, EngineType, StorageType};
use ferrymq_api::recommendation::{self, Throughput, Workload};

pub const TYPE_NAME: &str = "ferrymq_instance_type_recommendation";

const GIB: f64 = (1u64 << 30) as f64;

pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .attribute(Attribute::computed("id", Type::String))
            .attribute(
                Attribute::required("engine_type", Type::String)
                    .description("ActiveMQ or RabbitMQ."),
            )
            .attribute(
                Attribute::required("deployment_mode", Type::String).description(
                    "SINGLE_INSTANCE, ACTIVE_STANDBY_MULTI_AZ or CLUSTER_MULTI_AZ.",
                ),
            )
            .attribute(Attribute::optional("storage_type", Type::String).description(
                "ebs or efs; the deployment mode's default (as in ferrymq_broker) when unset.",
            ))
            .attribute(
                Attribute::required("messages_per_second", Type::Number)
                    .description("Persistent messages published (and consumed) per second."),
            )
            .attribute(
                Attribute::required("average_message_size_bytes", Type::Number)
                    .description("Average message size in bytes."),
            )
            .attribute(
                Attribute::optional("connections", Type::Number)
                    .description("Client connections at once (0 when unset)."),
            )
            .attribute(
                Attribute::optional("queues", Type::Number)
                    .description("Queues on the broker (0 when unset)."),
            )
            .attribute(
                Attribute::optional("retained_storage_gb", Type::Number)
                    .description("Messages kept on the broker at most, in GiB (0 when unset)."),
            )
            .attribute(
                Attribute::computed("instance_type", Type::String)
                    .description("The smallest type that fits, e.g. mq.m5.large."),
            )
            .attribute(
                Attribute::computed("reason", Type::String)
                    .description("Which limit decided it, with the figures."),
            )
            .attribute(
                Attribute::computed("sustained_messages_per_second", Type::Number).description(
                    "What the type sustains at the average message size, as measured.",
                ),
            )
            .attribute(
                Attribute::computed("measured_on", Type::String).description(
                    "The machine and date of the throughput figures, and the command that measured them.",
                ),
            ),
    )
}

fn invalid(attr: &str, detail: String) -> Diagnostics {
    vec![Diagnostic::error(format!("Invalid {attr}"), detail).at(AttributePath::root(attr))]
}

/// A non-negative number attribute; `default` when unset.
fn number(config: &Value, attr: &str, default: Option<f64>) -> Result<f64, Diagnostics> {
    let v = config.get(attr);
    if v.is_null() {
        return default.ok_or_else(|| invalid(attr, format!("{attr} is required")));
    }
    match v.as_f64() {
        Some(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(invalid(
            attr,
            format!("{attr} must be a number of 0 or more, got {v:?}"),
        )),
    }
}

/// A whole non-negative number attribute (a count).
fn count(config: &Value, attr: &str) -> Result<u64, Diagnostics> {
    let n = number(config, attr, Some(0.0))?;
    if n.fract() != 0.0 || n > u64::MAX as f64 {
        return Err(invalid(
            attr,
            format!("{attr} must be a whole number, got {n}"),
        ));
    }
    Ok(n as u64)
}

fn workload(config: &Value) -> Result<Workload, Diagnostics> {
    let parse = |attr: &str| config.get(attr).as_str().unwrap_or_default().to_string();
    let engine: EngineType = parse("engine_type")
        .parse()
        .map_err(|m| invalid("engine_type", m))?;
    let mode: DeploymentMode = parse("deployment_mode")
        .parse()
        .map_err(|m| invalid("deployment_mode", m))?;
    let storage: StorageType = match config.get("storage_type").as_str() {
        None => mode.default_storage(),
        Some(s) => s.parse().map_err(|m| invalid("storage_type", m))?,
    };
    if config.get("average_message_size_bytes").is_null() {
        return Err(invalid(
            "average_message_size_bytes",
            "average_message_size_bytes is required".into(),
        ));
    }
    let size = count(config, "average_message_size_bytes")?;
    let retained_gb = number(config, "retained_storage_gb", Some(0.0))?;
    Ok(Workload {
        engine,
        mode,
        storage,
        messages_per_second: number(config, "messages_per_second", None)?,
        average_message_size_bytes: size,
        connections: count(config, "connections")?,
        queues: count(config, "queues")?,
        retained_storage_bytes: (retained_gb * GIB).ceil() as u64,
    })
}

pub fn read(config: Value) -> (Value, Diagnostics) {
    read_with(config, Throughput::embedded())
}

fn read_with(config: Value, table: &Throughput) -> (Value, Diagnostics) {
    let w = match workload(&config) {
        Ok(w) => w,
        Err(d) => return (Value::Null, d),
    };
    let r = match recommendation::recommend(&w, table) {
        Ok(r) => r,
        Err(e) => {
            return (
                Value::Null,
                vec![
                    Diagnostic::error("No instance type fits the workload", e.message)
                        .at(AttributePath::root(e.attribute)),
                ],
            )
        }
    };
    let id = format!(
        "{}/{}/{}/{}",
        w.engine, w.mode, w.storage, r.instance_type.name
    );
    let state = config
        .with("id", id)
        .with("storage_type", w.storage.as_str())
        .with("instance_type", r.instance_type.name)
        .with("reason", r.reason)
        .with(
            "sustained_messages_per_second",
            r.capacity_messages_per_second.floor(),
        )
        .with(
            "measured_on",
            format!("{}; {}", table.measured_where(), table.command),
        );
    (state, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, Value)]) -> Value {
        let mut v = Value::object(
            schema()
                .block
                .attributes
                .iter()
                .map(|a| (a.name.as_str(), Value::Null)),
        );
        for (k, x) in pairs {
            v.set_attr(*k, x.clone());
        }
        v
    }

    fn rabbit(msgs: f64) -> Value {
        config(&[
            ("engine_type", Value::string("RabbitMQ")),
            ("deployment_mode", Value::string("SINGLE_INSTANCE")),
            ("messages_per_second", Value::from(msgs)),
            ("average_message_size_bytes", Value::from(1024u64)),
        ])
    }

    #[test]
    fn a_light_rabbitmq_load_gets_the_smallest_type_with_a_reason() {
        let (state, d) = read(rabbit(1.0));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(state.get("instance_type").as_str(), Some("mq.t3.micro"));
        assert_eq!(state.get("storage_type").as_str(), Some("ebs"));
        let reason = state.get("reason").as_str().unwrap_or_default();
        assert!(reason.contains("smallest type offered"), "{reason}");
        assert!(state
            .get("measured_on")
            .as_str()
            .is_some_and(|m| m.contains("bench_instance_types.py")));
    }

    #[test]
    fn bad_input_and_too_much_name_the_attribute() {
        let (_, d) = read(rabbit(1e12));
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].attribute,
            Some(AttributePath::root("messages_per_second"))
        );
        assert!(
            d[0].detail.starts_with("no instance type fits"),
            "{}",
            d[0].detail
        );

        let mut c = rabbit(1.0);
        c.set_attr("queues", Value::from(10_000_000u64));
        let (_, d) = read(c);
        assert_eq!(d[0].attribute, Some(AttributePath::root("queues")));

        let mut c = rabbit(1.0);
        c.set_attr("connections", Value::from(1.5));
        let (_, d) = read(c);
        assert_eq!(d[0].attribute, Some(AttributePath::root("connections")));

        let mut c = rabbit(1.0);
        c.set_attr("engine_type", Value::string("Kafka"));
        let (_, d) = read(c);
        assert_eq!(d[0].attribute, Some(AttributePath::root("engine_type")));
        assert!(d[0].detail.contains("\"Kafka\""));

        let mut c = rabbit(1.0);
        c.set_attr("storage_type", Value::string("efs"));
        let (_, d) = read(c);
        assert_eq!(d[0].attribute, Some(AttributePath::root("storage_type")));

        let mut c = rabbit(-5.0);
        c.set_attr("messages_per_second", Value::from(-5.0));
        let (_, d) = read(c);
        assert_eq!(
            d[0].attribute,
            Some(AttributePath::root("messages_per_second"))
        );
    }

    #[test]
    fn activemq_single_instance_defaults_to_ebs_and_mq_m5() {
        let c = config(&[
            ("engine_type", Value::string("ActiveMQ")),
            ("deployment_mode", Value::string("SINGLE_INSTANCE")),
            ("messages_per_second", Value::from(1.0)),
            ("average_message_size_bytes", Value::from(1024u64)),
        ]);
        let (state, d) = read(c);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(state.get("instance_type").as_str(), Some("mq.m5.large"));
    }
}
