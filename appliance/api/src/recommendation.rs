//! Which instance type a workload needs: the smallest type of the catalogue that Amazon MQ
//! offers for the engine, mode and storage, whose quotas (connections, queues, storage) hold
//! the workload, and whose *measured* throughput on FerryMQ carries its messages per second.
//!
//! The throughput figures are not estimates from a datasheet: `acceptance/bench_instance_types.py`
//! measures them by running each engine under each type's limits (cgroup CPU and memory, heap
//! or memory watermark) and writes `throughput.json`, which is embedded here at build time. A
//! type the benchmark could not run (a host smaller than the type) is credited with no more
//! than the best figure of a smaller type it contains, and the reason says so.

use crate::catalogue::{self, gib, DeploymentMode, EngineType, InstanceType, StorageType};
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// The benchmark's table, as committed (see the module docs for how to re-measure it).
pub const THROUGHPUT_JSON: &str = include_str!("throughput.json");

const GIB: u64 = 1 << 30;

/// The benchmark's output file.
#[derive(Clone, Debug, Deserialize)]
pub struct Throughput {
    /// The command that measured it.
    pub command: String,
    /// When (UTC, RFC 3339).
    pub date: String,
    pub machine: Machine,
    pub figures: Vec<Figure>,
    #[serde(default)]
    pub not_measured: Vec<NotMeasured>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Machine {
    pub cpus: u32,
    pub memory_bytes: u64,
    #[serde(default)]
    pub cpu_model: String,
}

/// One measured run: an engine under one type's limits at one message size.
#[derive(Clone, Debug, Deserialize)]
pub struct Figure {
    pub engine_type: String,
    pub instance_type: String,
    pub storage_type: String,
    pub message_size_bytes: u64,
    /// Sustained persistent publish+consume rate: min(published/s, consumed/s).
    pub messages_per_second: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NotMeasured {
    pub engine_type: String,
    pub instance_type: String,
    pub reason: String,
}

/// What a type's measured figures say it sustains for one message size.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    pub messages_per_second: f64,
    /// The type the figures were measured on: the type itself, or a smaller one it contains.
    pub measured_on: &'static str,
}

impl Throughput {
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("throughput table: {e}"))
    }

    /// The embedded table. The file is part of the source tree and a unit test parses it, so
    /// failing here means a broken build, not bad input.
    pub fn embedded() -> &'static Throughput {
        static TABLE: OnceLock<Throughput> = OnceLock::new();
        TABLE.get_or_init(|| {
            Throughput::parse(THROUGHPUT_JSON).expect("the embedded throughput.json parses")
        })
    }

    /// Messages/s of `size` bytes that `engine` sustains on type `t` as measured, or `None`
    /// without figures for that type.
    ///
    /// Between measured sizes the seconds per message are interpolated linearly in the size
    /// (a fixed cost per message plus a cost per byte). Below the smallest measured size the
    /// smallest size's rate is kept (no more than was seen); above the largest, the largest
    /// size's *bytes*/s is kept (rate falls in proportion to the size), which is conservative.
    pub fn measured(&self, engine: EngineType, t: &str, size: u64) -> Option<f64> {
        let mut points: Vec<(f64, f64)> = self
            .figures
            .iter()
            .filter(|f| {
                f.engine_type.eq_ignore_ascii_case(engine.as_str())
                    && f.instance_type == t
                    && f.messages_per_second > 0.0
            })
            .map(|f| (f.message_size_bytes as f64, 1.0 / f.messages_per_second))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let size = size as f64;
        let (first, last) = (*points.first()?, *points.last()?);
        let cost = if size <= first.0 {
            first.1
        } else if size >= last.0 {
            last.1 * size / last.0
        } else {
            let i = points.iter().position(|p| p.0 >= size)?;
            let (a, b) = (points[i - 1], points[i]);
            a.1 + (b.1 - a.1) * (size - a.0) / (b.0 - a.0)
        };
        Some(1.0 / cost)
    }

    /// What type `t` sustains: the best of its own figures and those of the measured types it
    /// contains (no more vCPUs, no more memory), since a bigger machine does at least as well;
    /// this also keeps a noisy run of a bigger type from ranking it below a smaller one.
    pub fn capacity(&self, engine: EngineType, t: &InstanceType, size: u64) -> Option<Capacity> {
        catalogue::INSTANCE_TYPES
            .iter()
            .filter(|s| s.vcpus <= t.vcpus && s.memory_mib <= t.memory_mib)
            .filter_map(|s| {
                self.measured(engine, s.name, size).map(|r| Capacity {
                    messages_per_second: r,
                    measured_on: s.name,
                })
            })
            // Ties go to the type itself (listed last among those it contains).
            .max_by(|a, b| {
                a.messages_per_second
                    .total_cmp(&b.messages_per_second)
                    .then((a.measured_on == t.name).cmp(&(b.measured_on == t.name)))
            })
    }

    /// The storage type `engine` was measured on for type `t` (the benchmark uses one per
    /// engine).
    pub fn storage_of(&self, engine: EngineType, t: &str) -> Option<&str> {
        self.figures
            .iter()
            .find(|f| f.engine_type.eq_ignore_ascii_case(engine.as_str()) && f.instance_type == t)
            .map(|f| f.storage_type.as_str())
    }

    /// "2 CPUs (model), 23.5 GiB, 2026-11-22T03:40:00Z".
    pub fn measured_where(&self) -> String {
        let m = &self.machine;
        let model = if m.cpu_model.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.cpu_model)
        };
        format!(
            "{} CPUs{model}, {:.1} GiB, {}",
            m.cpus,
            m.memory_bytes as f64 / GIB as f64,
            self.date
        )
    }
}

/// A workload as the data source takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub engine: EngineType,
    pub mode: DeploymentMode,
    pub storage: StorageType,
    pub messages_per_second: f64,
    pub average_message_size_bytes: u64,
    pub connections: u64,
    pub queues: u64,
    pub retained_storage_bytes: u64,
}

/// The smallest type that fits, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub instance_type: &'static InstanceType,
    /// Which limit decided it, in words.
    pub reason: String,
    /// Messages/s the type sustains at the workload's message size (as measured).
    pub capacity_messages_per_second: f64,
}

/// Why a workload fits no type: the attribute of the workload that rules out even the largest
/// type offered, and how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NoFit {
    pub attribute: &'static str,
    pub message: String,
}

/// Why one type does not fit.
#[derive(Clone, Debug)]
struct Shortfall {
    attribute: &'static str,
    message: String,
}

fn shortfall(attribute: &'static str, message: String) -> Shortfall {
    Shortfall { attribute, message }
}

/// How much of the type the workload uses, for the reason string.
struct Fit {
    capacity: Capacity,
    summary: String,
}

/// The smallest type (catalogue order: smallest first) that fits the workload.
pub fn recommend(w: &Workload, table: &Throughput) -> Result<Recommendation, NoFit> {
    check_workload(w)?;
    let mut refused: Vec<(&'static InstanceType, Shortfall)> = vec![];
    let mut last_offered: Option<(&'static InstanceType, Shortfall)> = None;
    for t in catalogue::INSTANCE_TYPES {
        if let Err(why) = t.offers(w.engine, w.mode, w.storage) {
            let attribute = if !t.engines.contains(&w.engine) {
                "engine_type"
            } else if w.engine == EngineType::ActiveMq && w.storage == StorageType::Ebs {
                "storage_type"
            } else {
                "deployment_mode"
            };
            refused.push((t, shortfall(attribute, why)));
            continue;
        }
        match fits(w, t, table) {
            Ok(fit) => {
                let reason = match &last_offered {
                    None => format!(
                        "{} is the smallest type offered for {} {} on {} and it fits: {}",
                        t.name, w.engine, w.mode, w.storage, fit.summary
                    ),
                    Some((smaller, why)) => format!(
                        "{} is too small: {}; {} fits: {}",
                        smaller.name, why.message, t.name, fit.summary
                    ),
                };
                return Ok(Recommendation {
                    instance_type: t,
                    reason,
                    capacity_messages_per_second: fit.capacity.messages_per_second,
                });
            }
            Err(why) => last_offered = Some((t, why)),
        }
    }
    // Nothing fits: the largest type offered says what is too much; if none is offered, the
    // combination itself is what Amazon MQ does not have.
    let (t, why) = last_offered
        .or_else(|| refused.pop())
        .ok_or_else(|| NoFit {
            attribute: "engine_type",
            message: "the catalogue has no instance types".into(),
        })?;
    Err(NoFit {
        attribute: why.attribute,
        message: format!("no instance type fits; even {}: {}", t.name, why.message),
    })
}

fn check_workload(w: &Workload) -> Result<(), NoFit> {
    if !w.mode.available() {
        return Err(NoFit {
            attribute: "deployment_mode",
            message: format!("deployment_mode {} is not offered by this release", w.mode),
        });
    }
    if let Some(only) = w.mode.only_engine() {
        if only != w.engine {
            return Err(NoFit {
                attribute: "deployment_mode",
                message: format!(
                    "deployment_mode {} is for {only} brokers, not {}",
                    w.mode, w.engine
                ),
            });
        }
    }
    crate::validate::storage_type(w.engine, w.mode, w.storage.as_str()).map_err(|message| {
        NoFit {
            attribute: "storage_type",
            message,
        }
    })?;
    if !(w.messages_per_second.is_finite() && w.messages_per_second >= 0.0) {
        return Err(NoFit {
            attribute: "messages_per_second",
            message: format!(
                "messages_per_second must be a number of 0 or more, got {}",
                w.messages_per_second
            ),
        });
    }
    if w.average_message_size_bytes == 0 {
        return Err(NoFit {
            attribute: "average_message_size_bytes",
            message: "average_message_size_bytes must be at least 1".into(),
        });
    }
    Ok(())
}

/// Whether `t` holds the workload: quotas first (documented, exact), then measured throughput.
fn fits(w: &Workload, t: &'static InstanceType, table: &Throughput) -> Result<Fit, Shortfall> {
    let q = &t.quotas;
    let (connections, connections_what) = match w.engine {
        EngineType::RabbitMq => (
            u64::from(q.rabbitmq_connections_per_node),
            "connections per node",
        ),
        EngineType::ActiveMq => (
            u64::from(q.activemq_connections_per_protocol),
            "connections per protocol",
        ),
    };
    if w.connections > connections {
        return Err(shortfall(
            "connections",
            format!(
                "{} connections exceed its quota of {} {connections_what}",
                thousands(w.connections),
                thousands(connections)
            ),
        ));
    }
    // Amazon MQ documents a queue quota for RabbitMQ only; ActiveMQ's destinations are bounded
    // by memory and storage, which the other checks cover.
    let queues = match w.engine {
        EngineType::RabbitMq => Some(u64::from(q.rabbitmq_queues)),
        EngineType::ActiveMq => None,
    };
    if let Some(max) = queues.filter(|max| w.queues > *max) {
        return Err(shortfall(
            "queues",
            format!(
                "{} queues exceed its quota of {}",
                thousands(w.queues),
                thousands(max)
            ),
        ));
    }
    let storage = t.storage_quota_bytes();
    if w.retained_storage_bytes > storage {
        return Err(shortfall(
            "retained_storage_gb",
            format!(
                "{} of retained messages exceed its storage of {}",
                gib(w.retained_storage_bytes),
                gib(storage)
            ),
        ));
    }
    let size = w.average_message_size_bytes;
    let Some(capacity) = table.capacity(w.engine, t, size) else {
        return Err(shortfall(
            "messages_per_second",
            format!(
                "no throughput was measured for {} on it or a smaller type (benchmark host: {})",
                w.engine,
                table.measured_where()
            ),
        ));
    };
    let on_storage = table
        .storage_of(w.engine, capacity.measured_on)
        .filter(|s| *s != w.storage.as_str())
        .map(|s| format!(" on storage_type \"{s}\""))
        .unwrap_or_default();
    let measured = if capacity.measured_on == t.name {
        format!("measured{on_storage}")
    } else if table.measured(w.engine, t.name, size).is_some() {
        format!(
            "measured on {}{on_storage}, which it contains: a bigger type does at least as well",
            capacity.measured_on
        )
    } else {
        format!(
            "at least what {}{on_storage} was measured at; {} itself was not measured (benchmark host: {})",
            capacity.measured_on,
            t.name,
            table.measured_where()
        )
    };
    if w.messages_per_second > capacity.messages_per_second {
        return Err(shortfall(
            "messages_per_second",
            format!(
                "{} msg/s of {size} bytes exceed the {} msg/s it sustains ({measured})",
                thousands(w.messages_per_second.ceil() as u64),
                thousands(capacity.messages_per_second.floor() as u64)
            ),
        ));
    }
    let mut summary = format!(
        "{} of {} msg/s of {size} bytes ({measured}), {} of {} {connections_what}",
        thousands(w.messages_per_second.ceil() as u64),
        thousands(capacity.messages_per_second.floor() as u64),
        thousands(w.connections),
        thousands(connections),
    );
    if let Some(max) = queues {
        let _ = write!(
            summary,
            ", {} of {} queues",
            thousands(w.queues),
            thousands(max)
        );
    }
    let _ = write!(
        summary,
        ", {} of {} storage",
        gib(w.retained_storage_bytes),
        gib(storage)
    );
    if w.mode != DeploymentMode::SingleInstance {
        summary.push_str(" (throughput measured on a single instance)");
    }
    Ok(Fit { capacity, summary })
}

/// `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small table of test figures (not the benchmark's): RabbitMQ measured on the two types
    /// a 2-CPU host runs, ActiveMQ on mq.m5.large only.
    const TABLE: &str = r#"{
        "command": "test", "date": "2026-11-22T00:00:00Z",
        "machine": {"cpus": 2, "memory_bytes": 25000000000, "cpu_model": "Test CPU"},
        "figures": [
            {"engine_type": "RabbitMQ", "instance_type": "mq.t3.micro", "storage_type": "ebs",
             "message_size_bytes": 1000, "messages_per_second": 2000},
            {"engine_type": "RabbitMQ", "instance_type": "mq.t3.micro", "storage_type": "ebs",
             "message_size_bytes": 11000, "messages_per_second": 1000},
            {"engine_type": "RabbitMQ", "instance_type": "mq.m5.large", "storage_type": "ebs",
             "message_size_bytes": 1000, "messages_per_second": 4000},
            {"engine_type": "RabbitMQ", "instance_type": "mq.m5.large", "storage_type": "ebs",
             "message_size_bytes": 11000, "messages_per_second": 2000},
            {"engine_type": "ActiveMQ", "instance_type": "mq.m5.large", "storage_type": "efs",
             "message_size_bytes": 1000, "messages_per_second": 1500}
        ],
        "not_measured": [{"engine_type": "RabbitMQ", "instance_type": "mq.m5.xlarge",
                          "reason": "this host has 2 CPUs"}]
    }"#;

    fn table() -> Throughput {
        Throughput::parse(TABLE).expect("test table")
    }

    fn rabbit(msgs: f64, size: u64) -> Workload {
        Workload {
            engine: EngineType::RabbitMq,
            mode: DeploymentMode::SingleInstance,
            storage: StorageType::Ebs,
            messages_per_second: msgs,
            average_message_size_bytes: size,
            connections: 10,
            queues: 5,
            retained_storage_bytes: GIB,
        }
    }

    #[test]
    fn the_embedded_table_parses_and_covers_both_engines() {
        let t = Throughput::embedded();
        assert!(
            t.command.contains("bench_instance_types.py"),
            "{}",
            t.command
        );
        for e in EngineType::ALL {
            assert!(
                t.figures
                    .iter()
                    .any(|f| f.engine_type == e.as_str() && f.messages_per_second > 0.0),
                "no figure for {e}"
            );
        }
        for f in &t.figures {
            assert!(
                catalogue::instance_type(&f.instance_type).is_some(),
                "{f:?}"
            );
        }
    }

    #[test]
    fn rates_interpolate_seconds_per_message_and_stay_conservative_outside() {
        let t = table();
        let r = |size| {
            t.measured(EngineType::RabbitMq, "mq.t3.micro", size)
                .expect("rate")
        };
        assert_eq!(r(1000), 2000.0);
        assert_eq!(r(11000), 1000.0);
        // Halfway in size: halfway in seconds per message (0.5 ms and 1 ms → 0.75 ms).
        assert!((r(6000) - 1333.3).abs() < 0.1, "{}", r(6000));
        // Smaller than measured: no faster than measured; larger: the same bytes/s.
        assert_eq!(r(10), 2000.0);
        assert_eq!(r(22000), 500.0);
        assert_eq!(t.measured(EngineType::ActiveMq, "mq.t3.micro", 1000), None);
    }

    #[test]
    fn a_bigger_type_is_never_credited_with_less_than_a_smaller_one() {
        let noisy = TABLE.replace(
            r#""instance_type": "mq.m5.large", "storage_type": "ebs",
             "message_size_bytes": 1000, "messages_per_second": 4000"#,
            r#""instance_type": "mq.m5.large", "storage_type": "ebs",
             "message_size_bytes": 1000, "messages_per_second": 1500"#,
        );
        assert_ne!(noisy, TABLE);
        let t = Throughput::parse(&noisy).expect("table");
        let large = catalogue::instance_type("mq.m5.large").expect("large");
        let c = t
            .capacity(EngineType::RabbitMq, large, 1000)
            .expect("capacity");
        assert_eq!(
            (c.messages_per_second, c.measured_on),
            (2000.0, "mq.t3.micro")
        );
        let mut w = rabbit(100.0, 1000);
        w.queues = 3_000;
        let r = recommend(&w, &t).expect("fits");
        assert!(
            r.reason.contains(
                "100 of 2,000 msg/s of 1000 bytes (measured on mq.t3.micro, which it contains"
            ),
            "{}",
            r.reason
        );
    }

    #[test]
    fn the_smallest_type_that_carries_the_load_wins_and_says_why() {
        let t = table();
        let small = recommend(&rabbit(500.0, 1000), &t).expect("fits");
        assert_eq!(small.instance_type.name, "mq.t3.micro");
        assert!(
            small.reason.starts_with("mq.t3.micro is the smallest type offered for RabbitMQ SINGLE_INSTANCE on ebs and it fits: 500 of 2,000 msg/s of 1000 bytes (measured), 10 of 500 connections per node, 5 of 2,500 queues, 1 GiB of 20 GiB storage"),
            "{}",
            small.reason
        );
        let busy = recommend(&rabbit(3000.0, 1000), &t).expect("fits");
        assert_eq!(busy.instance_type.name, "mq.m5.large");
        assert_eq!(busy.capacity_messages_per_second, 4000.0);
        assert!(
            busy.reason.starts_with(
                "mq.t3.micro is too small: 3,000 msg/s of 1000 bytes exceed the 2,000 msg/s it sustains (measured); mq.m5.large fits: 3,000 of 4,000 msg/s"
            ),
            "{}",
            busy.reason
        );
    }

    #[test]
    fn quotas_decide_before_throughput_and_unmeasured_types_get_the_smaller_figure() {
        let t = table();
        let mut w = rabbit(100.0, 1000);
        w.connections = 6_000;
        let r = recommend(&w, &t).expect("fits");
        assert_eq!(r.instance_type.name, "mq.m5.xlarge");
        assert!(
            r.reason.starts_with("mq.m5.large is too small: 6,000 connections exceed its quota of 5,000 connections per node; mq.m5.xlarge fits: 100 of 4,000 msg/s of 1000 bytes (at least what mq.m5.large was measured at; mq.m5.xlarge itself was not measured (benchmark host: 2 CPUs (Test CPU), 23.3 GiB, 2026-11-22T00:00:00Z))"),
            "{}",
            r.reason
        );
        let mut w = rabbit(100.0, 1000);
        w.queues = 3_000;
        assert_eq!(
            recommend(&w, &t).expect("fits").instance_type.name,
            "mq.m5.large"
        );
        let mut w = rabbit(100.0, 1000);
        w.retained_storage_bytes = 50 * GIB;
        let r = recommend(&w, &t).expect("fits");
        assert_eq!(r.instance_type.name, "mq.m5.large");
        assert!(
            r.reason
                .contains("50 GiB of retained messages exceed its storage of 20 GiB"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn nothing_fits_names_the_attribute() {
        let t = table();
        let err = recommend(&rabbit(9000.0, 1000), &t).unwrap_err();
        assert_eq!(err.attribute, "messages_per_second");
        assert!(
            err.message.starts_with("no instance type fits; even mq.m5.4xlarge: 9,000 msg/s of 1000 bytes exceed the 4,000 msg/s it sustains (at least what mq.m5.large was measured at"),
            "{}",
            err.message
        );
        let mut w = rabbit(1.0, 1000);
        w.queues = 1_000_000;
        assert_eq!(recommend(&w, &t).unwrap_err().attribute, "queues");
        let mut w = rabbit(1.0, 1000);
        w.retained_storage_bytes = 500 * GIB;
        assert_eq!(
            recommend(&w, &t).unwrap_err().attribute,
            "retained_storage_gb"
        );
        let mut w = rabbit(1.0, 1000);
        w.average_message_size_bytes = 0;
        assert_eq!(
            recommend(&w, &t).unwrap_err().attribute,
            "average_message_size_bytes"
        );
        let mut w = rabbit(1.0, 1000);
        w.messages_per_second = f64::NAN;
        assert_eq!(
            recommend(&w, &t).unwrap_err().attribute,
            "messages_per_second"
        );
    }

    #[test]
    fn engine_mode_and_storage_follow_amazon_mq() {
        let t = table();
        // ActiveMQ on EBS: mq.m5 only, so even a tiny load gets mq.m5.large.
        let amq = Workload {
            engine: EngineType::ActiveMq,
            storage: StorageType::Ebs,
            ..rabbit(100.0, 1000)
        };
        let r = recommend(&amq, &t).expect("fits");
        assert_eq!(r.instance_type.name, "mq.m5.large");
        assert!(
            r.reason.contains("(measured on storage_type \"efs\")"),
            "{}",
            r.reason
        );
        assert!(
            r.reason.starts_with(
                "mq.m5.large is the smallest type offered for ActiveMQ SINGLE_INSTANCE on ebs"
            ),
            "{}",
            r.reason
        );
        // On EFS mq.t3.micro is offered but has no figure (nor a smaller type).
        let efs = Workload {
            storage: StorageType::Efs,
            ..amq.clone()
        };
        let r = recommend(&efs, &t).expect("fits");
        assert_eq!(r.instance_type.name, "mq.m5.large");
        assert!(
            r.reason
                .starts_with("mq.t3.micro is too small: no throughput was measured for ActiveMQ"),
            "{}",
            r.reason
        );
        let standby = Workload {
            mode: DeploymentMode::ActiveStandbyMultiAz,
            ..efs
        };
        assert!(recommend(&standby, &t)
            .expect("fits")
            .reason
            .ends_with("(throughput measured on a single instance)"));
        let rabbit_standby = Workload {
            mode: DeploymentMode::ActiveStandbyMultiAz,
            ..rabbit(1.0, 1000)
        };
        assert_eq!(
            recommend(&rabbit_standby, &t).unwrap_err().attribute,
            "deployment_mode"
        );
        let rabbit_efs = Workload {
            storage: StorageType::Efs,
            ..rabbit(1.0, 1000)
        };
        assert_eq!(
            recommend(&rabbit_efs, &t).unwrap_err().attribute,
            "storage_type"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
