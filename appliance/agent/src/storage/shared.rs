//! Shared storage for ActiveMQ active/standby (Amazon MQ's EFS): an NFSv4.1 export mounted on
//! every instance, or a directory that is already shared between the hosts (a filesystem the
//! operator mounted, or one directory seen by several test hosts on one machine).
//!
//! Both instances keep the broker's store in one directory under it, and the engine's own file
//! lock decides which one is active. This module only makes that directory available; it does
//! not know block devices nor which engine uses it.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a shared filesystem comes from, as written in `instance.volume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `server:/export[/path]`, mounted with NFS 4.1.
    Nfs { source: String },
    /// An absolute directory already shared between the hosts.
    Directory(PathBuf),
}

impl Location {
    pub fn parse(volume: &str) -> Result<Self, String> {
        if volume.starts_with('/') {
            return Ok(Location::Directory(PathBuf::from(volume)));
        }
        match volume.split_once(":/") {
            Some((server, _)) if !server.is_empty() && !server.contains('/') => Ok(Location::Nfs {
                source: volume.to_string(),
            }),
            _ => Err(format!(
                "shared volume {volume:?} must be an NFS export (server:/export) or an absolute directory"
            )),
        }
    }
}

/// Options ActiveMQ's KahaDB needs on NFS: hard mounts (no silent I/O errors), 4.1 for its
/// lease-based locks, and `noresvport` so a reconnect after a server failover gets a new port.
const NFS_OPTIONS: &str = "vers=4.1,hard,timeo=600,retrans=2,noresvport";

/// Makes the shared filesystem available and returns the broker's directory on it
/// (`<root>/<broker_id>`), created if missing. Idempotent.
pub fn prepare(volume: &str, broker_id: &str, mount_point: &Path) -> Result<PathBuf> {
    let root = match Location::parse(volume).map_err(anyhow::Error::msg)? {
        Location::Directory(dir) => {
            if !dir.is_dir() {
                bail!("shared volume {}: no such directory", dir.display());
            }
            dir
        }
        Location::Nfs { source } => {
            fs::create_dir_all(mount_point)
                .with_context(|| format!("creating {}", mount_point.display()))?;
            if !super::block::is_mounted(mount_point)? {
                super::run(
                    Command::new("mount")
                        .args(["-t", "nfs4", "-o", NFS_OPTIONS, &source])
                        .arg(mount_point),
                )?;
                tracing::info!(%source, mount_point = %mount_point.display(), "mounted shared volume");
            }
            mount_point.to_path_buf()
        }
    };
    let dir = root.join(broker_id);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Removes the broker's directory from the shared filesystem (the first instance to go does
/// it; later ones find nothing) and unmounts what this host mounted.
pub fn release(volume: &str, broker_id: &str, mount_point: &Path) -> Result<()> {
    let root = match Location::parse(volume).map_err(anyhow::Error::msg)? {
        Location::Directory(dir) => dir,
        Location::Nfs { .. } => mount_point.to_path_buf(),
    };
    let dir = root.join(broker_id);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if super::block::is_mounted(mount_point)? {
        super::run(Command::new("umount").arg(mount_point))?;
    }
    if mount_point.exists() {
        let _ = fs::remove_dir(mount_point);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("fs1:/exports/mq"),
            Ok(Location::Nfs {
                source: "fs1:/exports/mq".into()
            })
        );
        assert_eq!(
            Location::parse("/srv/shared"),
            Ok(Location::Directory("/srv/shared".into()))
        );
        assert!(Location::parse("/dev/../x").is_ok());
        assert!(Location::parse("relative/dir").is_err());
        assert!(Location::parse(":/x").is_err());
    }

    #[test]
    fn a_shared_directory_gets_one_directory_per_broker() {
        let root = std::env::temp_dir().join(format!("ferrymq-shared-{}", std::process::id()));
        fs::create_dir_all(&root).expect("root");
        let mp = root.join("unused-mount-point");
        let vol = root.to_str().expect("utf8");
        let dir = prepare(vol, "b-1", &mp).expect("prepare");
        assert_eq!(dir, root.join("b-1"));
        assert_eq!(prepare(vol, "b-1", &mp).expect("again"), dir);
        release(vol, "b-1", &mp).expect("release");
        release(vol, "b-1", &mp).expect("release twice");
        assert!(!dir.exists());
        assert!(prepare("/no/such/dir", "b-1", &mp).is_err());
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
