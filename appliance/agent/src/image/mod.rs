//! Appliance images: the host's FerryMQ software as a content-addressed archive, staged ahead of
//! the window and switched in it, one host at a time, like any other window-bound change.
//!
//! An image archive (`.tar.gz`) holds `image.json` (`{"version": "…"}`) and
//! `bin/ferrymq-agent`. `ferrymq-agent image stage` checks it against the SHA-256 the operator
//! gives (the digest published with the image, never one read from the archive), unpacks it
//! under `images/<version>/` and points `images/staged` at it. The reconciler then reports
//! `image: A -> B` as pending on every broker of the host and, in the window with the host's
//! turn, points `images/current` at it with one rename and re-executes the agent from it
//! (`execv`: the same process id, so systemd or the lab keeps supervising it). The new agent
//! restarts the engines once, as a reboot would, and records the image as applied once they
//! serve; a host that does not serve within the roll-back deadline is switched back the same
//! way.
//!
//! The image the host was installed with is `factory`: the agent binary outside `images/`
//! (remembered in `images/factory-agent` when the agent first starts from it). That binary is
//! what the host's service manager starts, so on start it hands over to the current image's
//! agent when there is one: a host rebooted after a switch comes up on the image it switched to.

use crate::archive;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The version of the image a host was installed with.
pub const FACTORY: &str = "factory";
const CURRENT: &str = "current";
const STAGED: &str = "staged";
const FACTORY_AGENT: &str = "factory-agent";
const MANIFEST: &str = "image.json";
const AGENT: &str = "bin/ferrymq-agent";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image archive {archive} has SHA-256 {actual}, expected {expected}: refused, nothing was staged"
    )]
    Digest {
        archive: String,
        expected: String,
        actual: String,
    },
    #[error("image archive {archive}: {reason}")]
    Invalid { archive: String, reason: String },
    #[error("images: {0}")]
    Io(String),
}

#[derive(serde::Deserialize)]
struct Manifest {
    version: String,
}

/// The images on one host, under `<state dir>/images`.
#[derive(Debug, Clone)]
pub struct Images {
    root: PathBuf,
}

impl Images {
    pub fn new(state_dir: &Path) -> Self {
        Images {
            root: state_dir.join("images"),
        }
    }

    /// The image the host runs: `current`'s version, or the factory image.
    pub fn running(&self) -> String {
        version_of(&self.root, CURRENT).unwrap_or_else(|| FACTORY.to_string())
    }

    /// The image staged to run next, when it is not the one running.
    pub fn staged(&self) -> Option<String> {
        version_of(&self.root, STAGED).filter(|v| *v != self.running())
    }

    /// Verifies `archive` against `sha256`, unpacks it and stages it; returns its version.
    pub fn stage(&self, archive_path: &Path, sha256: &str) -> Result<String, ImageError> {
        let name = archive_path.display().to_string();
        let invalid = |reason: String| ImageError::Invalid {
            archive: name.clone(),
            reason,
        };
        let expected = sha256.trim().to_ascii_lowercase();
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "--sha256 {sha256:?} is not a SHA-256 (64 hexadecimal digits)"
            )));
        }
        let actual = archive::sha256_file(archive_path).map_err(|e| invalid(e.to_string()))?;
        if actual != expected {
            return Err(ImageError::Digest {
                archive: name,
                expected,
                actual,
            });
        }
        let incoming = self.root.join(".incoming");
        fs::create_dir_all(&incoming).map_err(|e| ImageError::Io(e.to_string()))?;
        let tmp = incoming.join(format!("unpack-{}", std::process::id()));
        archive::unpack(archive_path, &tmp).map_err(&invalid)?;
        let version = fs::read(tmp.join(MANIFEST))
            .map_err(|e| format!("{MANIFEST}: {e}"))
            .and_then(|b| {
                serde_json::from_slice::<Manifest>(&b).map_err(|e| format!("{MANIFEST}: {e}"))
            })
            .and_then(|m| valid_version(&m.version).map(|()| m.version))
            .and_then(|v| match is_executable(&tmp.join(AGENT)) {
                true => Ok(v),
                false => Err(format!("no executable {AGENT}")),
            });
        let version = match version {
            Ok(v) => v,
            Err(reason) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(invalid(reason));
            }
        };
        let dir = self.root.join(&version);
        // A version already unpacked stays as it is (it may be running).
        if dir.is_dir() {
            let _ = fs::remove_dir_all(&tmp);
        } else {
            fs::rename(&tmp, &dir).map_err(|e| ImageError::Io(e.to_string()))?;
        }
        archive::replace_link(&self.root, STAGED, &dir)
            .map_err(|e| ImageError::Io(e.to_string()))?;
        Ok(version)
    }

    /// The agent binary of the current image, when the host runs one (not the factory image).
    pub fn current_agent(&self) -> Option<PathBuf> {
        let agent = self.root.join(CURRENT).join(AGENT);
        is_executable(&agent).then(|| fs::canonicalize(&agent).unwrap_or(agent))
    }

    /// Remembers the agent binary the host was installed with, when it runs from outside
    /// `images/`, so that a roll-back to the factory image has a binary to run.
    pub fn remember_factory(&self, exe: &Path) -> std::io::Result<()> {
        fs::create_dir_all(&self.root)?;
        // `exe` is the resolved path of the running binary: compare it with the resolved root
        // (a state directory reached through a symlink would otherwise pass an image's agent
        // off as the factory one).
        if exe.starts_with(fs::canonicalize(&self.root)?) {
            return Ok(());
        }
        archive::replace_link(&self.root, FACTORY_AGENT, exe)
    }

    /// Points `current` at `version` and returns the agent binary to run. Blocking.
    pub fn switch(&self, version: &str) -> Result<PathBuf, ImageError> {
        let io = |e: std::io::Error| ImageError::Io(format!("switching to image {version}: {e}"));
        if version == FACTORY {
            let agent = fs::canonicalize(self.root.join(FACTORY_AGENT)).map_err(io)?;
            match fs::remove_file(self.root.join(CURRENT)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => return Ok(agent),
            }
        }
        valid_version(version).map_err(ImageError::Io)?;
        let dir = self.root.join(version);
        if !is_executable(&dir.join(AGENT)) {
            return Err(ImageError::Io(format!(
                "image {version} is not unpacked on this host"
            )));
        }
        archive::replace_link(&self.root, CURRENT, &dir).map_err(io)?;
        Ok(dir.join(AGENT))
    }
}

/// Hands over to the current image's agent when this process is not it (the service manager
/// starts the factory binary), and remembers the factory binary for a roll-back to it.
pub fn boot_current(state_dir: &Path) {
    let images = Images::new(state_dir);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::warn!("this agent's binary is unknown, images are not switched: {e}");
            return;
        }
    };
    if let Some(agent) = images.current_agent() {
        if fs::canonicalize(&exe).ok().as_ref() != Some(&agent) {
            tracing::info!(image = %images.running(), agent = %agent.display(), "starting the current appliance image");
            let e = exec(&agent);
            tracing::error!(agent = %agent.display(), "the current image's agent did not start, this one serves: {e}");
        }
    }
    if let Err(e) = images.remember_factory(&exe) {
        tracing::warn!("the factory agent binary is not remembered: {e}");
    }
}

/// Replaces this process with `agent`, with the same arguments and environment. Returns only
/// when the exec fails.
pub fn exec(agent: &Path) -> std::io::Error {
    std::process::Command::new(agent)
        .args(std::env::args_os().skip(1))
        .exec()
}

fn version_of(root: &Path, link: &str) -> Option<String> {
    let target = fs::read_link(root.join(link)).ok()?;
    let name = target.file_name()?.to_str()?.to_string();
    valid_version(&name).ok().map(|()| name)
}

/// Versions name directories: letters, digits, `.`, `-`, `_`, `+`, at most 64, not `factory`.
fn valid_version(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v != FACTORY
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image version {v:?} must be 1 to 64 letters, digits, '.', '-', '_' or '+' (and not {FACTORY:?})"
        ))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrymq-image-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch");
        d
    }

    /// An image archive of `version` in `dir`, and its digest.
    fn image(dir: &Path, version: &str) -> (PathBuf, String) {
        let stage = dir.join(format!("stage-{version}"));
        fs::create_dir_all(stage.join("bin")).expect("stage");
        fs::write(
            stage.join(MANIFEST),
            format!("{{\"version\": \"{version}\"}}"),
        )
        .expect("manifest");
        let agent = stage.join(AGENT);
        fs::write(&agent, "#!/bin/sh\n").expect("agent");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).expect("chmod");
        let file = dir.join(format!("image-{version}.tar.gz"));
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(&file)
            .arg("-C")
            .arg(&stage)
            .args([MANIFEST, "bin"])
            .status()
            .expect("tar");
        assert!(ok.success());
        let sha = archive::sha256_file(&file).expect("sha");
        (file, sha)
    }

    #[test]
    fn staged_switched_and_back_to_the_factory_image() {
        let dir = scratch("switch");
        let images = Images::new(&dir.join("state"));
        let factory = dir.join("ferrymq-agent");
        fs::write(&factory, "factory").expect("factory");
        images.remember_factory(&factory).expect("remember");
        assert_eq!(images.running(), FACTORY);
        assert_eq!(images.staged(), None);

        let (file, sha) = image(&dir, "2026.11.2");
        assert_eq!(images.stage(&file, &sha).expect("stage"), "2026.11.2");
        assert_eq!(images.staged().as_deref(), Some("2026.11.2"));
        let agent = images.switch("2026.11.2").expect("switch");
        assert!(agent.ends_with("images/2026.11.2/bin/ferrymq-agent"));
        assert_eq!(images.running(), "2026.11.2");
        assert_eq!(images.staged(), None, "the staged image runs");
        // Staging the same archive again changes nothing that runs.
        assert_eq!(images.stage(&file, &sha).expect("again"), "2026.11.2");

        let back = images.switch(FACTORY).expect("back");
        assert_eq!(back, fs::canonicalize(&factory).expect("canon"));
        assert_eq!(images.running(), FACTORY);
        assert_eq!(images.staged().as_deref(), Some("2026.11.2"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_images_agent_is_not_remembered_as_the_factory_one_through_a_symlinked_state_dir() {
        let dir = scratch("symlinked");
        fs::create_dir_all(dir.join("real")).expect("real");
        std::os::unix::fs::symlink(dir.join("real"), dir.join("state")).expect("link");
        let images = Images::new(&dir.join("state"));
        let (file, sha) = image(&dir, "2026.11.4");
        images.stage(&file, &sha).expect("stage");
        let agent = images.switch("2026.11.4").expect("switch");
        let resolved = fs::canonicalize(&agent).expect("canon");
        images.remember_factory(&resolved).expect("remember");
        assert!(!dir.join("real/images").join(FACTORY_AGENT).exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_wrong_digest_or_a_bad_archive_stages_nothing() {
        let dir = scratch("refuse");
        let images = Images::new(&dir.join("state"));
        let (file, sha) = image(&dir, "2026.11.3");
        let wrong = format!("{}0", &sha[..63]);
        let wrong = if wrong == sha { "f".repeat(64) } else { wrong };
        let e = images.stage(&file, &wrong).unwrap_err().to_string();
        assert!(
            e.contains(&sha) && e.contains(&wrong) && e.contains("nothing was staged"),
            "{e}"
        );
        assert!(images
            .stage(&file, "abc")
            .unwrap_err()
            .to_string()
            .contains("--sha256"));
        assert_eq!(images.staged(), None);
        assert!(!dir.join("state/images/2026.11.3").exists());

        let (bad, bad_sha) = image(&dir, "..");
        let e = images.stage(&bad, &bad_sha).unwrap_err().to_string();
        assert!(e.contains("image version"), "{e}");
        assert_eq!(images.staged(), None);
        assert!(images.switch("2026.11.9").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
