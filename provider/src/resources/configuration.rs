//! `ferrymq_configuration`: Amazon MQ's `aws_mq_configuration` on FerryMQ hosts.
//!
//! Amazon MQ keeps configuration revisions in its service; FerryMQ has no central service, only
//! agents, so the revisions live on the agents named in `hosts` (every host a full copy). Each
//! change of `data` or `description` stores a new, immutable revision on all of them and bumps
//! `latest_revision`; earlier revisions stay, so a broker can pin one and roll back. A broker
//! that references `configuration { id, revision }` gets that revision from the agents of its
//! own hosts (which must therefore be among `hosts`) and carries its data in its spec.

use crate::client::{Agent, ClientError, Credentials};
use crate::tfplugin::{
    ApplyRequest, ApplyResponse, Attribute, AttributePath, Block, Diagnostic, Diagnostics,
    ImportedResource, PlanRequest, PlanResponse, ReadResponse, Schema, Type, Value,
};
use ferrymq_api::agent::ConfigurationRevision;
use ferrymq_api::{configuration, validate};

pub const TYPE_NAME: &str = "ferrymq_configuration";

/// Changing any of these replaces the configuration, as in Amazon MQ.
const FORCE_NEW: &[&str] = &["name", "engine_type", "engine_version"];
/// Changing any of these makes a new revision.
const REVISED: &[&str] = &["data", "description"];

pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .description("A broker configuration with revisions (ActiveMQ XML or RabbitMQ rabbitmq.conf), kept on FerryMQ agents.")
            .attribute(Attribute::computed("id", Type::String).description("Configuration id, c-<uuid>."))
            .attribute(Attribute::computed("arn", Type::String).description(
                "An ARN-shaped name of the configuration (arn:ferrymq:mq:::configuration:ID), for modules written for Amazon MQ.",
            ))
            .attribute(Attribute::required("name", Type::String))
            .attribute(Attribute::required("engine_type", Type::String).description("ActiveMQ or RabbitMQ."))
            .attribute(Attribute::required("engine_version", Type::String))
            .attribute(Attribute::required("data", Type::String).description(
                "ActiveMQ: a <broker xmlns=\"http://activemq.apache.org/schema/core\"> document with the elements FerryMQ allows; RabbitMQ: rabbitmq.conf lines with the keys FerryMQ allows.",
            ))
            .attribute(Attribute::optional("description", Type::String))
            .attribute(Attribute::required("hosts", Type::list(Type::String)).description(
                "Agents that keep the revisions (host address, or IP:port): at least the hosts of every broker using this configuration.",
            ))
            .attribute(Attribute::computed("latest_revision", Type::Number).description(
                "The newest revision; every change of data or description makes a new one, earlier ones are kept.",
            )),
    )
}

pub fn validate(config: &Value) -> Diagnostics {
    let mut d = Vec::new();
    let mut check = |attr: &str, summary: &str, r: Result<(), String>| {
        if let Err(m) = r {
            d.push(Diagnostic::error(summary, m).at(AttributePath::root(attr)));
        }
    };
    if let Some(name) = config.get("name").as_str() {
        check("name", "Invalid name", configuration::name(name));
    }
    let engine = match config
        .get("engine_type")
        .as_str()
        .map(validate::engine_type)
    {
        Some(Ok(e)) => Some(e),
        Some(Err(m)) => {
            check("engine_type", "Invalid engine_type", Err(m));
            None
        }
        None => None,
    };
    if let Some(e) = engine {
        if let Some(v) = config.get("engine_version").as_str() {
            check(
                "engine_version",
                "Unsupported engine_version",
                validate::engine_version(e, v),
            );
        }
        if let Some(data) = config.get("data").as_str() {
            check(
                "data",
                "Configuration data not allowed",
                configuration::data(e, data),
            );
        }
    }
    if let Some(hosts) = config.get("hosts").as_list() {
        if hosts.is_empty() {
            check(
                "hosts",
                "No hosts",
                Err("hosts must name at least one agent to keep the revisions".into()),
            );
        }
    }
    d
}

pub fn plan(req: PlanRequest) -> PlanResponse {
    let mut resp = PlanResponse::default();
    if req.proposed_new_state.is_null() {
        return resp;
    }
    resp.diagnostics = validate(&req.config);
    let mut planned = req.proposed_new_state.clone();
    if req.prior_state.is_null() {
        for computed in ["id", "arn", "latest_revision"] {
            planned.set_attr(computed, Value::Unknown);
        }
    } else {
        resp.requires_replace = FORCE_NEW
            .iter()
            .filter(|a| planned.get(a) != req.prior_state.get(a))
            .map(|a| AttributePath::root(*a))
            .collect();
        if REVISED
            .iter()
            .any(|a| planned.get(a) != req.prior_state.get(a))
        {
            planned.set_attr("latest_revision", Value::Unknown);
        }
    }
    resp.planned_state = planned;
    resp
}

fn agents(creds: &Credentials, value: &Value) -> Result<Vec<Agent>, String> {
    value
        .get("hosts")
        .as_list()
        .unwrap_or_default()
        .iter()
        .map(|h| Agent::new(h.as_str().unwrap_or_default(), creds).map_err(|e| format!("{e:#}")))
        .collect()
}

fn text(value: &Value, attr: &str) -> String {
    value.get(attr).as_str().unwrap_or_default().to_string()
}

fn arn(id: &str) -> String {
    format!("arn:ferrymq:mq:::configuration:{id}")
}

pub async fn apply(creds: &Credentials, req: ApplyRequest) -> ApplyResponse {
    let mut resp = ApplyResponse::default();
    if req.planned_state.is_null() {
        if let Err(d) = delete(creds, &req.prior_state).await {
            resp.diagnostics.push(d);
            resp.new_state = req.prior_state;
        }
        return resp;
    }
    let creating = req.prior_state.is_null();
    let id = if creating {
        format!("c-{}", uuid::Uuid::new_v4())
    } else {
        text(&req.prior_state, "id")
    };
    let prior_latest = req
        .prior_state
        .get("latest_revision")
        .as_i64()
        .and_then(|r| u32::try_from(r).ok())
        .unwrap_or(0);
    let revised = creating
        || REVISED
            .iter()
            .any(|a| req.planned_state.get(a) != req.prior_state.get(a));
    let latest = if revised {
        prior_latest + 1
    } else {
        prior_latest
    };
    match store(creds, &id, &req.planned_state, prior_latest, latest).await {
        Ok(()) => {
            let mut state = req.planned_state.clone();
            state.set_attr("id", id.as_str());
            state.set_attr("arn", arn(&id));
            state.set_attr("latest_revision", latest);
            resp.new_state = state;
        }
        Err(m) => {
            let verb = if creating { "creating" } else { "updating" };
            resp.diagnostics.push(Diagnostic::error(
                format!("{verb} FerryMQ configuration ({id})"),
                m,
            ));
            resp.new_state = req.prior_state;
        }
    }
    resp
}

/// Makes every host hold revisions 1..=`latest`: the earlier ones copied from a host that has
/// them (a host added to `hosts` gets the history), the new one from the plan.
async fn store(
    creds: &Credentials,
    id: &str,
    planned: &Value,
    prior_latest: u32,
    latest: u32,
) -> Result<(), String> {
    let agents = agents(creds, planned)?;
    let mut revisions = Vec::new();
    for revision in 1..=prior_latest {
        revisions.push(fetch(&agents, id, revision).await?);
    }
    if latest > prior_latest {
        revisions.push(ConfigurationRevision {
            id: id.to_string(),
            name: text(planned, "name"),
            engine_type: text(planned, "engine_type"),
            engine_version: text(planned, "engine_version"),
            revision: latest,
            data: text(planned, "data"),
            description: text(planned, "description"),
            ..Default::default()
        });
    }
    for agent in &agents {
        for rev in &revisions {
            agent
                .put_configuration(rev.clone())
                .await
                .map_err(|e| format!("agent {}: {e}", agent.address()))?;
        }
    }
    Ok(())
}

/// A revision from the first of `agents` that has it.
pub async fn fetch(
    agents: &[Agent],
    id: &str,
    revision: u32,
) -> Result<ConfigurationRevision, String> {
    let mut errors = Vec::new();
    for agent in agents {
        match agent.get_configuration(id, revision).await {
            Ok(rev) => return Ok(rev),
            Err(e) => errors.push(format!("{}: {e}", agent.address())),
        }
    }
    Err(format!(
        "configuration {id} revision {revision} is on none of the hosts asked ({}); list the broker's hosts in the ferrymq_configuration's hosts",
        errors.join("; ")
    ))
}

async fn delete(creds: &Credentials, prior: &Value) -> Result<(), Diagnostic> {
    let id = text(prior, "id");
    let fail = |m: String| Diagnostic::error(format!("deleting FerryMQ configuration ({id})"), m);
    for agent in agents(creds, prior).map_err(fail)? {
        match agent.delete_configuration(&id).await {
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(fail(format!("agent {}: {e}", agent.address()))),
        }
    }
    Ok(())
}

/// Reads the latest revision back from the first host that has the configuration: a
/// configuration gone from every host leaves the state (and is planned again).
pub async fn read(creds: &Credentials, state: Value) -> ReadResponse {
    let mut resp = ReadResponse::default();
    let id = text(&state, "id");
    let agents = match agents(creds, &state) {
        Ok(a) => a,
        Err(m) => {
            resp.diagnostics.push(Diagnostic::error(
                format!("reading FerryMQ configuration ({id})"),
                m,
            ));
            resp.new_state = state;
            return resp;
        }
    };
    let mut not_found = 0;
    for agent in &agents {
        match agent.get_configuration(&id, 0).await {
            Ok(latest) => {
                resp.new_state = state_from(&latest, &state);
                return resp;
            }
            Err(ClientError::NotFound(_)) => not_found += 1,
            Err(e) => tracing::warn!("reading configuration {id} on {}: {e}", agent.address()),
        }
    }
    if not_found == agents.len() {
        tracing::warn!("configuration {id} is on none of its hosts; removing from state");
        return resp;
    }
    resp.diagnostics.push(Diagnostic::error(
        format!("reading FerryMQ configuration ({id})"),
        "no host of the configuration answered".to_string(),
    ));
    resp.new_state = state;
    resp
}

/// The state from the latest revision an agent holds, keeping `hosts` as configured (or, on
/// import, the one host it was read from).
pub fn state_from(latest: &ConfigurationRevision, prior: &Value) -> Value {
    let description = match (prior.get("description"), latest.description.as_str()) {
        (Value::Null, "") => Value::Null,
        (_, d) => Value::string(d),
    };
    Value::object([
        ("id", Value::string(&latest.id)),
        ("arn", Value::string(arn(&latest.id))),
        ("name", Value::string(&latest.name)),
        ("engine_type", Value::string(&latest.engine_type)),
        ("engine_version", Value::string(&latest.engine_version)),
        ("data", Value::string(&latest.data)),
        ("description", description),
        ("hosts", prior.get("hosts").clone()),
        ("latest_revision", Value::from(latest.latest_revision)),
    ])
}

/// `HOST/ID`: the address of one of the configuration's hosts and its id.
pub fn import(id: &str) -> (Vec<ImportedResource>, Diagnostics) {
    let parsed = id
        .rsplit_once('/')
        .filter(|(host, conf)| !host.is_empty() && configuration::id(conf).is_ok());
    let Some((host, conf)) = parsed else {
        return (
            vec![],
            vec![Diagnostic::error(
                "Invalid import id",
                format!(
                    "import id {id:?} must be HOST/CONFIGURATION_ID, e.g. 10.0.0.11/c-1234abcd-…"
                ),
            )],
        );
    };
    let state = Value::object([
        ("id", Value::string(conf)),
        ("hosts", Value::List(vec![Value::string(host)])),
    ]);
    (
        vec![ImportedResource {
            type_name: TYPE_NAME.into(),
            state,
            private: vec![],
        }],
        vec![],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data: &str) -> Value {
        Value::object([
            ("id", Value::Unknown),
            ("arn", Value::Unknown),
            ("name", Value::string("tuning")),
            ("engine_type", Value::string("ActiveMQ")),
            ("engine_version", Value::string("5.17.2")),
            ("data", Value::string(data)),
            ("description", Value::Null),
            ("hosts", Value::List(vec![Value::string("10.0.0.1")])),
            ("latest_revision", Value::Unknown),
        ])
    }

    const OK: &str = r#"<broker xmlns="http://activemq.apache.org/schema/core"><plugins><timeStampingBrokerPlugin zeroExpirationOverride="1000"/></plugins></broker>"#;

    #[test]
    fn forbidden_elements_are_refused_at_plan_with_the_element_named() {
        assert!(validate(&config(OK)).is_empty());
        let d = validate(&config(
            r#"<broker xmlns="http://activemq.apache.org/schema/core"><networkConnectors/></broker>"#,
        ));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].attribute, Some(AttributePath::root("data")));
        assert!(
            d[0].detail.contains("<broker/networkConnectors>"),
            "{}",
            d[0].detail
        );
    }

    #[test]
    fn data_changes_make_a_revision_and_names_force_replacement() {
        let mut prior = config(OK);
        prior.set_attr("id", "c-1");
        prior.set_attr("arn", arn("c-1"));
        prior.set_attr("latest_revision", 1u32);
        let mut changed = prior.clone();
        changed.set_attr("data", OK.replace("1000", "2000"));
        let resp = plan(PlanRequest {
            prior_state: prior.clone(),
            proposed_new_state: changed.clone(),
            config: changed,
            prior_private: vec![],
        });
        assert!(resp.requires_replace.is_empty());
        assert!(resp.planned_state.get("latest_revision").is_unknown());
        let mut renamed = prior.clone();
        renamed.set_attr("name", "other");
        let resp = plan(PlanRequest {
            prior_state: prior.clone(),
            proposed_new_state: renamed.clone(),
            config: renamed,
            prior_private: vec![],
        });
        assert_eq!(resp.requires_replace, vec![AttributePath::root("name")]);
        assert_eq!(resp.planned_state.get("latest_revision").as_i64(), Some(1));
    }

    #[test]
    fn state_round_trips_from_the_agent() {
        let mut prior = config(OK);
        prior.set_attr("id", "c-1");
        let latest = ConfigurationRevision {
            id: "c-1".into(),
            name: "tuning".into(),
            engine_type: "ActiveMQ".into(),
            engine_version: "5.17.2".into(),
            revision: 2,
            data: OK.into(),
            latest_revision: 2,
            ..Default::default()
        };
        let state = state_from(&latest, &prior);
        assert_eq!(state.get("latest_revision").as_i64(), Some(2));
        assert!(state.get("description").is_null());
        assert_eq!(state.get("hosts"), prior.get("hosts"));
        let (found, d) = import("10.0.0.1/c-1");
        assert!(d.is_empty());
        assert_eq!(found[0].state.get("id").as_str(), Some("c-1"));
        assert!(import("c-1").1[0].detail.contains("HOST/CONFIGURATION_ID"));
    }
}
