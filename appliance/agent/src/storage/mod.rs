//! Storage a broker keeps its data on: `block`, the EBS equivalent (a block device on the host,
//! prepared for one broker), and `shared`, the EFS equivalent (an NFS export or an already
//! shared directory that the instances of an active/standby broker both use).

pub mod block;
// Not called yet: the capability check waits for `encryption_options` to reach the spec.
#[allow(dead_code)]
pub mod encryption;
pub mod shared;

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs a storage tool (mkfs, mount, wipefs, …) and turns a failure into an error that carries
/// its stderr, which is what tells an operator what is wrong with a device.
fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
