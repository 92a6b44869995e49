//! Content-addressed archives on a host (engine bundles, appliance images): the SHA-256 an
//! archive is checked against before anything is unpacked, unpacking beside the final name
//! (renamed into place by the caller, so a crash never leaves a half-unpacked tree under a name
//! something links to), and links switched with one rename.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Unpacks the `.tar.gz` `archive` into a fresh `into` (removed again when tar fails).
pub fn unpack(archive: &Path, into: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(into);
    fs::create_dir_all(into).map_err(|e| format!("creating {}: {e}", into.display()))?;
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .arg("--no-same-owner")
        .output()
        .map_err(|e| format!("running tar: {e}"))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(into);
        return Err(format!(
            "tar: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Writes `name -> target` (relative when possible) via a temporary link and a rename.
pub fn replace_link(dir: &Path, name: &str, target: &Path) -> std::io::Result<()> {
    let target = relative_to(dir, target);
    let tmp = dir.join(format!(".{name}.new"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)?;
    fs::rename(&tmp, dir.join(name))
}

/// `target` relative to `dir` when both are under the same state directory (so the state
/// directory can move), else as given.
fn relative_to(dir: &Path, target: &Path) -> PathBuf {
    let (Ok(d), Ok(t)) = (fs::canonicalize(dir), fs::canonicalize(target)) else {
        return target.to_path_buf();
    };
    let common = d
        .components()
        .zip(t.components())
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return t;
    }
    let mut rel = PathBuf::new();
    for _ in d.components().skip(common) {
        rel.push("..");
    }
    for c in t.components().skip(common) {
        rel.push(c);
    }
    rel
}
