//! `ferrymq_broker`: Amazon MQ's `aws_mq_broker` on FerryMQ hosts.
//!
//! The schema mirrors `aws_mq_broker` so that a migration renames the resource and swaps the
//! AWS networking for `instance` blocks. Create and update send the whole desired spec to each
//! instance's agent (and each dedicated load-balancer host's, see
//! `ferrymq_api::load_balancer`) and wait until it reports RUNNING; read rebuilds the state from what the
//! agent observes (users as the engine has them), which is how drift shows up in a plan.

use crate::client::{Agent, ClientError, Credentials};
use crate::tfplugin::{
    ApplyRequest, ApplyResponse, Attribute, AttributePath, Block, Diagnostic, Diagnostics,
    ImportedResource, NestedBlock, PlanRequest, PlanResponse, ReadResponse, Schema, Type, Value,
};
use crate::validation::{self, DEFAULT_MODE};
use ferrymq_api::agent::{
    BrokerSpec, BrokerState, BrokerStatus, ConfigurationRef, EncryptionOptions, Instance,
    LoadBalancer, Logs, MaintenanceWindow, ServerCertificate, User,
};
use ferrymq_api::catalogue::DeploymentMode;
use std::time::Duration;

pub const TYPE_NAME: &str = "ferrymq_broker";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Changing any of these replaces the broker, as in Amazon MQ.
const FORCE_NEW: &[&str] = &[
    "broker_name",
    "engine_type",
    "deployment_mode",
    "storage_type",
    "instance",
    "encryption_options",
];

/// The blocks of at most one (`NestedBlock::single`), each null when left out.
const SINGLE_BLOCKS: &[&str] = &[
    "encryption_options",
    "load_balancer",
    "configuration",
    "logs",
    "server_certificate",
    "maintenance_window_start_time",
    "timeouts",
];

pub fn schema() -> Schema {
    let instance = Block::new()
        .description("One appliance host of the broker (Amazon MQ: a broker instance in a subnet).")
        .attribute(
            Attribute::required("host", Type::String)
                .description("The host's address (IP, or IP:port when its agent is not on 7443). The broker's listeners bind to it."),
        )
        .attribute(
            Attribute::required("volume", Type::String)
                .description("Block device that becomes the broker's data volume (the EBS volume). Formatted only when blank."),
        );
    let user = Block::new()
        .attribute(Attribute::required("username", Type::String))
        .attribute(
            Attribute::required("password", Type::String)
                .sensitive()
                .description("12 to 250 characters, at least 4 different ones, no ',' ':' '='."),
        )
        .attribute(
            Attribute::optional("console_access", Type::Bool).description(
                "Whether the user may use the web console (RabbitMQ: the administrator tag).",
            ),
        )
        .attribute(Attribute::optional("groups", Type::list(Type::String)).description(
            "ActiveMQ: groups of the authorization map (a group G may use only the queues and topics G and G.*; `admins` everything; a user with no group everything). RabbitMQ: user tags.",
        ));
    let encryption = Block::new()
        .description("Encryption at rest of the broker's block volume with LUKS2 (Amazon MQ: encryption_options).")
        .attribute(Attribute::required("key_file", Type::String).description(
            "Absolute path, on each host, of the file holding the volume key (the stand-in for a KMS key); the key itself never enters Terraform state.",
        ));
    let load_balancer = Block::new()
        .description("A network load balancer in front of the broker (Amazon MQ's NLB): HAProxy in TCP mode, health-checked so only instances that serve clients get them, behind a keepalived virtual IP that moves when its host dies.")
        .attribute(Attribute::required("virtual_ip", Type::String).description(
            "The address clients use: a free address of the hosts' network, held by one load-balancer host at a time.",
        ))
        .attribute(Attribute::optional("hosts", Type::list(Type::String)).description(
            "Addresses (IP or IP:agent port) of the hosts that run the load balancer; left out, the broker's own hosts. A host that is no instance's is a dedicated load-balancer host: its agent runs HAProxy and keepalived for the broker only.",
        ));
    let configuration = Block::new()
        .description("The ferrymq_configuration revision the broker runs (Amazon MQ: configuration { id, revision }).")
        .attribute(Attribute::required("id", Type::String).description("The ferrymq_configuration's id."))
        .attribute(Attribute::required("revision", Type::Number).description(
            "The revision to run, e.g. ferrymq_configuration.x.latest_revision; an earlier one rolls back.",
        ));
    let logs = Block::new()
        .description("Engine logs (Amazon MQ: CloudWatch Logs; FerryMQ: the journal, or files in the broker's directory on the host).")
        .attribute(Attribute::optional("general", Type::Bool).description(
            "The engine's general log at INFO; off (default): warnings and errors only.",
        ))
        .attribute(Attribute::optional("audit", Type::Bool).description(
            "ActiveMQ only: connection, session, producer and consumer events to audit.log.",
        ));
    let server_certificate = Block::new()
        .description("A server certificate from your own CA, served instead of one the agents issue from the deployment CA (Amazon MQ has no equivalent). It must name every instance's address, the certificate_names and the load balancer's virtual IP. The agents never renew it: apply a new one before it expires (the broker's status warns 30 days ahead). Remove the block to go back to an agent-issued certificate.")
        .attribute(Attribute::required("certificate_pem", Type::String).description(
            "The broker's certificate (PEM), for TLS servers (extended key usage serverAuth).",
        ))
        .attribute(
            Attribute::required("private_key_pem", Type::String)
                .sensitive()
                .description("Its unencrypted private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC). Kept on each host only in the broker's TLS directory (mode 0600), never in the agent's spec store nor in its answers."),
        )
        .attribute(Attribute::required("ca_chain_pem", Type::String).description(
            "The CA certificates above certificate_pem (PEM): intermediates, if any, then the root, which becomes ca_certificate.",
        ));
    let window = Block::new()
        .description("Weekly start of the two-hour window in which a new instance type or engine version is applied (Amazon MQ: maintenance_window_start_time). Without it the agents pick a window and report it in next_maintenance_window.")
        .attribute(Attribute::required("day_of_week", Type::String).description("MONDAY … SUNDAY."))
        .attribute(Attribute::required("time_of_day", Type::String).description("24-hour HH:MM, e.g. 02:30."))
        .attribute(Attribute::optional("time_zone", Type::String).description(
            "IANA name (Europe/Berlin) or UTC offset (UTC+02:00); UTC when unset. Named zones follow daylight-saving time.",
        ));
    let timeouts = Block::new()
        .attribute(Attribute::optional("create", Type::String))
        .attribute(Attribute::optional("update", Type::String))
        .attribute(Attribute::optional("delete", Type::String));
    let instances = Type::list(Type::object([
        ("console_url", Type::String),
        ("endpoints", Type::list(Type::String)),
        ("ip_address", Type::String),
        ("role", Type::String),
    ]));
    Schema::new(
        Block::new()
            .description("A message broker (ActiveMQ or RabbitMQ) on FerryMQ appliance hosts.")
            .attribute(Attribute::computed("id", Type::String).description("Broker id, b-<uuid>."))
            .attribute(Attribute::required("broker_name", Type::String))
            .attribute(
                Attribute::required("engine_type", Type::String)
                    .description("ActiveMQ or RabbitMQ."),
            )
            .attribute(Attribute::required("engine_version", Type::String))
            .attribute(
                Attribute::required("host_instance_type", Type::String)
                    .description("An Amazon MQ instance type, e.g. mq.m5.large."),
            )
            .attribute(
                Attribute::optional_computed("deployment_mode", Type::String).description(
                    "SINGLE_INSTANCE (default), ACTIVE_STANDBY_MULTI_AZ or CLUSTER_MULTI_AZ.",
                ),
            )
            .attribute(
                Attribute::optional_computed("storage_type", Type::String)
                    .description("ebs (default) or efs."),
            )
            .attribute(
                Attribute::computed("status", Type::String)
                    .description("Amazon MQ broker state, e.g. RUNNING."),
            )
            .attribute(
                Attribute::computed("instances", instances).description(
                    "Per instance: endpoints, console URL, address, role (active/standby, read live).",
                ),
            )
            .attribute(Attribute::optional("plain_listeners", Type::Bool).description(
                "Also serve plain (non-TLS) listeners on the engines' own ports (AMQP 5672 and console 15672; OpenWire 61616, STOMP 61613, MQTT 1883), for clients that cannot do TLS yet. Default false: TLS only, as on Amazon MQ.",
            ))
            .attribute(Attribute::optional("certificate_names", Type::list(Type::String)).description(
                "Extra DNS names or addresses (a load balancer's, a DNS alias) the broker's server certificate is issued for, beside every instance's address.",
            ))
            .attribute(Attribute::computed("ca_certificate", Type::String).description(
                "PEM of the deployment CA the broker's TLS certificate chains to (with a server_certificate block, the root of its ca_chain_pem): give it to clients to verify the broker.",
            ))
            .attribute(Attribute::computed("failover_url", Type::String).description(
                "failover:(…) URL over every instance's OpenWire (ssl://) endpoint, for ActiveMQ clients; empty for RabbitMQ.",
            ))
            .attribute(Attribute::computed("load_balancer_endpoint", Type::String).description(
                "The broker's first client endpoint through the load balancer's virtual IP (e.g. amqp://VIP:5672); empty without a load_balancer.",
            ))
            .attribute(Attribute::computed("load_balancer_endpoints", Type::list(Type::String)).description(
                "Every client endpoint (one per protocol) through the load balancer's virtual IP.",
            ))
            .attribute(Attribute::optional("apply_immediately", Type::Bool).description(
                "Apply a change that takes an engine restart (a new instance type, engine version or configuration revision) now instead of in the next maintenance window.",
            ))
            .attribute(Attribute::optional("auto_minor_version_upgrade", Type::Bool).description(
                "Upgrade the engine to the newest patch of its minor version that FerryMQ offers, in the maintenance window (as Amazon MQ). The broker then runs that patch while engine_version keeps the version you wrote; pending_engine_version shows the upgrade before the window.",
            ))
            .attribute(Attribute::computed("next_maintenance_window", Type::String).description(
                "Start (RFC 3339, UTC) of the maintenance window now open or of the next one.",
            ))
            .attribute(Attribute::computed("pending_changes", Type::list(Type::String)).description(
                "Applied changes waiting for the maintenance window, e.g. \"host_instance_type: mq.m5.large -> mq.t3.micro\".",
            ))
            .attribute(Attribute::computed("pending_engine_version", Type::String).description(
                "The engine version the broker runs after the next maintenance window, when it differs from the current one.",
            ))
            .block(NestedBlock::list("instance", instance))
            .block(NestedBlock::list("user", user))
            .block(NestedBlock::single("encryption_options", encryption))
            .block(NestedBlock::single("load_balancer", load_balancer))
            .block(NestedBlock::single("configuration", configuration))
            .block(NestedBlock::single("logs", logs))
            .block(NestedBlock::single("server_certificate", server_certificate))
            .block(NestedBlock::single("maintenance_window_start_time", window))
            .block(NestedBlock::single("timeouts", timeouts)),
    )
}

pub fn validate(config: &Value) -> Diagnostics {
    validation::broker(config)
}

pub fn plan(req: PlanRequest) -> PlanResponse {
    let mut resp = PlanResponse::default();
    if req.proposed_new_state.is_null() {
        return resp; // destroy
    }
    resp.diagnostics = validation::broker(&req.config);
    let mut planned = req.proposed_new_state.clone();
    // Terraform 1.0 proposes the prior value for a single block removed from the configuration
    // (objchange.proposedNew returns prior for a null config), then refuses a plan that keeps
    // it: a block the configuration leaves out is planned absent.
    for block in SINGLE_BLOCKS {
        if req.config.get(block).is_null() && !planned.get(block).is_null() {
            planned.set_attr(*block, Value::Null);
        }
    }
    if planned.get("deployment_mode").is_null() {
        planned.set_attr("deployment_mode", DEFAULT_MODE);
    }
    if planned.get("storage_type").is_null() {
        if let Some(mode) = planned
            .get("deployment_mode")
            .as_str()
            .and_then(|m| m.parse::<DeploymentMode>().ok())
        {
            planned.set_attr("storage_type", mode.default_storage().as_str());
        }
    }
    if req.prior_state.is_null() {
        for computed in [
            "id",
            "status",
            "instances",
            "failover_url",
            "load_balancer_endpoint",
            "load_balancer_endpoints",
            "ca_certificate",
            "next_maintenance_window",
            "pending_changes",
            "pending_engine_version",
        ] {
            planned.set_attr(computed, Value::Unknown);
        }
    } else {
        resp.requires_replace = FORCE_NEW
            .iter()
            .filter(|attr| planned.get(attr) != req.prior_state.get(attr))
            .map(|attr| AttributePath::root(*attr))
            .collect();
        resp.diagnostics
            .extend(engine_version_change(&req.prior_state, &planned));
        if planned != req.prior_state {
            // The broker reports its state and pending work again after the update.
            for computed in [
                "status",
                "next_maintenance_window",
                "pending_changes",
                "pending_engine_version",
            ] {
                planned.set_attr(computed, Value::Unknown);
            }
        }
        // Which CA clients verify with follows the certificate: supplied or issued.
        if planned.get("server_certificate") != req.prior_state.get("server_certificate") {
            planned.set_attr("ca_certificate", Value::Unknown);
        }
        if planned.get("load_balancer") != req.prior_state.get("load_balancer") {
            for computed in ["load_balancer_endpoint", "load_balancer_endpoints"] {
                planned.set_attr(computed, Value::Unknown);
            }
        }
        // Endpoints (the instances' and the load balancer's) list the plain listeners only
        // while they are served.
        if planned.get("plain_listeners") != req.prior_state.get("plain_listeners") {
            for computed in [
                "instances",
                "load_balancer_endpoint",
                "load_balancer_endpoints",
            ] {
                planned.set_attr(computed, Value::Unknown);
            }
        }
    }
    resp.planned_state = planned;
    resp
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
        format!("b-{}", uuid::Uuid::new_v4())
    } else {
        req.prior_state
            .get("id")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let op = if creating { "create" } else { "update" };
    let timeout = timeout(&req.planned_state, op);
    match converge(
        creds,
        &id,
        &req.planned_state,
        &req.prior_state,
        timeout,
        creating,
    )
    .await
    {
        Ok(statuses) => resp.new_state = state_from(&statuses, &req.planned_state),
        Err(msg) => {
            let verb = if creating { "creating" } else { "updating" };
            resp.diagnostics.push(Diagnostic::error(
                format!("{verb} FerryMQ broker ({id})"),
                msg,
            ));
            // Keep what exists in state (tainted on create) so it can be destroyed or retried.
            let mut partial = req.planned_state.clone();
            partial.set_attr("id", id.as_str());
            partial.set_attr("status", BrokerState::CreationFailed.as_str_name());
            // State must be fully known: what the failed apply never learned is left empty.
            for (attr, empty) in [
                ("instances", Value::List(vec![])),
                ("failover_url", Value::string("")),
                ("load_balancer_endpoint", Value::string("")),
                ("load_balancer_endpoints", Value::List(vec![])),
                ("ca_certificate", Value::string("")),
                ("next_maintenance_window", Value::string("")),
                ("pending_changes", Value::List(vec![])),
                ("pending_engine_version", Value::string("")),
            ] {
                if !partial.get(attr).is_fully_known() {
                    partial.set_attr(attr, empty);
                }
            }
            resp.new_state = if creating { partial } else { req.prior_state };
        }
    }
    resp
}

/// Applies the spec on every instance's host and on every dedicated load-balancer host, then
/// waits for each to report RUNNING; removes the load balancer from dedicated hosts the update
/// no longer lists. Returns the instances' statuses.
async fn converge(
    creds: &Credentials,
    id: &str,
    planned: &Value,
    prior: &Value,
    timeout: Duration,
    creating: bool,
) -> Result<Vec<BrokerStatus>, String> {
    let mut base = spec_from(id, planned);
    base.bundle_mirror = creds.bundle_mirror.clone();
    if creating && base.deployment_mode == DeploymentMode::ClusterMultiAz.as_str() {
        // Made once, sent to every instance, kept by the agents: updates send none.
        base.cluster_secret = cluster_secret();
    }
    let agents = agents(creds, planned)?;
    if let Some(conf) = &mut base.configuration {
        // Each host gets the revision's data in its spec: it runs what it was sent.
        let rev = super::configuration::fetch(&agents, &conf.id, conf.revision).await?;
        if rev.engine_type != base.engine_type {
            return Err(format!(
                "configuration {} is for {}, the broker runs {}",
                conf.id, rev.engine_type, base.engine_type
            ));
        }
        conf.data = rev.data;
    }
    let mut generations = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let mut spec = base.clone();
        spec.instance_index = i as u32;
        generations.push(apply_with_retry(agent, spec, timeout).await?);
    }
    let dedicated = dedicated_agents(creds, &base)?;
    let mut lb_generations = Vec::new();
    for (index, agent) in &dedicated {
        let spec = ferrymq_api::load_balancer::dedicated_spec(&base, *index);
        lb_generations.push(apply_with_retry(agent, spec, timeout).await?);
    }
    let mut statuses = Vec::new();
    for (agent, generation) in agents.iter().zip(generations) {
        statuses.push(
            agent
                .wait_running(id, generation, timeout)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    for ((_, agent), generation) in dedicated.iter().zip(lb_generations) {
        agent
            .wait_running(id, generation, timeout)
            .await
            .map_err(|e| format!("load balancer host: {e}"))?;
    }
    if !prior.is_null() {
        let kept: Vec<&str> = dedicated.iter().map(|(_, a)| a.address()).collect();
        let before = dedicated_agents(creds, &spec_from(id, prior))?;
        for (_, agent) in before.iter().filter(|(_, a)| !kept.contains(&a.address())) {
            match agent.delete(id).await {
                Ok(_) | Err(ClientError::NotFound(_)) => {
                    tracing::info!("load balancer of {id} removed from {}", agent.address());
                }
                Err(e) => {
                    return Err(format!(
                        "removing the load balancer from {}: {e}",
                        agent.address()
                    ))
                }
            }
        }
    }
    Ok(statuses)
}

/// The agents of the spec's dedicated load-balancer hosts (no instance's), with their index
/// in `load_balancer.hosts`.
fn dedicated_agents(creds: &Credentials, spec: &BrokerSpec) -> Result<Vec<(usize, Agent)>, String> {
    ferrymq_api::load_balancer::dedicated_hosts(spec)
        .into_iter()
        .map(|(i, host)| {
            Agent::new(&host, creds)
                .map(|a| (i, a))
                .map_err(|e| format!("{e:#}"))
        })
        .collect()
}

/// 244 random bits (two v4 UUIDs) from which the agents derive the cluster's Erlang cookie
/// and engine credential. It never enters Terraform state.
fn cluster_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// An agent that is restarting is retried until the timeout; a refusal is final. Returns the
/// generation the agent stored the spec as.
async fn apply_with_retry(
    agent: &Agent,
    spec: BrokerSpec,
    timeout: Duration,
) -> Result<u64, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match agent.apply(spec.clone()).await {
            Ok(status) => return Ok(status.generation),
            Err(ClientError::Unavailable(m)) if std::time::Instant::now() < deadline => {
                tracing::warn!("apply on {}: {m}; retrying", agent.address());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(format!("agent {} refused the broker: {e}", agent.address())),
        }
    }
}

/// Refuses, with the attribute path, an in-place `engine_version` change that is not an upgrade
/// path (a downgrade, a skipped RabbitMQ minor): it needs the prior state, so it is checked here
/// rather than in `validate`. A changed `engine_type` replaces the broker and is not checked.
fn engine_version_change(prior: &Value, planned: &Value) -> Diagnostics {
    let text = |v: &Value, a: &str| v.get(a).as_str().map(str::to_owned);
    let (Some(engine), Some(new_engine), Some(from), Some(to)) = (
        text(prior, "engine_type"),
        text(planned, "engine_type"),
        text(prior, "engine_version"),
        text(planned, "engine_version"),
    ) else {
        return Vec::new();
    };
    let Ok(engine) = engine.parse::<ferrymq_api::catalogue::EngineType>() else {
        return Vec::new();
    };
    if !engine.to_string().eq_ignore_ascii_case(&new_engine) {
        return Vec::new();
    }
    match ferrymq_api::validate::engine_version_change(engine, &from, &to) {
        Ok(()) => Vec::new(),
        Err(m) => vec![Diagnostic::error("Unsupported engine_version change", m)
            .at(AttributePath::root("engine_version"))],
    }
}

async fn delete(creds: &Credentials, prior: &Value) -> Result<(), Diagnostic> {
    let id = prior.get("id").as_str().unwrap_or_default();
    let fail = |m: String| Diagnostic::error(format!("deleting FerryMQ broker ({id})"), m);
    let dedicated = dedicated_agents(creds, &spec_from(id, prior)).map_err(fail)?;
    let all = agents(creds, prior)
        .map_err(fail)?
        .into_iter()
        .chain(dedicated.into_iter().map(|(_, a)| a));
    for agent in all {
        match agent.delete(id).await {
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(fail(format!("agent {}: {e}", agent.address()))),
        }
    }
    Ok(())
}

pub async fn read(creds: &Credentials, state: Value) -> ReadResponse {
    let mut resp = ReadResponse::default();
    let id = state.get("id").as_str().unwrap_or_default().to_string();
    let agents = match agents(creds, &state) {
        Ok(a) => a,
        Err(m) => {
            resp.diagnostics.push(Diagnostic::error(
                format!("reading FerryMQ broker ({id})"),
                m,
            ));
            resp.new_state = state;
            return resp;
        }
    };
    let mut statuses = Vec::new();
    for agent in &agents {
        match agent.get(&id).await {
            Ok(s) => statuses.push(s),
            // Gone from a host: Terraform drops it from state and plans to create it again.
            Err(ClientError::NotFound(_)) => {
                tracing::warn!(
                    "broker {id} not found on {}; removing from state",
                    agent.address()
                );
                return resp;
            }
            Err(e) => {
                resp.diagnostics.push(Diagnostic::error(
                    format!("reading FerryMQ broker ({id})"),
                    format!("agent {}: {e}", agent.address()),
                ));
                resp.new_state = state;
                return resp;
            }
        }
    }
    for (agent, status) in agents.iter().zip(&statuses) {
        for warning in &status.certificate_warnings {
            resp.diagnostics.push(Diagnostic::warning(
                format!("FerryMQ broker ({id}): a certificate ends soon"),
                format!("agent {}: {warning}", agent.address()),
            ));
        }
    }
    resp.new_state = state_from(&statuses, &state);
    read_dedicated(creds, &id, &mut resp).await;
    resp
}

/// A dedicated load-balancer host that lost the broker's load balancer leaves
/// `load_balancer.hosts` in state, so the plan puts it back; one that does not answer is
/// reported (the broker itself is fine: the virtual IP moved to another host).
async fn read_dedicated(creds: &Credentials, id: &str, resp: &mut ReadResponse) {
    let spec = spec_from(id, &resp.new_state);
    let dedicated = match dedicated_agents(creds, &spec) {
        Ok(d) => d,
        Err(m) => {
            resp.diagnostics.push(Diagnostic::warning(
                format!("reading FerryMQ broker ({id})"),
                m,
            ));
            return;
        }
    };
    let mut gone = Vec::new();
    for (index, agent) in &dedicated {
        match agent.get(id).await {
            Ok(_) => {}
            Err(ClientError::NotFound(_)) => gone.push(*index),
            Err(e) => resp.diagnostics.push(Diagnostic::warning(
                format!("reading FerryMQ broker ({id})"),
                format!("load balancer host {}: {e}", agent.address()),
            )),
        }
    }
    drop_load_balancer_hosts(&mut resp.new_state, &gone);
}

/// Removes `load_balancer.hosts[i]` for each i in `gone` from a state.
fn drop_load_balancer_hosts(state: &mut Value, gone: &[usize]) {
    if gone.is_empty() {
        return;
    }
    let mut lb = state.get("load_balancer").clone();
    let hosts: Vec<Value> = lb
        .get("hosts")
        .as_list()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, h)| h.clone())
        .collect();
    lb.set_attr("hosts", Value::List(hosts));
    state.set_attr("load_balancer", lb);
}

/// `HOST/ID`: the address of one of the broker's hosts and the broker id.
pub fn import(id: &str) -> (Vec<ImportedResource>, Diagnostics) {
    let parsed = id.rsplit_once('/').filter(|(host, broker)| {
        !host.is_empty() && ferrymq_api::validate::broker_id(broker).is_ok()
    });
    let Some((host, broker)) = parsed else {
        return (
            vec![],
            vec![Diagnostic::error(
                "Invalid import id",
                format!("import id {id:?} must be HOST/BROKER_ID, e.g. 10.0.0.11/b-1234abcd-…"),
            )],
        );
    };
    let state = Value::object([
        ("id", Value::string(broker)),
        (
            "instance",
            Value::List(vec![Value::object([
                ("host", Value::string(host)),
                ("volume", Value::Null),
            ])]),
        ),
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

fn agents(creds: &Credentials, value: &Value) -> Result<Vec<Agent>, String> {
    value
        .get("instance")
        .as_list()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let host = i.get("host").as_str().unwrap_or_default();
            Agent::new(host, creds).map_err(|e| format!("{e:#}"))
        })
        .collect()
}

fn timeout(value: &Value, op: &str) -> Duration {
    value
        .get("timeouts")
        .get(op)
        .as_str()
        .and_then(|t| validation::parse_duration(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn text(value: &Value, attr: &str) -> String {
    value.get(attr).as_str().unwrap_or_default().to_string()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// A list as configured: null stays null while it would be empty, and the configured order is
/// kept while the same names are there (engines report groups sorted).
pub fn string_list(prior: &Value, values: &[String]) -> Value {
    if prior.is_null() && values.is_empty() {
        return Value::Null;
    }
    let mut have = strings(prior);
    let mut want = values.to_vec();
    have.sort();
    want.sort();
    if have == want && prior.as_list().is_some() {
        return prior.clone();
    }
    Value::List(values.iter().map(Value::string).collect())
}

/// The agent's spec from a planned (fully known) state.
pub fn spec_from(id: &str, planned: &Value) -> BrokerSpec {
    let list = |attr: &str| planned.get(attr).as_list().unwrap_or_default().to_vec();
    BrokerSpec {
        broker_id: id.to_string(),
        broker_name: text(planned, "broker_name"),
        engine_type: text(planned, "engine_type"),
        engine_version: text(planned, "engine_version"),
        host_instance_type: text(planned, "host_instance_type"),
        deployment_mode: text(planned, "deployment_mode"),
        storage_type: text(planned, "storage_type"),
        instances: list("instance")
            .iter()
            .map(|i| Instance {
                host: text(i, "host"),
                volume: text(i, "volume"),
            })
            .collect(),
        instance_index: 0,
        users: list("user")
            .iter()
            .map(|u| User {
                username: text(u, "username"),
                password: text(u, "password"),
                console_access: u.get("console_access").as_bool().unwrap_or(false),
                groups: strings(u.get("groups")),
                ..Default::default()
            })
            .collect(),
        plain_listeners: planned.get("plain_listeners").as_bool().unwrap_or(false),
        certificate_names: strings(planned.get("certificate_names")),
        standalone_users: vec![],
        encryption: planned
            .get("encryption_options")
            .get("key_file")
            .as_str()
            .map(|key_file| EncryptionOptions {
                key_file: key_file.to_string(),
            }),
        maintenance_window: match planned.get("maintenance_window_start_time") {
            Value::Null => None,
            w => Some(MaintenanceWindow {
                day_of_week: text(w, "day_of_week"),
                time_of_day: text(w, "time_of_day"),
                time_zone: text(w, "time_zone"),
            }),
        },
        apply_immediately: planned.get("apply_immediately").as_bool().unwrap_or(false),
        auto_minor_version_upgrade: planned
            .get("auto_minor_version_upgrade")
            .as_bool()
            .unwrap_or(false),
        load_balancer: planned
            .get("load_balancer")
            .get("virtual_ip")
            .as_str()
            .map(|vip| LoadBalancer {
                virtual_ip: vip.to_string(),
                hosts: planned
                    .get("load_balancer")
                    .get("hosts")
                    .as_list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect(),
            }),
        // The revision's data is fetched from the hosts when applying.
        configuration: planned
            .get("configuration")
            .get("id")
            .as_str()
            .map(|id| ConfigurationRef {
                id: id.to_string(),
                revision: planned
                    .get("configuration")
                    .get("revision")
                    .as_i64()
                    .and_then(|r| u32::try_from(r).ok())
                    .unwrap_or(0),
                data: String::new(),
            }),
        server_certificate: match planned.get("server_certificate") {
            Value::Object(_) => Some(ServerCertificate {
                certificate_pem: text(planned.get("server_certificate"), "certificate_pem"),
                private_key_pem: text(planned.get("server_certificate"), "private_key_pem"),
                ca_chain_pem: text(planned.get("server_certificate"), "ca_chain_pem"),
            }),
            _ => None,
        },
        logs: match planned.get("logs") {
            Value::Object(_) => Some(Logs {
                general: planned
                    .get("logs")
                    .get("general")
                    .as_bool()
                    .unwrap_or(false),
                audit: planned.get("logs").get("audit").as_bool().unwrap_or(false),
            }),
            _ => None,
        },
        ..Default::default()
    }
}

/// `logs` as the agent stores it, keeping a flag the configuration left out (null) as null
/// while the broker has it off, so an unchanged configuration plans no change.
fn logs_state(logs: Option<&Logs>, prior: &Value) -> Value {
    let Some(logs) = logs else {
        return Value::Null;
    };
    let flag = |attr: &str, on: bool| match prior.get("logs").get(attr) {
        Value::Null if !on => Value::Null,
        _ => Value::Bool(on),
    };
    Value::object([
        ("general", flag("general", logs.general)),
        ("audit", flag("audit", logs.audit)),
    ])
}

/// `server_certificate` as the agents serve it, with the key from the prior state: the agents
/// never return it. A certificate changed on the hosts shows as a change to apply again.
fn server_certificate_state(supplied: Option<&ServerCertificate>, prior: &Value) -> Value {
    let Some(supplied) = supplied else {
        return Value::Null;
    };
    Value::object([
        ("certificate_pem", Value::string(&supplied.certificate_pem)),
        (
            "private_key_pem",
            prior
                .get("server_certificate")
                .get("private_key_pem")
                .clone(),
        ),
        ("ca_chain_pem", Value::string(&supplied.ca_chain_pem)),
    ])
}

/// The window block as the agent stores it, keeping the user's null `time_zone` (UTC) null.
fn window_state(spec: &BrokerSpec, prior: &Value) -> Value {
    let Some(w) = &spec.maintenance_window else {
        return Value::Null;
    };
    let prior_zone = prior.get("maintenance_window_start_time").get("time_zone");
    let zone = if w.time_zone.is_empty() && prior_zone.is_null() {
        Value::Null
    } else {
        Value::string(&w.time_zone)
    };
    Value::object([
        ("day_of_week", Value::string(&w.day_of_week)),
        ("time_of_day", Value::string(&w.time_of_day)),
        ("time_zone", zone),
    ])
}

/// The state as the agents report the broker, keeping what only the configuration knows
/// (passwords, timeouts, how `console_access` was written).
pub fn state_from(statuses: &[BrokerStatus], prior: &Value) -> Value {
    let Some(first) = statuses.first() else {
        return prior.clone();
    };
    let spec = first.spec.clone().unwrap_or_default();
    let running = first.state == BrokerState::Running as i32;
    // The engine's users are the truth once it runs; before, the stored spec is all there is.
    let mut observed: Vec<User> = if running {
        first.users.clone()
    } else {
        spec.users.clone()
    };
    // Users managed by their own `ferrymq_user` resources are not this resource's.
    observed.retain(|o| {
        !spec
            .standalone_users
            .iter()
            .any(|s| s.username == o.username)
    });
    let prior_users = prior.get("user").as_list().unwrap_or_default();
    let mut users = Vec::new();
    for p in prior_users {
        let name = p.get("username").as_str().unwrap_or_default();
        let Some(o) = observed.iter().find(|o| o.username == name) else {
            continue; // removed behind Terraform's back: the plan adds it again
        };
        let password = if first.users_with_password_drift.iter().any(|d| d == name) {
            Value::Null // changed on the broker: the plan sets it again
        } else {
            p.get("password").clone()
        };
        let console = match p.get("console_access") {
            Value::Null if !o.console_access => Value::Null,
            _ => Value::Bool(o.console_access),
        };
        users.push(Value::object([
            ("username", Value::string(name)),
            ("password", password),
            ("console_access", console),
            ("groups", string_list(p.get("groups"), &o.groups)),
        ]));
    }
    for o in &observed {
        if !prior_users
            .iter()
            .any(|p| p.get("username").as_str() == Some(&o.username))
        {
            users.push(Value::object([
                ("username", Value::string(&o.username)),
                ("password", Value::Null),
                ("console_access", Value::Bool(o.console_access)),
                ("groups", string_list(&Value::Null, &o.groups)),
            ]));
        }
    }
    let instances = statuses
        .iter()
        .map(|s| {
            Value::object([
                ("console_url", Value::string(&s.console_url)),
                (
                    "endpoints",
                    Value::List(s.endpoints.iter().map(Value::string).collect()),
                ),
                ("ip_address", Value::string(&s.ip_address)),
                ("role", Value::string(&s.role)),
            ])
        })
        .collect();
    let openwire: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s.endpoints.iter().find(|e| e.starts_with("ssl://")))
        .map(String::as_str)
        .collect();
    let failover_url = if openwire.is_empty() {
        String::new()
    } else {
        format!("failover:({})", openwire.join(","))
    };
    // Every instance gates the same changes; a roll-out half done shows what is left anywhere.
    let mut pending_changes: Vec<Value> = Vec::new();
    for change in statuses.iter().flat_map(|s| &s.pending_changes) {
        let change = Value::string(change);
        if !pending_changes.contains(&change) {
            pending_changes.push(change);
        }
    }
    let status = statuses
        .iter()
        .map(|s| BrokerState::try_from(s.state).unwrap_or(BrokerState::Unspecified))
        .find(|s| *s != BrokerState::Running)
        .unwrap_or(BrokerState::Running);
    Value::object([
        ("id", Value::string(&spec.broker_id)),
        ("broker_name", Value::string(&spec.broker_name)),
        ("engine_type", Value::string(&spec.engine_type)),
        ("engine_version", Value::string(&spec.engine_version)),
        (
            "host_instance_type",
            Value::string(&spec.host_instance_type),
        ),
        ("deployment_mode", Value::string(&spec.deployment_mode)),
        ("storage_type", Value::string(&spec.storage_type)),
        ("status", Value::string(status.as_str_name())),
        ("instances", Value::List(instances)),
        ("failover_url", Value::string(failover_url)),
        ("ca_certificate", Value::string(&first.ca_certificate)),
        (
            "plain_listeners",
            match prior.get("plain_listeners") {
                Value::Null if !spec.plain_listeners => Value::Null,
                _ => Value::Bool(spec.plain_listeners),
            },
        ),
        (
            "certificate_names",
            string_list(prior.get("certificate_names"), &spec.certificate_names),
        ),
        (
            "instance",
            Value::List(
                spec.instances
                    .iter()
                    .map(|i| {
                        Value::object([
                            ("host", Value::string(&i.host)),
                            ("volume", Value::string(&i.volume)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("user", Value::List(users)),
        (
            "encryption_options",
            spec.encryption
                .as_ref()
                .map(|e| Value::object([("key_file", Value::string(&e.key_file))]))
                .unwrap_or(Value::Null),
        ),
        (
            "load_balancer",
            spec.load_balancer
                .as_ref()
                .map(|lb| {
                    let hosts = if lb.hosts.is_empty() {
                        Value::Null // left out: the broker's hosts
                    } else {
                        Value::List(lb.hosts.iter().map(Value::string).collect())
                    };
                    Value::object([
                        ("virtual_ip", Value::string(&lb.virtual_ip)),
                        ("hosts", hosts),
                    ])
                })
                .unwrap_or(Value::Null),
        ),
        (
            "configuration",
            spec.configuration
                .as_ref()
                .map(|c| {
                    Value::object([
                        ("id", Value::string(&c.id)),
                        ("revision", Value::from(c.revision)),
                    ])
                })
                .unwrap_or(Value::Null),
        ),
        (
            "load_balancer_endpoint",
            Value::string(
                first
                    .load_balancer_endpoints
                    .first()
                    .cloned()
                    .unwrap_or_default(),
            ),
        ),
        (
            "load_balancer_endpoints",
            Value::List(
                first
                    .load_balancer_endpoints
                    .iter()
                    .map(Value::string)
                    .collect(),
            ),
        ),
        ("logs", logs_state(spec.logs.as_ref(), prior)),
        (
            "server_certificate",
            server_certificate_state(spec.server_certificate.as_ref(), prior),
        ),
        ("timeouts", prior.get("timeouts").clone()),
        ("maintenance_window_start_time", window_state(&spec, prior)),
        (
            "apply_immediately",
            optional_flag(prior, "apply_immediately", spec.apply_immediately),
        ),
        (
            "auto_minor_version_upgrade",
            optional_flag(
                prior,
                "auto_minor_version_upgrade",
                spec.auto_minor_version_upgrade,
            ),
        ),
        (
            "next_maintenance_window",
            Value::string(&first.next_maintenance_window),
        ),
        ("pending_changes", Value::List(pending_changes)),
        (
            "pending_engine_version",
            Value::string(&first.pending_engine_version),
        ),
    ])
}

/// An optional flag as the state keeps it: left unset (null) while it is unset in the
/// configuration and false, so a plan shows no change for a flag the user never wrote.
fn optional_flag(prior: &Value, name: &str, value: bool) -> Value {
    match prior.get(name) {
        Value::Null if !value => Value::Null,
        _ => Value::Bool(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned() -> Value {
        Value::object([
            ("id", Value::Unknown),
            ("broker_name", Value::string("orders")),
            ("engine_type", Value::string("RabbitMQ")),
            ("engine_version", Value::string("3.10.8")),
            ("host_instance_type", Value::string("mq.m5.large")),
            ("deployment_mode", Value::Null),
            ("storage_type", Value::Null),
            ("status", Value::Unknown),
            ("instances", Value::Unknown),
            (
                "instance",
                Value::List(vec![Value::object([
                    ("host", Value::string("10.0.0.1")),
                    ("volume", Value::string("/dev/loop0")),
                ])]),
            ),
            (
                "user",
                Value::List(vec![Value::object([
                    ("username", Value::string("app")),
                    ("password", Value::string("twelve-chars-ok")),
                    ("console_access", Value::Null),
                    ("groups", Value::Null),
                ])]),
            ),
            ("timeouts", Value::Null),
        ])
    }

    fn running(spec: BrokerSpec) -> BrokerStatus {
        BrokerStatus {
            state: BrokerState::Running as i32,
            endpoints: vec!["amqp://10.0.0.1:5672".into()],
            console_url: "http://10.0.0.1:15672".into(),
            ip_address: "10.0.0.1".into(),
            users: spec
                .users
                .iter()
                .map(|u| User {
                    password: String::new(),
                    ..u.clone()
                })
                .collect(),
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn create_plans_defaults_and_unknown_computed_values() {
        let resp = plan(PlanRequest {
            prior_state: Value::Null,
            proposed_new_state: planned(),
            config: planned(),
            prior_private: vec![],
        });
        assert!(resp.diagnostics.is_empty());
        assert_eq!(
            resp.planned_state.get("deployment_mode").as_str(),
            Some("SINGLE_INSTANCE")
        );
        assert_eq!(resp.planned_state.get("storage_type").as_str(), Some("ebs"));
        assert!(resp.planned_state.get("id").is_unknown());
    }

    #[test]
    fn state_round_trips_through_the_agent_and_plans_no_changes() {
        let mut p = planned();
        p.set_attr("deployment_mode", "SINGLE_INSTANCE");
        p.set_attr("storage_type", "ebs");
        let spec = spec_from("b-1", &p);
        assert_eq!(spec.users[0].password, "twelve-chars-ok");
        let state = state_from(&[running(spec)], &p);
        assert_eq!(state.get("id").as_str(), Some("b-1"));
        assert_eq!(state.get("status").as_str(), Some("RUNNING"));
        assert_eq!(
            state.get("user"),
            p.get("user"),
            "password and null console_access kept"
        );
        let again = plan(PlanRequest {
            prior_state: state.clone(),
            proposed_new_state: state.clone(),
            config: p,
            prior_private: vec![],
        });
        assert_eq!(again.planned_state, state);
        assert!(again.requires_replace.is_empty());
    }

    #[test]
    fn a_supplied_certificate_keeps_its_key_out_of_the_agents_answers_and_in_state() {
        let mut p = planned();
        p.set_attr("deployment_mode", "SINGLE_INSTANCE");
        p.set_attr("storage_type", "ebs");
        p.set_attr(
            "server_certificate",
            Value::object([
                ("certificate_pem", Value::string("CERT")),
                ("private_key_pem", Value::string("KEY")),
                ("ca_chain_pem", Value::string("CHAIN")),
            ]),
        );
        let mut spec = spec_from("b-1", &p);
        let sent = spec.server_certificate.clone().expect("sent");
        assert_eq!(sent.private_key_pem, "KEY");
        // The agent answers without the key; the state keeps the configuration's.
        if let Some(c) = spec.server_certificate.as_mut() {
            c.private_key_pem.clear();
        }
        let mut status = running(spec);
        status.ca_certificate = "ROOT".into();
        let state = state_from(&[status], &p);
        assert_eq!(state.get("server_certificate"), p.get("server_certificate"));
        assert_eq!(state.get("ca_certificate").as_str(), Some("ROOT"));
        let same = plan(PlanRequest {
            prior_state: state.clone(),
            proposed_new_state: state.clone(),
            config: p.clone(),
            prior_private: vec![],
        });
        assert_eq!(same.planned_state, state);
        // Back to an issued certificate: another CA for clients, known after apply.
        // Terraform 1.0 proposes the prior block although the configuration dropped it.
        let mut config = p;
        config.set_attr("server_certificate", Value::Null);
        let back = plan(PlanRequest {
            prior_state: state.clone(),
            proposed_new_state: state,
            config,
            prior_private: vec![],
        });
        assert!(back.planned_state.get("server_certificate").is_null());
        assert!(back.planned_state.get("ca_certificate").is_unknown());
    }

    #[test]
    fn turning_plain_listeners_off_leaves_the_endpoints_to_the_apply() {
        let mut p = planned();
        p.set_attr("deployment_mode", "SINGLE_INSTANCE");
        p.set_attr("storage_type", "ebs");
        p.set_attr("plain_listeners", true);
        let state = state_from(&[running(spec_from("b-1", &p))], &p);
        let mut proposed = state.clone();
        proposed.set_attr("plain_listeners", false);
        let resp = plan(PlanRequest {
            prior_state: state,
            proposed_new_state: proposed.clone(),
            config: proposed,
            prior_private: vec![],
        });
        assert!(resp.planned_state.get("instances").is_unknown());
        assert!(resp.requires_replace.is_empty());
    }

    #[test]
    fn drift_shows_as_changed_users() {
        let mut p = planned();
        p.set_attr("deployment_mode", "SINGLE_INSTANCE");
        let spec = spec_from("b-1", &p);
        let mut status = running(spec);
        status.users_with_password_drift = vec!["app".into()];
        status.users.push(User {
            username: "intruder".into(),
            ..Default::default()
        });
        let state = state_from(&[status], &p);
        let users = state.get("user").as_list().expect("users");
        assert!(users[0].get("password").is_null());
        assert_eq!(users[1].get("username").as_str(), Some("intruder"));
    }

    #[test]
    fn renaming_forces_replacement_and_user_changes_do_not() {
        let mut prior = planned();
        prior.set_attr("id", "b-1");
        prior.set_attr("status", "RUNNING");
        prior.set_attr("instances", Value::List(vec![]));
        prior.set_attr("deployment_mode", "SINGLE_INSTANCE");
        prior.set_attr("storage_type", "ebs");
        let mut renamed = prior.clone();
        renamed.set_attr("broker_name", "other");
        let resp = plan(PlanRequest {
            prior_state: prior.clone(),
            proposed_new_state: renamed.clone(),
            config: renamed,
            prior_private: vec![],
        });
        assert_eq!(
            resp.requires_replace,
            vec![AttributePath::root("broker_name")]
        );
        let mut more_users = prior.clone();
        more_users.set_attr("user", Value::List(vec![]));
        let resp = plan(PlanRequest {
            prior_state: prior,
            proposed_new_state: more_users.clone(),
            config: more_users,
            prior_private: vec![],
        });
        assert!(resp.requires_replace.is_empty());
        assert!(resp.planned_state.get("status").is_unknown());
    }

    #[test]
    fn load_balancer_round_trips_and_cluster_secrets_stay_out_of_state() {
        let mut p = planned();
        p.set_attr("deployment_mode", "SINGLE_INSTANCE");
        p.set_attr("storage_type", "ebs");
        p.set_attr(
            "load_balancer",
            Value::object([
                ("virtual_ip", Value::string("10.0.0.100")),
                ("hosts", Value::Null),
            ]),
        );
        let spec = spec_from("b-1", &p);
        let lb = spec.load_balancer.clone().expect("load balancer");
        assert_eq!((lb.virtual_ip.as_str(), lb.hosts.len()), ("10.0.0.100", 0));
        assert!(spec.cluster_secret.is_empty());
        let mut status = running(spec);
        status.load_balancer_endpoints = vec!["amqp://10.0.0.100:5672".into()];
        let state = state_from(&[status], &p);
        assert_eq!(state.get("load_balancer"), p.get("load_balancer"));
        assert_eq!(
            state.get("load_balancer_endpoint").as_str(),
            Some("amqp://10.0.0.100:5672")
        );
        let a = cluster_secret();
        assert!(a.len() == 64 && a != cluster_secret());
    }

    #[test]
    fn dedicated_load_balancer_hosts_come_from_the_plan_and_leave_state_when_gone() {
        let mut p = planned();
        p.set_attr(
            "load_balancer",
            Value::object([
                ("virtual_ip", Value::string("10.0.0.100")),
                (
                    "hosts",
                    Value::List(vec![
                        Value::string("10.0.0.1"),
                        Value::string("10.0.0.8"),
                        Value::string("10.0.0.9:7443"),
                    ]),
                ),
            ]),
        );
        let spec = spec_from("b-1", &p);
        let hosts = ferrymq_api::load_balancer::dedicated_hosts(&spec);
        assert_eq!(
            hosts,
            [
                (1, "10.0.0.8".to_string()),
                (2, "10.0.0.9:7443".to_string())
            ]
        );
        drop_load_balancer_hosts(&mut p, &[1]);
        assert_eq!(
            p.get("load_balancer").get("hosts"),
            &Value::List(vec![
                Value::string("10.0.0.1"),
                Value::string("10.0.0.9:7443")
            ])
        );
    }

    #[test]
    fn downgrades_and_skipped_minors_are_refused_at_plan_with_the_path() {
        let mut prior = planned();
        prior.set_attr("id", "b-1");
        prior.set_attr("deployment_mode", "SINGLE_INSTANCE");
        prior.set_attr("storage_type", "ebs");
        for (from, to, ok) in [("3.10.8", "3.12.13", false), ("3.10.8", "3.10.8", true)] {
            prior.set_attr("engine_version", from);
            let mut next = prior.clone();
            next.set_attr("engine_version", to);
            let resp = plan(PlanRequest {
                prior_state: prior.clone(),
                proposed_new_state: next.clone(),
                config: next,
                prior_private: vec![],
            });
            let found: Vec<_> = resp
                .diagnostics
                .iter()
                .filter(|d| d.attribute == Some(AttributePath::root("engine_version")))
                .collect();
            assert_eq!(found.is_empty(), ok, "{from} -> {to}: {found:?}");
        }
    }

    #[test]
    fn import_ids_name_a_host_and_a_broker() {
        let (found, d) = import("10.0.0.1/b-1234");
        assert!(d.is_empty());
        assert_eq!(found[0].state.get("id").as_str(), Some("b-1234"));
        let (found, d) = import("b-1234");
        assert!(found.is_empty() && d[0].detail.contains("HOST/BROKER_ID"));
    }
}
