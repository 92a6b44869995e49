//! Per-broker secrets the agent makes itself: its own engine credential and the Erlang cookie.
//! Generated once, kept 0600 beside the spec, never logged.

use crate::store::write_atomically;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

#[derive(Serialize, Deserialize, Clone)]
pub struct BrokerSecrets {
    pub agent_password: String,
    pub cookie: String,
    /// Of the broker's PKCS12 keystore (Java needs one); added to older files on load.
    #[serde(default)]
    pub keystore_password: String,
}

impl std::fmt::Debug for BrokerSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerSecrets(..)")
    }
}

pub fn load_or_create(path: &Path) -> Result<BrokerSecrets> {
    if let Ok(bytes) = std::fs::read(path) {
        let mut secrets: BrokerSecrets = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", path.display()))?;
        if secrets.keystore_password.is_empty() {
            secrets.keystore_password = random_hex(24)?;
            write_atomically(path, &serde_json::to_vec(&secrets)?)?;
        }
        return Ok(secrets);
    }
    let secrets = BrokerSecrets {
        agent_password: random_hex(24)?,
        // Erlang cookies are letters only by convention; hex upper-cased is safe.
        cookie: random_hex(20)?.to_uppercase(),
        keystore_password: random_hex(24)?,
    };
    write_atomically(path, &serde_json::to_vec(&secrets)?)?;
    Ok(secrets)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_made_once() {
        let path =
            std::env::temp_dir().join(format!("ferrymq-secrets-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = load_or_create(&path).expect("create");
        let b = load_or_create(&path).expect("load");
        assert_eq!(a.agent_password, b.agent_password);
        assert_eq!(a.agent_password.len(), 48);
        assert_ne!(a.agent_password, a.cookie.to_lowercase());
        assert_eq!(format!("{a:?}"), "BrokerSecrets(..)");
        std::fs::remove_file(&path).expect("cleanup");
    }
}
