//! Plan-time checks of a `ferrymq_broker` configuration. Pure: the same validators as the agent
//! (from `ferrymq-api`), with each message attached to its attribute path so Terraform points
//! at the offending line. Unknown values (known only at apply) are skipped, not guessed.

use crate::tfplugin::{AttributePath, Diagnostic, Diagnostics, Value};
use ferrymq_api::agent::{BrokerSpec, Instance, LoadBalancer, ServerCertificate};
use ferrymq_api::catalogue::{self, DeploymentMode, StorageType};
use ferrymq_api::server_certificate;
use ferrymq_api::validate;
use std::time::Duration;

pub const DEFAULT_MODE: &str = "SINGLE_INSTANCE";

fn error(path: AttributePath, summary: &str, detail: String) -> Diagnostic {
    Diagnostic::error(summary, detail).at(path)
}

/// A user's `groups`, each as the agent accepts it.
pub fn groups(list: &Value, path: AttributePath) -> Diagnostics {
    let mut d = Vec::new();
    for (j, g) in list.as_list().unwrap_or_default().iter().enumerate() {
        if let Some(g) = g.as_str() {
            if let Err(m) = validate::group_name(g) {
                d.push(error(path.clone().index(j as i64), "Invalid group", m));
            }
        }
    }
    d
}

/// Every plan-time check of a broker configuration.
pub fn broker(config: &Value) -> Diagnostics {
    let mut d = Vec::new();
    let (mode, storage) = scalar_fields(config, &mut d);
    if let (Some(m), Some(instances)) = (mode, config.get("instance").as_list()) {
        if let Err(msg) = validate::instance_count(m, instances.len()) {
            d.push(error(
                AttributePath::root("instance"),
                "Wrong number of instance blocks",
                msg,
            ));
        }
    }
    if let Some(instances) = config.get("instance").as_list() {
        d.extend(instance_blocks(instances, storage));
    }
    if let Some(users) = config.get("user").as_list() {
        d.extend(user_blocks(users));
    }
    if let Some(names) = config.get("certificate_names").as_list() {
        for (i, n) in names.iter().enumerate() {
            if let Some(n) = n.as_str() {
                if let Err(m) = validate::certificate_name(n) {
                    d.push(error(
                        AttributePath::root("certificate_names").index(i as i64),
                        "Invalid certificate name",
                        m,
                    ));
                }
            }
        }
    }
    if let (Some(key_file), Some(st)) = (
        config.get("encryption_options").get("key_file").as_str(),
        storage,
    ) {
        if let Err(m) = validate::encryption_key_file(st.as_str(), key_file) {
            d.push(error(
                AttributePath::root("encryption_options").attr("key_file"),
                "Invalid encryption_options",
                m,
            ));
        }
    }
    d.extend(load_balancer_block(config));
    d.extend(server_certificate_block(config));
    d.extend(configuration_and_logs(config));
    d.extend(window_block(config.get("maintenance_window_start_time")));
    if let Value::Object(_) = config.get("timeouts") {
        for op in ["create", "update", "delete"] {
            if let Some(text) = config.get("timeouts").get(op).as_str() {
                if let Err(m) = parse_duration(text) {
                    d.push(error(
                        AttributePath::root("timeouts").attr(op),
                        "Invalid timeout",
                        format!("timeouts.{op} {text:?}: {m}"),
                    ));
                }
            }
        }
    }
    d
}

/// The `configuration` reference and the `logs` flags the engine supports.
fn configuration_and_logs(config: &Value) -> Diagnostics {
    let mut d = Vec::new();
    let conf = config.get("configuration");
    if let Some(id) = conf.get("id").as_str() {
        if let Err(m) = ferrymq_api::configuration::id(id) {
            d.push(error(
                AttributePath::root("configuration").attr("id"),
                "Invalid configuration id",
                m,
            ));
        }
    }
    if let Some(revision) = conf.get("revision").as_i64() {
        let r = u32::try_from(revision)
            .map_err(|_| format!("configuration revision {revision} is out of range"))
            .and_then(validate::configuration_revision);
        if let Err(m) = r {
            d.push(error(
                AttributePath::root("configuration").attr("revision"),
                "Invalid configuration revision",
                m,
            ));
        }
    }
    let engine = config
        .get("engine_type")
        .as_str()
        .and_then(|e| validate::engine_type(e).ok());
    if let (Some(e), Some(audit)) = (engine, config.get("logs").get("audit").as_bool()) {
        if let Err(m) = validate::audit_log(e, audit) {
            d.push(error(
                AttributePath::root("logs").attr("audit"),
                "Unsupported logs.audit",
                m,
            ));
        }
    }
    d
}

/// The window's three attributes, each error on its own path; skipped while any is unknown.
fn window_block(window: &Value) -> Diagnostics {
    let (Some(day), Some(time)) = (
        window.get("day_of_week").as_str(),
        window.get("time_of_day").as_str(),
    ) else {
        return vec![];
    };
    let zone = match window.get("time_zone") {
        Value::Null => "",
        v => match v.as_str() {
            Some(z) => z,
            None => return vec![],
        },
    };
    match ferrymq_api::window::WindowStart::parse(day, time, zone) {
        Ok(_) => vec![],
        Err(e) => vec![error(
            AttributePath::root("maintenance_window_start_time").attr(e.attribute),
            "Invalid maintenance_window_start_time",
            format!(
                "maintenance_window_start_time.{}: {}",
                e.attribute, e.message
            ),
        )],
    }
}

/// Checks of the single-valued attributes; returns the deployment mode and storage type
/// (defaulted as Amazon MQ does) when they are known and valid.
fn scalar_fields(
    config: &Value,
    d: &mut Diagnostics,
) -> (Option<DeploymentMode>, Option<StorageType>) {
    let mut check = |attr: &str, summary: &str, r: Result<(), String>| {
        if let Err(m) = r {
            d.push(error(AttributePath::root(attr), summary, m));
        }
    };
    if let Some(name) = config.get("broker_name").as_str() {
        check(
            "broker_name",
            "Invalid broker_name",
            validate::broker_name(name),
        );
    }
    let engine = config
        .get("engine_type")
        .as_str()
        .map(validate::engine_type);
    if let Some(Err(m)) = &engine {
        check("engine_type", "Invalid engine_type", Err(m.clone()));
    }
    let engine = engine.and_then(Result::ok);
    if let (Some(e), Some(v)) = (engine, config.get("engine_version").as_str()) {
        check(
            "engine_version",
            "Unsupported engine_version",
            validate::engine_version(e, v),
        );
    }
    if let Some(t) = config.get("host_instance_type").as_str() {
        check(
            "host_instance_type",
            "Unknown host_instance_type",
            validate::instance_type(t).map(|_| ()),
        );
    }
    let mode = match config.get("deployment_mode") {
        Value::Null => Some(DeploymentMode::SingleInstance),
        v => v.as_str().and_then(|m| match validate::deployment_mode(m) {
            Ok(m) => Some(m),
            Err(msg) => {
                check("deployment_mode", "Invalid deployment_mode", Err(msg));
                None
            }
        }),
    };
    // A mode the engine lacks makes the instance count meaningless: report only the mode.
    let mode = match (engine, mode) {
        (Some(e), Some(m)) => {
            let offered = validate::mode_for_engine(e, m);
            let ok = offered.is_ok();
            check("deployment_mode", "Unsupported deployment_mode", offered);
            Some(m).filter(|_| ok)
        }
        (_, m) => m,
    };
    let storage = match (engine, mode, config.get("storage_type")) {
        (_, _, Value::Unknown) => None,
        (_, Some(m), Value::Null) => Some(m.default_storage()),
        (Some(e), Some(m), v) => {
            let given = v.as_str().unwrap_or_default();
            match validate::storage_type(e, m, given) {
                Ok(st) => Some(st),
                Err(msg) => {
                    check("storage_type", "Invalid storage_type", Err(msg));
                    None
                }
            }
        }
        (_, _, v) => v.as_str().and_then(|s| s.parse().ok()),
    };
    let instance_type = config
        .get("host_instance_type")
        .as_str()
        .and_then(catalogue::instance_type);
    if let (Some(t), Some(e), Some(m), Some(st)) = (instance_type, engine, mode, storage) {
        check(
            "host_instance_type",
            "Instance type not offered",
            t.offers(e, m, st),
        );
    }
    (mode, storage)
}

fn instance_blocks(instances: &[Value], storage: Option<StorageType>) -> Diagnostics {
    let mut d = Vec::new();
    if storage == Some(StorageType::Efs) {
        let volumes: Vec<&str> = instances
            .iter()
            .filter_map(|i| i.get("volume").as_str())
            .collect();
        if volumes.len() == instances.len() {
            if let Err(m) = validate::same_shared_volume(volumes) {
                d.push(error(
                    AttributePath::root("instance").index(1).attr("volume"),
                    "Different shared volumes",
                    m,
                ));
            }
        }
    }
    for (i, inst) in instances.iter().enumerate() {
        let path = |attr: &str| AttributePath::root("instance").index(i as i64).attr(attr);
        if let Some(host) = inst.get("host").as_str() {
            if host.trim().is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
                d.push(error(
                    path("host"),
                    "Invalid instance host",
                    format!("instance[{i}].host {host:?} is not a host address"),
                ));
            }
        }
        if let (Some(volume), Some(st)) = (inst.get("volume").as_str(), storage) {
            if let Err(m) = validate::volume(st, volume) {
                d.push(error(
                    path("volume"),
                    "Invalid instance volume",
                    format!("instance[{i}].{m}"),
                ));
            }
        }
        for (j, other) in instances.iter().enumerate().skip(i + 1) {
            if let (Some(a), Some(b)) = (inst.get("host").as_str(), other.get("host").as_str()) {
                // `10.0.0.1` and `10.0.0.1:7443` are one host.
                let same = match (validate::host_address(a), validate::host_address(b)) {
                    (Ok(x), Ok(y)) => x == y,
                    _ => a == b,
                };
                if same {
                    d.push(error(
                        AttributePath::root("instance").index(j as i64).attr("host"),
                        "Duplicate instance host",
                        format!("instance[{j}].host {b:?} is already instance[{i}]; each instance needs its own host"),
                    ));
                }
            }
        }
    }
    d
}

/// The `load_balancer` block: a virtual IP that is an address no host owns, and hosts to run
/// on (left out: the broker's hosts; given: at least one, each an address, none twice; a host
/// that is no instance's runs the load balancer only).
fn load_balancer_block(config: &Value) -> Diagnostics {
    let mut d = Vec::new();
    let lb = config.get("load_balancer");
    if !matches!(lb, Value::Object(_)) {
        return d;
    }
    let instances = config.get("instance").as_list().unwrap_or_default();
    let hosts: Vec<&str> = instances
        .iter()
        .filter_map(|i| i.get("host").as_str())
        .collect();
    let all_known = hosts.len() == instances.len();
    let lb_hosts: Vec<&str> = lb
        .get("hosts")
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if let Some(vip) = lb.get("virtual_ip").as_str() {
        let mut owners: Vec<&str> = if all_known { hosts.clone() } else { vec![] };
        owners.extend(&lb_hosts);
        if let Err(m) = validate::virtual_ip(vip, owners) {
            d.push(error(
                AttributePath::root("load_balancer").attr("virtual_ip"),
                "Invalid load_balancer virtual_ip",
                m,
            ));
        }
    }
    if let Some(lb_hosts) = lb.get("hosts").as_list() {
        let given: Vec<&str> = lb_hosts.iter().filter_map(Value::as_str).collect();
        if given.len() == lb_hosts.len() {
            if let Err(m) = validate::load_balancer_hosts(&given) {
                d.push(error(
                    AttributePath::root("load_balancer").attr("hosts"),
                    "Invalid load_balancer hosts",
                    m,
                ));
            }
        }
    }
    d
}

/// A supplied `server_certificate`, checked as the agents check it on apply, against the
/// names of the configuration that are known at plan time (each instance's host, the
/// certificate_names, the load balancer's virtual IP).
fn server_certificate_block(config: &Value) -> Diagnostics {
    let block = config.get("server_certificate");
    let (Some(certificate_pem), Some(ca_chain_pem)) = (
        block.get("certificate_pem").as_str(),
        block.get("ca_chain_pem").as_str(),
    ) else {
        return vec![];
    };
    let supplied = ServerCertificate {
        certificate_pem: certificate_pem.to_string(),
        // Unknown (from another resource) until apply: the agent checks it then.
        private_key_pem: block
            .get("private_key_pem")
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ca_chain_pem: ca_chain_pem.to_string(),
    };
    let known = |v: &Value| v.as_str().map(str::to_string);
    let spec = BrokerSpec {
        instances: config
            .get("instance")
            .as_list()
            .unwrap_or_default()
            .iter()
            .filter_map(|i| known(i.get("host")))
            .map(|host| Instance {
                host,
                volume: String::new(),
            })
            .collect(),
        certificate_names: config
            .get("certificate_names")
            .as_list()
            .unwrap_or_default()
            .iter()
            .filter_map(known)
            .collect(),
        load_balancer: known(config.get("load_balancer").get("virtual_ip")).map(|virtual_ip| {
            LoadBalancer {
                virtual_ip,
                hosts: vec![],
            }
        }),
        ..Default::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let names = server_certificate::broker_names(&spec);
    match server_certificate::check(&supplied, &names, now) {
        Ok(checked) if checked.not_after - now < server_certificate::WARN_BEFORE_SECONDS => {
            vec![Diagnostic::warning(
                "server_certificate expires soon",
                format!(
                    "server_certificate.certificate_pem expires in {} days; FerryMQ never renews a supplied certificate: apply a new one before then",
                    (checked.not_after - now) / 86_400
                ),
            )
            .at(AttributePath::root("server_certificate").attr("certificate_pem"))]
        }
        Ok(_) => vec![],
        Err(errors) => errors
            .into_iter()
            .map(|e| {
                let attr = e.path.rsplit('.').next().unwrap_or_default();
                error(
                    AttributePath::root("server_certificate").attr(attr),
                    "Invalid server_certificate",
                    e.to_string(),
                )
            })
            .collect(),
    }
}

fn user_blocks(users: &[Value]) -> Diagnostics {
    let mut d = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let path = |attr: &str| AttributePath::root("user").index(i as i64).attr(attr);
        if let Some(name) = user.get("username").as_str() {
            if let Err(m) = validate::username(name) {
                d.push(error(
                    path("username"),
                    "Invalid username",
                    format!("user[{i}].{m}"),
                ));
            }
        }
        if let Some(pw) = user.get("password").as_str() {
            if let Err(m) = validate::password(pw) {
                d.push(error(
                    path("password"),
                    "Invalid password",
                    format!("user[{i}].password ({}): {m}", user_label(user)),
                ));
            }
        }
        d.extend(groups(
            user.get("groups"),
            AttributePath::root("user").index(i as i64).attr("groups"),
        ));
    }
    let names: Vec<&str> = users
        .iter()
        .map(|u| u.get("username").as_str().unwrap_or(""))
        .collect();
    for (i, name) in validate::repeated(names.iter().copied().filter(|n| !n.is_empty())) {
        // Indices above count known names only; find the real block of the repeat.
        let real = names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty())
            .nth(i)
            .map(|(j, _)| j)
            .unwrap_or(i);
        d.push(error(
            AttributePath::root("user")
                .index(real as i64)
                .attr("username"),
            "Duplicate username",
            format!("user[{real}].username {name:?} is given more than once"),
        ));
    }
    d
}

fn user_label(user: &Value) -> String {
    user.get("username")
        .as_str()
        .map(|u| format!("user {u:?}"))
        .unwrap_or_else(|| "user".into())
}

/// Terraform timeout strings: a sequence of number+unit (`h`, `m`, `s`), such as `30m` or
/// `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("expected a number before {c:?} (like \"30m\")"))?;
        number.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            other => return Err(format!("unknown unit {other:?}; use h, m or s")),
        };
    }
    if !number.is_empty() {
        return Err("a duration needs a unit (h, m or s), like \"30m\"".into());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, pw: &str) -> Value {
        Value::object([
            ("username", Value::string(name)),
            ("password", Value::string(pw)),
            ("console_access", Value::Null),
        ])
    }

    fn config() -> Value {
        Value::object([
            ("broker_name", Value::string("orders")),
            ("engine_type", Value::string("RabbitMQ")),
            ("engine_version", Value::string("3.10.8")),
            ("host_instance_type", Value::string("mq.m5.large")),
            ("deployment_mode", Value::string("SINGLE_INSTANCE")),
            ("storage_type", Value::Null),
            (
                "instance",
                Value::List(vec![Value::object([
                    ("host", Value::string("10.0.0.1")),
                    ("volume", Value::string("/dev/loop0")),
                ])]),
            ),
            ("user", Value::List(vec![user("app", "twelve-chars-ok")])),
            ("timeouts", Value::Null),
        ])
    }

    fn paths(d: &Diagnostics) -> Vec<String> {
        d.iter()
            .map(|x| {
                x.attribute
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn cluster(engine: &str, version: &str, hosts: [&str; 3]) -> Value {
        let mut c = config();
        c.set_attr("engine_type", engine);
        c.set_attr("engine_version", version);
        c.set_attr("deployment_mode", "CLUSTER_MULTI_AZ");
        c.set_attr(
            "instance",
            Value::List(
                hosts
                    .iter()
                    .map(|h| {
                        Value::object([
                            ("host", Value::string(*h)),
                            ("volume", Value::string("/dev/loop0")),
                        ])
                    })
                    .collect(),
            ),
        );
        c
    }

    #[test]
    fn clusters_are_three_rabbitmq_hosts() {
        let good = cluster("RabbitMQ", "3.10.8", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert!(broker(&good).is_empty(), "{:?}", broker(&good));
        let d = broker(&cluster(
            "RabbitMQ",
            "3.10.8",
            ["10.0.0.1", "10.0.0.2", "10.0.0.1:7443"],
        ));
        assert_eq!(paths(&d), ["instance[2].host"]);
        let d = broker(&cluster(
            "ActiveMQ",
            "5.17.2",
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        ));
        assert_eq!(paths(&d), ["deployment_mode"]);
        assert!(
            d[0].detail.contains("not offered for ActiveMQ"),
            "{}",
            d[0].detail
        );
        let mut lb = good.clone();
        lb.set_attr(
            "load_balancer",
            Value::object([
                ("virtual_ip", Value::string("10.0.0.2")),
                ("hosts", Value::List(vec![Value::string("10.0.0.9")])),
            ]),
        );
        let d = broker(&lb);
        assert_eq!(paths(&d), ["load_balancer.virtual_ip"]);
        // A dedicated host (no instance's) is fine; one listed twice, or owning the virtual
        // IP, is not.
        lb.set_attr(
            "load_balancer",
            Value::object([
                ("virtual_ip", Value::string("10.0.0.9")),
                (
                    "hosts",
                    Value::List(vec![
                        Value::string("10.0.0.9"),
                        Value::string("10.0.0.9:7443"),
                    ]),
                ),
            ]),
        );
        let d = broker(&lb);
        assert_eq!(
            paths(&d),
            ["load_balancer.virtual_ip", "load_balancer.hosts"]
        );
        assert!(d[1].detail.contains("listed twice"), "{}", d[1].detail);
        lb.set_attr(
            "load_balancer",
            Value::object([
                ("virtual_ip", Value::string("10.0.0.100")),
                ("hosts", Value::List(vec![Value::string("10.0.0.9")])),
            ]),
        );
        assert!(broker(&lb).is_empty(), "{:?}", broker(&lb));
    }

    #[test]
    fn audit_logs_are_activemq_only_and_revisions_count_from_one() {
        let mut c = config();
        c.set_attr(
            "logs",
            Value::object([("general", Value::Bool(true)), ("audit", Value::Bool(true))]),
        );
        c.set_attr(
            "configuration",
            Value::object([
                ("id", Value::string("c-1")),
                ("revision", Value::from(0u32)),
            ]),
        );
        let d = broker(&c);
        assert_eq!(paths(&d), ["configuration.revision", "logs.audit"]);
        assert!(d[1].detail.contains("RabbitMQ"));
        c.set_attr("engine_type", "ActiveMQ");
        c.set_attr("engine_version", "5.17.2");
        assert!(!paths(&broker(&c)).contains(&"logs.audit".to_string()));
    }

    #[test]
    fn a_bad_window_is_reported_on_the_attribute_that_is_wrong() {
        let window = |day: &str, time: &str, zone: Value| {
            let mut c = config();
            c.set_attr(
                "maintenance_window_start_time",
                Value::object([
                    ("day_of_week", Value::string(day)),
                    ("time_of_day", Value::string(time)),
                    ("time_zone", zone),
                ]),
            );
            broker(&c)
        };
        assert!(window("SUNDAY", "02:30", Value::Null).is_empty());
        assert!(window("sunday", "02:30", Value::string("America/New_York")).is_empty());
        let d = window("SUNDAY", "2:30pm", Value::Null);
        assert_eq!(paths(&d), ["maintenance_window_start_time.time_of_day"]);
        assert!(d[0].detail.contains("2:30pm"));
        let d = window("SUNDAY", "02:30", Value::string("Mars/Base"));
        assert_eq!(paths(&d), ["maintenance_window_start_time.time_zone"]);
        let d = window("SOMEDAY", "02:30", Value::Null);
        assert_eq!(paths(&d), ["maintenance_window_start_time.day_of_week"]);
        // Unknown until apply: not guessed.
        assert!(window("SUNDAY", "02:30", Value::Unknown).is_empty());
    }

    #[test]
    fn a_good_config_passes() {
        assert!(broker(&config()).is_empty(), "{:?}", broker(&config()));
    }

    #[test]
    fn each_bad_field_is_reported_at_its_path() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "host_instance_type",
                Value::string("mq.x9.huge"),
                "host_instance_type",
                "\"mq.x9.huge\"",
            ),
            (
                "engine_version",
                Value::string("9.9.9"),
                "engine_version",
                "\"9.9.9\"",
            ),
            (
                "engine_type",
                Value::string("Kafka"),
                "engine_type",
                "\"Kafka\"",
            ),
            (
                "deployment_mode",
                Value::string("CLUSTER_MULTI_AZ"),
                "instance",
                "exactly 3 instance blocks, got 1",
            ),
            (
                "load_balancer",
                Value::object([
                    ("virtual_ip", Value::string("10.0.0.300")),
                    ("hosts", Value::Null),
                ]),
                "load_balancer.virtual_ip",
                "\"10.0.0.300\" is not an IP address",
            ),
            (
                "load_balancer",
                Value::object([
                    ("virtual_ip", Value::string("10.0.0.100")),
                    ("hosts", Value::List(vec![])),
                ]),
                "load_balancer.hosts",
                "no hosts to run on",
            ),
            (
                "storage_type",
                Value::string("efs"),
                "storage_type",
                "\"efs\"",
            ),
            (
                "user",
                Value::List(vec![user("app", "short")]),
                "user[0].password",
                "at least 12",
            ),
            (
                "user",
                Value::List(vec![user("app", "has,comma-inside")]),
                "user[0].password",
                "','",
            ),
            (
                "user",
                Value::List(vec![
                    user("app", "twelve-chars-ok"),
                    user("app", "another-one-ok"),
                ]),
                "user[1].username",
                "\"app\"",
            ),
        ];
        for (attr, value, path, needle) in cases {
            let mut c = config();
            c.set_attr(attr, value);
            let d = broker(&c);
            assert_eq!(paths(&d), vec![path.to_string()], "{attr}: {d:?}");
            assert!(d[0].detail.contains(needle), "{attr}: {}", d[0].detail);
        }
    }

    #[test]
    fn instance_count_follows_the_mode() {
        let mut c = config();
        let one = c.get("instance").as_list().expect("list")[0].clone();
        c.set_attr("instance", Value::List(vec![one.clone(), one]));
        let d = broker(&c);
        let p = paths(&d);
        assert!(p.contains(&"instance".to_string()), "{d:?}");
        assert!(d
            .iter()
            .any(|x| x.detail.contains("exactly 1 instance block, got 2")));
        assert!(p.contains(&"instance[1].host".to_string()), "{d:?}");
        c.set_attr("instance", Value::List(vec![]));
        assert!(broker(&c)[0].detail.contains("got 0"));
    }

    #[test]
    fn active_standby_needs_two_hosts_sharing_one_store() {
        let inst = |host: &str, volume: &str| {
            Value::object([
                ("host", Value::string(host)),
                ("volume", Value::string(volume)),
            ])
        };
        let mut c = config();
        c.set_attr("engine_type", "ActiveMQ");
        c.set_attr("engine_version", "5.17.2");
        c.set_attr("deployment_mode", "ACTIVE_STANDBY_MULTI_AZ");
        c.set_attr(
            "instance",
            Value::List(vec![
                inst("10.0.0.1", "/srv/mq"),
                inst("10.0.0.2", "/srv/mq"),
            ]),
        );
        assert!(broker(&c).is_empty(), "{:?}", broker(&c));
        c.set_attr("storage_type", "ebs");
        let d = broker(&c);
        assert_eq!(paths(&d), ["storage_type"], "{d:?}");
        c.set_attr("storage_type", Value::Null);
        c.set_attr(
            "instance",
            Value::List(vec![inst("10.0.0.1", "/srv/a"), inst("10.0.0.1", "fs1:/b")]),
        );
        let d = broker(&c);
        assert_eq!(
            paths(&d),
            ["instance[1].volume", "instance[1].host"],
            "{d:?}"
        );
        c.set_attr("instance", Value::List(vec![inst("10.0.0.1", "/dev/sdb")]));
        let d = broker(&c);
        assert_eq!(paths(&d), ["instance", "instance[0].volume"], "{d:?}");
        c.set_attr("deployment_mode", "CLUSTER_MULTI_AZ");
        assert_eq!(paths(&broker(&c)), ["deployment_mode"]);
    }

    #[test]
    fn instance_types_offer_what_amazon_mq_offers() {
        let mut c = config();
        c.set_attr("engine_type", "ActiveMQ");
        c.set_attr("engine_version", "5.17.2");
        c.set_attr("host_instance_type", "mq.t3.micro");
        let d = broker(&c);
        assert_eq!(paths(&d), ["host_instance_type"], "{d:?}");
        assert!(d[0].detail.contains("mq.m5"), "{}", d[0].detail);
        c.set_attr("host_instance_type", "mq.m5.large");
        assert!(broker(&c).is_empty());
    }

    /// A CA (PEM) and a certificate from it for `names`, valid a year, with its key.
    fn supplied(names: &[&str]) -> (String, String, String) {
        supplied_for_days(names, 365)
    }

    fn supplied_for_days(names: &[&str], days: i64) -> (String, String, String) {
        let ca = ferrymq_api::server_certificate::test_ca::TestCa::new("User Root CA");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (cert, key) = ca.issue(names, now - 60, now + days * 86_400);
        (cert, key, ca.pem)
    }

    #[test]
    fn a_supplied_certificate_near_its_end_warns_at_plan() {
        let (cert, key, ca) = supplied_for_days(&["10.0.0.1"], 10);
        let d = broker(&with_certificate(&cert, Value::string(&key), &ca));
        assert_eq!(paths(&d), ["server_certificate.certificate_pem"]);
        assert!(
            !d[0].is_error() && d[0].detail.contains(" expires in "),
            "{:?}",
            d[0]
        );
    }

    fn with_certificate(cert: &str, key: Value, ca: &str) -> Value {
        let mut c = config();
        c.set_attr(
            "server_certificate",
            Value::object([
                ("certificate_pem", Value::string(cert)),
                ("private_key_pem", key),
                ("ca_chain_pem", Value::string(ca)),
            ]),
        );
        c
    }

    #[test]
    fn a_supplied_certificate_must_name_every_way_to_the_broker() {
        let (cert, key, ca) = supplied(&["10.0.0.1", "mq.example", "10.0.0.100"]);
        let mut c = with_certificate(&cert, Value::string(&key), &ca);
        c.set_attr(
            "certificate_names",
            Value::List(vec![Value::string("mq.example")]),
        );
        assert!(broker(&c).is_empty(), "{:?}", broker(&c));
        // The load balancer's virtual IP counts too; unknown values are left to apply.
        c.set_attr(
            "load_balancer",
            Value::object([
                ("virtual_ip", Value::string("10.0.0.200")),
                ("hosts", Value::Null),
            ]),
        );
        let d = broker(&c);
        assert_eq!(paths(&d), ["server_certificate.certificate_pem"]);
        assert!(
            d[0].detail.contains("does not name 10.0.0.200,"),
            "{}",
            d[0].detail
        );
        c.set_attr(
            "load_balancer",
            Value::object([("virtual_ip", Value::Unknown), ("hosts", Value::Null)]),
        );
        assert!(broker(&c).is_empty());

        let (other_cert, _, _) = supplied(&["10.0.0.1"]);
        let d = broker(&with_certificate(&other_cert, Value::string(&key), &ca));
        assert_eq!(
            paths(&d),
            [
                "server_certificate.private_key_pem",
                "server_certificate.ca_chain_pem"
            ]
        );
        assert!(
            !d.iter().any(|x| x.detail.contains(&key[30..60])),
            "the key is never quoted"
        );
        let d = broker(&with_certificate(&cert, Value::Unknown, "no PEM here"));
        assert_eq!(paths(&d), ["server_certificate.ca_chain_pem"]);
    }

    #[test]
    fn unknown_values_are_not_judged() {
        let mut c = config();
        c.set_attr("host_instance_type", Value::Unknown);
        c.set_attr("user", Value::Unknown);
        c.set_attr("instance", Value::Unknown);
        assert!(broker(&c).is_empty());
    }

    #[test]
    fn durations_parse_like_terraform_timeouts() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m10s"), Ok(Duration::from_secs(5410)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
