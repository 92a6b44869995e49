//! Engine bundles: content-addressed archives of an engine version, verified with SHA-256
//! before anything is unpacked, unpacked side by side under `bundles/<engine>-<version>-<sha
//! prefix>/`, and switched per broker with one atomic symlink rename (`engine-current`), so that
//! a broker always runs one complete bundle. A failed upgrade goes back to the one that ran by
//! the same switch: the maintenance attempt (`maintenance::Attempt`) puts the old version back
//! in the spec it converges to, and the old bundle is still unpacked beside the new one.
//!
//! Bundles come from a source given to the agent (`--bundle-source`: a directory, as on an
//! image that carries its bundles, or an `http://` mirror). The expected digest is never taken
//! from the source: it is the catalogue's, compiled into the agent.

use crate::archive;
use ferrymq_api::catalogue::{EngineType, EngineVersion};
use std::fs;
use std::path::{Path, PathBuf};

/// The per-broker link to the bundle it runs.
pub const CURRENT: &str = "engine-current";
/// `engine_bundle` in a status when the broker runs the host's Debian package.
pub const DEBIAN_PACKAGE: &str = "debian-package";

/// Whether the host's Debian package is this version (the fallback when no bundle is there).
pub fn host_packaged(v: &EngineVersion) -> bool {
    matches!(
        (v.engine, v.version),
        (EngineType::ActiveMq, "5.17.2") | (EngineType::RabbitMq, "3.10.8")
    )
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "engine bundle {file} for {engine} {version} is corrupt or not the catalogue's: \
         SHA-256 {actual}, expected {expected}; refused, nothing was switched"
    )]
    Digest {
        file: String,
        engine: String,
        version: String,
        expected: String,
        actual: String,
    },
    #[error("engine bundle {file} for {engine} {version} is not on this host and the agent has no --bundle-source")]
    NoSource {
        file: String,
        engine: String,
        version: String,
    },
    #[error("engine bundle {file}: {reason}")]
    Io { file: String, reason: String },
}

/// The bundles unpacked on this host, and where missing ones come from.
pub struct Store {
    root: PathBuf,
    source: Option<String>,
}

impl Store {
    pub fn new(root: PathBuf, source: Option<String>) -> Self {
        Store { root, source }
    }

    /// The directory a version's bundle is unpacked to (named by its digest, so a rebuilt
    /// archive with other contents never shadows the one a broker runs).
    pub fn dir(&self, v: &EngineVersion) -> PathBuf {
        let prefix = v.bundle_sha256.get(..12).unwrap_or(v.bundle_sha256);
        self.root.join(format!(
            "{}-{}-{prefix}",
            v.engine.as_str().to_ascii_lowercase(),
            v.version
        ))
    }

    /// Whether the version can come from a bundle at all (present or fetchable, from `mirror`
    /// — the broker spec's — or the agent's own source).
    pub fn available(&self, v: &EngineVersion, mirror: Option<&str>) -> bool {
        !v.bundle_sha256.is_empty()
            && (self.dir(v).is_dir() || self.source.is_some() || mirror.is_some())
    }

    /// The unpacked bundle of `v`, fetched (from `mirror` when given, else the agent's own
    /// source), verified and unpacked first when missing. Blocking.
    pub fn ensure(&self, v: &EngineVersion, mirror: Option<&str>) -> Result<PathBuf, BundleError> {
        let dir = self.dir(v);
        if dir.is_dir() {
            return Ok(dir);
        }
        let file = v.bundle_file();
        let io = |reason: String| BundleError::Io {
            file: file.clone(),
            reason,
        };
        let Some(source) = mirror.or(self.source.as_deref()) else {
            return Err(BundleError::NoSource {
                file,
                engine: v.engine.to_string(),
                version: v.version.into(),
            });
        };
        let incoming = self.root.join(".incoming");
        fs::create_dir_all(&incoming)
            .map_err(|e| io(format!("creating {}: {e}", incoming.display())))?;
        let archive = incoming.join(&file);
        fetch(source, &file, &archive).map_err(io)?;
        let actual = archive::sha256_file(&archive).map_err(|e| io(format!("reading: {e}")))?;
        if actual != v.bundle_sha256 {
            let _ = fs::remove_file(&archive);
            return Err(BundleError::Digest {
                file,
                engine: v.engine.to_string(),
                version: v.version.into(),
                expected: v.bundle_sha256.into(),
                actual,
            });
        }
        // Unpacked beside its final name and renamed: a crash leaves a temp dir, never a
        // half-unpacked bundle under the name brokers link to.
        let tmp = incoming.join(format!("unpack-{}", std::process::id()));
        archive::unpack(&archive, &tmp).map_err(io)?;
        fs::rename(&tmp, &dir).map_err(|e| io(format!("renaming into {}: {e}", dir.display())))?;
        let _ = fs::remove_file(&archive);
        tracing::info!(bundle = %dir.display(), "engine bundle verified and unpacked");
        Ok(dir)
    }
}

/// Copies `file` from a directory or fetches it from an `http://` mirror into `to`.
fn fetch(source: &str, file: &str, to: &Path) -> Result<(), String> {
    if source.starts_with("http://") || source.starts_with("https://") {
        // reqwest's rustls needs the process's crypto provider (the agent installs it when it
        // starts serving; a test or a future caller may not have).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let url = format!("{}/{file}", source.trim_end_matches('/'));
        let body = tokio::runtime::Handle::try_current()
            .map_err(|e| e.to_string())
            .and_then(|h| {
                tokio::task::block_in_place(|| {
                    h.block_on(async {
                        let resp = reqwest::get(&url)
                            .await
                            .map_err(|e| format!("GET {url}: {e}"))?;
                        let resp = resp
                            .error_for_status()
                            .map_err(|e| format!("GET {url}: {e}"))?;
                        resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))
                    })
                })
            })?;
        fs::write(to, &body).map_err(|e| format!("writing {}: {e}", to.display()))
    } else {
        let from = Path::new(source).join(file);
        fs::copy(&from, to)
            .map(drop)
            .map_err(|e| format!("copying {}: {e}", from.display()))
    }
}

/// The bundle a broker's link points to, if any.
pub fn current(broker_dir: &Path) -> Option<PathBuf> {
    link_target(broker_dir, CURRENT)
}

fn link_target(broker_dir: &Path, name: &str) -> Option<PathBuf> {
    let link = broker_dir.join(name);
    fs::read_link(&link).ok().map(|t| broker_dir.join(t))
}

/// Points the broker's `engine-current` at `bundle` with one rename (atomic: a reader sees the
/// old bundle or the new one). Returns whether it changed.
pub fn switch(broker_dir: &Path, bundle: &Path) -> std::io::Result<bool> {
    let old = current(broker_dir);
    if old.as_deref().and_then(|o| fs::canonicalize(o).ok()) == fs::canonicalize(bundle).ok() {
        return Ok(false);
    }
    fs::create_dir_all(broker_dir)?;
    archive::replace_link(broker_dir, CURRENT, bundle)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrymq-bundle-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch");
        d
    }

    /// A tiny bundle archive in `dir`, and a catalogue entry with its digest.
    fn bundle(dir: &Path, version: &'static str) -> EngineVersion {
        let stage = dir.join(format!("stage-{version}"));
        fs::create_dir_all(stage.join("home/bin")).expect("stage");
        fs::write(stage.join("home/bin/activemq.jar"), version).expect("jar");
        let file = format!("activemq-{version}.tar.gz");
        let ok = Command::new("tar")
            .args(["-czf"])
            .arg(dir.join(&file))
            .arg("-C")
            .arg(&stage)
            .arg("home")
            .status()
            .expect("tar");
        assert!(ok.success());
        let sha = archive::sha256_file(&dir.join(&file)).expect("sha");
        EngineVersion {
            engine: EngineType::ActiveMq,
            version,
            source: "test",
            protocols: &[],
            bundle_sha256: Box::leak(sha.into_boxed_str()),
            upgrades_to: &[],
        }
    }

    #[test]
    fn verified_bundles_unpack_and_switch_atomically_both_ways() {
        let d = scratch("ok");
        let mirror = d.join("mirror");
        fs::create_dir_all(&mirror).expect("mirror");
        let (a, b) = (bundle(&mirror, "5.17.2"), bundle(&mirror, "5.17.6"));
        let store = Store::new(d.join("bundles"), Some(mirror.display().to_string()));
        let broker = d.join("brokers/b-1");
        let da = store.ensure(&a, None).expect("a");
        assert!(da.join("home/bin/activemq.jar").is_file());
        assert!(switch(&broker, &da).expect("switch"));
        assert!(
            !switch(&broker, &da).expect("again"),
            "same bundle: no switch"
        );
        let db = store.ensure(&b, None).expect("b");
        assert!(switch(&broker, &db).expect("upgrade"));
        assert_eq!(
            fs::canonicalize(current(&broker).expect("cur")).ok(),
            fs::canonicalize(&db).ok()
        );
        assert!(fs::read_link(broker.join(CURRENT))
            .expect("link")
            .is_relative());
        // Going back is the same switch, to the bundle still unpacked beside the new one.
        assert!(switch(&broker, &da).expect("back"));
        assert_eq!(
            fs::canonicalize(current(&broker).expect("cur")).ok(),
            fs::canonicalize(&da).ok()
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_wrong_digest_is_refused_before_unpacking_and_names_both_digests() {
        let d = scratch("bad");
        let mirror = d.join("mirror");
        fs::create_dir_all(&mirror).expect("mirror");
        let mut v = bundle(&mirror, "5.17.6");
        let good = v.bundle_sha256;
        v.bundle_sha256 = "00000000000000000000000000000000000000000000000000000000deadbeef";
        let store = Store::new(d.join("bundles"), Some(mirror.display().to_string()));
        let err = store.ensure(&v, None).unwrap_err().to_string();
        assert!(
            err.contains("5.17.6") && err.contains(good) && err.contains("deadbeef"),
            "{err}"
        );
        assert!(!store.dir(&v).exists(), "nothing unpacked");
        let none = Store::new(d.join("bundles"), None)
            .ensure(&v, None)
            .unwrap_err();
        assert!(matches!(none, BundleError::NoSource { .. }));
        let _ = fs::remove_dir_all(&d);
    }

    /// The mirror as an HTTP server (a one-request server on loopback standing in for
    /// `python -m http.server` in front of the cache directory).
    #[tokio::test(flavor = "multi_thread")]
    async fn bundles_come_from_the_specs_http_mirror_first() {
        use std::io::Write;
        let d = scratch("http");
        let v = bundle(&d, "5.17.6");
        let body = fs::read(d.join(v.bundle_file())).expect("archive");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut req = [0u8; 1024];
            let n = conn.read(&mut req).expect("request");
            let path_ok =
                String::from_utf8_lossy(&req[..n]).starts_with("GET /m/activemq-5.17.6.tar.gz ");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).expect("head");
            conn.write_all(&body).expect("body");
            path_ok
        });
        // The broker spec's mirror (the provider's bundle_mirror) comes before the agent's own
        // source, here a directory without the bundle.
        let store = Store::new(
            d.join("bundles"),
            Some(d.join("empty").display().to_string()),
        );
        let mirror = format!("http://127.0.0.1:{port}/m/");
        let dir = tokio::task::block_in_place(|| store.ensure(&v, Some(&mirror))).expect("fetched");
        assert!(dir.join("home/bin/activemq.jar").is_file());
        assert!(
            server.join().expect("server"),
            "requested the bundle's file name"
        );
        let _ = fs::remove_dir_all(&d);
    }
}
