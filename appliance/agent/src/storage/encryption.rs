//! Encryption at rest (Amazon MQ's `encryption_options`): LUKS2 through `cryptsetup`, opened as
//! a dm-crypt mapping the broker's filesystem lives on.
//!
//! [`prepare`] formats a blank device as LUKS2 with the broker's key file, opens it as a
//! dm-crypt mapping and prepares the broker's filesystem on the mapping; [`release`] undoes it
//! and erases the key slots. The key is read by cryptsetup from the key file only.
//!
//! LUKS needs three things of the host: the kernel's device-mapper (it lists `device-mapper`
//! in `/proc/misc`), its control node `/dev/mapper/control`, and the `cryptsetup` tool. Without
//! the device-mapper `cryptsetup luksFormat` still succeeds but `cryptsetup open` fails, so a
//! broker asked to encrypt its data on such a host must be refused up front: FerryMQ never
//! falls back to writing plain data. [`check_host`] says which of the three is missing.

use super::block::{self, VolumeError};
use anyhow::Context as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The device-mapper's control node.
pub const DM_CONTROL: &str = "/dev/mapper/control";
/// Where the kernel lists its misc devices (the device-mapper registers as one).
pub const PROC_MISC: &str = "/proc/misc";

/// What the host offers for LUKS, gathered without side effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Contents of `/proc/misc` (empty when it cannot be read).
    pub proc_misc: String,
    /// Whether `/dev/mapper/control` exists.
    pub dm_control: bool,
    /// Path of `cryptsetup`, when found on the search path.
    pub cryptsetup: Option<PathBuf>,
}

impl Facts {
    /// Reads the facts of this host.
    pub fn of_host() -> Self {
        Facts {
            proc_misc: std::fs::read_to_string(PROC_MISC).unwrap_or_default(),
            dm_control: Path::new(DM_CONTROL).exists(),
            cryptsetup: find_in_path("cryptsetup"),
        }
    }
}

/// Whether `/proc/misc` lists the device-mapper (a line `<minor> device-mapper`).
fn has_device_mapper(proc_misc: &str) -> bool {
    proc_misc
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
}

/// Ok when LUKS encryption at rest can work with these facts; otherwise the reason, worded for
/// the operator who asked for encryption (it ends up in the broker's status and Terraform's
/// error).
pub fn check(facts: &Facts) -> Result<(), String> {
    const REFUSE: &str = "refusing to store data unencrypted";
    if !has_device_mapper(&facts.proc_misc) {
        return Err(format!(
            "encryption at rest needs LUKS, but the kernel has no device-mapper (dm-crypt): \
             {PROC_MISC} lists no device-mapper (load the dm_mod and dm_crypt modules or boot \
             a kernel that has them); {REFUSE}"
        ));
    }
    if !facts.dm_control {
        return Err(format!(
            "encryption at rest needs LUKS, but the device-mapper's control node {DM_CONTROL} \
             is missing (is /dev managed by udev/devtmpfs?); {REFUSE}"
        ));
    }
    if facts.cryptsetup.is_none() {
        return Err(format!(
            "encryption at rest needs LUKS, but cryptsetup is not installed on this host \
             (install the cryptsetup package); {REFUSE}"
        ));
    }
    Ok(())
}

/// [`check`] on this host's facts.
pub fn check_host() -> Result<(), String> {
    check(&Facts::of_host())
}

/// The LUKS2 type FerryMQ formats; blkid reports the container as `crypto_LUKS`.
const LUKS_TYPE: &str = "luks2";
const BLKID_LUKS: &str = "crypto_LUKS";

/// The dm-crypt mapping a broker's volume is opened as: `/dev/mapper/<name>`. Derived from the
/// broker id like the volume label, so it is found again after an agent restart.
pub fn mapping_name(broker_id: &str) -> String {
    block::label_for(broker_id)
}

pub fn mapper_path(broker_id: &str) -> PathBuf {
    Path::new("/dev/mapper").join(mapping_name(broker_id))
}

/// `cryptsetup` arguments. The key is always read from the key file by cryptsetup itself: it
/// never appears in a command line, a log line or an error (only the file's path does).
pub mod args {
    use super::LUKS_TYPE;

    /// Formats a blank device as LUKS2, labelled for the broker, with the key file as the
    /// passphrase of key slot 0. `--batch-mode`: no interactive confirmation.
    pub fn luks_format(device: &str, key_file: &str, label: &str) -> Vec<String> {
        [
            "luksFormat",
            "--batch-mode",
            "--type",
            LUKS_TYPE,
            "--label",
            label,
            "--key-file",
            key_file,
            device,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Opens the container as `/dev/mapper/<name>`.
    pub fn open(device: &str, key_file: &str, name: &str) -> Vec<String> {
        [
            "open",
            "--type",
            LUKS_TYPE,
            "--key-file",
            key_file,
            device,
            name,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Closes the mapping (the filesystem on it unmounted first).
    pub fn close(name: &str) -> Vec<String> {
        ["close", name].map(String::from).to_vec()
    }

    /// Destroys every key slot: what was written is unreadable from then on, whatever stays on
    /// the device (the broker's data is gone for good on destroy, as with Amazon MQ).
    pub fn erase(device: &str) -> Vec<String> {
        ["erase", "--batch-mode", device].map(String::from).to_vec()
    }
}

fn cryptsetup(args: &[String]) -> anyhow::Result<()> {
    super::run(Command::new("cryptsetup").args(args))
}

/// Checks the key file before cryptsetup reads it: a readable, non-empty regular file. Its
/// contents are never read by the agent.
fn check_key_file(key_file: &str) -> Result<(), String> {
    let meta =
        fs::metadata(key_file).map_err(|e| format!("encryption key file {key_file}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "encryption key file {key_file} is not a regular file"
        ));
    }
    if meta.len() == 0 {
        return Err(format!("encryption key file {key_file} is empty"));
    }
    Ok(())
}

/// Makes `device` the broker's *encrypted* volume mounted at `mount_point`: a blank device is
/// formatted as LUKS2 (labelled for the broker) with the key file, an existing container of the
/// broker is reused, anything else is refused untouched; the container is opened as
/// [`mapper_path`] and the broker's ext4 filesystem is prepared on the mapping exactly as on a
/// plain device ([`block::prepare`]). Idempotent. Refuses with [`check`]'s reason on a host
/// without dm-crypt, before touching the device.
///
/// This is the entry point the image boot test exercises (a guest kernel with dm-crypt), also
/// reachable with `encryption_options { key_file = ... }` on a `ferrymq_broker`.
pub fn prepare(
    device: &str,
    broker_id: &str,
    key_file: &str,
    mount_point: &Path,
) -> Result<PathBuf, PrepareError> {
    check_host().map_err(PrepareError::Refused)?;
    check_key_file(key_file).map_err(PrepareError::Refused)?;
    let tool = |source: anyhow::Error| {
        PrepareError::Volume(VolumeError::Tool {
            device: device.to_string(),
            source,
        })
    };
    let label = block::label_for(broker_id);
    let name = mapping_name(broker_id);
    let mapper = mapper_path(broker_id);
    if !mapper.exists() {
        let found = block::probe(device).map_err(tool)?;
        match (found.fs_type.as_deref(), found.label.as_deref()) {
            (None, _) if found.partition_table.is_none() => {
                tracing::info!(device, %label, "formatting blank volume as LUKS2");
                cryptsetup(&args::luks_format(device, key_file, &label)).map_err(tool)?;
            }
            (Some(BLKID_LUKS), Some(l)) if l == label => {}
            _ => {
                return Err(PrepareError::Volume(VolumeError::Foreign {
                    device: device.to_string(),
                    found: found.describe(),
                }))
            }
        }
        cryptsetup(&args::open(device, key_file, &name))
            .context("opening the LUKS container (is it the key it was formatted with?)")
            .map_err(tool)?;
        tracing::info!(device, mapping = %mapper.display(), "opened encrypted volume");
    }
    let mapper = mapper.display().to_string();
    block::prepare(&mapper, broker_id, mount_point).map_err(PrepareError::Volume)
}

/// Unmounts and wipes the broker's filesystem on the mapping, closes it, and erases the LUKS
/// key slots of the broker's container (a device with someone else's container is left alone).
pub fn release(device: &str, broker_id: &str, mount_point: &Path) -> anyhow::Result<()> {
    let mapper = mapper_path(broker_id);
    if mapper.exists() {
        block::release(&mapper.display().to_string(), broker_id, mount_point)?;
        cryptsetup(&args::close(&mapping_name(broker_id)))?;
    } else if mount_point.exists() {
        fs::remove_dir(mount_point)
            .with_context(|| format!("removing {}", mount_point.display()))?;
    }
    if fs::metadata(device).is_ok() {
        let found = block::probe(device)?;
        if found.fs_type.as_deref() == Some(BLKID_LUKS)
            && found.label.as_deref() == Some(block::label_for(broker_id).as_str())
        {
            cryptsetup(&args::erase(device))?;
            super::run(Command::new("wipefs").args(["-a", "-q", device]))?;
            tracing::info!(device, "erased encrypted volume");
        }
    }
    Ok(())
}

/// Why an encrypted volume could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The host cannot encrypt (no dm-crypt, no cryptsetup) or the key file is unusable: the
    /// broker is refused rather than given unencrypted storage.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/misc` of a host without the device-mapper (the acceptance machines').
    const MISC_WITHOUT_DM: &str = "234 btrfs-control\n259 cpu_dma_latency\n237 loop-control\n\
                                   229 fuse\n235 autofs\n232 kvm\n";
    /// The same with the device-mapper loaded.
    const MISC_WITH_DM: &str = "234 btrfs-control\n236 device-mapper\n237 loop-control\n";

    fn facts(misc: &str, control: bool, cryptsetup: bool) -> Facts {
        Facts {
            proc_misc: misc.into(),
            dm_control: control,
            cryptsetup: cryptsetup.then(|| "/usr/sbin/cryptsetup".into()),
        }
    }

    #[test]
    fn a_kernel_without_device_mapper_is_refused_clearly() {
        let err = check(&facts(MISC_WITHOUT_DM, false, true)).unwrap_err();
        assert!(
            err.contains("the kernel has no device-mapper (dm-crypt)"),
            "{err}"
        );
        assert!(err.contains("/proc/misc"), "{err}");
        assert!(err.ends_with("refusing to store data unencrypted"), "{err}");
        // Unreadable /proc/misc: no evidence of a device-mapper either.
        assert!(check(&facts("", true, true)).is_err());
    }

    #[test]
    fn a_missing_control_node_or_tool_is_named() {
        let err = check(&facts(MISC_WITH_DM, false, true)).unwrap_err();
        assert!(err.contains("/dev/mapper/control"), "{err}");
        let err = check(&facts(MISC_WITH_DM, true, false)).unwrap_err();
        assert!(err.contains("cryptsetup is not installed"), "{err}");
        assert!(err.contains("refusing to store data unencrypted"), "{err}");
    }

    #[test]
    fn a_host_with_all_three_can_encrypt() {
        assert_eq!(check(&facts(MISC_WITH_DM, true, true)), Ok(()));
    }

    #[test]
    fn cryptsetup_commands_take_the_key_from_the_file_only() {
        let key = "/etc/ferrymq/keys/orders.key";
        assert_eq!(
            args::luks_format("/dev/vdb", key, "fmq-0123456789ab").join(" "),
            "luksFormat --batch-mode --type luks2 --label fmq-0123456789ab \
             --key-file /etc/ferrymq/keys/orders.key /dev/vdb"
        );
        assert_eq!(
            args::open("/dev/vdb", key, "fmq-0123456789ab").join(" "),
            "open --type luks2 --key-file /etc/ferrymq/keys/orders.key /dev/vdb fmq-0123456789ab"
        );
        assert_eq!(
            args::close("fmq-0123456789ab"),
            ["close", "fmq-0123456789ab"]
        );
        assert_eq!(
            args::erase("/dev/vdb"),
            ["erase", "--batch-mode", "/dev/vdb"]
        );
        // Nothing but the path of the key reaches a command line.
        for a in [
            args::luks_format("/dev/vdb", key, "l"),
            args::open("/dev/vdb", key, "n"),
        ] {
            assert!(!a.iter().any(|x| x.starts_with("--key-file=") || x == "-"));
            let i = a
                .iter()
                .position(|x| x == "--key-file")
                .expect("--key-file");
            assert_eq!(a[i + 1], key);
        }
    }

    #[test]
    fn the_mapping_is_named_after_the_broker() {
        assert_eq!(mapping_name("b-1"), block::label_for("b-1"));
        assert_eq!(
            mapper_path("b-1"),
            Path::new("/dev/mapper").join(block::label_for("b-1"))
        );
        assert_ne!(mapping_name("b-1"), mapping_name("b-2"));
    }

    #[test]
    fn key_files_must_be_non_empty_regular_files() {
        let dir = std::env::temp_dir().join(format!("ferrymq-key-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.key");
        fs::write(&empty, "").expect("write");
        let good = dir.join("good.key");
        fs::write(&good, "secret").expect("write");
        let d = dir.display().to_string();
        assert!(check_key_file(&d)
            .unwrap_err()
            .contains("not a regular file"));
        assert!(check_key_file(&empty.display().to_string())
            .unwrap_err()
            .contains("is empty"));
        assert!(check_key_file(&dir.join("missing").display().to_string()).is_err());
        assert_eq!(check_key_file(&good.display().to_string()), Ok(()));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn device_mapper_must_be_a_whole_name() {
        assert!(!has_device_mapper("236 device-mapper-foo\n"));
        assert!(has_device_mapper("  236 device-mapper\n"));
    }
}
