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

    pub fn describe(&self) -> String {
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
        // Not in use: a grown device is grown offline before mounting (after a reboot, say).
        grow_offline(device).map_err(tool)?;
        super::run(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "noatime", device])
                .arg(mount_point),
        )
        .map_err(tool)?;
        tracing::info!(device, mount_point = %mount_point.display(), "mounted volume");
    } else if let Err(e) = grow(device) {
        // The broker keeps running on the size it has; the next pass tries again, and the
        // next mount grows it offline.
        tracing::warn!(device, "cannot grow the volume online: {e:#}");
    }
    Ok(mount_point.to_path_buf())
}

/// The device may exceed its filesystem by this much before the filesystem is grown: ext4
/// cannot use a trailing remainder smaller than one block group's metadata, and `resize2fs`
/// leaves it unused, so a smaller gap would be "grown" again on every pass.
pub const GROW_THRESHOLD_BYTES: u64 = 16 << 20;

/// Whether a filesystem of `fs_bytes` on a device of `device_bytes` should be grown.
pub fn needs_growing(device_bytes: u64, fs_bytes: u64) -> bool {
    device_bytes > fs_bytes.saturating_add(GROW_THRESHOLD_BYTES)
}

/// Grows the (mounted) ext4 filesystem on `device` to the device's size when the device has
/// grown (a bigger LUN or cloud volume, a loop file enlarged then `losetup -c`): ext4 grows
/// online, the broker keeps running. Idempotent: does nothing when the sizes already match.
/// Returns whether it grew the filesystem.
pub fn grow(device: &str) -> Result<bool> {
    let device_bytes = device_size(device)?;
    let fs_bytes = ext4_size(device)?;
    if !needs_growing(device_bytes, fs_bytes) {
        return Ok(false);
    }
    tracing::info!(
        device,
        device_bytes,
        fs_bytes,
        "device has grown; growing the filesystem"
    );
    super::run(Command::new("resize2fs").arg(device)).map_err(|e| {
        if format!("{e:#}").contains("Permission denied") {
            e.context(
                "online resizing needs CAP_SYS_RESOURCE, which the agent lacks; \
                 the volume is grown when it is next mounted",
            )
        } else {
            e
        }
    })?;
    let now = ext4_size(device)?;
    tracing::info!(device, fs_bytes = now, "filesystem grown");
    Ok(now > fs_bytes)
}

/// [`grow`] for an unmounted filesystem: `resize2fs` wants a freshly checked one offline, so
/// `e2fsck -f -p` runs first (exit 1: errors corrected, fine).
fn grow_offline(device: &str) -> Result<bool> {
    if !needs_growing(device_size(device)?, ext4_size(device)?) {
        return Ok(false);
    }
    let out = Command::new("e2fsck")
        .args(["-f", "-p", device])
        .output()
        .context("running e2fsck")?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        anyhow::bail!(
            "e2fsck -f -p {device} failed ({}) before growing it: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    grow(device)
}

/// Size of a block device in bytes, as the kernel sees it now.
pub fn device_size(device: &str) -> Result<u64> {
    let out = Command::new("blockdev")
        .args(["--getsize64", device])
        .output()
        .context("running blockdev")?;
    if !out.status.success() {
        anyhow::bail!(
            "blockdev --getsize64 {device} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("blockdev --getsize64 {device} printed {text:?}"))
}

/// Size of the ext4 filesystem on `device` (block count × block size, from its superblock).
fn ext4_size(device: &str) -> Result<u64> {
    let out = Command::new("dumpe2fs")
        .args(["-h", device])
        .output()
        .context("running dumpe2fs")?;
    if !out.status.success() {
        anyhow::bail!(
            "dumpe2fs -h {device} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_superblock_size(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("no block count or block size in dumpe2fs -h {device}"))
}

fn parse_superblock_size(dumpe2fs: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("Block count")? * field("Block size")?)
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
    fn superblock_size_is_blocks_times_block_size() {
        let out = "Filesystem volume name:   fmq-0123456789ab\n\
                   Block count:              262144\n\
                   Reserved block count:     0\n\
                   Block size:               1024\n";
        assert_eq!(parse_superblock_size(out), Some(256 << 20));
        assert_eq!(parse_superblock_size("Block size: 4096\n"), None);
    }

    #[test]
    fn grows_only_past_the_threshold() {
        let gib = 1u64 << 30;
        assert!(!needs_growing(gib, gib));
        assert!(!needs_growing(gib + GROW_THRESHOLD_BYTES, gib));
        assert!(needs_growing(2 * gib, gib));
        // A device smaller than its filesystem (never shrunk by FerryMQ) is not "grown".
        assert!(!needs_growing(gib, 2 * gib));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let info = "36 35 98:0 / /mnt/with\\040space rw,noatime - ext4 /dev/loop1 rw\n";
        assert_eq!(mount_points(info).collect::<Vec<_>>(), ["/mnt/with space"]);
    }
}
