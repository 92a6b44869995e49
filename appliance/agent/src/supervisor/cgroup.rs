//! Control groups for units of the direct supervisor (hosts without systemd): one group per unit
//! under `ferrymq/` (named `<unit>.<agent>` by the supervisor), with the unit's CPU quota and memory maximum. cgroup v1 (a hierarchy per
//! controller, `/sys/fs/cgroup/{cpu,memory}`) and v2 (one unified hierarchy) are both handled.

use super::ResourceLimits;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const ROOT: &str = "/sys/fs/cgroup";
/// The parent of every unit's group.
const PARENT: &str = "ferrymq";
/// The CPU bandwidth period; the quota is the type's vCPUs times this.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy the host offers with both the cpu and the memory controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    V1 { cpu: PathBuf, memory: PathBuf },
    V2 { root: PathBuf },
}

impl Layout {
    /// v1 when `cpu` and `memory` hierarchies are mounted under `root`, else v2 at `root` or at
    /// `root/unified` when its `cgroup.controllers` lists both; `None` when neither.
    pub fn detect(root: &Path) -> Option<Layout> {
        let cpu = root.join("cpu");
        let memory = root.join("memory");
        if cpu.join("cpu.cfs_quota_us").exists() && memory.join("memory.limit_in_bytes").exists() {
            return Some(Layout::V1 { cpu, memory });
        }
        [root.to_path_buf(), root.join("unified")]
            .into_iter()
            .find(|dir| {
                fs::read_to_string(dir.join("cgroup.controllers")).is_ok_and(|c| {
                    let has = |w: &str| c.split_whitespace().any(|x| x == w);
                    has("cpu") && has("memory")
                })
            })
            .map(|root| Layout::V2 { root })
    }

    /// The unit's group directories (one per v1 hierarchy, one for v2).
    pub fn dirs(&self, unit: &str) -> Vec<PathBuf> {
        match self {
            Layout::V1 { cpu, memory } => {
                vec![cpu.join(PARENT).join(unit), memory.join(PARENT).join(unit)]
            }
            Layout::V2 { root } => vec![root.join(PARENT).join(unit)],
        }
    }

    /// The limit files and the values written to them, in order.
    pub fn limit_files(&self, unit: &str, limits: &ResourceLimits) -> Vec<(PathBuf, String)> {
        let quota = u64::from(limits.cpus) * CPU_PERIOD_US;
        match self {
            Layout::V1 { cpu, memory } => {
                let cpu = cpu.join(PARENT).join(unit);
                let memory = memory.join(PARENT).join(unit);
                vec![
                    (cpu.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string()),
                    (cpu.join("cpu.cfs_quota_us"), quota.to_string()),
                    (
                        memory.join("memory.limit_in_bytes"),
                        limits.memory_bytes.to_string(),
                    ),
                ]
            }
            Layout::V2 { root } => {
                let dir = root.join(PARENT).join(unit);
                vec![
                    (dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}")),
                    (dir.join("memory.max"), limits.memory_bytes.to_string()),
                    // No swapping past the limit: the type's memory is all it gets.
                    (dir.join("memory.swap.max"), "0".into()),
                ]
            }
        }
    }

    /// Creates the unit's groups with their limits; returns the `cgroup.procs` files a process
    /// writes its pid to, to join them.
    pub fn prepare(&self, unit: &str, limits: &ResourceLimits) -> io::Result<Vec<PathBuf>> {
        if let Layout::V2 { root } = self {
            // Controllers must be enabled down the path for the unit's group to have them.
            for dir in [root.clone(), root.join(PARENT)] {
                fs::create_dir_all(&dir)?;
                fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")?;
            }
        }
        let dirs = self.dirs(unit);
        for dir in &dirs {
            fs::create_dir_all(dir)?;
        }
        for (file, value) in self.limit_files(unit, limits) {
            match fs::write(&file, &value) {
                // memory.swap.max is absent without swap accounting: nothing to limit then.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound && file.ends_with("memory.swap.max") => {
                }
                r => r.map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("writing {value} to {}: {e}", file.display()),
                    )
                })?,
            }
        }
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    /// Removes the unit's groups; missing ones are fine. Processes the unit left in them after
    /// its process group ended (daemons that left the group, such as RabbitMQ's epmd) belong to
    /// the unit: they get SIGTERM, then SIGKILL after a second.
    pub fn remove(&self, unit: &str) -> io::Result<()> {
        for dir in self.dirs(unit) {
            let mut tries = 0;
            loop {
                let signal = if tries < 10 {
                    Signal::SIGTERM
                } else {
                    Signal::SIGKILL
                };
                for pid in members(&dir) {
                    let _ = kill(Pid::from_raw(pid), signal);
                }
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // The last processes of a killed group may take a moment to leave it.
                    Err(_) if tries < 30 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("removing {}: {e}", dir.display()),
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// Pids in a group (`cgroup.procs`); none when it is gone.
fn members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The shell script that joins the groups (its own pid: it is the unit's process-group leader)
/// and then becomes the engine, switching to the unit's user through `setpriv` when it has one
/// (the groups' files belong to root, so the joining is done as root).
pub fn launcher_script(procs: &[PathBuf], user: Option<(u32, u32)>) -> String {
    let mut script = String::new();
    for p in procs {
        script.push_str(&format!(
            "echo $$ > {} || exit 126; ",
            quote(&p.display().to_string())
        ));
    }
    match user {
        Some((uid, gid)) => script.push_str(&format!(
            "exec {SETPRIV} --reuid={uid} --regid={gid} --clear-groups -- \"$0\" \"$@\""
        )),
        None => script.push_str("exec \"$0\" \"$@\""),
    }
    script
}

pub const SETPRIV: &str = "/usr/bin/setpriv";

/// Single-quotes a string for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LARGE: ResourceLimits = ResourceLimits {
        cpus: 2,
        memory_bytes: 8 << 30,
    };

    #[test]
    fn v1_limits_are_cfs_quota_and_limit_in_bytes() {
        let l = Layout::V1 {
            cpu: "/cg/cpu".into(),
            memory: "/cg/memory".into(),
        };
        let files: Vec<_> = l
            .limit_files("b-1-rabbitmq", &LARGE)
            .into_iter()
            .map(|(p, v)| (p.display().to_string(), v))
            .collect();
        assert_eq!(
            files,
            [
                (
                    "/cg/cpu/ferrymq/b-1-rabbitmq/cpu.cfs_period_us".into(),
                    "100000".into()
                ),
                (
                    "/cg/cpu/ferrymq/b-1-rabbitmq/cpu.cfs_quota_us".into(),
                    "200000".into()
                ),
                (
                    "/cg/memory/ferrymq/b-1-rabbitmq/memory.limit_in_bytes".into(),
                    "8589934592".into()
                ),
            ]
            .map(|(a, b): (String, String)| (a, b))
        );
    }

    #[test]
    fn v2_limits_are_cpu_max_and_memory_max() {
        let l = Layout::V2 { root: "/cg".into() };
        let files = l.limit_files("u", &LARGE);
        assert_eq!(files[0].0, Path::new("/cg/ferrymq/u/cpu.max"));
        assert_eq!(files[0].1, "200000 100000");
        assert_eq!(files[1].0, Path::new("/cg/ferrymq/u/memory.max"));
        assert_eq!(files[1].1, "8589934592");
        assert_eq!(l.dirs("u"), [PathBuf::from("/cg/ferrymq/u")]);
    }

    #[test]
    fn layouts_are_detected_from_the_files_present() {
        let dir = std::env::temp_dir().join(format!("ferrymq-cg-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("unified")).expect("dir");
        assert_eq!(Layout::detect(&dir), None);
        fs::write(dir.join("unified/cgroup.controllers"), "").expect("write");
        assert_eq!(Layout::detect(&dir), None, "v2 without controllers");
        fs::write(
            dir.join("unified/cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        assert_eq!(
            Layout::detect(&dir),
            Some(Layout::V2 {
                root: dir.join("unified")
            })
        );
        fs::create_dir_all(dir.join("cpu")).expect("dir");
        fs::create_dir_all(dir.join("memory")).expect("dir");
        fs::write(dir.join("cpu/cpu.cfs_quota_us"), "-1").expect("write");
        fs::write(dir.join("memory/memory.limit_in_bytes"), "1").expect("write");
        assert!(matches!(Layout::detect(&dir), Some(Layout::V1 { .. })));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn launcher_joins_then_execs_as_the_user() {
        let s = launcher_script(
            &["/cg/cpu/ferrymq/u/cgroup.procs".into(), "/cg/it's".into()],
            Some((107, 112)),
        );
        assert_eq!(
            s,
            "echo $$ > '/cg/cpu/ferrymq/u/cgroup.procs' || exit 126; \
             echo $$ > '/cg/it'\\''s' || exit 126; \
             exec /usr/bin/setpriv --reuid=107 --regid=112 --clear-groups -- \"$0\" \"$@\""
        );
        assert!(launcher_script(&[], None).ends_with("exec \"$0\" \"$@\""));
    }
}
