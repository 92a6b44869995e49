//! Prepares a block device as one broker's volume, and never touches anyone else's data.
//!
//! A device is formatted only when it is blank; the filesystem gets a label derived from the
//! broker id, and that label is how the volume is recognised again after an agent restart or
//! a reboot. A device holding anything else is refused with what was found on it.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a device cannot become this broker's volume; the caller reports it as is.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {device}: no such block device")]
    Missing { device: String },
    #[error("volume {device} is not a block device")]
    NotBlockDevice { device: String },
    #[error(
        "volume {device} holds {found}, which FerryMQ did not create for this broker; \
         refusing to format it (wipe it yourself if its data is not needed)"
    )]
    Foreign { device: String, found: String },
    #[error("volume {device}: {source:#}")]
    Tool {
        device: String,
        source: anyhow::Error,
    },
}

/// What `blkid` sees on a device.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub fs_type: Option<String>,
    pub label: Option<String>,
    pub partition_table: Option<String>,
}

impl Probe {
    fn is_blank(&self) -> bool {
        self.fs_type.is_none() && self.partition_table.is_none()
    }

    fn describe(&self) -> String {
        match (&self.fs_type, &self.label, &self.partition_table) {
            (Some(t), Some(l), _) => format!("a {t} filesystem labelled {l:?}"),
            (Some(t), None, _) => format!("a {t} filesystem"),
            (None, _, Some(p)) => format!("a {p} partition table"),
            (None, _, None) => "nothing".into(),
        }
    }
}

/// The ext4 label (at most 16 bytes) that ties a filesystem to one broker.
pub fn label_for(broker_id: &str) -> String {
    let digest = Sha256::digest(broker_id.as_bytes());
    format!("fmq-{}", &hex::encode(digest)[..12])
}

/// Makes `device` the broker's volume mounted at `mount_point`: formats it if blank, reuses it
/// if it carries the broker's label, refuses it otherwise. Idempotent. Returns the mount point.
pub fn prepare(device: &str, broker_id: &str, mount_point: &Path) -> Result<PathBuf, VolumeError> {
    let tool = |source: anyhow::Error| VolumeError::Tool {
        device: device.to_string(),
        source,
    };
    let meta = fs::metadata(device).map_err(|_| VolumeError::Missing {
        device: device.to_string(),
    })?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        return Err(VolumeError::NotBlockDevice {
            device: device.to_string(),
        });
    }
    let label = label_for(broker_id);
    let found = probe(device).map_err(tool)?;
    if found.is_blank() {
        tracing::info!(device, %label, "formatting blank volume");
        super::run(Command::new("mkfs.ext4").args(["-q", "-L", &label, "-m", "0", device]))
            .map_err(tool)?;
    } else if !(found.fs_type.as_deref() == Some("ext4") && found.label.as_deref() == Some(&label))
    {
        return Err(VolumeError::Foreign {
            device: device.to_string(),
            found: found.describe(),
        });
    }
    fs::create_dir_all(mount_point)
        .with_context(|| format!("creating {}", mount_point.display()))
        .map_err(tool)?;
    if !is_mounted(mount_point).map_err(tool)? {
        super::run(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "noatime", device])
                .arg(mount_point),
        )
        .map_err(tool)?;
        tracing::info!(device, mount_point = %mount_point.display(), "mounted volume");
    }
    Ok(mount_point.to_path_buf())
}

/// Unmounts the volume and wipes the filesystem FerryMQ made on it, so the broker's data is
/// gone and the device is blank again. A device with someone else's label is left alone.
pub fn release(device: &str, broker_id: &str, mount_point: &Path) -> Result<()> {
    if is_mounted(mount_point)? {
        super::run(Command::new("umount").arg(mount_point))?;
    }
    if fs::metadata(device).is_ok() {
        let found = probe(device)?;
        if found.label.as_deref() == Some(label_for(broker_id).as_str()) {
            super::run(Command::new("wipefs").args(["-a", "-q", device]))?;
            tracing::info!(device, "wiped volume");
        }
    }
    if mount_point.exists() {
        fs::remove_dir(mount_point)
            .with_context(|| format!("removing {}", mount_point.display()))?;
    }
    Ok(())
}

/// Size and use of a mounted volume, in bytes.
pub fn usage(mount_point: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(mount_point)
        .with_context(|| format!("statvfs {}", mount_point.display()))?;
    let frag = st.fragment_size();
    let size = st.blocks() * frag;
    let free = st.blocks_free() * frag;
    Ok((size, size.saturating_sub(free)))
}

pub fn probe(device: &str) -> Result<Probe> {
    // -p: read the device itself, not blkid's cache, which may predate our own mkfs.
    let out = Command::new("blkid")
        .args(["-p", "-o", "export", device])
        .output()
        .context("running blkid")?;
    match out.status.code() {
        Some(0) => Ok(parse_blkid(&String::from_utf8_lossy(&out.stdout))),
        // 2: nothing recognised on the device.
        Some(2) => Ok(Probe::default()),
        _ => anyhow::bail!(
            "blkid {device} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

fn parse_blkid(export: &str) -> Probe {
    let mut p = Probe::default();
    for line in export.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.to_string());
            match k {
                "TYPE" => p.fs_type = v,
                "LABEL" => p.label = v,
                "PTTYPE" => p.partition_table = v,
                _ => {}
            }
        }
    }
    p
}

pub fn is_mounted(mount_point: &Path) -> Result<bool> {
    let Ok(canonical) = fs::canonicalize(mount_point) else {
        return Ok(false);
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mounted = mount_points(&mountinfo).any(|m| Path::new(&m) == canonical);
    Ok(mounted)
}

/// Mount points listed in a mountinfo table (field 5, with octal escapes decoded).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(n) = u8::from_str_radix(&code, 8) {
                out.push(n as char);
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_ext4_and_differ_per_broker() {
        let a = label_for("b-0f3a");
        assert!(a.len() <= 16 && a.starts_with("fmq-"), "{a}");
        assert_ne!(a, label_for("b-0f3b"));
        assert_eq!(a, label_for("b-0f3a"));
    }

    #[test]
    fn blkid_export_is_understood() {
        let p = parse_blkid("DEVNAME=/dev/loop3\nLABEL=data\nUUID=x\nTYPE=xfs\n");
        assert_eq!(p.fs_type.as_deref(), Some("xfs"));
        assert_eq!(p.describe(), "a xfs filesystem labelled \"data\"");
        let t = parse_blkid("PTUUID=1\nPTTYPE=gpt\n");
        assert!(!t.is_blank());
        assert_eq!(t.describe(), "a gpt partition table");
        assert!(Probe::default().is_blank());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let info = "36 35 98:0 / /mnt/with\\040space rw,noatime - ext4 /dev/loop1 rw\n";
        assert_eq!(mount_points(info).collect::<Vec<_>>(), ["/mnt/with space"]);
    }
}
