//! Where a host's join token and deployment CA come from, in order:
//! 1. the enrollment directory itself (`join-token`, `ca.pem`: a file the image builder or the
//!    operator put there),
//! 2. the kernel command line: `ferrymq.join_token=TOKEN ferrymq.ca=CA` (PXE),
//! 3. a NoCloud seed (a file system labelled `CIDATA`, mounted by the image at
//!    `/run/ferrymq/seed`): `ferrymq_join_token: TOKEN` and `ferrymq_ca: CA` lines in its
//!    `user-data` or `meta-data`.
//!
//! `CA` is the PEM certificate in base64, or an `http://` URL serving the PEM (fetched once). What
//! is found is written to the enrollment directory, so later boots read the file: a token on the
//! kernel command line is imported only while the directory has never held one, so a consumed
//! token coming back at the next boot is not a fresh token.
//!
//! Every token, whatever its source, must pass [`token::check_strength`] (128 bits): a weak one
//! is refused with nothing written, and the host stays un-enrolled, saying so, until it gets a
//! good one.

use super::token::{self, WeakToken};
use super::{CA_CERT, JOIN_TOKEN, JOIN_TOKEN_CONSUMED};
use anyhow::{bail, Context, Result};
use base64::Engine;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    KernelCommandLine,
    Seed,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::File => "the enrollment directory (join-token)",
            Origin::KernelCommandLine => "the kernel command line",
            Origin::Seed => "the NoCloud seed",
        })
    }
}

/// A join token refused by [`token::check_strength`], with where it came from.
#[derive(Debug, thiserror::Error)]
#[error(
    "WEAK JOIN TOKEN from {origin}: {reason}. This host stays un-enrolled until it gets a token \
     of at least {} random bits: make one with `ferrymq-agent pki new-token` and give it to the \
     host instead",
    token::MIN_TOKEN_BITS
)]
pub struct WeakTokenError {
    pub origin: Origin,
    pub reason: WeakToken,
}

fn strong(token: &str, origin: Origin) -> Result<(), WeakTokenError> {
    token::check_strength(token).map_err(|reason| WeakTokenError { origin, reason })
}

/// A token and CA as given, before the CA is decoded or fetched.
#[derive(Debug, PartialEq, Eq)]
struct Given {
    token: String,
    ca: String,
}

/// Parses `ferrymq.join_token=` and `ferrymq.ca=` from a kernel command line.
fn from_cmdline(cmdline: &str) -> Option<Given> {
    let value = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    Some(Given {
        token: value("ferrymq.join_token=")?,
        ca: value("ferrymq.ca=")?,
    })
}

/// Parses `ferrymq_join_token:` and `ferrymq_ca:` lines of a NoCloud `user-data`/`meta-data`.
fn from_seed_text(text: &str) -> Option<Given> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(key)
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    Some(Given {
        token: value("ferrymq_join_token:")?,
        ca: value("ferrymq_ca:")?,
    })
}

async fn ca_pem(ca: &str) -> Result<String> {
    let pem = if ca.starts_with("http://") {
        reqwest::get(ca)
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("fetching the deployment CA from {ca}"))?
            .text()
            .await
            .with_context(|| format!("reading the deployment CA from {ca}"))?
    } else {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .context("ferrymq.ca is neither an http:// URL nor base64")?;
        String::from_utf8(bytes).context("ferrymq.ca decodes to no PEM text")?
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        bail!("the deployment CA given is not a PEM certificate");
    }
    Ok(pem)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Refuses a weak unused token in the enrollment directory (a used one is refused anyway).
fn check_file_token(dir: &Path) -> Result<()> {
    match fs::read_to_string(dir.join(JOIN_TOKEN)) {
        Ok(t) => Ok(strong(&t, Origin::File)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(JOIN_TOKEN).display())),
    }
}

/// Makes sure `dir` holds a join token and the CA. Returns where they came from, or `None` when
/// this host has no enrollment material (it then cannot be enrolled and must say so). A weak
/// token, from any source, is a [`WeakTokenError`] (inside the `anyhow::Error`), with nothing
/// imported from that source.
pub async fn ensure(dir: &Path, cmdline: &str, seed_dir: Option<&Path>) -> Result<Option<Origin>> {
    let has_token = dir.join(JOIN_TOKEN).exists() || dir.join(JOIN_TOKEN_CONSUMED).exists();
    if has_token && dir.join(CA_CERT).exists() {
        check_file_token(dir)?;
        return Ok(Some(Origin::File));
    }
    let mut found = from_cmdline(cmdline).map(|g| (g, Origin::KernelCommandLine));
    if found.is_none() {
        if let Some(seed) = seed_dir {
            for name in ["user-data", "meta-data"] {
                if let Ok(text) = fs::read_to_string(seed.join(name)) {
                    if let Some(g) = from_seed_text(&text) {
                        found = Some((g, Origin::Seed));
                        break;
                    }
                }
            }
        }
    }
    let Some((given, origin)) = found else {
        return Ok(None);
    };
    if !has_token {
        strong(&given.token, origin)?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !dir.join(CA_CERT).exists() {
        write(&dir.join(CA_CERT), &ca_pem(&given.ca).await?, 0o644)?;
    }
    if !has_token {
        write(&dir.join(JOIN_TOKEN), &given.token, 0o600)?;
        return Ok(Some(origin));
    }
    // The token was already here (only the CA came from elsewhere).
    check_file_token(dir)?;
    Ok(Some(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_command_line_gives_token_and_ca() {
        let g = from_cmdline("BOOT_IMAGE=/vmlinuz ip=10.0.0.5::10.0.0.1:255.255.255.0::eth0:off ferrymq.join_token=abc ferrymq.ca=http://10.0.0.1/ca.pem quiet")
            .expect("found");
        assert_eq!(g.token, "abc");
        assert_eq!(g.ca, "http://10.0.0.1/ca.pem");
        assert_eq!(from_cmdline("quiet ferrymq.join_token=abc"), None);
    }

    #[test]
    fn a_seed_gives_token_and_ca() {
        let g = from_seed_text("#cloud-config\nferrymq_join_token: \"t0k\"\nferrymq_ca: QUJD\n")
            .expect("found");
        assert_eq!(
            g,
            Given {
                token: "t0k".into(),
                ca: "QUJD".into()
            }
        );
        assert_eq!(from_seed_text("instance-id: x\n"), None);
    }

    #[tokio::test]
    async fn ensure_imports_once_and_never_revives_a_consumed_token() {
        let dir = std::env::temp_dir().join(format!("ferrymq-material-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
        let cmdline = format!("ferrymq.join_token={STRONG} ferrymq.ca={b64}");
        assert_eq!(ensure(&dir, "quiet", None).await.expect("none"), None);
        assert_eq!(
            ensure(&dir, &cmdline, None).await.expect("cmdline"),
            Some(Origin::KernelCommandLine)
        );
        assert_eq!(fs::read_to_string(dir.join(CA_CERT)).expect("ca"), ca);
        fs::rename(dir.join(JOIN_TOKEN), dir.join(JOIN_TOKEN_CONSUMED)).expect("consume");
        assert_eq!(
            ensure(&dir, &cmdline, None).await.expect("again"),
            Some(Origin::File)
        );
        assert!(!dir.join(JOIN_TOKEN).exists(), "a consumed token came back");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    const STRONG: &str = "5b0e8c7f21d94a36e1f0b9c2a7d4e8f3";
    /// The token the attacker's test found accepted, and one the old 16-character rule passed.
    const WEAK: [&str; 2] = ["0000000000001337", "0123456789abcdef0123"];
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn weak_origin(e: &anyhow::Error) -> Origin {
        e.downcast_ref::<WeakTokenError>()
            .unwrap_or_else(|| panic!("not a weak token error: {e:#}"))
            .origin
    }

    fn fresh(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrymq-weak-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_weak_token_is_refused_from_every_source_with_nothing_imported() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(CA);
        for weak in WEAK {
            // The kernel command line: refused, nothing written.
            let dir = fresh("cmdline");
            let cmdline = format!("quiet ferrymq.join_token={weak} ferrymq.ca={b64}");
            let e = ensure(&dir, &cmdline, None)
                .await
                .expect_err("weak accepted");
            assert_eq!(weak_origin(&e), Origin::KernelCommandLine);
            let shown = format!("{e:#}");
            assert!(shown.contains("the kernel command line"), "{shown}");
            assert!(shown.contains("pki new-token"), "{shown}");
            assert!(!dir.join(JOIN_TOKEN).exists(), "a weak token was imported");

            // A NoCloud seed: the same.
            let seed = fresh("seed");
            fs::create_dir_all(&seed).expect("mkdir");
            fs::write(
                seed.join("user-data"),
                format!("#cloud-config\nferrymq_join_token: {weak}\nferrymq_ca: {b64}\n"),
            )
            .expect("seed");
            let e = ensure(&dir, "quiet", Some(&seed))
                .await
                .expect_err("weak accepted");
            assert_eq!(weak_origin(&e), Origin::Seed);
            assert!(format!("{e:#}").contains("the NoCloud seed"));
            assert!(!dir.join(JOIN_TOKEN).exists(), "a weak token was imported");

            // The file in the enrollment directory: refused, left as it is (the operator
            // replaces it), and a good token elsewhere does not override it.
            fs::create_dir_all(&dir).expect("mkdir");
            fs::write(dir.join(JOIN_TOKEN), weak).expect("token");
            fs::write(dir.join(CA_CERT), CA).expect("ca");
            let good = format!("ferrymq.join_token={STRONG} ferrymq.ca={b64}");
            let e = ensure(&dir, &good, None).await.expect_err("weak accepted");
            assert_eq!(weak_origin(&e), Origin::File);
            assert!(format!("{e:#}").contains("join-token"));
            assert_eq!(
                fs::read_to_string(dir.join(JOIN_TOKEN)).expect("token"),
                weak
            );
            // Replaced by a good one, it is taken.
            fs::write(dir.join(JOIN_TOKEN), STRONG).expect("token");
            assert_eq!(
                ensure(&dir, "quiet", None).await.expect("good"),
                Some(Origin::File)
            );
            fs::remove_dir_all(&dir).expect("cleanup");
            fs::remove_dir_all(&seed).expect("cleanup");
        }
    }
}
