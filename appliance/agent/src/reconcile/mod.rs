//! The reconciler: converges every stored broker spec to a running broker and records what it
//! observed. Passes run one at a time (and never alongside a delete), on a timer and whenever
//! a spec changes, so a crashed engine is restarted and a restarted agent picks up where the
//! last one stopped.

mod broker;
mod load_balancer;
mod secrets;
mod supplied;
mod users;

pub use broker::{pending_status, ROLE_STANDBY};

use crate::certificates::BrokerCa;
use crate::maintenance::{self, AppliedRecord};
use crate::metrics::Sample;
use crate::store::SpecStore;
use crate::supervisor::Supervisor;
use anyhow::Result;
use ferrymq_api::agent::{BrokerSpec, BrokerState, BrokerStatus, BrokerUserStatus, User};
use ferrymq_api::validate::{self, FieldError};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a pass runs when nothing asks for one: the bound on how long a dead engine stays
/// dead.
const PASS_INTERVAL: Duration = Duration::from_secs(3);

/// Why an apply was refused; the API maps each case to its own status code.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid broker spec: {}", join(.0))]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn all_users_of(spec: &BrokerSpec) -> impl Iterator<Item = &User> {
    spec.users.iter().chain(&spec.standalone_users)
}

/// A poisoned lock only means a panicking pass; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub struct Reconciler {
    brokers_dir: PathBuf,
    store: Arc<dyn SpecStore>,
    supervisor: Arc<dyn Supervisor>,
    statuses: Mutex<HashMap<String, BrokerStatus>>,
    pass_lock: tokio::sync::Mutex<()>,
    wake: Notify,
    /// Swapped when `pki renew` installs a renewed broker CA.
    broker_ca: Mutex<Arc<Result<BrokerCa, String>>>,
    /// Plain passwords of the latest applies, by broker and user: memory only, dropped once
    /// the broker has converged with them.
    passwords: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// The generation and engine start count users were last converged for, by broker.
    users_synced: Mutex<HashMap<String, (u64, u32)>>,
    /// Asks the other instances of a broker whose turn it is in a roll-out.
    peers: Option<maintenance::Peers>,
    /// The window-bound changes last logged as being applied, by broker.
    applying_said: Mutex<HashMap<String, Vec<String>>>,
    bundles: Arc<crate::bundle::Store>,
    /// How long an applied window-bound change gets to serve before it is rolled back.
    rollback_after: Duration,
    /// The host's appliance images (staged with `ferrymq-agent image stage`).
    images: crate::image::Images,
}

impl Reconciler {
    pub fn new(
        brokers_dir: PathBuf,
        store: Arc<dyn SpecStore>,
        supervisor: Arc<dyn Supervisor>,
        broker_ca: Result<BrokerCa, String>,
    ) -> Self {
        // Bundles sit beside the brokers in the state directory; none are fetched unless the
        // agent is given a source (`with_bundles`).
        let state_dir = brokers_dir.parent().unwrap_or(&brokers_dir).to_path_buf();
        let bundles_dir = state_dir.join("bundles");
        Reconciler {
            images: crate::image::Images::new(&state_dir),
            brokers_dir,
            store,
            supervisor,
            statuses: Mutex::new(HashMap::new()),
            pass_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            broker_ca: Mutex::new(Arc::new(broker_ca)),
            passwords: Mutex::new(HashMap::new()),
            users_synced: Mutex::new(HashMap::new()),
            peers: None,
            applying_said: Mutex::new(HashMap::new()),
            bundles: Arc::new(crate::bundle::Store::new(bundles_dir, None)),
            rollback_after: maintenance::DEFAULT_ROLLBACK_AFTER,
        }
    }

    /// How long an applied change gets to serve before the host puts its old values back.
    pub fn with_rollback_after(mut self, deadline: Duration) -> Self {
        self.rollback_after = deadline;
        self
    }

    /// Lets the reconciler coordinate roll-outs with the broker's other instances.
    pub fn with_peers(mut self, peers: maintenance::Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Where engine bundles are kept and fetched from.
    pub fn with_bundles(mut self, bundles: crate::bundle::Store) -> Self {
        self.bundles = Arc::new(bundles);
        self
    }

    /// Runs passes until the process ends.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::error!("reconcile pass failed: {e:#}");
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(PASS_INTERVAL) => {}
            }
        }
    }

    pub async fn pass(&self) -> Result<()> {
        let _guard = self.pass_lock.lock().await;
        let running_image = self.images.running();
        let staged_image = self.images.staged();
        for mut stored in self.store.load_all()? {
            let id = stored.spec.broker_id.clone();
            if ferrymq_api::load_balancer::is_dedicated(&stored.spec) {
                self.pass_dedicated(&stored.spec, stored.generation);
                continue;
            }
            // A spec stored by an agent from before passwords were hashed: hash them now, so
            // the store holds no password from the first pass on.
            if all_users_of(&stored.spec).any(|u| !u.password.is_empty()) {
                let spec = &mut stored.spec;
                let secret = spec.cluster_secret.clone();
                let mut plain = users::seal(&mut spec.users, &[], &secret)?;
                plain.extend(users::seal(&mut spec.standalone_users, &[], &secret)?);
                stored.generation = self.store.save(spec)?;
                lock(&self.passwords)
                    .entry(id.clone())
                    .or_default()
                    .extend(plain);
                tracing::info!(broker = %id, "stored passwords replaced by hashes");
            }
            let mut ctx = self.ctx(&id);
            let synced = lock(&self.users_synced).get(&id).copied();
            let starts = ctx.previous.as_ref().map_or(0, |p| p.engine_starts);
            ctx.sync_users = synced != Some((stored.generation, starts));
            // Window-bound changes wait for the window; the status still reports the spec as
            // applied, with the waiting changes as pending.
            let applied = AppliedRecord::load(&ctx.broker_dir)?;
            let now = chrono::Utc::now();
            let mut gated = maintenance::gate(&stored.spec, applied.as_ref(), now).with_image(
                applied.as_ref(),
                &running_image,
                staged_image.as_deref(),
            );
            let mut held = None;
            if !gated.applying.is_empty() {
                if let Some(why) = maintenance::Attempt::rolled_back_before(&ctx.broker_dir, &gated)
                {
                    gated.hold();
                    held = Some(why);
                }
            }
            let turn = maintenance::Turn::for_spec(&stored.spec).on_image(&gated.image);
            if gated.applying.is_empty() {
                maintenance::Turn::release(&ctx.broker_dir)?;
            } else if stored.spec.instances.len() > 1 && !turn.held(&ctx.broker_dir) {
                match self.take_turn(&ctx, &stored.spec).await {
                    Ok(()) => turn.take(&ctx.broker_dir)?,
                    Err(why) => {
                        gated.hold();
                        held = Some(why);
                    }
                }
            }
            // Said once per change, not on every pass until it serves.
            let applying: Vec<String> = gated.applying.iter().map(ToString::to_string).collect();
            if lock(&self.applying_said).get(&id) != Some(&applying) {
                for change in &applying {
                    tracing::info!(broker = %id, %change, in_window = gated.in_window, "applying");
                }
                lock(&self.applying_said).insert(id.clone(), applying);
            }
            if gated.image != running_image {
                // The host goes onto another image (or back) with its turn: the engine keeps
                // running until the agent on the new image restarts it.
                let e = self.switch_image(&gated.image, &id);
                tracing::error!(broker = %id, "appliance image not switched: {e:#}");
                gated.hold();
                gated.image = running_image.clone();
                held = Some(format!("appliance image not switched: {e:#}"));
            }
            if gated.rebooting() {
                ctx.restart =
                    maintenance::reboot_restart_due(&ctx.broker_dir, &gated.spec.reboot_id)?;
            }
            if gated.switching_image() {
                ctx.restart |= maintenance::image_restart_due(&ctx.broker_dir, &gated.image)?;
            }
            let mut status = broker::converge(&ctx, &gated.spec).await;
            status.spec = Some(broker::redacted(&stored.spec));
            gated.report(&mut status);
            if let Some(why) = held {
                if status.message.is_empty() {
                    status.message = why;
                }
            }
            // What the host runs changes only once the broker serves with it: a change that does
            // not come back healthy is rolled back when the window closes.
            let record = if status.state == BrokerState::Running as i32 {
                let record = AppliedRecord::after(applied.as_ref(), &gated, now);
                record.save_if_changed(applied.as_ref(), &ctx.broker_dir)?;
                if !gated.applying.is_empty() {
                    maintenance::Turn::release(&ctx.broker_dir)?;
                    maintenance::Attempt::served(&ctx.broker_dir)?;
                }
                Some(record)
            } else if gated.applying.is_empty() {
                applied
            } else {
                self.not_serving(&ctx, &gated, applied, &mut status, now)?
            };
            status.maintenance_history = record.map(|r| r.history).unwrap_or_default();
            status.generation = stored.generation;
            status.observed_generation = stored.generation;
            if status.state == BrokerState::Running as i32 {
                lock(&self.users_synced)
                    .insert(id.clone(), (stored.generation, status.engine_starts));
                if status.users_with_password_drift.is_empty() {
                    lock(&self.passwords).remove(&id);
                }
            }
            self.set_status(status);
        }
        Ok(())
    }

    /// Points the host at appliance image `image` and re-executes the agent from it. Returns
    /// only when that fails.
    fn switch_image(&self, image: &str, broker: &str) -> anyhow::Error {
        tracing::info!(%broker, image, from = %self.images.running(), "switching appliance image");
        match self.images.switch(image) {
            Ok(agent) => {
                let e = crate::image::exec(&agent);
                anyhow::anyhow!("running {}: {e}", agent.display())
            }
            Err(e) => e.into(),
        }
    }

    /// A pass that applied window-bound changes and does not serve: past the deadline, the
    /// change is given up, recorded in the history, and the next pass (at once) puts the values
    /// the host ran before back.
    fn not_serving(
        &self,
        ctx: &broker::Context,
        gated: &maintenance::Gated,
        applied: Option<AppliedRecord>,
        status: &mut BrokerStatus,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<AppliedRecord>> {
        let progress =
            maintenance::Attempt::not_serving(&ctx.broker_dir, gated, self.rollback_after, now)?;
        let maintenance::Progress::RollBack(why) = progress else {
            return Ok(applied);
        };
        let broker = gated.spec.broker_id.as_str();
        tracing::error!(%broker, "{why}: putting back the values the host ran before");
        status.message = format!("{why}; {}", status.message);
        self.wake.notify_one();
        let Some(mut record) = applied else {
            return Ok(None);
        };
        let before = record.clone();
        record.note(now, &why);
        record.save_if_changed(Some(&before), &ctx.broker_dir)?;
        Ok(Some(record))
    }

    /// A dedicated load-balancer host's broker: no engine, users or maintenance window, only
    /// HAProxy and keepalived (a reload needs no window: it drops no connection).
    fn pass_dedicated(&self, spec: &BrokerSpec, generation: u64) {
        let previous = self.status(&spec.broker_id);
        let mut status = tokio::task::block_in_place(|| {
            load_balancer::converge_dedicated(
                &self.supervisor,
                &self.brokers_dir.join(&spec.broker_id),
                spec,
                previous.as_ref(),
            )
        });
        if status.state != BrokerState::Running as i32 {
            tracing::info!(broker = %spec.broker_id, message = %status.message, "load balancer not running");
        }
        status.generation = generation;
        status.observed_generation = generation;
        self.set_status(status);
    }

    /// Whether this instance may go down now for its window-bound changes: the rolling rules
    /// over the peers' status, then the engine's own check (a cluster node that is quorum
    /// critical waits for its peers' queue members to catch up).
    async fn take_turn(&self, ctx: &broker::Context, spec: &BrokerSpec) -> Result<(), String> {
        let role = ctx
            .previous
            .as_ref()
            .map(|p| p.role.clone())
            .unwrap_or_default();
        let Some(peers) = &self.peers else {
            return Err("waiting: this agent has no credentials to ask its peers".into());
        };
        maintenance::may_go(spec, &role, &peers.view(spec).await)?;
        broker::ready_to_stop(ctx, spec).await
    }

    fn ctx(&self, broker_id: &str) -> broker::Context {
        broker::Context {
            broker_dir: self.brokers_dir.join(broker_id),
            supervisor: self.supervisor.clone(),
            previous: self.status(broker_id),
            broker_ca: lock(&self.broker_ca).clone(),
            passwords: lock(&self.passwords)
                .get(broker_id)
                .cloned()
                .unwrap_or_default(),
            sync_users: false,
            restart: false,
            bundles: self.bundles.clone(),
        }
    }

    /// After an apply the last observation is stale (users are converged again even when the
    /// spec did not change: a password re-sent after drift): clients wait for the next pass.
    fn resync(&self, broker_id: &str, plain: BTreeMap<String, String>) {
        lock(&self.users_synced).remove(broker_id);
        lock(&self.passwords)
            .entry(broker_id.to_string())
            .or_default()
            .extend(plain);
        if let Ok(mut map) = self.statuses.lock() {
            if let Some(s) = map.get_mut(broker_id) {
                s.observed_generation = 0;
            }
        }
    }

    fn set_status(&self, status: BrokerStatus) {
        let id = status
            .spec
            .as_ref()
            .map(|s| s.broker_id.clone())
            .unwrap_or_default();
        if let Ok(mut map) = self.statuses.lock() {
            map.insert(id, status);
        }
    }

    /// Stores a user of the broker managed on its own (`ferrymq_user`), password hashed.
    pub async fn apply_user(
        &self,
        broker_id: &str,
        mut user: User,
    ) -> Result<BrokerUserStatus, ApplyError> {
        let mut errors = Vec::new();
        for (path, r) in [
            ("username", validate::username(&user.username)),
            ("password", validate::password(&user.password)),
        ] {
            if let Err(m) = r {
                errors.push(FieldError::new(path, m));
            }
        }
        for (i, g) in user.groups.iter().enumerate() {
            if let Err(m) = validate::group_name(g) {
                errors.push(FieldError::new(format!("groups[{i}]"), m));
            }
        }
        if !errors.is_empty() {
            return Err(ApplyError::Invalid(errors));
        }
        let _guard = self.pass_lock.lock().await;
        let mut spec = self
            .knows(broker_id)?
            .ok_or_else(|| ApplyError::NotFound(format!("no broker {broker_id} on this host")))?;
        if spec.users.iter().any(|u| u.username == user.username) {
            return Err(ApplyError::Conflict(format!(
                "user {:?} is one of the broker's own user blocks; manage it there or here, not both",
                user.username
            )));
        }
        let plain = users::seal(
            std::slice::from_mut(&mut user),
            &spec.standalone_users,
            &spec.cluster_secret,
        )?;
        match spec
            .standalone_users
            .iter_mut()
            .find(|u| u.username == user.username)
        {
            Some(u) => *u = user.clone(),
            None => spec.standalone_users.push(user.clone()),
        }
        let generation = self.store.save(&spec)?;
        self.resync(broker_id, plain);
        self.wake.notify_one();
        user.password_hash.clear();
        Ok(BrokerUserStatus {
            user: Some(user),
            password_drift: false,
            generation,
        })
    }

    /// The user as the engine has it (from the latest pass), None when the engine has no such
    /// user or the broker is unknown.
    pub fn user(&self, broker_id: &str, username: &str) -> Option<BrokerUserStatus> {
        let status = self.status(broker_id)?;
        let user = status.users.iter().find(|u| u.username == username)?;
        Some(BrokerUserStatus {
            user: Some(user.clone()),
            password_drift: status
                .users_with_password_drift
                .iter()
                .any(|d| d == username),
            generation: status.observed_generation,
        })
    }

    /// Removes a user applied on its own; false when there was none. Returns the generation.
    pub async fn delete_user(&self, broker_id: &str, username: &str) -> Result<Option<u64>> {
        let _guard = self.pass_lock.lock().await;
        let Some(mut spec) = self.knows(broker_id)? else {
            return Ok(None);
        };
        let before = spec.standalone_users.len();
        spec.standalone_users.retain(|u| u.username != username);
        if spec.standalone_users.len() == before {
            return Ok(None);
        }
        let generation = self.store.save(&spec)?;
        self.resync(broker_id, BTreeMap::new());
        self.wake.notify_one();
        Ok(Some(generation))
    }

    /// Stores the spec (validated, one broker per host) and wakes a pass. Returns the status
    /// as known now, with the generation stored: the caller polls until a status observed for
    /// that generation is RUNNING.
    pub async fn apply(&self, spec: BrokerSpec) -> Result<BrokerStatus, ApplyError> {
        validate::broker_spec(&spec).map_err(ApplyError::Invalid)?;
        if ferrymq_api::load_balancer::is_dedicated(&spec) {
            return self.apply_dedicated(spec).await;
        }
        broker::check_instance_is_local(&spec).map_err(ApplyError::Conflict)?;
        let mut spec = spec;
        let supplied_key = supplied::take_key(&mut spec).map_err(ApplyError::Invalid)?;
        let _guard = self.pass_lock.lock().await;
        let stored = self.store.load_all()?;
        // Load balancers of other brokers (dedicated-host roles) take no share of the host.
        if let Some(other) = stored.iter().find(|s| {
            s.spec.broker_id != spec.broker_id && !ferrymq_api::load_balancer::is_dedicated(&s.spec)
        }) {
            return Err(ApplyError::Conflict(format!(
                "this host already runs broker {} ({}); a host runs one broker",
                other.spec.broker_id, other.spec.broker_name
            )));
        }
        let previous = stored.iter().find(|s| s.spec.broker_id == spec.broker_id);
        if previous.is_some_and(|p| ferrymq_api::load_balancer::is_dedicated(&p.spec)) {
            return Err(ApplyError::Conflict(format!(
                "this host runs only the load balancer of broker {}; an instance of it needs a new broker",
                spec.broker_id
            )));
        }
        if let Some(previous) = previous {
            // A reboot is the agent's own record, not the provider's: an apply keeps it.
            spec.reboot_id = previous.spec.reboot_id.clone();
            broker::check_immutable(&previous.spec, &spec).map_err(ApplyError::Conflict)?;
            // The cluster's secret is made once, at create: updates carry none and keep it.
            if !previous.spec.cluster_secret.is_empty() {
                spec.cluster_secret = previous.spec.cluster_secret.clone();
            }
        }
        broker::check_cluster_secret(&spec).map_err(ApplyError::Conflict)?;
        let previous_users = previous.map(|p| p.spec.users.clone()).unwrap_or_default();
        let secret = spec.cluster_secret.clone();
        let plain = users::seal(&mut spec.users, &previous_users, &secret)?;
        // Users applied on their own live beside the spec's, unless the spec now names them.
        spec.standalone_users = previous
            .map(|p| p.spec.standalone_users.clone())
            .unwrap_or_default();
        spec.standalone_users
            .retain(|s| !spec.users.iter().any(|u| u.username == s.username));
        if let Some(key) = &supplied_key {
            // Before the spec: no pass sees a supplied certificate without its key.
            supplied::stage_key(&self.ctx(&spec.broker_id).certificate_files(), key)?;
        }
        let generation = self.store.save(&spec)?;
        self.resync(&spec.broker_id, plain);
        if previous.map(|p| p.generation) != Some(generation) {
            tracing::info!(broker = %spec.broker_id, generation, "spec stored");
        }
        Ok(self.wake_for(&spec, generation))
    }

    /// Wakes a pass for a spec just stored as `generation`; the status as known now, with
    /// that generation (the caller polls until a status observed for it is RUNNING).
    fn wake_for(&self, spec: &BrokerSpec, generation: u64) -> BrokerStatus {
        self.wake.notify_one();
        let mut status = self
            .status(&spec.broker_id)
            .unwrap_or_else(|| broker::pending_status(spec));
        status.generation = generation;
        status
    }

    /// Stores the spec of a dedicated load-balancer host: nothing of it that only an engine
    /// needs is kept (users, secrets, certificate key), and it shares the host with any broker.
    async fn apply_dedicated(&self, spec: BrokerSpec) -> Result<BrokerStatus, ApplyError> {
        let address = ferrymq_api::load_balancer::dedicated_address(&spec).map_err(|m| {
            ApplyError::Invalid(vec![FieldError::new("load_balancer_host_index", m)])
        })?;
        std::net::TcpListener::bind((address, 0))
            .map(drop)
            .map_err(|_| {
                ApplyError::Conflict(format!(
                    "load balancer host {address} is not an address of this host"
                ))
            })?;
        let index = spec.load_balancer_host_index.unwrap_or_default() as usize;
        let spec = ferrymq_api::load_balancer::dedicated_spec(&spec, index);
        let _guard = self.pass_lock.lock().await;
        let stored = self.store.load_all()?;
        let previous = stored.iter().find(|s| s.spec.broker_id == spec.broker_id);
        if previous.is_some_and(|p| !ferrymq_api::load_balancer::is_dedicated(&p.spec)) {
            return Err(ApplyError::Conflict(format!(
                "this host runs an instance of broker {}, which runs its load balancer there; list the host once",
                spec.broker_id
            )));
        }
        let generation = self.store.save(&spec)?;
        if previous.map(|p| p.generation) != Some(generation) {
            tracing::info!(broker = %spec.broker_id, generation, "load balancer spec stored");
        }
        self.resync(&spec.broker_id, BTreeMap::new());
        Ok(self.wake_for(&spec, generation))
    }

    /// Records an asked-for reboot of the broker on this host and wakes a pass; the restart
    /// itself waits for this host's turn under the rolling rules.
    pub async fn reboot(
        &self,
        broker_id: &str,
        reboot_id: &str,
    ) -> Result<BrokerStatus, ApplyError> {
        if reboot_id.is_empty() || reboot_id.len() > 64 || reboot_id.contains(char::is_whitespace) {
            return Err(ApplyError::Invalid(vec![FieldError::new(
                "reboot_id",
                format!("reboot_id {reboot_id:?} must be 1 to 64 characters without spaces"),
            )]));
        }
        let _guard = self.pass_lock.lock().await;
        let mut spec = self
            .store
            .load_all()?
            .into_iter()
            .find(|s| s.spec.broker_id == broker_id)
            .map(|s| s.spec)
            .ok_or_else(|| ApplyError::NotFound(format!("no broker {broker_id} on this host")))?;
        spec.reboot_id = reboot_id.to_string();
        let generation = self.store.save(&spec)?;
        tracing::info!(broker = %broker_id, reboot_id, "reboot asked for");
        if let Ok(mut map) = self.statuses.lock() {
            if let Some(s) = map.get_mut(broker_id) {
                s.observed_generation = 0;
            }
        }
        self.wake.notify_one();
        let mut status = self
            .status(broker_id)
            .unwrap_or_else(|| broker::pending_status(&spec));
        status.generation = generation;
        Ok(status)
    }

    /// Every broker's figures for the metrics endpoint: whether it runs, its volume, and what
    /// its engine reports (`ferrymq_engine_up` 0 when the engine does not answer, e.g. a
    /// standby). Runs beside passes: it only reads.
    pub async fn metrics(&self) -> Vec<Sample> {
        let stored = match self.store.load_all() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics: {e:#}");
                return vec![];
            }
        };
        let mut out = Vec::new();
        if let Ok(ca) = lock(&self.broker_ca).as_ref() {
            out.extend(crate::pki::expiry::samples(&ca.tls_dir));
        }
        for s in stored {
            let spec = &s.spec;
            let status = self.status(&spec.broker_id);
            let mut broker = vec![Sample::gauge(
                "ferrymq_broker_running",
                "1 when the broker instance on this host is RUNNING (Amazon MQ: broker state).",
                f64::from(
                    status
                        .as_ref()
                        .is_some_and(|st| st.state == BrokerState::Running as i32),
                ),
            )];
            if let Some(v) = status.as_ref().and_then(|st| st.volume.as_ref()) {
                broker.push(Sample::gauge(
                    "ferrymq_volume_size_bytes",
                    "Size of the broker's data volume.",
                    v.size_bytes as f64,
                ));
                broker.push(Sample::gauge(
                    "ferrymq_volume_used_bytes",
                    "Bytes used on the broker's data volume.",
                    v.used_bytes as f64,
                ));
            }
            if ferrymq_api::load_balancer::is_dedicated(spec) {
                // No engine here to ask: only whether the load balancer runs.
                out.extend(crate::metrics::for_broker(
                    broker,
                    &spec.broker_id,
                    &spec.broker_name,
                ));
                continue;
            }
            let ctx = self.ctx(&spec.broker_id);
            let up = match broker::engine_metrics(&ctx, spec).await {
                Ok(samples) => {
                    broker.extend(samples);
                    1.0
                }
                Err(e) => {
                    tracing::debug!(broker = %spec.broker_id, "engine metrics: {e:#}");
                    0.0
                }
            };
            broker.push(Sample::gauge(
                "ferrymq_engine_up",
                "1 when the engine answered the metrics query (0: down, starting, or a standby).",
                up,
            ));
            out.extend(crate::metrics::for_broker(
                broker,
                &spec.broker_id,
                &spec.broker_name,
            ));
        }
        out
    }

    pub fn status(&self, broker_id: &str) -> Option<BrokerStatus> {
        self.statuses.lock().ok()?.get(broker_id).cloned()
    }

    /// Reads the broker CA again (renewed by `pki renew`) and wakes a pass: brokers' server
    /// certificates are issued again with it, so they are served with the renewed chain.
    pub fn reload_broker_ca(&self, tls_dir: &std::path::Path) {
        let ca = BrokerCa::load(tls_dir).map_err(|e| format!("{e:#}"));
        if let Err(e) = &ca {
            tracing::warn!("reloading the broker CA: {e}");
        }
        *lock(&self.broker_ca) = Arc::new(ca);
        self.wake.notify_one();
    }

    /// Whether a spec for the broker is stored (its status may not be computed yet).
    pub fn knows(&self, broker_id: &str) -> Result<Option<BrokerSpec>> {
        Ok(self
            .store
            .load_all()?
            .into_iter()
            .map(|s| s.spec)
            .find(|s| s.broker_id == broker_id))
    }

    /// Stops the broker and removes its data; false when the host had no such broker.
    pub async fn delete(&self, broker_id: &str) -> Result<bool> {
        let _guard = self.pass_lock.lock().await;
        let spec = self.knows(broker_id)?;
        let dir = self.brokers_dir.join(broker_id);
        if spec.is_none() && !dir.exists() {
            return Ok(false);
        }
        match &spec {
            Some(spec) if ferrymq_api::load_balancer::is_dedicated(spec) => {
                let sup = self.supervisor.clone();
                let id = broker_id.to_string();
                tokio::task::spawn_blocking(move || load_balancer::teardown(&sup, &id)).await??;
            }
            Some(spec) => broker::teardown(&self.ctx(broker_id), spec).await?,
            None => {}
        }
        self.store.remove(broker_id)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        if let Ok(mut map) = self.statuses.lock() {
            map.remove(broker_id);
        }
        // What the agent remembered of it in memory goes too.
        lock(&self.applying_said).remove(broker_id);
        lock(&self.users_synced).remove(broker_id);
        lock(&self.passwords).remove(broker_id);
        tracing::info!(broker = broker_id, "deleted");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;
    use crate::supervisor::DirectSupervisor;
    use ferrymq_api::agent::Instance;

    #[tokio::test(flavor = "multi_thread")]
    async fn passwords_stored_by_an_earlier_agent_become_hashes() {
        let dir = std::env::temp_dir().join(format!("ferrymq-reconcile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let brokers = dir.join("brokers");
        let store = Arc::new(FsStore::new(&brokers));
        // As an earlier agent stored it: the password itself. The volume does not exist, so
        // the pass stops before touching anything.
        let spec = BrokerSpec {
            broker_id: "b-1".into(),
            engine_type: "RabbitMQ".into(),
            instances: vec![Instance {
                host: "127.0.0.1".into(),
                volume: dir.join("no-such-device").display().to_string(),
            }],
            users: vec![User {
                username: "app".into(),
                password: "app-password-12".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        store.save(&spec).expect("save");
        let r = Reconciler::new(
            brokers.clone(),
            store.clone(),
            Arc::new(DirectSupervisor::new(dir.join("units"))),
            Err("no broker CA in this test".into()),
        );
        r.pass().await.expect("pass");
        let stored = store.load_all().expect("load");
        let user = &stored[0].spec.users[0];
        assert_eq!(user.password, "");
        assert!(crate::password::verify(
            &user.password_hash,
            "app-password-12"
        ));
        let on_disk = std::fs::read_to_string(brokers.join("b-1").join("spec.json")).expect("read");
        assert!(!on_disk.contains("app-password-12"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn rabbitmq(id: &str, host: &str) -> BrokerSpec {
        BrokerSpec {
            broker_id: id.into(),
            broker_name: id.into(),
            engine_type: "RabbitMQ".into(),
            engine_version: "3.10.8".into(),
            host_instance_type: "mq.m5.large".into(),
            deployment_mode: "SINGLE_INSTANCE".into(),
            storage_type: "ebs".into(),
            instances: vec![Instance {
                host: host.into(),
                volume: "/dev/loop0".into(),
            }],
            users: vec![User {
                username: "app".into(),
                password: "app-password-12".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dedicated_load_balancer_keeps_no_secret_and_shares_the_host() {
        let dir = std::env::temp_dir().join(format!("ferrymq-dedicated-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let brokers = dir.join("brokers");
        let store = Arc::new(FsStore::new(&brokers));
        let r = Reconciler::new(
            brokers.clone(),
            store.clone(),
            Arc::new(DirectSupervisor::new(dir.join("units"))),
            Err("no broker CA in this test".into()),
        );
        // Broker b-1 runs on 10.0.0.1; this host (127.0.0.1) runs its load balancer only.
        let mut lb = rabbitmq("b-1", "10.0.0.1");
        lb.cluster_secret = "s3cr3t-of-the-cluster".into();
        lb.load_balancer = Some(ferrymq_api::agent::LoadBalancer {
            virtual_ip: "10.0.0.100".into(),
            hosts: vec!["10.0.0.1".into(), "127.0.0.1".into()],
        });
        lb.load_balancer_host_index = Some(1);
        let status = r.apply(lb.clone()).await.expect("load balancer applied");
        assert_eq!(status.generation, 1);
        let stored = store.load_all().expect("load");
        assert!(stored[0].spec.users.is_empty() && stored[0].spec.cluster_secret.is_empty());
        let on_disk = std::fs::read_to_string(brokers.join("b-1").join("spec.json")).expect("read");
        assert!(!on_disk.contains("app-password-12") && !on_disk.contains("s3cr3t"));
        // Another broker's instance may run here; b-1's instance may not replace its load
        // balancer (the host would be listed twice).
        let mut instance = rabbitmq("b-1", "127.0.0.1");
        instance.load_balancer = lb.load_balancer.clone();
        assert!(matches!(
            r.apply(instance).await,
            Err(ApplyError::Conflict(m)) if m.contains("only the load balancer")
        ));
        r.apply(rabbitmq("b-2", "127.0.0.1"))
            .await
            .expect("an instance beside a load balancer");
        // A host that is not this one is refused.
        lb.load_balancer.as_mut().expect("lb").hosts[1] = "10.0.0.9".into();
        assert!(matches!(r.apply(lb).await, Err(ApplyError::Conflict(_))));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
