//! Amazon MQ's instance types, engines, versions and deployment modes, as FerryMQ offers them.
//!
//! One table serves the provider's plan-time checks, its data sources and the agent's own
//! checks, so that a type or version can only be added in one place.

use std::fmt;
use std::str::FromStr;

/// A broker engine. Amazon MQ spells them `ActiveMQ` and `RabbitMQ` and accepts any case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineType {
    ActiveMq,
    RabbitMq,
}

impl EngineType {
    pub const ALL: [EngineType; 2] = [EngineType::ActiveMq, EngineType::RabbitMq];

    pub fn as_str(self) -> &'static str {
        match self {
            EngineType::ActiveMq => "ActiveMQ",
            EngineType::RabbitMq => "RabbitMQ",
        }
    }
}

impl fmt::Display for EngineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EngineType::ALL
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("engine_type {s:?} is not one of ActiveMQ, RabbitMQ"))
    }
}

/// How many hosts a broker spans and how they share work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeploymentMode {
    SingleInstance,
    ActiveStandbyMultiAz,
    ClusterMultiAz,
}

impl DeploymentMode {
    pub const ALL: [DeploymentMode; 3] = [
        DeploymentMode::SingleInstance,
        DeploymentMode::ActiveStandbyMultiAz,
        DeploymentMode::ClusterMultiAz,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentMode::SingleInstance => "SINGLE_INSTANCE",
            DeploymentMode::ActiveStandbyMultiAz => "ACTIVE_STANDBY_MULTI_AZ",
            DeploymentMode::ClusterMultiAz => "CLUSTER_MULTI_AZ",
        }
    }

    /// The number of `instance` blocks (hosts) the mode takes, as in Amazon MQ.
    pub fn instance_count(self) -> usize {
        match self {
            DeploymentMode::SingleInstance => 1,
            DeploymentMode::ActiveStandbyMultiAz => 2,
            DeploymentMode::ClusterMultiAz => 3,
        }
    }

    /// The engine that offers this mode (Amazon MQ: active/standby is ActiveMQ's, clusters are
    /// RabbitMQ's), or `None` when both do.
    pub fn only_engine(self) -> Option<EngineType> {
        match self {
            DeploymentMode::SingleInstance => None,
            DeploymentMode::ActiveStandbyMultiAz => Some(EngineType::ActiveMq),
            DeploymentMode::ClusterMultiAz => Some(EngineType::RabbitMq),
        }
    }

    /// Whether this release of the agent can run the mode. Modes Amazon MQ has but FerryMQ does
    /// not run yet are refused at plan time rather than half-built on hosts.
    pub fn available(self) -> bool {
        matches!(
            self,
            DeploymentMode::SingleInstance
                | DeploymentMode::ActiveStandbyMultiAz
                | DeploymentMode::ClusterMultiAz
        )
    }

    /// Amazon MQ's storage for the mode when none is given: active/standby shares one store,
    /// everything else keeps its own block volume.
    pub fn default_storage(self) -> StorageType {
        match self {
            DeploymentMode::ActiveStandbyMultiAz => StorageType::Efs,
            _ => StorageType::Ebs,
        }
    }
}

impl fmt::Display for DeploymentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeploymentMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeploymentMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "deployment_mode {s:?} is not one of SINGLE_INSTANCE, ACTIVE_STANDBY_MULTI_AZ, CLUSTER_MULTI_AZ"
                )
            })
    }
}

/// Where a broker keeps its messages, in Amazon MQ's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageType {
    /// A block device per instance (EBS).
    Ebs,
    /// A filesystem shared by the instances (EFS): an NFS export or a shared directory.
    Efs,
}

impl StorageType {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::Ebs => "ebs",
            StorageType::Efs => "efs",
        }
    }
}

impl fmt::Display for StorageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ebs" => Ok(StorageType::Ebs),
            "efs" => Ok(StorageType::Efs),
            other => Err(format!(
                "storage_type {other:?} is not one of \"ebs\", \"efs\""
            )),
        }
    }
}

/// An Amazon MQ broker instance type and the machine it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub engines: &'static [EngineType],
    pub quotas: Quotas,
}

impl InstanceType {
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * 1024 * 1024
    }

    /// Amazon MQ's storage capacity per broker ("Quotas in Amazon MQ", data storage): 20 GB on
    /// `mq.t3.micro` (and `mq.t2.micro`), 200 GB on every other type; taken as GiB, as EBS
    /// sizes are.
    pub fn storage_quota_bytes(&self) -> u64 {
        let gib = if self.name.ends_with(".micro") {
            20
        } else {
            200
        };
        gib << 30
    }

    /// Amazon MQ's `mq.t3.*` types are burstable, for evaluation: no RabbitMQ cluster on them.
    pub fn burstable(&self) -> bool {
        self.name.starts_with("mq.t3.")
    }

    /// Whether Amazon MQ offers this type for the engine, mode and storage: RabbitMQ clusters
    /// need a non-burstable type, and ActiveMQ on EBS is offered on `mq.m5.*` only.
    pub fn offers(
        &self,
        engine: EngineType,
        mode: DeploymentMode,
        storage: StorageType,
    ) -> Result<(), String> {
        if !self.engines.contains(&engine) {
            return Err(format!("{} does not run {engine}", self.name));
        }
        if engine == EngineType::RabbitMq
            && mode == DeploymentMode::ClusterMultiAz
            && self.burstable()
        {
            return Err(format!(
                "{} is for evaluation and has no {mode} for RabbitMQ; use an mq.m5 type",
                self.name
            ));
        }
        if engine == EngineType::ActiveMq
            && storage == StorageType::Ebs
            && !self.name.starts_with("mq.m5.")
        {
            return Err(format!(
                "ActiveMQ on storage_type \"ebs\" is offered on mq.m5 types only, not {}",
                self.name
            ));
        }
        Ok(())
    }
}

/// Amazon MQ's per-type quotas, as its documentation gives them (single-instance brokers).
///
/// Sources (read 2026-11):
/// * RabbitMQ: "Amazon MQ for RabbitMQ sizing guidelines", table "Sizing guidelines for single
///   instance deployment" (connections, channels, queues, consumers per channel, shovels), which
///   are per node; the "Quotas in Amazon MQ" page refers to that table for connections per node.
///   Amazon MQ documents channels per *node*, not per connection: no per-connection figure is
///   published, so none is invented here (the sizing module derives RabbitMQ's `channel_max`).
/// * ActiveMQ: "Quotas in Amazon MQ" (for ActiveMQ): wire-level connections per protocol, 300 on
///   `mq.*.micro` and 2,000 on `mq.*.*large` types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub rabbitmq_connections_per_node: u32,
    pub rabbitmq_channels_per_node: u32,
    pub rabbitmq_queues: u32,
    pub rabbitmq_consumers_per_channel: u32,
    pub rabbitmq_shovels: u32,
    /// ActiveMQ `maximumConnections` of each transport connector.
    pub activemq_connections_per_protocol: u32,
}

const fn quotas(
    connections: u32,
    channels: u32,
    queues: u32,
    shovels: u32,
    activemq_connections: u32,
) -> Quotas {
    Quotas {
        rabbitmq_connections_per_node: connections,
        rabbitmq_channels_per_node: channels,
        rabbitmq_queues: queues,
        rabbitmq_consumers_per_channel: 1_000,
        rabbitmq_shovels: shovels,
        activemq_connections_per_protocol: activemq_connections,
    }
}

const BOTH: &[EngineType] = &[EngineType::ActiveMq, EngineType::RabbitMq];

/// Amazon MQ's current instance types with their EC2 sizes (vCPU, memory) and quotas
/// (`quotas(connections, channels, queues, shovels, ActiveMQ connections per protocol)`).
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "mq.t3.micro",
        vcpus: 2,
        memory_mib: 1024,
        engines: BOTH,
        quotas: quotas(500, 1_500, 2_500, 150, 300),
    },
    InstanceType {
        name: "mq.m5.large",
        vcpus: 2,
        memory_mib: 8 * 1024,
        engines: BOTH,
        quotas: quotas(5_000, 15_000, 30_000, 250, 2_000),
    },
    InstanceType {
        name: "mq.m5.xlarge",
        vcpus: 4,
        memory_mib: 16 * 1024,
        engines: BOTH,
        quotas: quotas(10_000, 30_000, 60_000, 500, 2_000),
    },
    InstanceType {
        name: "mq.m5.2xlarge",
        vcpus: 8,
        memory_mib: 32 * 1024,
        engines: BOTH,
        quotas: quotas(20_000, 60_000, 120_000, 1_000, 2_000),
    },
    InstanceType {
        name: "mq.m5.4xlarge",
        vcpus: 16,
        memory_mib: 64 * 1024,
        engines: BOTH,
        quotas: quotas(40_000, 120_000, 240_000, 2_000, 2_000),
    },
];

/// A size in GiB as the catalogue's messages write memory and storage: `16 GiB`, `23.4 GiB`.
pub fn gib(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    if bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    }
}

/// Looks up an instance type by its Amazon MQ name (exact, as Amazon MQ compares them).
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

/// An engine version a FerryMQ agent can install and run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineVersion {
    pub engine: EngineType,
    pub version: &'static str,
    /// Where the engine comes from; FerryMQ runs distribution-built engines.
    pub source: &'static str,
    /// Client protocols the engine serves in this version.
    pub protocols: &'static [&'static str],
    /// SHA-256 (hex) of the engine bundle `<engine>-<version>.tar.gz` that
    /// `appliance/bundles/build` makes from the pinned Debian packages: agents refuse any other.
    pub bundle_sha256: &'static str,
    /// The versions a broker on this one may be upgraded to in place (Amazon MQ's rules: no
    /// downgrade, RabbitMQ one minor at a time, ActiveMQ patch upgrades within its minor).
    pub upgrades_to: &'static [&'static str],
}

impl EngineVersion {
    /// The bundle's file name on a mirror or in a cache directory.
    pub fn bundle_file(&self) -> String {
        format!(
            "{}-{}.tar.gz",
            self.engine.as_str().to_ascii_lowercase(),
            self.version
        )
    }
}

/// The versions this release runs.
pub const ENGINE_VERSIONS: &[EngineVersion] = &[
    EngineVersion {
        engine: EngineType::ActiveMq,
        version: "5.17.2",
        // Debian's package carries no AMQP transport (activemq-amqp, proton-j) and no web
        // console: those are missing for this version, not hidden.
        source: "Debian 12 activemq 5.17.2",
        protocols: &["openwire", "stomp", "mqtt"],
        bundle_sha256: "c47754d2424161e147b9936b28adffdb8b6c5a0260fe43d95b007b457d03a0ad",
        upgrades_to: &["5.17.6"],
    },
    EngineVersion {
        engine: EngineType::ActiveMq,
        version: "5.17.6",
        // Debian 13's package, with its jars from Debian 13, run on the host's Java 17: the same
        // missing AMQP transport and console as 5.17.2.
        source: "Debian 13 activemq 5.17.6",
        protocols: &["openwire", "stomp", "mqtt"],
        bundle_sha256: "e0827a2878aa8ceb9c4d5e03cbda9aff13d6b164829252b7978c129701c1e6a8",
        upgrades_to: &[],
    },
    EngineVersion {
        engine: EngineType::RabbitMq,
        version: "3.10.8",
        source: "Debian 12 rabbitmq-server 3.10.8",
        protocols: &["amqp"],
        // Debian 12's server tree (sbin, escripts, plugins); the Erlang runtime is the host's.
        bundle_sha256: "20d9469c9ec8781f5b6a1b29656489532a127367558be949b165850033536b37",
        upgrades_to: &[],
    },
];

/// Versions of one engine, oldest first.
pub fn engine_versions(engine: EngineType) -> impl Iterator<Item = &'static EngineVersion> {
    ENGINE_VERSIONS.iter().filter(move |v| v.engine == engine)
}

/// Looks up an exact engine version.
pub fn engine_version(engine: EngineType, version: &str) -> Option<&'static EngineVersion> {
    engine_versions(engine).find(|v| v.version == version)
}

/// Whether a broker on `from` may move to `to` in place, and if not, why (in Amazon MQ's
/// terms). Versions outside the catalogue are judged by their numbers, so a skip or a downgrade
/// is named as such even for a version this release does not run.
pub fn upgrade_path(engine: EngineType, from: &str, to: &str) -> Result<(), String> {
    if from == to {
        return Ok(());
    }
    if engine_version(engine, from).is_some_and(|v| v.upgrades_to.contains(&to)) {
        return Ok(());
    }
    let (f, t) = (version_numbers(from), version_numbers(to));
    let why = match (f, t) {
        (Some(f), Some(t)) if t < f => "a downgrade; Amazon MQ upgrades only".to_string(),
        (Some(f), Some(t)) if engine == EngineType::RabbitMq && (t[0], t[1]) > (f[0], f[1] + 1) => {
            format!(
                "it skips RabbitMQ minor versions; upgrade one minor at a time ({}.{} first)",
                f[0],
                f[1] + 1
            )
        }
        (Some(f), Some(t)) if engine == EngineType::ActiveMq && (t[0], t[1]) != (f[0], f[1]) => {
            format!(
                "ActiveMQ upgrades in place only within {}.{} (patch versions)",
                f[0], f[1]
            )
        }
        _ => "not an upgrade path this release offers".to_string(),
    };
    let allowed = engine_version(engine, from)
        .map(|v| v.upgrades_to.join(", "))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "none".into());
    Err(format!(
        "engine_version cannot change from {from:?} to {to:?} on {engine}: {why}; allowed from {from}: {allowed}"
    ))
}

/// `major.minor.patch` as numbers, for ordering versions.
/// The newest version a broker on `from` may move to within its minor version (a patch
/// upgrade), or None when `from` is already the newest this release runs.
pub fn newest_patch(engine: EngineType, from: &str) -> Option<&'static str> {
    let minor = |v: &str| version_numbers(v).map(|n| (n[0], n[1]));
    engine_version(engine, from)?
        .upgrades_to
        .iter()
        .copied()
        .filter(|to| minor(to).is_some() && minor(to) == minor(from))
        .max_by_key(|to| version_numbers(to))
}

/// Whether `running` is `wanted` or a later patch of the same minor version: what a broker
/// with automatic minor upgrades may run while its spec still names `wanted`.
pub fn patch_of(engine: EngineType, wanted: &str, running: &str) -> bool {
    let (w, r) = (version_numbers(wanted), version_numbers(running));
    matches!((w, r), (Some(w), Some(r)) if (w[0], w[1]) == (r[0], r[1]) && r >= w)
        && upgrade_path(engine, wanted, running).is_ok()
}

fn version_numbers(v: &str) -> Option<[u32; 3]> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let n = [
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    ];
    parts.next().is_none().then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_type_parses_any_case_and_names_bad_values() {
        assert_eq!("rabbitmq".parse(), Ok(EngineType::RabbitMq));
        assert_eq!("ActiveMQ".parse(), Ok(EngineType::ActiveMq));
        let err = "Kafka".parse::<EngineType>().unwrap_err();
        assert!(err.contains("\"Kafka\""), "{err}");
    }

    #[test]
    fn modes_have_amazon_mq_instance_counts_and_engines() {
        assert_eq!(DeploymentMode::SingleInstance.instance_count(), 1);
        assert_eq!(DeploymentMode::ActiveStandbyMultiAz.instance_count(), 2);
        assert_eq!(DeploymentMode::ClusterMultiAz.instance_count(), 3);
        assert_eq!(
            DeploymentMode::ClusterMultiAz.only_engine(),
            Some(EngineType::RabbitMq)
        );
        assert!("single_instance".parse::<DeploymentMode>().is_err());
    }

    #[test]
    fn types_offer_what_amazon_mq_offers() {
        let micro = instance_type("mq.t3.micro").expect("micro");
        let large = instance_type("mq.m5.large").expect("large");
        use DeploymentMode::*;
        use EngineType::*;
        use StorageType::*;
        assert!(micro.offers(RabbitMq, SingleInstance, Ebs).is_ok());
        assert!(micro.offers(RabbitMq, ClusterMultiAz, Ebs).is_err());
        assert!(micro.offers(ActiveMq, ActiveStandbyMultiAz, Efs).is_ok());
        let e = micro.offers(ActiveMq, SingleInstance, Ebs).unwrap_err();
        assert!(e.contains("mq.m5") && e.contains("mq.t3.micro"), "{e}");
        assert!(large.offers(ActiveMq, SingleInstance, Ebs).is_ok());
        assert!(large.offers(RabbitMq, ClusterMultiAz, Ebs).is_ok());
    }

    #[test]
    fn catalogue_names_are_unique_and_sizes_grow() {
        for (i, a) in INSTANCE_TYPES.iter().enumerate() {
            for b in &INSTANCE_TYPES[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
        let m5: Vec<_> = INSTANCE_TYPES
            .iter()
            .filter(|t| t.name.starts_with("mq.m5."))
            .collect();
        assert!(m5.windows(2).all(|w| w[0].vcpus < w[1].vcpus));
        assert_eq!(instance_type("mq.m5.large").map(|t| t.vcpus), Some(2));
        assert!(instance_type("mq.x9.huge").is_none());
    }

    #[test]
    fn quotas_are_amazon_mqs_and_grow_with_the_type() {
        let q = |n: &str| instance_type(n).expect(n).quotas;
        let micro = q("mq.t3.micro");
        assert_eq!(
            (
                micro.rabbitmq_connections_per_node,
                micro.rabbitmq_channels_per_node,
                micro.rabbitmq_queues,
                micro.rabbitmq_shovels,
                micro.activemq_connections_per_protocol
            ),
            (500, 1_500, 2_500, 150, 300)
        );
        let large = q("mq.m5.large");
        assert_eq!(large.rabbitmq_connections_per_node, 5_000);
        assert_eq!(large.activemq_connections_per_protocol, 2_000);
        assert_eq!(q("mq.m5.4xlarge").rabbitmq_queues, 240_000);
        for w in INSTANCE_TYPES.windows(2) {
            let (a, b) = (w[0].quotas, w[1].quotas);
            assert!(a.rabbitmq_connections_per_node < b.rabbitmq_connections_per_node);
            assert!(a.rabbitmq_channels_per_node < b.rabbitmq_channels_per_node);
            assert!(a.rabbitmq_queues < b.rabbitmq_queues);
            assert!(a.rabbitmq_shovels < b.rabbitmq_shovels);
            assert!(a.activemq_connections_per_protocol <= b.activemq_connections_per_protocol);
        }
        for t in INSTANCE_TYPES {
            let micro = t.name.ends_with(".micro");
            assert_eq!(
                t.quotas.activemq_connections_per_protocol,
                if micro { 300 } else { 2_000 },
                "{}",
                t.name
            );
            assert_eq!(t.memory_bytes(), t.memory_mib << 20);
            assert_eq!(
                t.storage_quota_bytes(),
                if micro { 20 << 30 } else { 200 << 30 }
            );
        }
    }

    #[test]
    fn rabbitmq_3_10_8_and_activemq_5_17_2_are_offered() {
        assert!(engine_version(EngineType::RabbitMq, "3.10.8").is_some());
        let amq = engine_version(EngineType::ActiveMq, "5.17.2").expect("activemq");
        assert!(
            !amq.protocols.contains(&"amqp"),
            "Debian's 5.17.2 has no AMQP transport"
        );
        assert!(engine_version(EngineType::RabbitMq, "9.9.9").is_none());
    }

    #[test]
    fn automatic_minor_upgrades_take_the_newest_patch_only() {
        use EngineType::*;
        assert_eq!(newest_patch(ActiveMq, "5.17.2"), Some("5.17.6"));
        assert_eq!(newest_patch(ActiveMq, "5.17.6"), None);
        assert_eq!(newest_patch(RabbitMq, "3.10.8"), None);
        assert!(patch_of(ActiveMq, "5.17.2", "5.17.6"));
        assert!(patch_of(ActiveMq, "5.17.2", "5.17.2"));
        assert!(!patch_of(ActiveMq, "5.17.6", "5.17.2"));
    }

    #[test]
    fn upgrade_paths_follow_amazon_mq() {
        use EngineType::*;
        assert!(upgrade_path(ActiveMq, "5.17.2", "5.17.6").is_ok());
        assert!(upgrade_path(ActiveMq, "5.17.6", "5.17.6").is_ok());
        let down = upgrade_path(ActiveMq, "5.17.6", "5.17.2").unwrap_err();
        assert!(
            down.contains("downgrade") && down.contains("\"5.17.2\""),
            "{down}"
        );
        let skip = upgrade_path(RabbitMq, "3.10.8", "3.12.13").unwrap_err();
        assert!(
            skip.contains("skips") && skip.contains("3.11 first"),
            "{skip}"
        );
        let skip = upgrade_path(RabbitMq, "3.10.8", "4.0.5").unwrap_err();
        assert!(skip.contains("skips"), "{skip}");
        let minor = upgrade_path(ActiveMq, "5.17.6", "5.18.3").unwrap_err();
        assert!(minor.contains("within 5.17"), "{minor}");
    }

    #[test]
    fn every_upgrade_target_is_a_later_catalogue_version_with_a_bundle() {
        for v in ENGINE_VERSIONS {
            for to in v.upgrades_to {
                let target = engine_version(v.engine, to).expect("target in catalogue");
                assert!(version_numbers(to) > version_numbers(v.version), "{to}");
                assert_eq!(target.bundle_sha256.len(), 64, "{to}");
            }
        }
    }
}
