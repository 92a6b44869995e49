//! Engines as child processes of the agent, each in its own process group.
//!
//! A unit's process group id and its leader's start time are recorded on disk, so an agent
//! that was killed and restarted adopts the engines it left running instead of starting them
//! twice. A group is alive while any non-zombie process is in it: engine launch scripts exit
//! or exec while the real broker process lives on in the group.

use super::cgroup::{self, Layout};
use super::{Supervisor, UnitSpec, UnitState};
use crate::store::write_atomically;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Default)]
struct UnitRecord {
    pgid: i32,
    starts: u32,
}

pub struct DirectSupervisor {
    units_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    cgroup_root: PathBuf,
    /// Tells this agent's groups from another's on the same kernel (the test lab runs several
    /// hosts' agents on one machine, and the instances of one broker have the same unit names:
    /// one agent stopping its unit must not kill the other's engine in a shared group).
    cgroup_suffix: String,
}

impl DirectSupervisor {
    pub fn new(units_dir: impl Into<PathBuf>) -> Self {
        let units_dir = units_dir.into();
        let digest = sha2::Sha256::digest(units_dir.as_os_str().as_encoded_bytes());
        DirectSupervisor {
            cgroup_suffix: hex::encode(&digest[..4]),
            units_dir,
            cgroup_root: cgroup::ROOT.into(),
        }
    }

    /// The unit's group under `ferrymq/`: `<unit>.<agent>`.
    pub fn cgroup_name(&self, unit: &str) -> String {
        format!("{unit}.{}", self.cgroup_suffix)
    }

    /// Creates the unit's cgroup with its limits and returns the launcher that joins it, or
    /// `None` (with a warning: the engine's own limits still hold) when cgroups are unusable.
    fn cgroup_launcher(&self, unit: &UnitSpec, user: Option<(u32, u32)>) -> Option<String> {
        let limits = unit.limits.as_ref()?;
        let Some(layout) = Layout::detect(&self.cgroup_root) else {
            tracing::warn!(unit = %unit.name, "no cgroup hierarchy with the cpu and memory controllers; relying on the engine's own limits");
            return None;
        };
        if user.is_some() && !Path::new(cgroup::SETPRIV).exists() {
            tracing::warn!(unit = %unit.name, "{} is missing; not placing the unit in a cgroup", cgroup::SETPRIV);
            return None;
        }
        let group = self.cgroup_name(&unit.name);
        match layout.prepare(&group, limits) {
            Ok(procs) => {
                tracing::info!(unit = %unit.name, cpus = limits.cpus, memory_bytes = limits.memory_bytes, "cgroup limits set");
                Some(cgroup::launcher_script(&procs, user))
            }
            Err(e) => {
                tracing::warn!(unit = %unit.name, "cannot set up the unit's cgroup ({e}); relying on the engine's own limits");
                let _ = layout.remove(&group);
                None
            }
        }
    }

    /// Removes the unit's cgroups once its processes are gone.
    fn remove_cgroup(&self, name: &str) {
        if let Some(layout) = Layout::detect(&self.cgroup_root) {
            if let Err(e) = layout.remove(&self.cgroup_name(name)) {
                tracing::warn!(unit = name, "{e}");
            }
        }
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.units_dir.join(format!("{name}.json"))
    }

    fn record(&self, name: &str) -> Result<Option<UnitRecord>> {
        let path = self.record_path(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context(format!("reading {}", path.display())),
        }
    }

    fn spawn(&self, unit: &UnitSpec) -> Result<i32> {
        // The console log may name queues and users: made under the units' umask too.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o666 & !super::UMASK)
            .open(&unit.console_log)
            .with_context(|| format!("opening {}", unit.console_log.display()))?;
        let user = match &unit.user {
            Some(name) => {
                let user = User::from_name(name)
                    .with_context(|| format!("looking up user {name}"))?
                    .with_context(|| format!("user {name} does not exist on this host"))?;
                Some((user.uid.as_raw(), user.gid.as_raw()))
            }
            None => None,
        };
        let launcher = self.cgroup_launcher(unit, user);
        // `sh -c SCRIPT PROGRAM ARGS…`: the script sets the umask (the standard library has no
        // safe way to set it for a child), joins the cgroups, then execs PROGRAM in its place.
        let script = format!(
            "umask {:04o}; {}",
            super::UMASK,
            launcher.as_deref().unwrap_or("exec \"$0\" \"$@\"")
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script).arg(&unit.program);
        cmd.args(&unit.args)
            .env_clear()
            .envs(unit.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&unit.working_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let (Some((uid, gid)), None) = (user, &launcher) {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", unit.program.display()))?;
        let pid = i32::try_from(child.id()).context("child pid out of range")?;
        // Reap the leader when it exits so it does not linger as a zombie in the group.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(pid)
    }
}

impl Supervisor for DirectSupervisor {
    fn ensure_running(&self, unit: &UnitSpec) -> Result<bool> {
        let record = self.record(&unit.name)?.unwrap_or_default();
        if record.pgid > 0 && group_alive(record.pgid) {
            return Ok(false);
        }
        let pgid = self.spawn(unit)?;
        tracing::info!(unit = %unit.name, pgid, "started");
        let record = UnitRecord {
            pgid,
            starts: record.starts + 1,
        };
        write_atomically(&self.record_path(&unit.name), &serde_json::to_vec(&record)?)?;
        Ok(true)
    }

    fn stop(&self, name: &str, grace: Duration) -> Result<()> {
        let Some(record) = self.record(name)? else {
            return Ok(());
        };
        if record.pgid <= 0 || !group_alive(record.pgid) {
            self.remove_cgroup(name);
            return Ok(());
        }
        let pgid = Pid::from_raw(record.pgid);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !group_alive(record.pgid) {
                tracing::info!(unit = name, "stopped");
                self.remove_cgroup(name);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        tracing::warn!(unit = name, "did not stop within {grace:?}; killing");
        let _ = killpg(pgid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while group_alive(record.pgid) {
            if Instant::now() > deadline {
                bail!(
                    "unit {name} (process group {}) survived SIGKILL",
                    record.pgid
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.remove_cgroup(name);
        Ok(())
    }

    fn state(&self, name: &str) -> Result<UnitState> {
        Ok(match self.record(name)? {
            Some(r) if r.pgid > 0 && group_alive(r.pgid) => UnitState::Running { pid: r.pgid },
            _ => UnitState::Stopped,
        })
    }

    fn starts(&self, name: &str) -> Result<u32> {
        Ok(self.record(name)?.map(|r| r.starts).unwrap_or(0))
    }

    fn signal(&self, name: &str, signal: Signal) -> Result<()> {
        // The recorded group id is the pid of the process the unit started (its main process).
        if let Some(r) = self.record(name)? {
            if r.pgid > 0 && group_alive(r.pgid) {
                nix::sys::signal::kill(Pid::from_raw(r.pgid), signal)
                    .with_context(|| format!("sending {signal} to unit {name}"))?;
            }
        }
        Ok(())
    }

    fn forget(&self, name: &str) -> Result<()> {
        self.remove_cgroup(name);
        crate::store::remove_if_present(&self.record_path(name))
            .with_context(|| format!("forgetting unit {name}"))
    }

    fn kind(&self) -> &'static str {
        "direct"
    }
}

/// Whether any live (non-zombie) process belongs to the process group.
fn group_alive(pgid: i32) -> bool {
    group_members(Path::new("/proc"), pgid)
        .map(|m| !m.is_empty())
        .unwrap_or(false)
}

/// Pids of the live processes in a process group, read from `/proc/<pid>/stat`.
fn group_members(proc_root: &Path, pgid: i32) -> Result<Vec<i32>> {
    let mut members = Vec::new();
    for entry in fs::read_dir(proc_root)? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, group)) = parse_stat(&stat) {
            if group == pgid && state != 'Z' && state != 'X' {
                members.push(pid);
            }
        }
    }
    Ok(members)
}

/// State and process group from a `/proc/<pid>/stat` line; the command name may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(
            parse_stat("1234 (beam.smp) S 1 1200 1200 0 -1"),
            Some(('S', 1200))
        );
        assert_eq!(parse_stat("77 (a) b (c)) Z 1 88 88 0"), Some(('Z', 88)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_unit_is_started_once_adopted_and_stopped_with_its_children() {
        let dir = std::env::temp_dir().join(format!("ferrymq-sup-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let unit = UnitSpec {
            name: "sleeper".into(),
            program: "/bin/sh".into(),
            // The shell's child keeps the group alive after the shell itself exits.
            args: vec!["-c".into(), "sleep 60 & exit 0".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            user: None,
            working_dir: dir.clone(),
            console_log: dir.join("console.log"),
            limits: None,
        };
        let sup = DirectSupervisor::new(dir.join("units"));
        assert!(sup.ensure_running(&unit).expect("start"));
        std::thread::sleep(Duration::from_millis(300));
        assert!(matches!(
            sup.state("sleeper").expect("state"),
            UnitState::Running { .. }
        ));
        // A second supervisor over the same records (an agent restart) adopts it.
        let again = DirectSupervisor::new(dir.join("units"));
        assert!(!again.ensure_running(&unit).expect("adopt"));
        assert_eq!(again.starts("sleeper").expect("starts"), 1);
        again.stop("sleeper", Duration::from_secs(5)).expect("stop");
        assert_eq!(again.state("sleeper").expect("state"), UnitState::Stopped);
        again.forget("sleeper").expect("forget");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_unit_creates_files_for_its_own_user_only() {
        let dir = std::env::temp_dir().join(format!("ferrymq-sup-umask-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let made = dir.join("made");
        let unit = UnitSpec {
            name: "umask".into(),
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!("mkdir {0}.d; touch {0}; sleep 60", made.display()),
            ],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            user: None,
            working_dir: dir.clone(),
            console_log: dir.join("console.log"),
            limits: None,
        };
        let sup = DirectSupervisor::new(dir.join("units"));
        assert!(sup.ensure_running(&unit).expect("start"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !made.exists() {
            assert!(Instant::now() < deadline, "the unit made no file");
            std::thread::sleep(Duration::from_millis(50));
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&made), 0o600);
        assert_eq!(mode(&dir.join("console.log")), 0o600);
        assert_eq!(mode(&dir.join("made.d")), 0o700);
        sup.stop("umask", Duration::from_secs(5)).expect("stop");
        sup.forget("umask").expect("forget");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// The real placement on this machine's cgroups: root only, skipped (saying so) otherwise.
    #[test]
    fn a_limited_unit_runs_in_its_cgroup_which_is_removed_after_stop() {
        if !nix::unistd::geteuid().is_root() || Layout::detect(Path::new(cgroup::ROOT)).is_none() {
            eprintln!("SKIPPED: needs root and a cgroup hierarchy with cpu and memory");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ferrymq-sup-cg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let name = format!("test-{}-limited", std::process::id());
        let unit = UnitSpec {
            name: name.clone(),
            program: "/bin/sleep".into(),
            args: vec!["60".into()],
            env: vec![],
            user: Some("nobody".into()),
            working_dir: dir.clone(),
            console_log: dir.join("console.log"),
            limits: Some(super::super::ResourceLimits {
                cpus: 1,
                memory_bytes: 256 << 20,
            }),
        };
        let sup = DirectSupervisor::new(dir.join("units"));
        assert!(sup.ensure_running(&unit).expect("start"));
        let UnitState::Running { pid } = sup.state(&name).expect("state") else {
            panic!("not running");
        };
        // The launcher execs the program in place: same pid, now sleep, as nobody.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            != "sleep"
        {
            assert!(
                Instant::now() < deadline,
                "launcher did not exec the program"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        let layout = Layout::detect(Path::new(cgroup::ROOT)).expect("layout");
        let group = sup.cgroup_name(&name);
        let expected = format!("/ferrymq/{group}");
        assert!(cgroups.lines().any(|l| l.ends_with(&expected)), "{cgroups}");
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let nobody = User::from_name("nobody").expect("lookup").expect("nobody");
        assert!(
            status.lines().any(|l| l.starts_with("Uid:")
                && l.split_whitespace().nth(1) == Some(&nobody.uid.to_string())),
            "{status}"
        );
        for (file, value) in layout.limit_files(&group, unit.limits.as_ref().expect("limits")) {
            if let Ok(read) = fs::read_to_string(&file) {
                assert_eq!(read.trim(), value, "{}", file.display());
            }
        }
        sup.stop(&name, Duration::from_secs(5)).expect("stop");
        for d in layout.dirs(&group) {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        sup.forget(&name).expect("forget");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
