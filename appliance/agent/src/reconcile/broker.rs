//! One broker on this host: volume → configuration → engine process → health → users, each
//! step idempotent, the result recorded as a `BrokerStatus`.

use super::secrets;
use crate::certificates::{self, BrokerCa, CertificateFiles};
use crate::engine::rabbitmq::RabbitMq;
use crate::engine::{Engine, Health, Placement, RenderedFile};
use crate::load_balancer::Plan as LoadBalancerPlan;
use crate::storage::{block, encryption, shared};
use crate::supervisor::{Supervisor, UnitState};
use anyhow::{Context as _, Result};
use ferrymq_api::agent::{
    BrokerSpec, BrokerState, BrokerStatus, ConfigurationRef, ServerCertificate, Volume,
};
use ferrymq_api::catalogue::{self, EngineType};
use nix::unistd::{chown, User};
use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `storage_type` of brokers on shared storage (Amazon MQ's EFS).
const STORAGE_SHARED: &str = "efs";
pub const ROLE_ACTIVE: &str = "active";
pub const ROLE_STANDBY: &str = "standby";

/// How long an engine gets to shut down cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

pub struct Context {
    pub broker_dir: PathBuf,
    pub supervisor: Arc<dyn Supervisor>,
    pub previous: Option<BrokerStatus>,
    /// The host's broker-issuing CA, or why there is none.
    pub broker_ca: Arc<Result<BrokerCa, String>>,
    /// Plaintext passwords of the latest apply (memory only), by username.
    pub passwords: BTreeMap<String, String>,
    /// Whether to make the engine's users the spec's in this pass: after an apply and after
    /// the engine (re)started. Otherwise users are only observed, so that a user changed or
    /// removed behind Terraform's back shows as drift in the next plan.
    pub sync_users: bool,
    /// Restart the engine in this pass: an asked-for reboot (RebootBroker) whose turn it is.
    pub restart: bool,
    pub bundles: Arc<crate::bundle::Store>,
}

impl Context {
    fn volume_dir(&self) -> PathBuf {
        self.broker_dir.join("volume")
    }
    fn config_dir(&self) -> PathBuf {
        self.broker_dir.join("engine")
    }
    pub(super) fn certificate_files(&self) -> CertificateFiles {
        CertificateFiles::in_dir(&self.config_dir().join("tls"))
    }
    fn node_certificate_files(&self) -> CertificateFiles {
        CertificateFiles::in_dir(&self.config_dir().join("node-tls"))
    }
}

/// Every user of the broker: the spec's own and those applied one by one.
pub fn all_users(spec: &BrokerSpec) -> Vec<ferrymq_api::agent::User> {
    spec.users
        .iter()
        .chain(&spec.standalone_users)
        .cloned()
        .collect()
}

/// The names the broker's certificate is issued for (and a supplied one must hold): every
/// instance's address, the spec's extra names and the load balancer's virtual IP.
pub fn certificate_names(spec: &BrokerSpec) -> Vec<String> {
    ferrymq_api::server_certificate::broker_names(spec)
}

/// The names of the certificate this host's broker CA issues: this instance's address, the
/// spec's extra names and the virtual IP, but not the other instances' addresses. A client
/// that connects to another instance is served that host's certificate, and a broker CA may
/// sign its own host's names only (its name constraints).
pub fn issued_names(spec: &BrokerSpec) -> Vec<String> {
    let own = spec.instance_index as usize;
    let others: Vec<String> = spec
        .instances
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != own)
        .filter_map(|(_, i)| ferrymq_api::validate::host_address(&i.host).ok())
        .map(|ip| ip.to_string())
        .collect();
    certificate_names(spec)
        .into_iter()
        .filter(|n| !others.contains(n) || spec.certificate_names.contains(n))
        .collect()
}

/// The status of a spec no pass has looked at yet.
pub fn pending_status(spec: &BrokerSpec) -> BrokerStatus {
    BrokerStatus {
        spec: Some(redacted(spec)),
        state: BrokerState::CreationInProgress as i32,
        message: "waiting for the first reconcile pass".into(),
        ..Default::default()
    }
}

/// The spec as it may leave the host: passwords and their hashes removed.
pub fn redacted(spec: &BrokerSpec) -> BrokerSpec {
    let mut spec = spec.clone();
    for u in spec
        .users
        .iter_mut()
        .chain(spec.standalone_users.iter_mut())
    {
        u.password.clear();
        u.password_hash.clear();
    }
    spec.cluster_secret.clear();
    if let Some(supplied) = spec.server_certificate.as_mut() {
        supplied.private_key_pem.clear();
    }
    spec
}

/// The address this host's instance binds its listeners to: the IP part of `instance.host`.
pub fn instance_address(spec: &BrokerSpec) -> Result<IpAddr, String> {
    let host = spec
        .instances
        .get(spec.instance_index as usize)
        .map(|i| i.host.as_str())
        .unwrap_or_default();
    host.parse::<IpAddr>()
        .or_else(|_| host.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .map_err(|_| format!("instance host {host:?} is not an IP address (or IP:port)"))
}

/// Every instance's address, in the spec's order.
fn instance_addresses(spec: &BrokerSpec) -> Result<Vec<IpAddr>> {
    spec.instances
        .iter()
        .map(|i| ferrymq_api::validate::host_address(&i.host).map_err(anyhow::Error::msg))
        .collect()
}

/// Refuses a spec whose instance address is not one of this host's: the broker could not bind
/// its listeners, and the provider is most likely talking to the wrong host.
pub fn check_instance_is_local(spec: &BrokerSpec) -> Result<(), String> {
    let ip = instance_address(spec)?;
    std::net::TcpListener::bind((ip, 0))
        .map(drop)
        .map_err(|_| format!("instance host {ip} is not an address of this host"))
}

/// A cluster's instances agree on their Erlang cookie only through the secret the provider
/// sends at create; without it the nodes could never connect.
pub fn check_cluster_secret(spec: &BrokerSpec) -> Result<(), String> {
    let cluster = spec.deployment_mode == catalogue::DeploymentMode::ClusterMultiAz.as_str();
    if cluster && spec.cluster_secret.is_empty() {
        return Err(format!(
            "broker {} is a new CLUSTER_MULTI_AZ broker without its cluster secret; it is sent by the provider when the broker is created",
            spec.broker_id
        ));
    }
    Ok(())
}

/// Fields a running broker cannot change (Amazon MQ replaces the broker for these).
pub fn check_immutable(stored: &BrokerSpec, new: &BrokerSpec) -> Result<(), String> {
    let pairs = [
        ("broker_name", &stored.broker_name, &new.broker_name),
        ("engine_type", &stored.engine_type, &new.engine_type),
        (
            "deployment_mode",
            &stored.deployment_mode,
            &new.deployment_mode,
        ),
    ];
    for (field, old, new) in pairs {
        if old != new {
            return Err(format!(
                "{field} cannot change from {old:?} to {new:?} on an existing broker; replace the broker"
            ));
        }
    }
    if stored.encryption != new.encryption {
        return Err(
            "encryption_options cannot change on an existing broker; replace the broker".into(),
        );
    }
    let idx = new.instance_index as usize;
    if stored.instances.get(idx) != new.instances.get(idx) {
        return Err("instance host and volume cannot change on an existing broker".into());
    }
    Ok(())
}

/// The engine of the spec, placed on this host with its data under `data_root`.
fn engine_for(
    ctx: &Context,
    spec: &BrokerSpec,
    data_root: &Path,
    volume_bytes: u64,
    configuration: Option<ConfigurationRef>,
    engine_home: Option<PathBuf>,
) -> Result<Box<dyn Engine>> {
    let address = instance_address(spec).map_err(anyhow::Error::msg)?;
    // A cluster's instances share their secrets (derived from the spec's); other brokers keep
    // their own, made on this host.
    let secrets = if spec.cluster_secret.is_empty() {
        secrets::load_or_create(&ctx.broker_dir.join("secrets.json"))?
    } else {
        secrets::derived(&spec.cluster_secret)
    };
    let engine: EngineType = spec.engine_type.parse().map_err(anyhow::Error::msg)?;
    let instance_type = catalogue::instance_type(&spec.host_instance_type)
        .with_context(|| format!("unknown instance type {:?}", spec.host_instance_type))?;
    let placement = Placement {
        broker_id: spec.broker_id.clone(),
        address,
        config_dir: ctx.config_dir(),
        data_dir: data_root.join(engine.as_str().to_ascii_lowercase()),
        instance_type,
        volume_bytes,
        users: all_users(spec),
        agent_password: secrets.agent_password,
        cookie: secrets.cookie,
        peers: instance_addresses(spec)?,
        instance_index: spec.instance_index as usize,
        certificate: ctx.certificate_files(),
        node_certificate: ctx.node_certificate_files(),
        deployment_ca_pem: match (&spec.server_certificate, ctx.broker_ca.as_ref()) {
            (Some(supplied), _) => {
                ferrymq_api::server_certificate::chain_root_pem(&supplied.ca_chain_pem)
                    .unwrap_or_default()
            }
            (None, Ok(ca)) => ca.deployment_ca_pem.clone(),
            (None, Err(_)) => String::new(),
        },
        plain_listeners: spec.plain_listeners,
        keystore_password: secrets.keystore_password,
        passwords: ctx.passwords.clone(),
        configuration,
        logs: spec.logs.unwrap_or_default(),
        engine_home,
    };
    match engine {
        EngineType::RabbitMq => Ok(Box::new(RabbitMq::new(placement)?)),
        EngineType::ActiveMq => Ok(Box::new(crate::engine::activemq::ActiveMq::new(placement)?)),
    }
}

/// Converges one broker and returns what was observed. Never fails: failures are states.
pub async fn converge(ctx: &Context, spec: &BrokerSpec) -> BrokerStatus {
    let mut status = BrokerStatus {
        spec: Some(redacted(spec)),
        ip_address: instance_address(spec)
            .map(|a| a.to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    // A broker that served before and stops serving is being rebooted or needs help; one that
    // never served is still being created.
    let ever_ran = ctx.previous.as_ref().is_some_and(|p| {
        [
            BrokerState::Running,
            BrokerState::RebootInProgress,
            BrokerState::CriticalActionRequired,
        ]
        .iter()
        .any(|s| *s as i32 == p.state)
    });
    match converge_steps(ctx, spec, &mut status).await {
        Ok(true) => {
            status.state = BrokerState::Running as i32;
        }
        Ok(false) => {
            status.state = if ever_ran {
                BrokerState::RebootInProgress as i32
            } else {
                BrokerState::CreationInProgress as i32
            };
        }
        Err(Failure::Permanent(msg)) => {
            status.state = BrokerState::CreationFailed as i32;
            status.message = msg;
        }
        Err(Failure::Transient(e)) => {
            status.state = if ever_ran {
                BrokerState::CriticalActionRequired as i32
            } else {
                BrokerState::CreationInProgress as i32
            };
            status.message = format!("{e:#}");
        }
    }
    if status.state != BrokerState::Running as i32 {
        tracing::info!(broker = %spec.broker_id, state = ?BrokerState::try_from(status.state).ok(), message = %status.message, "not running");
    }
    status
}

enum Failure {
    /// The spec cannot work on this host as it is (a foreign volume, say): retrying won't help.
    Permanent(String),
    Transient(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Transient(e)
    }
}

/// Returns Ok(true) when the broker serves clients with the spec's users.
async fn converge_steps(
    ctx: &Context,
    spec: &BrokerSpec,
    status: &mut BrokerStatus,
) -> Result<bool, Failure> {
    check_host_fits(spec).map_err(Failure::Permanent)?;
    let key_file = encryption_key_file(spec);
    if key_file.is_some() {
        // Refused before the volume is touched: never plain data where encryption was asked.
        encryption::check_host().map_err(Failure::Permanent)?;
    }
    let instance = spec
        .instances
        .get(spec.instance_index as usize)
        .ok_or_else(|| Failure::Permanent("instance_index outside instances".into()))?;
    let volume_dir = ctx.volume_dir();
    let data_root = if spec.storage_type == STORAGE_SHARED {
        tokio::task::block_in_place(|| {
            shared::prepare(&instance.volume, &spec.broker_id, &volume_dir)
        })?
    } else if let Some(key_file) = key_file {
        tokio::task::block_in_place(|| {
            encryption::prepare(&instance.volume, &spec.broker_id, key_file, &volume_dir)
        })
        .map_err(|e| match e {
            encryption::PrepareError::Volume(e) => volume_failure(e),
            refused => Failure::Permanent(refused.to_string()),
        })?
    } else {
        tokio::task::block_in_place(|| {
            block::prepare(&instance.volume, &spec.broker_id, &volume_dir)
        })
        .map_err(volume_failure)?
    };
    if let Ok((size, used)) = block::usage(&data_root) {
        status.volume = Some(Volume {
            device: instance.volume.clone(),
            mount_point: data_root.display().to_string(),
            size_bytes: size,
            used_bytes: used,
        });
    }

    let volume_bytes = status.volume.as_ref().map_or(0, |v| v.size_bytes);
    // The gated spec's revision: a new one waits there for the window like an engine version.
    let configuration = spec.configuration.clone();
    if let Some(c) = &configuration {
        status.configuration_id = c.id.clone();
        status.configuration_revision = c.revision;
    }
    // Before anything is rendered or restarted: a bundle that cannot be placed (a wrong digest)
    // leaves the running engine and its link alone.
    let placed = place_bundle(ctx, spec, status)?;
    let engine = engine_for(
        ctx,
        spec,
        &data_root,
        volume_bytes,
        configuration,
        placed.home.clone(),
    )
    .map_err(|e| Failure::Permanent(format!("{e:#}")))?;
    status.endpoints = engine.endpoints();
    status.console_url = engine.console_url();
    let owner = User::from_name(engine.system_user())
        .context("looking up the engine user")?
        .with_context(|| {
            format!(
                "user {} does not exist; is the engine installed?",
                engine.system_user()
            )
        })?;
    // The volume's root stays root's: the engine's group passes through it to its own data
    // directory; others cannot even list it.
    chown(
        &data_root,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(owner.gid),
    )
    .with_context(|| format!("chown {}", data_root.display()))?;
    fs::set_permissions(&data_root, fs::Permissions::from_mode(0o750))
        .with_context(|| format!("chmod {}", data_root.display()))?;
    for dir in engine.data_dirs().iter().chain([&ctx.config_dir()]) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        chown(dir, Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("chown {}", dir.display()))?;
        if make_private(dir)? {
            tracing::info!(broker = %spec.broker_id, dir = %dir.display(), "made the engine's directory its own alone");
        }
    }
    let (record, renewed) = match &spec.server_certificate {
        Some(supplied) => {
            let (record, root_pem, renewed) = install_supplied(ctx, spec, supplied, &owner)?;
            status.ca_certificate = root_pem;
            status.certificate_supplied = true;
            if let Some(warning) = supplied_expiry_warning(&record, time::OffsetDateTime::now_utc())
            {
                status.message = warning.clone();
                status.certificate_warnings = vec![warning];
            }
            (record, renewed)
        }
        None => {
            let ca = ctx
                .broker_ca
                .as_ref()
                .as_ref()
                .map_err(|e| Failure::Permanent(e.clone()))?;
            status.ca_certificate = ca.deployment_ca_pem.clone();
            // The host's own certificates in their last 30 days: every broker says so.
            let ends = crate::pki::expiry::host_certificates(&ca.tls_dir);
            let warnings = crate::pki::expiry::warnings(&ends, time::OffsetDateTime::now_utc());
            if !warnings.is_empty() {
                status.message = warnings.join("; ");
            }
            status.certificate_warnings = warnings;
            // A supplied certificate's key staged but no longer wanted has no use any more.
            remove_supplied_key(&ctx.certificate_files())?;
            ensure_certificate(ctx, spec, ca, &owner)?
        }
    };
    status.certificate_not_after = record.not_after_rfc3339();
    let node_renewed = if engine.wants_node_certificate() {
        let ca = ctx
            .broker_ca
            .as_ref()
            .as_ref()
            .map_err(|e| Failure::Permanent(e.clone()))?;
        ensure_node_certificate(ctx, spec, ca, &owner)?
    } else {
        false
    };
    let mut changed = placed.switched || ctx.restart;
    for file in engine.render()? {
        changed |= write_if_changed(&file, &owner)? && file.restart_on_change;
    }
    changed |= engine.install_certificate(renewed || node_renewed).await?;

    // The load balancer runs whatever the local engine does: it serves the other instances.
    let address = instance_address(spec).map_err(Failure::Permanent)?;
    let lb_dir = ctx.broker_dir.join("load_balancer");
    match LoadBalancerPlan::for_host(spec, address, lb_dir, engine.listeners())? {
        Some(plan) => super::load_balancer::converge(&ctx.supervisor, &plan)?,
        None => super::load_balancer::teardown(&ctx.supervisor, &spec.broker_id)?,
    }
    if let Some(vip) = spec
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.virtual_ip.parse().ok())
    {
        status.load_balancer_endpoints =
            crate::load_balancer::endpoints_through(&status.endpoints, vip);
    }

    let supervisor = &ctx.supervisor;
    for unit in engine.units() {
        let running = matches!(supervisor.state(&unit.name)?, UnitState::Running { .. });
        if changed && running {
            tracing::info!(unit = %unit.name, "configuration changed; restarting");
            let sup = supervisor.clone();
            let name = unit.name.clone();
            tokio::task::spawn_blocking(move || sup.stop(&name, STOP_GRACE))
                .await
                .context("stop task")??;
        }
        if !matches!(supervisor.state(&unit.name)?, UnitState::Running { .. }) {
            if let Err(why) = engine.ready_to_start().await {
                status.message = why;
                return Ok(false);
            }
            engine.before_start().await?;
        }
        if supervisor.ensure_running(&unit)? {
            tracing::info!(unit = %unit.name, "engine started");
        }
        status.engine_starts += supervisor.starts(&unit.name)?;
    }

    match engine.heal().await {
        Ok(Some(done)) => tracing::warn!(broker = %spec.broker_id, "{done}"),
        Ok(None) => {}
        // The engine's API may not answer yet (starting): the next pass looks again.
        Err(e) => tracing::warn!(broker = %spec.broker_id, "healing the engine: {e:#}"),
    }
    let users = all_users(spec);
    match engine.health().await {
        Health::Serving => {
            status.role = ROLE_ACTIVE.into();
            engine.sync_broker_settings().await?;
            if engine.apply_quotas().await? {
                tracing::info!(broker = %spec.broker_id, "quotas applied");
            }
            if ctx.sync_users && engine.sync_users(&users).await? {
                tracing::info!(broker = %spec.broker_id, "users converged");
            }
        }
        Health::Standby => status.role = ROLE_STANDBY.into(),
        Health::NotServing(why) => {
            status.message = format!("engine starting: {why}");
            return Ok(false);
        }
    }
    let observed = engine.observed_users(&users).await?;
    status.users = observed.users;
    status.users_with_password_drift = observed.password_drift;
    Ok(true)
}

/// The key file of an encrypted volume, if the spec asks for encryption at rest.
fn encryption_key_file(spec: &BrokerSpec) -> Option<&str> {
    spec.encryption
        .as_ref()
        .map(|e| e.key_file.as_str())
        .filter(|k| !k.is_empty())
}

/// A volume the spec cannot use is a permanent failure; a tool that failed may work next pass.
fn volume_failure(e: block::VolumeError) -> Failure {
    match e {
        block::VolumeError::Tool { .. } => Failure::Transient(e.into()),
        other => Failure::Permanent(other.to_string()),
    }
}

/// Issues the broker's server certificate when it has none, its names changed, or it nears
/// its end; returns its record and whether it was (re)issued. The key is 0600 for the engine.
fn ensure_certificate(
    ctx: &Context,
    spec: &BrokerSpec,
    ca: &BrokerCa,
    owner: &User,
) -> Result<(certificates::Record, bool)> {
    let names = issued_names(spec);
    let issued = ensure_issued(&ctx.certificate_files(), &names, ca, owner, |now| {
        ca.issue(&names, now)
    })?;
    if issued.1 {
        tracing::info!(broker = %spec.broker_id, names = ?names, not_after = %issued.0.not_after_rfc3339(), "server certificate issued");
    }
    Ok(issued)
}

/// Issues the node certificate of a clustered broker's instance (see
/// `Engine::wants_node_certificate`) as `ensure_certificate` does the server certificate,
/// for the host's address alone; returns whether it was (re)issued. Always from the host's
/// broker CA, whatever serves clients: it is what the peers verify.
fn ensure_node_certificate(
    ctx: &Context,
    spec: &BrokerSpec,
    ca: &BrokerCa,
    owner: &User,
) -> Result<bool> {
    let address = instance_address(spec).map_err(anyhow::Error::msg)?;
    let names = [address.to_string()];
    let (record, issued) =
        ensure_issued(&ctx.node_certificate_files(), &names, ca, owner, |now| {
            ca.issue_node(address, now)
        })?;
    if issued {
        tracing::info!(broker = %spec.broker_id, %address, not_after = %record.not_after_rfc3339(), "node certificate issued");
    }
    Ok(issued)
}

/// Issues a certificate into `files` with `issue` when there is none, its names or issuing CA
/// changed, or it nears its end (`certificates::needs_issue`); returns its record and whether
/// it was (re)issued. The key is 0600 for the engine.
fn ensure_issued(
    files: &CertificateFiles,
    names: &[String],
    ca: &BrokerCa,
    owner: &User,
    issue: impl FnOnce(time::OffsetDateTime) -> Result<certificates::Issued>,
) -> Result<(certificates::Record, bool)> {
    let now = time::OffsetDateTime::now_utc();
    if let Some(record) = files.read_record().filter(|r| {
        !certificates::needs_issue(Some(r), names, ca, now) && files.private_key.exists()
    }) {
        return Ok((record, false));
    }
    let issued = issue(now)?;
    // A copied certificate (a node's) may be the one already installed: report a change only
    // when the files changed, so the engine is not told to reload for nothing.
    let changed = install_files(
        files,
        owner,
        &CertificateContents {
            private_key_pem: &issued.private_key_pem,
            certificate_pem: &issued.certificate_pem,
            chain_pem: &issued.chain_pem,
            trusted_ca_pem: &ca.deployment_ca_pem,
            record: &issued.record,
        },
    )?;
    Ok((issued.record, changed))
}

/// Installs the server certificate the user supplied (checked on apply): the key the apply
/// left in the TLS directory first, 0600 for the engine, then the certificate, its chain and
/// the chain's root. Never renewed. Returns its record, the root's PEM, and whether the
/// engine's files changed (a rotation, or a switch from an issued certificate).
fn install_supplied(
    ctx: &Context,
    spec: &BrokerSpec,
    supplied: &ServerCertificate,
    owner: &User,
) -> Result<(certificates::Record, String, bool), Failure> {
    let files = ctx.certificate_files();
    let inspected =
        ferrymq_api::server_certificate::inspect(supplied).map_err(Failure::Permanent)?;
    let record = certificates::Record {
        names: certificate_names(spec),
        not_after: inspected.not_after,
        issuer: certificates::supplied_issuer(&supplied.certificate_pem, &supplied.ca_chain_pem),
    };
    let staged = fs::read_to_string(&files.supplied_key).ok();
    let have = files.read_record();
    if staged.is_none() && have.as_ref() == Some(&record) && files.private_key.exists() {
        return Ok((record, inspected.root_pem, false));
    }
    // The installed key still belongs to this certificate when only the names changed.
    let same_certificate = have.as_ref().is_some_and(|h| h.issuer == record.issuer);
    let key = match staged {
        Some(key) => key,
        None if same_certificate => fs::read_to_string(&files.private_key)
            .with_context(|| format!("reading {}", files.private_key.display()))?,
        None => {
            return Err(Failure::Permanent(
                "the private key of the supplied server_certificate is not on this host: apply the broker again".into(),
            ))
        }
    };
    let changed = install_files(
        &files,
        owner,
        &CertificateContents {
            private_key_pem: &key,
            certificate_pem: &supplied.certificate_pem,
            chain_pem: &supplied.ca_chain_pem,
            trusted_ca_pem: &inspected.root_pem,
            record: &record,
        },
    )?;
    remove_supplied_key(&files)?;
    if changed {
        tracing::info!(broker = %spec.broker_id, names = ?record.names, not_after = %record.not_after_rfc3339(), "supplied server certificate installed");
    }
    Ok((record, inspected.root_pem, changed))
}

/// What a broker's TLS directory holds, issued or supplied.
struct CertificateContents<'a> {
    private_key_pem: &'a str,
    certificate_pem: &'a str,
    chain_pem: &'a str,
    /// What the agent's probes trust: the deployment CA, or a supplied chain's root.
    trusted_ca_pem: &'a str,
    record: &'a certificates::Record,
}

/// Writes the broker's certificate files for the engine user, the key first (0600) so the
/// engine never sees a new certificate with the old key. Returns whether the key, the
/// certificate or the chain changed: what the engine must load again.
fn install_files(files: &CertificateFiles, owner: &User, c: &CertificateContents) -> Result<bool> {
    let dir = files
        .certificate
        .parent()
        .context("a certificate file has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    chown(dir, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("chown {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let write = |path: &Path, contents: &str, secret: bool| {
        write_if_changed(
            &RenderedFile {
                path: path.to_path_buf(),
                contents: contents.to_string(),
                secret,
                restart_on_change: false,
            },
            owner,
        )
    };
    let mut changed = write(&files.private_key, c.private_key_pem, true)?;
    changed |= write(&files.certificate, c.certificate_pem, false)?;
    changed |= write(&files.chain, c.chain_pem, false)?;
    write(&files.deployment_ca, c.trusted_ca_pem, false)?;
    write(&files.record, &serde_json::to_string(c.record)?, false)?;
    Ok(changed)
}

/// The key stays in one place only: once installed (or unused), the staged copy goes.
fn remove_supplied_key(files: &CertificateFiles) -> Result<()> {
    crate::store::remove_if_present(&files.supplied_key)
}

/// The status message of a supplied certificate near its end: the agent cannot renew it.
fn supplied_expiry_warning(
    record: &certificates::Record,
    now: time::OffsetDateTime,
) -> Option<String> {
    let left = record.not_after - now.unix_timestamp();
    if left >= ferrymq_api::server_certificate::WARN_BEFORE_SECONDS {
        return None;
    }
    Some(if left <= 0 {
        format!(
            "the supplied server certificate expired at {}: clients refuse it; apply a new server_certificate",
            record.not_after_rfc3339()
        )
    } else {
        format!(
            "the supplied server certificate expires at {} (in {} days): apply a new server_certificate",
            record.not_after_rfc3339(),
            left / 86_400
        )
    })
}

/// The engine bundle a broker runs after this pass.
struct PlacedBundle {
    /// `<bundle>/home` of the bundle `engine-current` names, or None for the host's Debian
    /// package.
    home: Option<PathBuf>,
    /// Whether the link changed in this pass (the engine restarts on it).
    switched: bool,
}

/// Makes `engine-current` the spec's version's bundle: fetched and verified first, switched only
/// once complete. The host's Debian package is the fallback for the versions it carries when no
/// bundle is on the host and none can be fetched; a digest mismatch never falls back.
fn place_bundle(
    ctx: &Context,
    spec: &BrokerSpec,
    status: &mut BrokerStatus,
) -> Result<PlacedBundle, Failure> {
    let engine: EngineType = spec.engine_type.parse().map_err(Failure::Permanent)?;
    let version = catalogue::engine_version(engine, &spec.engine_version).ok_or_else(|| {
        Failure::Permanent(format!(
            "engine_version {:?} is not in this agent's catalogue",
            spec.engine_version
        ))
    })?;
    let current = crate::bundle::current(&ctx.broker_dir);
    let host_packaged = crate::bundle::host_packaged(version);
    let mirror = Some(spec.bundle_mirror.as_str()).filter(|m| !m.is_empty());
    if current.is_none() && host_packaged && !ctx.bundles.available(version, mirror) {
        status.engine_bundle = crate::bundle::DEBIAN_PACKAGE.into();
        return Ok(PlacedBundle {
            home: None,
            switched: false,
        });
    }
    let dir = tokio::task::block_in_place(|| ctx.bundles.ensure(version, mirror)).map_err(|e| {
        let msg = e.to_string();
        match e {
            crate::bundle::BundleError::Io { .. } => Failure::Transient(anyhow::anyhow!(msg)),
            _ => Failure::Permanent(msg),
        }
    });
    let dir = match (dir, &current) {
        (Ok(dir), _) => dir,
        // The running bundle stays; the broker keeps serving from it and says why.
        (Err(f), Some(cur)) => {
            status.engine_bundle = bundle_name(cur);
            return Err(f);
        }
        (Err(f), None) => return Err(f),
    };
    let switched = crate::bundle::switch(&ctx.broker_dir, &dir).with_context(|| {
        format!(
            "switching {} to {}",
            ctx.broker_dir.display(),
            dir.display()
        )
    })?;
    if switched {
        tracing::info!(broker = %spec.broker_id, bundle = %dir.display(), "engine bundle switched");
    }
    status.engine_bundle = bundle_name(&dir);
    Ok(PlacedBundle {
        // The bundle's own path, not the link's: a running engine never sees its tree change
        // under it, and the process shows which bundle it runs.
        home: Some(fs::canonicalize(&dir).unwrap_or(dir).join("home")),
        switched,
    })
}

fn bundle_name(dir: &Path) -> String {
    fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// Refuses, before anything is prepared or started, a host with fewer CPUs or less memory than
/// the spec's instance type (an unknown type is refused later, with the engine).
fn check_host_fits(spec: &BrokerSpec) -> Result<(), String> {
    let Some(instance_type) = catalogue::instance_type(&spec.host_instance_type) else {
        return Ok(());
    };
    let (cpus, memory_bytes) = crate::sizing::host_capacity();
    crate::sizing::check_host_fits(instance_type, cpus, memory_bytes)
}

/// Makes a directory of broker data (message store, user records, logs, configuration with
/// secrets) its owner's alone: 0700. One that was open to others, made by an older agent or
/// under a looser umask, is tightened with everything below it, once (group and other bits
/// off); what the engine creates later gets its modes from the units' umask. Returns whether
/// it changed anything.
fn make_private(dir: &Path) -> Result<bool> {
    let mode = fs::symlink_metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    restrict_tree(dir)?;
    Ok(true)
}

/// Takes the group and other bits off a directory and everything below it; symbolic links
/// are neither followed nor changed.
fn restrict_tree(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o077))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            restrict_tree(&entry?.path())?;
        }
    }
    Ok(())
}

/// Writes a rendered file when its contents differ; returns whether it did.
pub(super) fn write_if_changed(file: &RenderedFile, owner: &User) -> Result<bool> {
    if fs::read_to_string(&file.path).ok().as_deref() == Some(file.contents.as_str()) {
        return Ok(false);
    }
    crate::store::write_atomically(&file.path, file.contents.as_bytes())?;
    // Nothing for others (configuration names queues and users); the engine's group may read
    // what is not secret, as Debian's packages let it read /etc/rabbitmq and /etc/activemq.
    let mode = if file.secret { 0o600 } else { 0o640 };
    fs::set_permissions(&file.path, fs::Permissions::from_mode(mode))?;
    chown(&file.path, Some(owner.uid), Some(owner.gid))
        .with_context(|| format!("chown {}", file.path.display()))?;
    Ok(true)
}

/// The engine's figures for the metrics endpoint, asked of the engine as it runs now.
pub async fn engine_metrics(
    ctx: &Context,
    spec: &BrokerSpec,
) -> Result<Vec<crate::metrics::Sample>> {
    let engine = engine_for(ctx, spec, &ctx.volume_dir(), 0, None, None)?;
    engine.metrics().await
}

/// Whether this instance may go down for a rolling change now (see `Engine::ready_to_stop`).
pub async fn ready_to_stop(ctx: &Context, spec: &BrokerSpec) -> Result<(), String> {
    let engine = engine_for(ctx, spec, &ctx.volume_dir(), 0, None, None)
        .map_err(|e| format!("waiting: {e:#}"))?;
    engine.ready_to_stop().await
}

/// Stops the broker's engine and releases its volume (wiping what FerryMQ made on it).
pub async fn teardown(ctx: &Context, spec: &BrokerSpec) -> Result<()> {
    let instance = spec.instances.get(spec.instance_index as usize);
    {
        let sup = ctx.supervisor.clone();
        let id = spec.broker_id.clone();
        tokio::task::spawn_blocking(move || super::load_balancer::teardown(&sup, &id))
            .await
            .context("load balancer stop task")??;
    }
    match engine_for(ctx, spec, &ctx.volume_dir(), 0, None, None) {
        Ok(engine) => {
            for unit in engine.units().into_iter().rev() {
                let sup = ctx.supervisor.clone();
                let name = unit.name.clone();
                tokio::task::spawn_blocking(move || sup.stop(&name, STOP_GRACE))
                    .await
                    .context("stop task")??;
                ctx.supervisor.forget(&unit.name)?;
            }
            engine.after_stop().await?;
        }
        Err(e) => tracing::warn!(broker = %spec.broker_id, "no engine to stop: {e:#}"),
    }
    if let Some(instance) = instance {
        let volume_dir = ctx.volume_dir();
        tokio::task::block_in_place(|| {
            if spec.storage_type == STORAGE_SHARED {
                shared::release(&instance.volume, &spec.broker_id, &volume_dir)
            } else if encryption_key_file(spec).is_some() {
                encryption::release(&instance.volume, &spec.broker_id, &volume_dir)
            } else {
                block::release(&instance.volume, &spec.broker_id, &volume_dir)
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_api::agent::{Instance, User as SpecUser};

    #[test]
    fn a_supplied_certificate_warns_from_30_days_before_its_end_and_leaves_redacted() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("now");
        let record = |days: i64| certificates::Record {
            names: vec![],
            not_after: now.unix_timestamp() + days * 86_400,
            issuer: certificates::supplied_issuer("cert", "chain"),
        };
        assert_eq!(supplied_expiry_warning(&record(31), now), None);
        let soon = supplied_expiry_warning(&record(29), now).expect("warning");
        assert!(
            soon.contains("(in 29 days): apply a new server_certificate"),
            "{soon}"
        );
        let past = supplied_expiry_warning(&record(-1), now).expect("warning");
        assert!(past.contains("expired at"), "{past}");

        let mut s = spec();
        s.server_certificate = Some(ServerCertificate {
            certificate_pem: "cert".into(),
            private_key_pem: "key".into(),
            ca_chain_pem: "chain".into(),
        });
        let out = redacted(&s).server_certificate.expect("kept");
        assert_eq!(
            (out.certificate_pem.as_str(), out.private_key_pem.as_str()),
            ("cert", "")
        );
    }

    fn spec() -> BrokerSpec {
        BrokerSpec {
            broker_id: "b-1".into(),
            broker_name: "orders".into(),
            engine_type: "RabbitMQ".into(),
            deployment_mode: "SINGLE_INSTANCE".into(),
            instances: vec![Instance {
                host: "127.0.0.1:7443".into(),
                volume: "/dev/loop0".into(),
            }],
            users: vec![SpecUser {
                username: "app".into(),
                password: "a-secret-password".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn statuses_never_carry_passwords() {
        let mut sp = spec();
        sp.users[0].password_hash = "hash".into();
        sp.standalone_users = sp.users.clone();
        let s = pending_status(&sp).spec.expect("spec");
        for u in s.users.iter().chain(&s.standalone_users) {
            assert_eq!((u.password.as_str(), u.password_hash.as_str()), ("", ""));
        }
    }

    #[test]
    fn certificates_name_every_instance_and_the_extra_names() {
        let mut s = spec();
        s.instances.push(Instance {
            host: "10.0.0.2".into(),
            volume: "/dev/loop1".into(),
        });
        s.certificate_names = vec!["10.0.0.100".into(), "mq.example".into(), "10.0.0.2".into()];
        assert_eq!(
            certificate_names(&s),
            ["127.0.0.1", "10.0.0.2", "10.0.0.100", "mq.example"]
        );
        // What this host issues: its own address, not the other instance's (unless named).
        assert_eq!(
            issued_names(&s),
            ["127.0.0.1", "10.0.0.2", "10.0.0.100", "mq.example"]
        );
        s.certificate_names = vec!["10.0.0.100".into(), "mq.example".into()];
        assert_eq!(issued_names(&s), ["127.0.0.1", "10.0.0.100", "mq.example"]);
    }

    #[test]
    fn instance_address_takes_ip_or_ip_port() {
        assert_eq!(
            instance_address(&spec()),
            Ok("127.0.0.1".parse().expect("ip"))
        );
        assert!(check_instance_is_local(&spec()).is_ok());
        let mut s = spec();
        s.instances[0].host = "broker.example".into();
        assert!(instance_address(&s).unwrap_err().contains("broker.example"));
    }

    #[test]
    fn name_engine_and_volume_are_immutable() {
        let a = spec();
        let mut b = spec();
        b.users.clear();
        assert!(check_immutable(&a, &b).is_ok());
        b.broker_name = "other".into();
        assert!(check_immutable(&a, &b).unwrap_err().contains("broker_name"));
        let mut c = spec();
        c.instances[0].volume = "/dev/loop1".into();
        assert!(check_immutable(&a, &c).is_err());
    }
}
