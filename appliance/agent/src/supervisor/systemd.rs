//! Engines as systemd units, on hosts where systemd is PID 1 (the appliance image).
//!
//! Each unit becomes `ferrymq-broker-NAME.service` in its own slice `ferrymq-NAME.slice`
//! (a child of `ferrymq.slice`) that carries the instance type's `CPUQuota` and `MemoryMax`.
//! Both are runtime unit files in `/run/systemd/system`: they vanish at reboot, when the agent's
//! first reconcile pass writes them again, so the agent's spec store stays the only truth.
//! systemd restarts a failed engine (`Restart=on-failure`) and keeps its output in the journal;
//! an agent restart leaves the engines running (they are not the agent's children).

use super::{Supervisor, UnitSpec, UnitState};
use crate::store::write_atomically;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

#[derive(Serialize, Deserialize, Default)]
struct UnitRecord {
    /// Starts the agent asked for; systemd's own restarts are added from `NRestarts`.
    starts: u32,
}

pub struct SystemdSupervisor {
    unit_dir: PathBuf,
    /// Start counts survive agent restarts here.
    records_dir: PathBuf,
}

pub fn service_name(unit: &str) -> String {
    format!("ferrymq-broker-{unit}.service")
}

/// `-` in a slice name means nesting to systemd: keep one level under `ferrymq.slice`.
pub fn slice_name(unit: &str) -> String {
    format!("ferrymq-{}.slice", unit.replace('-', "_"))
}

/// One word of a unit file's command line or environment, quoted for systemd: `"` and `\`
/// escaped, `%` (specifiers) and `$` (variable expansion) doubled.
fn quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn render_slice(unit: &UnitSpec) -> String {
    let mut s = format!(
        "# Written by ferrymq-agent: the resources of broker unit {}.\n[Unit]\nDescription=FerryMQ broker {}\n\n[Slice]\n",
        unit.name, unit.name
    );
    if let Some(l) = unit.limits {
        s.push_str(&format!(
            "CPUAccounting=yes\nCPUQuota={}%\nMemoryAccounting=yes\nMemoryMax={}\n",
            l.cpus * 100,
            l.memory_bytes
        ));
    }
    s
}

pub fn render_service(unit: &UnitSpec) -> String {
    let mut s = format!(
        "# Written by ferrymq-agent; rewritten from the broker's spec at every reconcile.\n\
         [Unit]\nDescription=FerryMQ broker {name}\nAfter=network-online.target local-fs.target\n\
         StartLimitIntervalSec=0\n\n\
         [Service]\nType=simple\nSlice={slice}\nRestart=on-failure\nRestartSec=3s\n\
         TimeoutStopSec=60s\nKillMode=control-group\nStandardOutput=journal\nStandardError=journal\n\
         SyslogIdentifier={name}\nWorkingDirectory={wd}\n",
        name = unit.name,
        slice = slice_name(&unit.name),
        wd = unit.working_dir.display(),
    );
    s.push_str(&format!("UMask={:04o}\n", super::UMASK));
    if let Some(user) = &unit.user {
        s.push_str(&format!("User={user}\n"));
    }
    for (k, v) in &unit.env {
        s.push_str(&format!("Environment={}\n", quote(&format!("{k}={v}"))));
    }
    let mut exec = quote(&unit.program.to_string_lossy());
    for a in &unit.args {
        exec.push(' ');
        exec.push_str(&quote(a));
    }
    s.push_str(&format!("ExecStart={exec}\n"));
    s
}

/// Runs `systemctl`. The reconciler and the API call the supervisor from async code, and a
/// `daemon-reload` takes seconds on a loaded (or software-emulated) host: on a worker of the
/// multi-threaded runtime the wait is handed to `block_in_place`, so the other tasks (the
/// systemd watchdog ping among them) keep running. Found by the image boot test: two reloads
/// in a row starved the watchdog and systemd killed the agent.
fn systemctl(args: &[&str]) -> Result<String> {
    let run = || Command::new("systemctl").args(args).output();
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let out = if multi_thread {
        tokio::task::block_in_place(run)
    } else {
        run()
    }
    .with_context(|| format!("running systemctl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `systemctl show` properties of a unit.
fn show(service: &str) -> Result<(String, i32, u32)> {
    let out = systemctl(&["show", service, "--property=ActiveState,MainPID,NRestarts"])?;
    let (mut state, mut pid, mut restarts) = (String::new(), 0, 0);
    for line in out.lines() {
        match line.split_once('=') {
            Some(("ActiveState", v)) => state = v.to_string(),
            Some(("MainPID", v)) => pid = v.parse().unwrap_or(0),
            Some(("NRestarts", v)) => restarts = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok((state, pid, restarts))
}

impl SystemdSupervisor {
    pub fn new(unit_dir: impl Into<PathBuf>, records_dir: impl Into<PathBuf>) -> Self {
        SystemdSupervisor {
            unit_dir: unit_dir.into(),
            records_dir: records_dir.into(),
        }
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.records_dir.join(format!("{name}.systemd.json"))
    }

    fn record(&self, name: &str) -> UnitRecord {
        fs::read(self.record_path(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the unit files; returns whether anything changed (systemd must reload).
    fn write_units(&self, unit: &UnitSpec) -> Result<bool> {
        let mut changed = false;
        for (file, text) in [
            (slice_name(&unit.name), render_slice(unit)),
            (service_name(&unit.name), render_service(unit)),
        ] {
            let path = self.unit_dir.join(file);
            if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                write_atomically(&path, text.as_bytes())?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

impl Supervisor for SystemdSupervisor {
    fn ensure_running(&self, unit: &UnitSpec) -> Result<bool> {
        fs::create_dir_all(&self.unit_dir)?;
        fs::create_dir_all(&self.records_dir)?;
        if self.write_units(unit)? {
            systemctl(&["daemon-reload"])?;
        }
        if let UnitState::Running { .. } = self.state(&unit.name)? {
            return Ok(false);
        }
        let mut record = self.record(&unit.name);
        record.starts += 1;
        write_atomically(&self.record_path(&unit.name), &serde_json::to_vec(&record)?)?;
        systemctl(&["reset-failed", &service_name(&unit.name)]).ok();
        systemctl(&["start", "--no-block", &service_name(&unit.name)])?;
        tracing::info!(unit = %unit.name, slice = %slice_name(&unit.name), "systemd unit started");
        Ok(true)
    }

    fn stop(&self, name: &str, grace: Duration) -> Result<()> {
        let service = service_name(name);
        if !self.unit_dir.join(&service).exists() {
            return Ok(());
        }
        systemctl(&["kill", "--signal=SIGTERM", &service]).ok();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.state(name)? == UnitState::Stopped {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Kills what is left of the control group, and keeps systemd from restarting it.
        systemctl(&["stop", &service])?;
        Ok(())
    }

    fn state(&self, name: &str) -> Result<UnitState> {
        let (state, pid, _) = show(&service_name(name))?;
        Ok(match state.as_str() {
            "active" | "reloading" | "deactivating" if pid > 0 => UnitState::Running { pid },
            _ => UnitState::Stopped,
        })
    }

    fn starts(&self, name: &str) -> Result<u32> {
        let (_, _, restarts) = show(&service_name(name))?;
        Ok(self.record(name).starts + restarts)
    }

    fn signal(&self, name: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        // Only a running unit has a main process to signal; a stopped one needs no reload.
        if let UnitState::Running { .. } = self.state(name)? {
            systemctl(&[
                "kill",
                "--kill-who=main",
                &format!("--signal={}", signal.as_str()),
                &service_name(name),
            ])?;
        }
        Ok(())
    }

    fn forget(&self, name: &str) -> Result<()> {
        for file in [service_name(name), slice_name(name)] {
            match fs::remove_file(self.unit_dir.join(&file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context(format!("removing {file}")),
            }
        }
        systemctl(&["daemon-reload"])?;
        systemctl(&["reset-failed", &service_name(name)]).ok();
        let _ = fs::remove_file(self.record_path(name));
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "systemd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::ResourceLimits;

    fn unit() -> UnitSpec {
        UnitSpec {
            name: "b-1234-rabbitmq".into(),
            program: "/usr/lib/rabbitmq/bin/rabbitmq-server".into(),
            args: vec!["-s".into(), "it's 100% \"$HOME\"".into()],
            env: vec![
                ("HOME".into(), "/var/lib/ferrymq/brokers/b-1234".into()),
                ("RABBITMQ_NODENAME".into(), "rabbit@h1".into()),
            ],
            user: Some("rabbitmq".into()),
            working_dir: "/var/lib/ferrymq/brokers/b-1234".into(),
            console_log: "/var/lib/ferrymq/brokers/b-1234/console.log".into(),
            limits: Some(ResourceLimits {
                cpus: 2,
                memory_bytes: 4 << 30,
            }),
        }
    }

    #[test]
    fn the_service_runs_the_engine_in_its_slice_with_restart_on_failure() {
        let s = render_service(&unit());
        let lines: Vec<&str> = s.lines().collect();
        for want in [
            "Slice=ferrymq-b_1234_rabbitmq.slice",
            "Restart=on-failure",
            "User=rabbitmq",
            // Files the engine makes are its own user's alone.
            "UMask=0077",
            "StandardOutput=journal",
            "WorkingDirectory=/var/lib/ferrymq/brokers/b-1234",
            "Environment=\"HOME=/var/lib/ferrymq/brokers/b-1234\"",
            "Environment=\"RABBITMQ_NODENAME=rabbit@h1\"",
            r#"ExecStart="/usr/lib/rabbitmq/bin/rabbitmq-server" "-s" "it's 100%% \"$$HOME\"""#,
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{s}");
        }
        assert_eq!(
            service_name("b-1234-rabbitmq"),
            "ferrymq-broker-b-1234-rabbitmq.service"
        );
    }

    #[test]
    fn the_slice_carries_the_instance_type_limits() {
        let s = render_slice(&unit());
        assert!(s.contains("\nCPUQuota=200%\n"), "{s}");
        assert!(s.contains(&format!("\nMemoryMax={}\n", 4u64 << 30)), "{s}");
        let unlimited = render_slice(&UnitSpec {
            limits: None,
            ..unit()
        });
        assert!(!unlimited.contains("Quota") && !unlimited.contains("MemoryMax"));
    }
}
