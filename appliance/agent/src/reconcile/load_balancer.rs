//! Runs the broker's load balancer on this host, when the host is one of its hosts: writes the
//! HAProxy and keepalived configurations, starts both, and reloads a running one whose
//! configuration changed (HAProxy: SIGUSR2 to its master, established connections kept;
//! keepalived: SIGHUP). A host that stops being a load-balancer host stops both.

use super::broker::write_if_changed;
use crate::load_balancer::{check_config, Plan};
use crate::supervisor::{Supervisor, UnitSpec, UnitState};
use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::User;
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
    let changed = write_if_changed(&haproxy_cfg, &root)?;
    let running = is_running(supervisor, &haproxy)?;
    if changed || !running {
        check_config(&haproxy_cfg.path)?;
    }
    run_or_reload(supervisor, &haproxy, running, changed, Signal::SIGUSR2)?;

    let keepalived = plan.keepalived_unit();
    let changed = write_if_changed(&plan.keepalived_config(), &root)?;
    let running = is_running(supervisor, &keepalived)?;
    run_or_reload(supervisor, &keepalived, running, changed, Signal::SIGHUP)?;
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
