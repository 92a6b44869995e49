//! Facts about the host the provider validates against: CPUs, memory, block devices.

use crate::storage::block;
use anyhow::{Context, Result};
use ferrymq_api::agent::{BlockDevice, HostFacts};
use std::fs;

pub fn facts(supervisor: &str) -> Result<HostFacts> {
    Ok(HostFacts {
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: memory_bytes(
            &fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?,
        )
        .unwrap_or(0),
        block_devices: block_devices(),
        supervisor: supervisor.to_string(),
        certificates: None,
    })
}

fn memory_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whole-disk block devices with a size (loop devices included: they are the test hosts'
/// volumes); RAM disks are left out.
fn block_devices() -> Vec<BlockDevice> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return vec![];
    };
    let mut devices: Vec<BlockDevice> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ram") || name.starts_with("zram") {
                return None;
            }
            let sectors: u64 = fs::read_to_string(e.path().join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if sectors == 0 {
                return None;
            }
            let path = format!("/dev/{name}");
            let probe = block::probe(&path).unwrap_or_default();
            Some(BlockDevice {
                path,
                size_bytes: sectors * 512,
                filesystem: probe.fs_type.unwrap_or_default(),
                label: probe.label.unwrap_or_default(),
            })
        })
        .collect();
    devices.sort_by(|a, b| a.path.cmp(&b.path));
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        assert_eq!(
            memory_bytes("MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(memory_bytes("nothing"), None);
    }

    #[test]
    fn facts_of_this_machine_are_plausible() {
        let f = facts("direct").expect("facts");
        assert!(f.cpus >= 1 && f.memory_bytes > 0);
    }
}
