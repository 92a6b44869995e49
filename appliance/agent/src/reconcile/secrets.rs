//! Per-broker secrets the agent makes itself: its own engine credential and the Erlang cookie.
//! Generated once, kept 0600 beside the spec, never logged.

use crate::store::write_atomically;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// The secrets of a cluster's instance, the same on every host: derived from the broker's
/// cluster secret (carried in the spec) so that the agents agree without talking to each other.
/// The Erlang cookie must match for the nodes to connect; the agent credential must match
/// because the cluster has one user database, made by whichever node formed it.
pub fn derived(cluster_secret: &str) -> BrokerSecrets {
    let derive = |label: &str, len: usize| {
        let mut h = Sha256::new();
        h.update(b"ferrymq/");
        h.update(label.as_bytes());
        h.update(b"\0");
        h.update(cluster_secret.as_bytes());
        let mut out = hex::encode(h.finalize());
        out.truncate(len);
        out
    };
    BrokerSecrets {
        agent_password: derive("agent-password", 48),
        cookie: derive("erlang-cookie", 40).to_uppercase(),
        keystore_password: derive("keystore-password", 48),
    }
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

    #[test]
    fn cluster_secrets_agree_between_hosts_and_differ_between_brokers() {
        let a = derived("secret-of-broker-a");
        let again = derived("secret-of-broker-a");
        let b = derived("secret-of-broker-b");
        assert_eq!(a.cookie, again.cookie);
        assert_eq!(a.agent_password, again.agent_password);
        assert_ne!(a.cookie, b.cookie);
        assert_ne!(a.cookie.to_lowercase(), a.agent_password[..40]);
        assert_eq!((a.cookie.len(), a.agent_password.len()), (40, 48));
        assert!(!a.cookie.contains("secret"));
    }
}
