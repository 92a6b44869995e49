//! Field validators that refuse what Amazon MQ refuses.
//!
//! Each returns a message that names the attribute and the offending value (never a password),
//! so the provider can attach it to the attribute path at plan time and the agent can refuse
//! the same spec with the same words if something else sends it.

use crate::agent::BrokerSpec;
use crate::catalogue::{self, DeploymentMode, EngineType};
use std::collections::HashMap;

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
    Ok(())
}

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

/// The index and name of every username that repeats an earlier one.
pub fn duplicate_usernames<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(usize, &'a str)> {
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
            }
        }
        Err(m) => check("engine_type", Err(m)),
    }
    match mode {
        Ok(m) => check("instance", instance_count(m, spec.instances.len())),
        Err(msg) => check("deployment_mode", Err(msg)),
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
    }
    for (i, name) in duplicate_usernames(spec.users.iter().map(|u| u.username.as_str())) {
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
        assert_eq!(
            duplicate_usernames(["a", "b", "a", "a"]),
            vec![(2, "a"), (3, "a")]
        );
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
            }],
        }
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
