//! Encryption at rest (Amazon MQ's `encryption_options`): LUKS2 through `cryptsetup`, opened as
//! a dm-crypt mapping the broker's filesystem lives on.
//!
//! LUKS needs three things of the host: the kernel's device-mapper (it lists `device-mapper`
//! in `/proc/misc`), its control node `/dev/mapper/control`, and the `cryptsetup` tool. Without
//! the device-mapper `cryptsetup luksFormat` still succeeds but `cryptsetup open` fails, so a
//! broker asked to encrypt its data on such a host must be refused up front: FerryMQ never
//! falls back to writing plain data. [`check_host`] says which of the three is missing.

use std::path::{Path, PathBuf};

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
    fn device_mapper_must_be_a_whole_name() {
        assert!(!has_device_mapper("236 device-mapper-foo\n"));
        assert!(has_device_mapper("  236 device-mapper\n"));
    }
}
