//! The reconciler: converges every stored broker spec to a running broker and records what it
//! observed. Passes run one at a time (and never alongside a delete), on a timer and whenever
//! a spec changes, so a crashed engine is restarted and a restarted agent picks up where the
//! last one stopped.

mod broker;
mod secrets;

pub use broker::pending_status;

use crate::store::SpecStore;
use crate::supervisor::Supervisor;
use anyhow::Result;
use ferrymq_api::agent::{BrokerSpec, BrokerStatus};
use ferrymq_api::validate::{self, FieldError};
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
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
    bundles: Arc<crate::bundle::Store>,
}

impl Reconciler {
    pub fn new(
        brokers_dir: PathBuf,
        store: Arc<dyn SpecStore>,
        supervisor: Arc<dyn Supervisor>,
    ) -> Self {
        // Bundles sit beside the brokers in the state directory; none are fetched unless the
        // agent is given a source (`with_bundles`).
        let bundles_dir = brokers_dir.parent().unwrap_or(&brokers_dir).join("bundles");
        Reconciler {
            brokers_dir,
            store,
            supervisor,
            statuses: Mutex::new(HashMap::new()),
            pass_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            bundles: Arc::new(crate::bundle::Store::new(bundles_dir, None)),
        }
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
        for stored in self.store.load_all()? {
            let ctx = self.ctx(&stored.spec.broker_id);
            let mut status = broker::converge(&ctx, &stored.spec).await;
            status.generation = stored.generation;
            status.observed_generation = stored.generation;
            self.set_status(status);
        }
        Ok(())
    }

    fn ctx(&self, broker_id: &str) -> broker::Context {
        broker::Context {
            broker_dir: self.brokers_dir.join(broker_id),
            supervisor: self.supervisor.clone(),
            previous: self.status(broker_id),
            bundles: self.bundles.clone(),
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

    /// Stores the spec (validated, one broker per host) and wakes a pass. Returns the status
    /// as known now, with the generation stored: the caller polls until a status observed for
    /// that generation is RUNNING.
    pub async fn apply(&self, spec: BrokerSpec) -> Result<BrokerStatus, ApplyError> {
        validate::broker_spec(&spec).map_err(ApplyError::Invalid)?;
        broker::check_instance_is_local(&spec).map_err(ApplyError::Conflict)?;
        let _guard = self.pass_lock.lock().await;
        let stored = self.store.load_all()?;
        if let Some(other) = stored.iter().find(|s| s.spec.broker_id != spec.broker_id) {
            return Err(ApplyError::Conflict(format!(
                "this host already runs broker {} ({}); a host runs one broker",
                other.spec.broker_id, other.spec.broker_name
            )));
        }
        let previous = stored.iter().find(|s| s.spec.broker_id == spec.broker_id);
        if let Some(previous) = previous {
            broker::check_immutable(&previous.spec, &spec).map_err(ApplyError::Conflict)?;
        }
        let generation = self.store.save(&spec)?;
        if previous.map(|p| p.generation) != Some(generation) {
            tracing::info!(broker = %spec.broker_id, generation, "spec stored");
        }
        self.wake.notify_one();
        let mut status = self
            .status(&spec.broker_id)
            .unwrap_or_else(|| broker::pending_status(&spec));
        status.generation = generation;
        Ok(status)
    }

    pub fn status(&self, broker_id: &str) -> Option<BrokerStatus> {
        self.statuses.lock().ok()?.get(broker_id).cloned()
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
        if let Some(spec) = &spec {
            broker::teardown(&self.ctx(broker_id), spec).await?;
        }
        self.store.remove(broker_id)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        if let Ok(mut map) = self.statuses.lock() {
            map.remove(broker_id);
        }
        tracing::info!(broker = broker_id, "deleted");
        Ok(true)
    }
}
