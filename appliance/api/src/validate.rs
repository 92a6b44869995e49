//! Field validators that refuse what Amazon MQ refuses.
//!
//! Each returns a message that names the attribute and the offending value (never a password),
//! so the provider can attach it to the attribute path at plan time and the agent can refuse
//! the same spec with the same words if something else sends it.

use crate::agent::BrokerSpec;
use crate::catalogue::{self, DeploymentMode, EngineType, StorageType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// A refused field: where (`user[1].password`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Configuration revisions count from 1, as in Amazon MQ.
pub fn configuration_revision(revision: u32) -> Result<(), String> {
    if revision == 0 {
        return Err("configuration revision must be 1 or more".into());
    }
    Ok(())
}

/// Amazon MQ refuses audit logs for RabbitMQ (it has no audit log to publish).
pub fn audit_log(engine: EngineType, audit: bool) -> Result<(), String> {
    if audit && engine == EngineType::RabbitMq {
        return Err("audit logs are not supported for RabbitMQ (ActiveMQ only)".into());
    }
    Ok(())
}

/// Broker ids are `b-` and letters, digits and dashes: they name directories on hosts.
pub fn broker_id(id: &str) -> Result<(), String> {
    let rest = id.strip_prefix("b-").filter(|r| !r.is_empty());
    match rest {
        Some(r) if r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && id.len() <= 64 => {
            Ok(())
        }
        _ => Err(format!(
            "broker id {id:?} must be \"b-\" followed by letters, digits and dashes"
        )),
    }
}

/// Amazon MQ broker names: 1–50 characters of letters, digits, `-` and `_`.
pub fn broker_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 50 {
        return Err(format!(
            "broker_name {name:?} must be 1 to 50 characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "broker_name {name:?} contains {c:?}; only letters, digits, '-' and '_' are allowed"
        ));
    }
    Ok(())
}

pub fn engine_type(value: &str) -> Result<EngineType, String> {
    value.parse()
}

pub fn deployment_mode(value: &str) -> Result<DeploymentMode, String> {
    value.parse()
}

pub fn instance_type(value: &str) -> Result<&'static catalogue::InstanceType, String> {
    catalogue::instance_type(value).ok_or_else(|| {
        let known: Vec<_> = catalogue::INSTANCE_TYPES.iter().map(|t| t.name).collect();
        format!(
            "host_instance_type {value:?} is not a known instance type; known types: {}",
            known.join(", ")
        )
    })
}

pub fn engine_version(engine: EngineType, value: &str) -> Result<(), String> {
    if catalogue::engine_version(engine, value).is_some() {
        return Ok(());
    }
    let known: Vec<_> = catalogue::engine_versions(engine)
        .map(|v| v.version)
        .collect();
    if known.is_empty() {
        Err(format!(
            "engine_version {value:?}: this FerryMQ release runs no {engine} version yet"
        ))
    } else {
        Err(format!(
            "engine_version {value:?} is not available for {engine}; available: {}",
            known.join(", ")
        ))
    }
}

/// Whether a broker on `from` may be changed to `to` in place (needs the prior state: the
/// provider checks it at plan, the agent again when a spec arrives).
pub fn engine_version_change(engine: EngineType, from: &str, to: &str) -> Result<(), String> {
    catalogue::upgrade_path(engine, from, to)
}

/// Whether the engine offers the mode and this release runs it.
pub fn mode_for_engine(engine: EngineType, mode: DeploymentMode) -> Result<(), String> {
    if let Some(only) = mode.only_engine() {
        if only != engine {
            return Err(format!(
                "deployment_mode {mode} is not offered for {engine}; it is a {only} mode"
            ));
        }
    }
    if !mode.available() {
        return Err(format!(
            "deployment_mode {mode} is not available in this FerryMQ release yet; use SINGLE_INSTANCE"
        ));
    }
    Ok(())
}

pub fn instance_count(mode: DeploymentMode, count: usize) -> Result<(), String> {
    let want = mode.instance_count();
    if count == want {
        return Ok(());
    }
    let blocks = if want == 1 { "block" } else { "blocks" };
    Err(format!(
        "deployment_mode {mode} takes exactly {want} instance {blocks}, got {count}"
    ))
}

/// Amazon MQ's storage rules: RabbitMQ keeps block volumes; active/standby needs the shared
/// store its lock lives on.
pub fn storage_type(
    engine: EngineType,
    mode: DeploymentMode,
    storage: &str,
) -> Result<StorageType, String> {
    let storage: StorageType = storage.parse()?;
    match (engine, mode, storage) {
        (EngineType::RabbitMq, _, StorageType::Efs) => Err(format!(
            "storage_type \"{storage}\" is not offered for RabbitMQ; RabbitMQ brokers use \"ebs\""
        )),
        (_, DeploymentMode::ActiveStandbyMultiAz, StorageType::Ebs) => Err(format!(
            "storage_type \"{storage}\" cannot serve {mode}: both instances must share one store; use \"efs\""
        )),
        _ => Ok(storage),
    }
}

/// What an instance's `volume` must name: a block device for EBS; for EFS an NFS export
/// (`server:/export`) or an absolute directory shared by the hosts.
pub fn volume(storage: StorageType, volume: &str) -> Result<(), String> {
    match storage {
        StorageType::Ebs if volume.starts_with("/dev/") => Ok(()),
        StorageType::Ebs => Err(format!(
            "volume {volume:?} must be a block device under /dev for storage_type \"ebs\""
        )),
        StorageType::Efs if volume.starts_with("/dev/") => Err(format!(
            "volume {volume:?} is a device; storage_type \"efs\" takes an NFS export (server:/export) or a shared directory"
        )),
        StorageType::Efs
            if volume.starts_with('/')
                || volume
                    .split_once(":/")
                    .is_some_and(|(server, _)| !server.is_empty() && !server.contains('/')) =>
        {
            Ok(())
        }
        StorageType::Efs => Err(format!(
            "volume {volume:?} must be an NFS export (server:/export) or an absolute directory for storage_type \"efs\""
        )),
    }
}

/// Encryption at rest covers the broker's own block volume; a shared filesystem is encrypted
/// (or not) by its server, as EFS is.
pub fn encryption_key_file(storage: &str, key_file: &str) -> Result<(), String> {
    if storage == StorageType::Efs.as_str() {
        return Err(
            "encryption_options applies to storage_type \"ebs\" volumes; a shared (efs) filesystem is encrypted by its server".into(),
        );
    }
    if !key_file.starts_with('/') {
        return Err(format!(
            "key_file {key_file:?} must be an absolute path of a key file on each host"
        ));
    }
    Ok(())
}

/// Usernames as RabbitMQ and ActiveMQ both accept them, and as Amazon MQ restricts them.
pub fn username(name: &str) -> Result<(), String> {
    if name.len() < 2 || name.len() > 100 {
        return Err(format!(
            "username {name:?} must be 2 to 100 characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Err(format!(
            "username {name:?} contains {c:?}; only letters, digits, '-', '_', '.' and '~' are allowed"
        ));
    }
    if name.eq_ignore_ascii_case("guest") {
        return Err(format!(
            "username {name:?} is the engine's default user, which FerryMQ removes"
        ));
    }
    if name == RESERVED_USER {
        return Err(format!(
            "username {name:?} is reserved for the FerryMQ agent's own engine user"
        ));
    }
    Ok(())
}

/// Group names FerryMQ makes itself on ActiveMQ (see the agent's authorization map).
pub const RESERVED_GROUPS: &[&str] = &["users", "console", "unrestricted"];

/// A user's group: an ActiveMQ group and destination prefix (queues and topics `G` and
/// `G.…`), a RabbitMQ tag. Letters, digits, `-` and `_`, 1 to 100 characters; `admins` gives
/// full access on ActiveMQ; `users`, `console` and `unrestricted` are FerryMQ's own.
pub fn group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!("group {name:?} must be 1 to 100 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "group {name:?} contains {c:?}; only letters, digits, '-' and '_' are allowed"
        ));
    }
    if RESERVED_GROUPS.contains(&name) {
        return Err(format!(
            "group {name:?} is one FerryMQ makes itself ({}); choose another name",
            RESERVED_GROUPS.join(", ")
        ));
    }
    Ok(())
}

/// An extra name of the broker's certificate: an IP address or a DNS name.
pub fn certificate_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "certificate name {name:?} is neither an IP address nor a DNS name"
        ))
    }
}
/// The engine user each agent manages its broker with (RabbitMQ) and reads statistics as
/// (ActiveMQ).
pub const RESERVED_USER: &str = "ferrymq-agent";

/// Amazon MQ's password rule: 12–250 characters, at least 4 different ones, no `,` `:` `=`.
/// The message never repeats the password.
pub fn password(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < 12 {
        return Err(format!(
            "password must be at least 12 characters long (got {len})"
        ));
    }
    if len > 250 {
        return Err(format!(
            "password must be at most 250 characters long (got {len})"
        ));
    }
    if let Some(c) = password.chars().find(|c| matches!(c, ',' | ':' | '=')) {
        return Err(format!("password must not contain {c:?} (nor ',' ':' '=')"));
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err("password must contain at least 4 different characters".to_string());
    }
    Ok(())
}

/// The instances of a broker on shared storage must all name the same filesystem.
pub fn same_shared_volume<'a>(volumes: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut volumes = volumes.into_iter();
    let Some(first) = volumes.next() else {
        return Ok(());
    };
    match volumes.find(|v| *v != first) {
        Some(other) => Err(format!(
            "instances name different shared volumes ({first:?} and {other:?}); with storage_type \"efs\" every instance uses the same one"
        )),
        None => Ok(()),
    }
}

/// The address of an instance or load-balancer host: `IP` or `IP:port` (the agent's port).
pub fn host_address(host: &str) -> Result<IpAddr, String> {
    host.parse::<IpAddr>()
        .or_else(|_| host.parse::<SocketAddr>().map(|s| s.ip()))
        .map_err(|_| format!("host {host:?} is not an IP address (or IP:port)"))
}

/// The load balancer's virtual IP: an address clients can reach that no instance owns
/// (keepalived adds it to whichever load-balancer host is master).
pub fn virtual_ip<'a>(
    value: &str,
    instance_hosts: impl IntoIterator<Item = &'a str>,
) -> Result<IpAddr, String> {
    let ip: IpAddr = value.parse().map_err(|_| {
        format!(
            "virtual_ip {value:?} is not an IP address (e.g. 10.0.0.100, without a port or prefix)"
        )
    })?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(format!(
            "virtual_ip {value:?} cannot be a virtual IP; use a free unicast address of the hosts' network"
        ));
    }
    if instance_hosts
        .into_iter()
        .any(|h| host_address(h).ok() == Some(ip))
    {
        return Err(format!(
            "virtual_ip {value:?} is the own address of an instance or load-balancer host; use a free address of the hosts' network"
        ));
    }
    Ok(ip)
}

/// The hosts given to run the load balancer on: at least one (leaving `hosts` out runs it on
/// the broker's hosts), each an address, none twice. A host may be one of the broker's
/// instance hosts or a dedicated one (it then runs HAProxy and keepalived only).
pub fn load_balancer_hosts(hosts: &[&str]) -> Result<(), String> {
    if hosts.is_empty() {
        return Err("load_balancer has no hosts to run on: list at least one in hosts, or leave hosts out to run it on the broker's hosts".into());
    }
    let mut addresses = Vec::new();
    for host in hosts {
        let ip = host_address(host).map_err(|m| format!("load_balancer.{m}"))?;
        addresses.push(ip.to_string());
    }
    if let Some((i, host)) = repeated(addresses.iter().map(String::as_str)).first() {
        return Err(format!(
            "load_balancer host {:?} is listed twice (hosts[{i}] is {host}); each host runs the load balancer once",
            hosts[*i]
        ));
    }
    Ok(())
}

/// The index and value of every entry that repeats an earlier one (usernames, hosts).
pub fn repeated<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(usize, &'a str)> {
    let mut seen = HashMap::new();
    let mut dups = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        if seen.insert(name, i).is_some() {
            dups.push((i, name));
        }
    }
    dups
}

/// Every check above on a whole spec, as the agent receives it.
/// A bundle mirror is an http(s) URL (agents fetch `<url>/<engine>-<version>.tar.gz`).
pub fn bundle_mirror(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "bundle_mirror {url:?} is not an http:// or https:// URL with a host"
        )),
    }
}

pub fn broker_spec(spec: &BrokerSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut check = |path: &str, r: Result<(), String>| {
        if let Err(m) = r {
            errors.push(FieldError::new(path, m));
        }
    };
    check("id", broker_id(&spec.broker_id));
    check("broker_name", broker_name(&spec.broker_name));
    let engine = engine_type(&spec.engine_type);
    let known_engine = engine.as_ref().ok().copied();
    let mode = deployment_mode(&spec.deployment_mode);
    check(
        "host_instance_type",
        instance_type(&spec.host_instance_type).map(|_| ()),
    );
    match engine {
        Ok(e) => {
            check("engine_version", engine_version(e, &spec.engine_version));
            if let Ok(m) = mode {
                check("deployment_mode", mode_for_engine(e, m));
                match storage_type(e, m, &spec.storage_type) {
                    Ok(st) => {
                        if let Some(t) = catalogue::instance_type(&spec.host_instance_type) {
                            check("host_instance_type", t.offers(e, m, st));
                        }
                        for (i, inst) in spec.instances.iter().enumerate() {
                            check(&format!("instance[{i}].volume"), volume(st, &inst.volume));
                        }
                        if st == StorageType::Efs {
                            check(
                                "instance",
                                same_shared_volume(
                                    spec.instances.iter().map(|i| i.volume.as_str()),
                                ),
                            );
                        }
                    }
                    Err(msg) => check("storage_type", Err(msg)),
                }
            }
        }
        Err(m) => check("engine_type", Err(m)),
    }
    match mode {
        Ok(m) => check("instance", instance_count(m, spec.instances.len())),
        Err(msg) => check("deployment_mode", Err(msg)),
    }
    if !spec.bundle_mirror.is_empty() {
        check("bundle_mirror", bundle_mirror(&spec.bundle_mirror));
    }
    if let Some(enc) = &spec.encryption {
        check(
            "encryption_options.key_file",
            encryption_key_file(&spec.storage_type, &enc.key_file),
        );
    }
    // One host, one instance: `10.0.0.1` and `10.0.0.1:7443` are the same host.
    let addresses: Vec<String> = spec
        .instances
        .iter()
        .map(|i| host_address(&i.host).map_or_else(|_| i.host.clone(), |ip| ip.to_string()))
        .collect();
    for (i, host) in repeated(addresses.iter().map(String::as_str)) {
        check(
            &format!("instance[{i}].host"),
            Err(format!(
                "host {host:?} is already an earlier instance; each instance needs its own host"
            )),
        );
    }
    if let Some(lb) = &spec.load_balancer {
        // No host owns the virtual IP: neither an instance's nor a load-balancer host.
        let owners = spec
            .instances
            .iter()
            .map(|i| i.host.as_str())
            .chain(lb.hosts.iter().map(String::as_str));
        check(
            "load_balancer.virtual_ip",
            virtual_ip(&lb.virtual_ip, owners).map(|_| ()),
        );
        if !lb.hosts.is_empty() {
            let hosts: Vec<&str> = lb.hosts.iter().map(String::as_str).collect();
            check("load_balancer.hosts", load_balancer_hosts(&hosts));
        }
    }
    if let Some(index) = spec.load_balancer_host_index {
        let dedicated = crate::load_balancer::dedicated_hosts(spec);
        if !dedicated.iter().any(|(i, _)| *i == index as usize) {
            check(
                "load_balancer_host_index",
                Err(format!(
                    "load_balancer_host_index {index} names no dedicated load-balancer host (one of load_balancer.hosts that is no instance's host)"
                )),
            );
        }
    }
    if let (Some(conf), Some(e)) = (&spec.configuration, known_engine) {
        check("configuration.id", crate::configuration::id(&conf.id));
        check(
            "configuration.revision",
            configuration_revision(conf.revision),
        );
        check(
            "configuration.data",
            crate::configuration::data(e, &conf.data),
        );
    }
    if let (Some(logs), Some(e)) = (&spec.logs, known_engine) {
        check("logs.audit", audit_log(e, logs.audit));
    }
    if let Some(window) = &spec.maintenance_window {
        if let Err(e) = crate::window::WindowStart::parse(
            &window.day_of_week,
            &window.time_of_day,
            &window.time_zone,
        ) {
            check(
                &format!("maintenance_window_start_time.{}", e.attribute),
                Err(e.message),
            );
        }
    }
    if spec.instance_index as usize >= spec.instances.len() {
        check(
            "instance_index",
            Err(format!(
                "instance_index {} is outside the {} instances",
                spec.instance_index,
                spec.instances.len()
            )),
        );
    }
    for (i, u) in spec.users.iter().enumerate() {
        check(&format!("user[{i}].username"), username(&u.username));
        check(&format!("user[{i}].password"), password(&u.password));
        for (j, g) in u.groups.iter().enumerate() {
            check(&format!("user[{i}].groups[{j}]"), group_name(g));
        }
    }
    for (i, name) in spec.certificate_names.iter().enumerate() {
        check(&format!("certificate_names[{i}]"), certificate_name(name));
    }
    for (i, name) in repeated(spec.users.iter().map(|u| u.username.as_str())) {
        check(
            &format!("user[{i}].username"),
            Err(format!("username {name:?} is given more than once")),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Instance, User};

    #[test]
    fn passwords_follow_amazon_mq() {
        assert!(password("correct-horse-battery").is_ok());
        let short = password("short").unwrap_err();
        assert!(
            short.contains("at least 12") && !short.contains("short\""),
            "{short}"
        );
        for bad in ["abcdefghijk,l", "abcdefghijk:l", "abcdefghijk=l"] {
            let e = password(bad).unwrap_err();
            assert!(e.contains("must not contain"), "{e}");
            assert!(!e.contains(bad), "password echoed: {e}");
        }
        assert!(password("aaaaaaaaaaaaab")
            .unwrap_err()
            .contains("4 different"));
        assert!(password(&"ab1-".repeat(63)).is_err());
    }

    #[test]
    fn usernames_and_names() {
        assert!(username("app-user_1.x~").is_ok());
        assert!(username("a").is_err());
        assert!(username("has space").unwrap_err().contains("' '"));
        assert!(username("guest").is_err());
        assert!(broker_name("orders-prod_1").is_ok());
        assert!(broker_name("").is_err());
        assert!(broker_name("a.b").unwrap_err().contains("\"a.b\""));
    }

    #[test]
    fn cross_field_rules() {
        assert!(instance_count(DeploymentMode::SingleInstance, 1).is_ok());
        let e = instance_count(DeploymentMode::SingleInstance, 2).unwrap_err();
        assert!(e.contains("exactly 1 instance block, got 2"), "{e}");
        assert!(mode_for_engine(EngineType::ActiveMq, DeploymentMode::ClusterMultiAz).is_err());
        assert!(mode_for_engine(EngineType::RabbitMq, DeploymentMode::SingleInstance).is_ok());
        assert_eq!(repeated(["a", "b", "a", "a"]), vec![(2, "a"), (3, "a")]);
        let e = instance_type("mq.x9.huge").unwrap_err();
        assert!(
            e.contains("\"mq.x9.huge\"") && e.contains("mq.m5.large"),
            "{e}"
        );
        let e = engine_version(EngineType::RabbitMq, "9.9.9").unwrap_err();
        assert!(e.contains("\"9.9.9\"") && e.contains("3.10.8"), "{e}");
    }

    fn spec() -> BrokerSpec {
        BrokerSpec {
            broker_id: "b-1234".into(),
            broker_name: "orders".into(),
            engine_type: "RabbitMQ".into(),
            engine_version: "3.10.8".into(),
            host_instance_type: "mq.m5.large".into(),
            deployment_mode: "SINGLE_INSTANCE".into(),
            storage_type: "ebs".into(),
            instances: vec![Instance {
                host: "10.0.0.1".into(),
                volume: "/dev/loop0".into(),
            }],
            instance_index: 0,
            users: vec![User {
                username: "app".into(),
                password: "twelve-chars-ok".into(),
                console_access: true,
                groups: vec![],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn groups_and_certificate_names() {
        assert!(group_name("orders").is_ok() && group_name("admins").is_ok());
        for bad in ["", "a.b", "a,b", ">", "users", "console", "unrestricted"] {
            assert!(group_name(bad).is_err(), "{bad}");
        }
        for ok in ["10.0.0.5", "fd00::1", "mq.example.com", "broker-1"] {
            assert!(certificate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "-a.example", "a b", "*.example"] {
            assert!(certificate_name(bad).is_err(), "{bad}");
        }
        let mut s = spec();
        s.users[0].groups = vec!["ok".into(), "bad.group".into()];
        s.certificate_names = vec!["not a name".into()];
        let paths: Vec<String> = broker_spec(&s)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["user[0].groups[1]", "certificate_names[0]"]);
    }

    #[test]
    fn a_malformed_window_is_refused_on_its_attribute() {
        let mut s = spec();
        s.maintenance_window = Some(crate::agent::MaintenanceWindow {
            day_of_week: "SUNDAY".into(),
            time_of_day: "25:00".into(),
            time_zone: "UTC".into(),
        });
        let errors = broker_spec(&s).unwrap_err();
        assert_eq!(errors[0].path, "maintenance_window_start_time.time_of_day");
        assert!(errors[0].message.contains("25:00"));
        s.maintenance_window = Some(crate::agent::MaintenanceWindow {
            day_of_week: "SUNDAY".into(),
            time_of_day: "02:00".into(),
            time_zone: "Europe/Berlin".into(),
        });
        assert_eq!(broker_spec(&s), Ok(()));
    }

    #[test]
    fn encryption_is_for_block_volumes_with_an_absolute_key_file() {
        assert!(encryption_key_file("ebs", "/etc/ferrymq/keys/orders.key").is_ok());
        assert!(encryption_key_file("ebs", "keys/orders.key")
            .unwrap_err()
            .contains("\"keys/orders.key\""));
        assert!(encryption_key_file("efs", "/k")
            .unwrap_err()
            .contains("efs"));
        let mut s = spec();
        s.encryption = Some(crate::agent::EncryptionOptions {
            key_file: "relative".into(),
        });
        let errors = broker_spec(&s).unwrap_err();
        assert_eq!(errors[0].path, "encryption_options.key_file");
    }

    #[test]
    fn clusters_take_three_hosts_and_load_balancers_an_address() {
        let mut s = spec();
        s.deployment_mode = "CLUSTER_MULTI_AZ".into();
        let errors = broker_spec(&s).unwrap_err();
        assert_eq!(errors[0].path, "instance");
        assert!(errors[0].message.contains("exactly 3"), "{}", errors[0]);
        s.instances = ["10.0.0.1", "10.0.0.2", "10.0.0.1:7443"]
            .iter()
            .map(|h| Instance {
                host: h.to_string(),
                volume: "/dev/loop0".into(),
            })
            .collect();
        let errors = broker_spec(&s).unwrap_err();
        assert_eq!(errors[0].path, "instance[2].host");
        s.instances[2].host = "10.0.0.3".into();
        assert_eq!(broker_spec(&s), Ok(()));
        s.engine_type = "ActiveMQ".into();
        s.engine_version = "5.17.2".into();
        let errors = broker_spec(&s).unwrap_err();
        assert!(errors.iter().any(|e| e.path == "deployment_mode"));

        let hosts = ["10.0.0.1", "10.0.0.2:7443"];
        assert!(virtual_ip("10.0.0.100", hosts).is_ok());
        assert!(virtual_ip("10.0.0.100/24", hosts)
            .unwrap_err()
            .contains("\"10.0.0.100/24\""));
        assert!(virtual_ip("10.0.0.2", hosts)
            .unwrap_err()
            .contains("instance"));
        assert!(virtual_ip("0.0.0.0", hosts).is_err());
        assert!(load_balancer_hosts(&[]).unwrap_err().contains("no hosts"));
        assert!(load_balancer_hosts(&["10.0.0.2", "10.0.0.9"]).is_ok());
        assert!(load_balancer_hosts(&["lb.example"])
            .unwrap_err()
            .contains("\"lb.example\" is not an IP address"));
        let twice = load_balancer_hosts(&["10.0.0.9", "10.0.0.9:7443"]).unwrap_err();
        assert!(
            twice.contains("\"10.0.0.9:7443\" is listed twice"),
            "{twice}"
        );
        let mut s = spec();
        s.load_balancer = Some(crate::agent::LoadBalancer {
            virtual_ip: "vip".into(),
            hosts: vec![],
        });
        assert_eq!(
            broker_spec(&s).unwrap_err()[0].path,
            "load_balancer.virtual_ip"
        );
    }

    #[test]
    fn a_load_balancer_only_spec_names_a_dedicated_host() {
        let mut s = spec();
        s.load_balancer = Some(crate::agent::LoadBalancer {
            virtual_ip: "10.0.0.100".into(),
            hosts: vec!["10.0.0.9".into(), s.instances[0].host.clone()],
        });
        assert_eq!(
            crate::load_balancer::dedicated_hosts(&s),
            [(0, "10.0.0.9".to_string())]
        );
        s.load_balancer_host_index = Some(0);
        assert_eq!(broker_spec(&s), Ok(()));
        // hosts[1] is an instance's host: it gets the spec as that instance, not as this.
        s.load_balancer_host_index = Some(1);
        assert_eq!(
            broker_spec(&s).unwrap_err()[0].path,
            "load_balancer_host_index"
        );
        s.load_balancer_host_index = None;
        s.load_balancer.as_mut().expect("lb").virtual_ip = "10.0.0.9".into();
        let errors = broker_spec(&s).unwrap_err();
        assert_eq!(errors[0].path, "load_balancer.virtual_ip");
        assert!(
            errors[0].message.contains("load-balancer host"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn whole_spec_errors_carry_paths() {
        assert_eq!(broker_spec(&spec()), Ok(()));
        let mut s = spec();
        s.users.push(s.users[0].clone());
        s.users[1].password = "short".into();
        s.broker_id = "b-../x".into();
        let errors = broker_spec(&s).unwrap_err();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["id", "user[1].password", "user[1].username"]);
        assert!(broker_id("b-").is_err() && broker_id("b-ab-12").is_ok());
    }
}
