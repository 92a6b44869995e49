//! Runs the broker's load balancer on this host, when the host is one of its hosts: writes the
//! HAProxy and keepalived configurations, starts both, and reloads a running one whose
//! configuration changed (HAProxy: SIGUSR2 to its master, established connections kept;
//! keepalived: SIGHUP). A host that stops being a load-balancer host stops both.
//!
//! A dedicated load-balancer host (a spec with `load_balancer_host_index`) runs this and
//! nothing else for the broker: no engine, no volume, no certificate, so it needs none of the
//! engine's packages; its status says whether both processes run.

use super::broker::{redacted, write_if_changed};
use crate::load_balancer::{allow_nonlocal_bind, check_config, Plan, HAPROXY_USER};
use crate::supervisor::{Supervisor, UnitSpec, UnitState};
use anyhow::{Context, Result};
use ferrymq_api::agent::{BrokerSpec, BrokerState, BrokerStatus};
use ferrymq_api::catalogue::EngineType;
use nix::sys::signal::Signal;
use nix::unistd::User;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// keepalived removes the virtual IP when it stops: give it the time to.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn converge(supervisor: &Arc<dyn Supervisor>, plan: &Plan) -> Result<()> {
    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("creating {}", plan.dir.display()))?;
    let root = User::from_uid(0.into())
        .context("looking up root")?
        .context("no root user")?;
    let haproxy_cfg = plan.haproxy_config();
    let haproxy = plan.haproxy_unit();
    // 0640 root:haproxy: HAProxy runs as its own user and reads its configuration through
    // its group; nobody else reads it (it names brokers and addresses).
    let haproxy_user = User::from_name(HAPROXY_USER)
        .context("looking up the haproxy user")?
        .with_context(|| format!("user {HAPROXY_USER} does not exist; is HAProxy installed?"))?;
    let cfg_owner = User {
        gid: haproxy_user.gid,
        ..root.clone()
    };
    let changed = write_if_changed(&haproxy_cfg, &cfg_owner)?;
    let running = is_running(supervisor, &haproxy)?;
    if changed || !running {
        check_config(&haproxy_cfg.path)?;
    }
    if !running {
        allow_nonlocal_bind(plan.virtual_ip)?;
        pid_file_for_haproxy(&plan.haproxy_pid_file())?;
    }
    run_or_reload(supervisor, &haproxy, running, changed, Signal::SIGUSR2)?;

    let keepalived = plan.keepalived_unit();
    let changed = write_if_changed(&plan.keepalived_config(), &root)?;
    let running = is_running(supervisor, &keepalived)?;
    run_or_reload(supervisor, &keepalived, running, changed, Signal::SIGHUP)?;
    Ok(())
}

/// Makes HAProxy's pid file, owned by its user, so HAProxy (not root) can write it without
/// write access to the directory, which also holds keepalived's configuration.
fn pid_file_for_haproxy(path: &Path) -> Result<()> {
    let user = User::from_name(HAPROXY_USER)
        .context("looking up the haproxy user")?
        .with_context(|| format!("user {HAPROXY_USER} does not exist; is HAProxy installed?"))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    nix::unistd::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", path.display()))?;
    Ok(())
}

fn is_running(supervisor: &Arc<dyn Supervisor>, unit: &UnitSpec) -> Result<bool> {
    Ok(matches!(
        supervisor.state(&unit.name)?,
        UnitState::Running { .. }
    ))
}

fn run_or_reload(
    supervisor: &Arc<dyn Supervisor>,
    unit: &UnitSpec,
    running: bool,
    changed: bool,
    reload: Signal,
) -> Result<()> {
    if running {
        if changed {
            supervisor.signal(&unit.name, reload)?;
            tracing::info!(unit = %unit.name, "configuration changed; reloaded");
        }
    } else if supervisor.ensure_running(unit)? {
        tracing::info!(unit = %unit.name, "load balancer started");
    }
    Ok(())
}

/// The role a dedicated load-balancer host reports (instances report "active" or "standby").
pub const ROLE_LOAD_BALANCER: &str = "load_balancer";

/// A dedicated load-balancer host's pass: HAProxy and keepalived for the broker from the spec
/// alone. RUNNING once both run; never fails (failures are states, as for instances).
pub fn converge_dedicated(
    supervisor: &Arc<dyn Supervisor>,
    broker_dir: &Path,
    spec: &BrokerSpec,
    previous: Option<&BrokerStatus>,
) -> BrokerStatus {
    let mut status = BrokerStatus {
        spec: Some(redacted(spec)),
        role: ROLE_LOAD_BALANCER.into(),
        ..Default::default()
    };
    let outcome = (|| -> Result<bool> {
        let address =
            ferrymq_api::load_balancer::dedicated_address(spec).map_err(anyhow::Error::msg)?;
        status.ip_address = address.to_string();
        let engine: EngineType = spec.engine_type.parse().map_err(anyhow::Error::msg)?;
        let listeners = crate::engine::listeners_of(engine, spec.plain_listeners);
        let dir = broker_dir.join("load_balancer");
        let plan = Plan::for_host(spec, address, dir, listeners)?
            .context("this host is not among load_balancer.hosts")?;
        status.load_balancer_endpoints =
            crate::engine::endpoints_of(engine, plan.virtual_ip, spec.plain_listeners);
        converge(supervisor, &plan)?;
        for unit in [plan.haproxy_unit(), plan.keepalived_unit()] {
            if !is_running(supervisor, &unit)? {
                status.message = format!("{} is not running", unit.name);
                return Ok(false);
            }
        }
        Ok(true)
    })();
    let ever_ran = previous.is_some_and(|p| {
        [BrokerState::Running, BrokerState::CriticalActionRequired]
            .iter()
            .any(|s| *s as i32 == p.state)
    });
    status.state = match outcome {
        Ok(true) => BrokerState::Running,
        Ok(false) | Err(_) if ever_ran => BrokerState::CriticalActionRequired,
        Ok(false) | Err(_) => BrokerState::CreationInProgress,
    } as i32;
    if let Err(e) = outcome {
        status.message = format!("{e:#}");
    }
    status
}

/// Stops the broker's load balancer on this host (keepalived first, releasing the virtual IP);
/// nothing to do where it never ran.
pub fn teardown(supervisor: &Arc<dyn Supervisor>, broker_id: &str) -> Result<()> {
    for name in crate::load_balancer::unit_names(broker_id) {
        if matches!(supervisor.state(&name)?, UnitState::Running { .. }) {
            supervisor.stop(&name, STOP_GRACE)?;
            tracing::info!(unit = %name, "load balancer stopped");
        }
        supervisor.forget(&name)?;
    }
    Ok(())
}
