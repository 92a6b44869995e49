//! Revisions of broker configurations (`ferrymq_configuration`) kept on this host: one JSON
//! file per revision under `<state>/configurations/<id>/<revision>.json`.
//!
//! FerryMQ has no central service to keep revisions in, as Amazon MQ does: the provider stores
//! every revision on the agents named by the configuration's `hosts`, and a broker that pins
//! `{ id, revision }` gets that revision's data from them inside its own spec. Revisions are
//! immutable, so a broker can always roll back to an earlier one.

use super::write_atomically;
use anyhow::{Context, Result};
use ferrymq_api::agent::ConfigurationRevision;
use std::fs;
use std::path::{Path, PathBuf};

/// Why a revision was not stored; the API maps each case to its own status code.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    Invalid(String),
    #[error("configuration {id} revision {revision} already exists with other content; revisions are immutable")]
    Conflict { id: String, revision: u32 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub struct ConfigurationStore {
    dir: PathBuf,
}

impl ConfigurationStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ConfigurationStore { dir: dir.into() }
    }

    fn config_dir(&self, id: &str) -> Result<PathBuf, String> {
        ferrymq_api::configuration::id(id)?;
        Ok(self.dir.join(id))
    }

    /// Stores a revision, validated; storing the same revision again is a no-op.
    pub fn put(&self, mut rev: ConfigurationRevision) -> Result<ConfigurationRevision, PutError> {
        check(&rev).map_err(PutError::Invalid)?;
        let dir = self.config_dir(&rev.id).map_err(PutError::Invalid)?;
        let path = revision_path(&dir, rev.revision);
        if let Some(existing) = read(&path)? {
            let same = existing.name == rev.name
                && existing.engine_type == rev.engine_type
                && existing.engine_version == rev.engine_version
                && existing.data == rev.data
                && existing.description == rev.description;
            if !same {
                return Err(PutError::Conflict {
                    id: rev.id,
                    revision: rev.revision,
                });
            }
            return Ok(self.with_latest(existing)?);
        }
        rev.latest_revision = 0;
        if rev.created.is_empty() {
            rev.created = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
        }
        let json = serde_json::to_vec_pretty(&rev).context("encoding the revision")?;
        write_atomically(&path, &json)?;
        tracing::info!(configuration = %rev.id, revision = rev.revision, "configuration revision stored");
        Ok(self.with_latest(rev)?)
    }

    /// One revision; 0 means the latest. None when this host has no such revision.
    pub fn get(&self, id: &str, revision: u32) -> Result<Option<ConfigurationRevision>, String> {
        let dir = self.config_dir(id)?;
        let revision = if revision == 0 {
            match latest(&dir).map_err(|e| format!("{e:#}"))? {
                Some(r) => r,
                None => return Ok(None),
            }
        } else {
            revision
        };
        let found = read(&revision_path(&dir, revision)).map_err(|e| format!("{e:#}"))?;
        found
            .map(|r| self.with_latest(r).map_err(|e| format!("{e:#}")))
            .transpose()
    }

    /// Forgets every revision; false when there were none.
    pub fn delete(&self, id: &str) -> Result<bool, String> {
        let dir = self.config_dir(id)?;
        if !dir.exists() {
            return Ok(false);
        }
        fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        tracing::info!(configuration = %id, "configuration deleted");
        Ok(true)
    }

    fn with_latest(&self, mut rev: ConfigurationRevision) -> Result<ConfigurationRevision> {
        let dir = self.dir.join(&rev.id);
        rev.latest_revision = latest(&dir)?.unwrap_or(rev.revision);
        Ok(rev)
    }
}

fn check(rev: &ConfigurationRevision) -> Result<(), String> {
    use ferrymq_api::{configuration, validate};
    configuration::name(&rev.name)?;
    validate::configuration_revision(rev.revision)?;
    let engine = validate::engine_type(&rev.engine_type)?;
    validate::engine_version(engine, &rev.engine_version)?;
    configuration::data(engine, &rev.data).map_err(|e| format!("data: {e}"))
}

fn revision_path(dir: &Path, revision: u32) -> PathBuf {
    dir.join(format!("{revision}.json"))
}

fn read(path: &Path) -> Result<Option<ConfigurationRevision>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn latest(dir: &Path) -> Result<Option<u32>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    Ok(entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")?
                .parse::<u32>()
                .ok()
        })
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(revision: u32, data: &str) -> ConfigurationRevision {
        ConfigurationRevision {
            id: "c-1".into(),
            name: "tuning".into(),
            engine_type: "RabbitMQ".into(),
            engine_version: "3.10.8".into(),
            revision,
            data: data.into(),
            ..Default::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrymq-conf-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn revisions_are_immutable_and_the_latest_is_found() {
        let dir = temp_dir("immutable");
        let store = ConfigurationStore::new(&dir);
        assert!(store.get("c-1", 0).expect("get").is_none());
        let one = store.put(rev(1, "heartbeat = 30\n")).expect("put 1");
        assert_eq!(one.latest_revision, 1);
        assert!(!one.created.is_empty());
        store.put(rev(2, "heartbeat = 20\n")).expect("put 2");
        // The same revision again is a no-op; other content is refused.
        assert_eq!(
            store
                .put(rev(1, "heartbeat = 30\n"))
                .expect("again")
                .latest_revision,
            2
        );
        assert!(matches!(
            store.put(rev(1, "heartbeat = 10\n")),
            Err(PutError::Conflict { .. })
        ));
        let latest = store.get("c-1", 0).expect("get").expect("latest");
        assert_eq!(
            (latest.revision, latest.data.as_str()),
            (2, "heartbeat = 20\n")
        );
        let first = store.get("c-1", 1).expect("get").expect("rev 1");
        assert_eq!(first.data, "heartbeat = 30\n");
        assert!(store.delete("c-1").expect("delete"));
        assert!(!store.delete("c-1").expect("delete again"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_revisions_never_reach_the_disk() {
        let dir = temp_dir("invalid");
        let store = ConfigurationStore::new(&dir);
        let e = store
            .put(rev(1, "listeners.tcp.1 = 0.0.0.0:5672\n"))
            .unwrap_err();
        assert!(e.to_string().contains("listeners.tcp.1"), "{e}");
        let mut bad_id = rev(1, "heartbeat = 1\n");
        bad_id.id = "c-../../etc".into();
        assert!(store.put(bad_id).is_err());
        assert!(!dir.exists());
    }
}
