//! Specs as JSON files, `STATE/brokers/<id>/spec.json`, written atomically (temp file, fsync,
//! rename) with mode 0600 because a spec carries user passwords.

use super::{SpecStore, StoredSpec, SCHEMA_VERSION};
use anyhow::{bail, Context, Result};
use ferrymq_api::agent::BrokerSpec;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const SPEC_FILE: &str = "spec.json";

#[derive(Serialize, Deserialize)]
struct Stored {
    schema_version: u32,
    #[serde(flatten)]
    stored: StoredSpec,
}

pub struct FsStore {
    brokers_dir: PathBuf,
}

impl FsStore {
    pub fn new(brokers_dir: impl Into<PathBuf>) -> Self {
        FsStore {
            brokers_dir: brokers_dir.into(),
        }
    }

    fn spec_path(&self, broker_id: &str) -> PathBuf {
        self.brokers_dir.join(broker_id).join(SPEC_FILE)
    }
}

impl SpecStore for FsStore {
    fn load_all(&self) -> Result<Vec<StoredSpec>> {
        let mut specs = Vec::new();
        let entries = match fs::read_dir(&self.brokers_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(specs),
            Err(e) => return Err(e).context(format!("listing {}", self.brokers_dir.display())),
        };
        for entry in entries {
            let path = entry?.path().join(SPEC_FILE);
            if !path.exists() {
                continue;
            }
            specs.push(read_spec(&path)?);
        }
        specs.sort_by(|a, b| a.spec.broker_id.cmp(&b.spec.broker_id));
        Ok(specs)
    }

    fn save(&self, spec: &BrokerSpec) -> Result<u64> {
        let path = self.spec_path(&spec.broker_id);
        let previous = if path.exists() {
            Some(read_spec(&path)?)
        } else {
            None
        };
        if let Some(p) = &previous {
            if p.spec == *spec {
                return Ok(p.generation);
            }
        }
        let stored = Stored {
            schema_version: SCHEMA_VERSION,
            stored: StoredSpec {
                generation: previous.map_or(1, |p| p.generation + 1),
                spec: spec.clone(),
            },
        };
        let bytes = serde_json::to_vec_pretty(&stored)?;
        write_atomically(&path, &bytes)?;
        Ok(stored.stored.generation)
    }

    fn remove(&self, broker_id: &str) -> Result<()> {
        remove_if_present(&self.spec_path(broker_id))
            .with_context(|| format!("removing the spec of {broker_id}"))
    }
}

fn read_spec(path: &Path) -> Result<StoredSpec> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let stored: Stored =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    if stored.schema_version != SCHEMA_VERSION {
        bail!(
            "{} has schema version {}, this agent reads {SCHEMA_VERSION}",
            path.display(),
            stored.schema_version
        );
    }
    Ok(stored.stored)
}

/// Removes a file the agent keeps, if it is there: a file already gone is what was asked for.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` so that a crash leaves either the old or the new file, never a torn one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_is_idempotent_and_survives_reload() {
        let dir = std::env::temp_dir().join(format!("ferrymq-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = FsStore::new(&dir);
        let spec = BrokerSpec {
            broker_id: "b-1".into(),
            broker_name: "orders".into(),
            ..Default::default()
        };
        assert_eq!(store.save(&spec).expect("save"), 1);
        assert_eq!(store.save(&spec).expect("save again"), 1);
        let mut changed = spec.clone();
        changed.broker_name = "payments".into();
        assert_eq!(store.save(&changed).expect("save changed"), 2);
        let loaded = FsStore::new(&dir).load_all().expect("load");
        assert_eq!(
            loaded,
            vec![StoredSpec {
                generation: 2,
                spec: changed
            }]
        );
        store.remove("b-1").expect("remove");
        store.remove("b-1").expect("remove twice");
        assert!(store.load_all().expect("load").is_empty());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
