//! Keeps engine processes running. Two backends share one trait: `direct` (child processes,
//! for hosts where systemd is not PID 1, as on the acceptance hosts) and, with the appliance
//! image, systemd units. The supervisor knows processes, not engines.

mod cgroup;
mod direct;
mod systemd;

pub use direct::DirectSupervisor;
pub use systemd::SystemdSupervisor;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The umask every unit runs with: files and directories it creates are its own user's alone
/// (a broker's message store, its user records and logs must not be readable by other users of
/// the host). Nothing a unit writes is meant for another unprivileged user: the agent, which
/// reads engine logs and files, runs as root.
pub const UMASK: u32 = 0o077;

/// One long-running process, as an engine describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSpec {
    /// Unique on the host, e.g. `b-…-rabbitmq`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment: nothing is inherited from the agent.
    pub env: Vec<(String, String)>,
    /// The system user the process runs as.
    pub user: Option<String>,
    pub working_dir: PathBuf,
    /// Where stdout and stderr go where there is no journal.
    pub console_log: PathBuf,
    /// CPU and memory the unit may use (a cgroup, or a systemd slice); `None`: unlimited.
    pub limits: Option<ResourceLimits>,
}

/// The resources of an instance type, as the supervisor enforces them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    pub cpus: u32,
    pub memory_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitState {
    Running { pid: i32 },
    Stopped,
}

pub trait Supervisor: Send + Sync {
    /// Starts the unit unless it already runs (also after an agent restart). Returns whether it
    /// had to start it.
    fn ensure_running(&self, unit: &UnitSpec) -> Result<bool>;
    /// Stops the unit and every process it started, waiting at most `grace` before killing.
    fn stop(&self, name: &str, grace: Duration) -> Result<()>;
    fn state(&self, name: &str) -> Result<UnitState>;
    /// How many times the unit was started since it was first started on this host.
    fn starts(&self, name: &str) -> Result<u32>;
    /// Sends a signal to the unit's main process (a reload: SIGHUP, HAProxy's SIGUSR2); does
    /// nothing when the unit does not run.
    fn signal(&self, name: &str, signal: nix::sys::signal::Signal) -> Result<()>;
    /// Forgets the unit's records once it is stopped for good.
    fn forget(&self, name: &str) -> Result<()>;
    /// `direct` or `systemd`, for host facts.
    fn kind(&self) -> &'static str;
}

/// Which backend runs the brokers (`serve --supervisor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// systemd where it can manage the agent's brokers, else direct.
    Auto,
    Direct,
    Systemd,
}

/// systemd can run this agent's brokers when it is PID 1 (`/run/systemd/system`, as
/// sd_booted(3) checks) and the agent is in PID 1's network namespace: a unit would start in
/// PID 1's namespaces, so an agent in a lab namespace (the acceptance hosts) must stay direct.
fn systemd_usable() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    Path::new("/run/systemd/system").is_dir()
        && ns("/proc/1/ns/net").is_some()
        && ns("/proc/1/ns/net") == ns("/proc/self/ns/net")
}

pub fn select(backend: Backend, state_dir: &Path) -> Result<Arc<dyn Supervisor>> {
    let systemd = match backend {
        Backend::Direct => false,
        Backend::Auto => systemd_usable(),
        Backend::Systemd if systemd_usable() => true,
        Backend::Systemd => {
            bail!("--supervisor systemd: systemd is not PID 1 in this agent's network namespace")
        }
    };
    let units = state_dir.join("units");
    Ok(if systemd {
        Arc::new(SystemdSupervisor::new(systemd::RUNTIME_UNIT_DIR, units))
    } else {
        Arc::new(DirectSupervisor::new(units))
    })
}
