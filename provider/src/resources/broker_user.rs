//! `ferrymq_user`: one user of a broker, managed apart from the broker's `user` blocks (for a
//! user owned by another team's configuration, or many users that should not replan the
//! broker). Amazon MQ has `aws_mq_broker`'s `user` blocks only; the attributes are the same.
//!
//! The user goes to every instance of the broker (found from the one `host` given), each agent
//! stores it with the broker, password hashed, and converges the engine. Read asks the engine:
//! a user removed or changed behind Terraform's back shows in the next plan.

use crate::client::{Agent, ClientError, Credentials};
use crate::tfplugin::{
    ApplyRequest, ApplyResponse, Attribute, AttributePath, Block, Diagnostic, Diagnostics,
    ImportedResource, PlanRequest, PlanResponse, ReadResponse, Schema, Type, Value,
};
use crate::validation;
use ferrymq_api::agent::User;
use ferrymq_api::validate;
use std::time::Duration;

pub const TYPE_NAME: &str = "ferrymq_user";
const TIMEOUT: Duration = Duration::from_secs(10 * 60);
const FORCE_NEW: &[&str] = &["broker_id", "host", "username"];

pub fn schema() -> Schema {
    Schema::new(
        Block::new()
            .description("A user of a FerryMQ broker, managed on its own.")
            .attribute(
                Attribute::computed("id", Type::String).description("BROKER_ID/USERNAME."),
            )
            .attribute(
                Attribute::required("broker_id", Type::String)
                    .description("The broker's id (ferrymq_broker.NAME.id)."),
            )
            .attribute(Attribute::required("host", Type::String).description(
                "The address of one of the broker's hosts (its instance.host); the user goes to every instance.",
            ))
            .attribute(Attribute::required("username", Type::String))
            .attribute(
                Attribute::required("password", Type::String)
                    .sensitive()
                    .description("12 to 250 characters, at least 4 different ones, no ',' ':' '='."),
            )
            .attribute(Attribute::optional("console_access", Type::Bool))
            .attribute(Attribute::optional("groups", Type::list(Type::String)).description(
                "As in ferrymq_broker's user blocks: ActiveMQ authorization groups, RabbitMQ tags.",
            )),
    )
}

pub fn validate(config: &Value) -> Diagnostics {
    let mut d = Vec::new();
    let mut check = |attr: &str, r: Result<(), String>| {
        if let Err(m) = r {
            d.push(Diagnostic::error(format!("Invalid {attr}"), m).at(AttributePath::root(attr)));
        }
    };
    if let Some(id) = config.get("broker_id").as_str() {
        check("broker_id", validate::broker_id(id));
    }
    if let Some(name) = config.get("username").as_str() {
        check("username", validate::username(name));
    }
    if let Some(pw) = config.get("password").as_str() {
        check("password", validate::password(pw));
    }
    d.extend(validation::groups(
        config.get("groups"),
        AttributePath::root("groups"),
    ));
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
        planned.set_attr("id", Value::Unknown);
    } else {
        resp.requires_replace = FORCE_NEW
            .iter()
            .filter(|a| planned.get(a) != req.prior_state.get(a))
            .map(|a| AttributePath::root(*a))
            .collect();
    }
    resp.planned_state = planned;
    resp
}

fn text(v: &Value, attr: &str) -> String {
    v.get(attr).as_str().unwrap_or_default().to_string()
}

fn user_from(v: &Value) -> User {
    User {
        username: text(v, "username"),
        password: text(v, "password"),
        console_access: v.get("console_access").as_bool().unwrap_or(false),
        groups: v
            .get("groups")
            .as_list()
            .unwrap_or_default()
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        ..Default::default()
    }
}

/// The agents of every instance of the broker, from the spec the given host stores.
async fn instance_agents(creds: &Credentials, state: &Value) -> Result<Vec<Agent>, ClientError> {
    let host = text(state, "host");
    let broker_id = text(state, "broker_id");
    let first = Agent::new(&host, creds).map_err(|e| ClientError::Refused(format!("{e:#}")))?;
    let status = first.get(&broker_id).await?;
    let hosts: Vec<String> = status
        .spec
        .map(|s| s.instances.into_iter().map(|i| i.host).collect())
        .unwrap_or_default();
    if hosts.is_empty() {
        return Ok(vec![first]);
    }
    hosts
        .iter()
        .map(|h| Agent::new(h, creds).map_err(|e| ClientError::Refused(format!("{e:#}"))))
        .collect()
}

pub async fn apply(creds: &Credentials, req: ApplyRequest) -> ApplyResponse {
    let mut resp = ApplyResponse::default();
    let state = if req.planned_state.is_null() {
        &req.prior_state
    } else {
        &req.planned_state
    };
    let broker_id = text(state, "broker_id");
    let username = text(state, "username");
    let verb = if req.planned_state.is_null() {
        "deleting"
    } else if req.prior_state.is_null() {
        "creating"
    } else {
        "updating"
    };
    let result = if req.planned_state.is_null() {
        delete(creds, state).await
    } else {
        put(creds, state).await
    };
    match result {
        Ok(()) if req.planned_state.is_null() => {}
        Ok(()) => {
            let mut new_state = req.planned_state.clone();
            new_state.set_attr("id", format!("{broker_id}/{username}"));
            resp.new_state = new_state;
        }
        Err(e) => {
            resp.diagnostics.push(Diagnostic::error(
                format!("{verb} FerryMQ user ({broker_id}/{username})"),
                e.to_string(),
            ));
            resp.new_state = req.prior_state;
        }
    }
    resp
}

async fn put(creds: &Credentials, planned: &Value) -> Result<(), ClientError> {
    let broker_id = text(planned, "broker_id");
    let user = user_from(planned);
    let agents = instance_agents(creds, planned).await?;
    let mut generations = Vec::new();
    for agent in &agents {
        generations.push(agent.apply_user(&broker_id, user.clone()).await?.generation);
    }
    for (agent, generation) in agents.iter().zip(generations) {
        agent.wait_running(&broker_id, generation, TIMEOUT).await?;
    }
    Ok(())
}

/// Removes the user from every instance and waits until the engines no longer have it.
async fn delete(creds: &Credentials, prior: &Value) -> Result<(), ClientError> {
    let broker_id = text(prior, "broker_id");
    let username = text(prior, "username");
    let agents = match instance_agents(creds, prior).await {
        Ok(a) => a,
        Err(ClientError::NotFound(_)) => return Ok(()), // the broker is gone, and its users
        Err(e) => return Err(e),
    };
    for agent in &agents {
        agent.delete_user(&broker_id, &username).await?;
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    for agent in &agents {
        loop {
            match agent.get_user(&broker_id, &username).await {
                Err(ClientError::NotFound(_)) => break,
                Err(e) => return Err(e),
                Ok(_) if std::time::Instant::now() >= deadline => {
                    return Err(ClientError::Unavailable(format!(
                        "user {username} still on {} after {}s",
                        agent.address(),
                        TIMEOUT.as_secs()
                    )))
                }
                Ok(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
    Ok(())
}

pub async fn read(creds: &Credentials, state: Value) -> ReadResponse {
    let mut resp = ReadResponse::default();
    let broker_id = text(&state, "broker_id");
    let username = text(&state, "username");
    let agent = match Agent::new(&text(&state, "host"), creds) {
        Ok(a) => a,
        Err(e) => {
            resp.diagnostics.push(Diagnostic::error(
                format!("reading FerryMQ user ({broker_id}/{username})"),
                format!("{e:#}"),
            ));
            resp.new_state = state;
            return resp;
        }
    };
    match agent.get_user(&broker_id, &username).await {
        Ok(status) => {
            let user = status.user.unwrap_or_default();
            resp.new_state = state_from(&state, &user, status.password_drift);
        }
        // Removed behind Terraform's back (or the broker is gone): planned again.
        Err(ClientError::NotFound(_)) => {
            tracing::warn!("user {username} of broker {broker_id} not found; removing from state")
        }
        Err(e) => {
            resp.diagnostics.push(Diagnostic::error(
                format!("reading FerryMQ user ({broker_id}/{username})"),
                e.to_string(),
            ));
            resp.new_state = state;
        }
    }
    resp
}

/// The state as the engine has the user, keeping what only the configuration knows (the
/// password, unless it drifted, and how unset attributes were written).
fn state_from(prior: &Value, user: &User, password_drift: bool) -> Value {
    let mut state = prior.clone();
    state.set_attr(
        "id",
        format!("{}/{}", text(prior, "broker_id"), user.username),
    );
    state.set_attr("username", user.username.as_str());
    if password_drift {
        state.set_attr("password", Value::Null);
    }
    let console = match prior.get("console_access") {
        Value::Null if !user.console_access => Value::Null,
        _ => Value::Bool(user.console_access),
    };
    state.set_attr("console_access", console);
    state.set_attr(
        "groups",
        super::broker::string_list(prior.get("groups"), &user.groups),
    );
    state
}

/// `HOST/BROKER_ID/USERNAME`. The password is not known after an import: the next plan sets it.
pub fn import(id: &str) -> (Vec<ImportedResource>, Diagnostics) {
    let parts: Vec<&str> = id.rsplitn(3, '/').collect();
    let ok = parts.len() == 3
        && !parts[2].is_empty()
        && validate::broker_id(parts[1]).is_ok()
        && validate::username(parts[0]).is_ok();
    if !ok {
        return (
            vec![],
            vec![Diagnostic::error(
                "Invalid import id",
                format!("import id {id:?} must be HOST/BROKER_ID/USERNAME"),
            )],
        );
    }
    let (username, broker_id, host) = (parts[0], parts[1], parts[2]);
    let state = Value::object([
        ("id", Value::string(format!("{broker_id}/{username}"))),
        ("broker_id", Value::string(broker_id)),
        ("host", Value::string(host)),
        ("username", Value::string(username)),
        ("password", Value::Null),
        ("console_access", Value::Null),
        ("groups", Value::Null),
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

    fn state() -> Value {
        Value::object([
            ("id", Value::string("b-1/app")),
            ("broker_id", Value::string("b-1")),
            ("host", Value::string("10.0.0.1")),
            ("username", Value::string("app")),
            ("password", Value::string("app-password-12")),
            ("console_access", Value::Null),
            ("groups", Value::Null),
        ])
    }

    #[test]
    fn read_keeps_the_password_until_it_drifts() {
        let user = User {
            username: "app".into(),
            ..Default::default()
        };
        assert_eq!(state_from(&state(), &user, false), state());
        let drifted = state_from(&state(), &user, true);
        assert!(drifted.get("password").is_null());
        let changed = User {
            username: "app".into(),
            console_access: true,
            groups: vec!["orders".into()],
            ..Default::default()
        };
        let s = state_from(&state(), &changed, false);
        assert_eq!(s.get("console_access").as_bool(), Some(true));
        assert_eq!(s.get("groups").as_list().map(<[Value]>::len), Some(1));
        // The engine reports groups sorted: the configured order stays.
        let mut configured = state();
        configured.set_attr(
            "groups",
            Value::List(vec![Value::string("orders"), Value::string("audit")]),
        );
        let sorted = User {
            username: "app".into(),
            groups: vec!["audit".into(), "orders".into()],
            ..Default::default()
        };
        assert_eq!(state_from(&configured, &sorted, false), configured);
    }

    #[test]
    fn plan_replaces_on_a_new_broker_host_or_name_only() {
        let mut moved = state();
        moved.set_attr("password", "other-password-1");
        let resp = plan(PlanRequest {
            prior_state: state(),
            proposed_new_state: moved.clone(),
            config: moved,
            prior_private: vec![],
        });
        assert!(resp.requires_replace.is_empty() && resp.diagnostics.is_empty());
        let mut renamed = state();
        renamed.set_attr("username", "other");
        let resp = plan(PlanRequest {
            prior_state: state(),
            proposed_new_state: renamed.clone(),
            config: renamed,
            prior_private: vec![],
        });
        assert_eq!(resp.requires_replace, vec![AttributePath::root("username")]);
    }

    #[test]
    fn bad_input_is_refused_with_its_attribute() {
        let mut bad = state();
        bad.set_attr("password", "short");
        bad.set_attr(
            "groups",
            Value::List(vec![Value::string("ok"), Value::string("no.dots")]),
        );
        let d = validate(&bad);
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn import_ids() {
        let (found, d) = import("10.0.0.1:7443/b-1234/app");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(found[0].state.get("host").as_str(), Some("10.0.0.1:7443"));
        assert_eq!(found[0].state.get("username").as_str(), Some("app"));
        assert!(!import("b-1234/app").1.is_empty());
    }
}
