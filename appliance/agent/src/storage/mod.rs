//! Storage a broker keeps its data on: `block`, the EBS equivalent (a block device on the host,
//! prepared for one broker), `shared`, the EFS equivalent (an NFS export or an already shared
//! directory that the instances of an active/standby broker both use), and `encryption`, what a
//! host needs for encryption at rest.

pub mod block;
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
