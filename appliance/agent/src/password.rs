//! How the agent keeps user passwords: never as given, only as RabbitMQ's own salted hash
//! (`rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)), 4-byte salt).
//! RabbitMQ takes that hash as it is (`password_hash` in its management API), so the plain
//! password never reaches it; for other engines the hash tells whether a password on the
//! engine is still the one applied (drift).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::io::Read;

const SALT: usize = 4;

/// A new salted hash of `password`.
pub fn hash(password: &str) -> std::io::Result<String> {
    let mut salt = [0u8; SALT];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    Ok(hash_with_salt(salt, password))
}

/// The salted hash every instance of a cluster makes alike: the salt comes from the broker's
/// cluster secret and the username, so the three agents agree on the hash the (cluster-wide)
/// user database holds, and none of them takes another's for a password changed behind its
/// back.
pub fn shared_hash(cluster_secret: &str, username: &str, password: &str) -> String {
    let digest = Sha256::new()
        .chain_update("ferrymq-password-salt")
        .chain_update(cluster_secret)
        .chain_update([0u8])
        .chain_update(username)
        .finalize();
    let mut salt = [0u8; SALT];
    salt.copy_from_slice(&digest[..SALT]);
    hash_with_salt(salt, password)
}

pub(crate) fn hash_with_salt(salt: [u8; SALT], password: &str) -> String {
    let mut raw = salt.to_vec();
    raw.extend_from_slice(
        &Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize(),
    );
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Whether `password` is the one `hash` was made from.
pub fn verify(hash: &str, password: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(hash) else {
        return false;
    };
    if raw.len() != SALT + 32 {
        return false;
    }
    let mut salt = [0u8; SALT];
    salt.copy_from_slice(&raw[..SALT]);
    hash_with_salt(salt, password) == hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify() {
        let a = hash("correct-horse-battery").expect("hash");
        let b = hash("correct-horse-battery").expect("hash");
        assert!(verify(&a, "correct-horse-battery") && verify(&b, "correct-horse-battery"));
        assert!(!verify(&a, "correct-horse-batterY"));
        assert!(!a.contains("horse"));
        assert!(!verify("not base64!", "x"));
        // RabbitMQ's documented example: salt 908DC60A, password "test12".
        let known = hash_with_salt([0x90, 0x8d, 0xc6, 0x0a], "test12");
        assert_eq!(known, "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
    }

    #[test]
    fn a_clusters_instances_make_the_same_hash() {
        let a = shared_hash("secret-1", "app", "correct-horse-battery");
        assert_eq!(a, shared_hash("secret-1", "app", "correct-horse-battery"));
        assert!(verify(&a, "correct-horse-battery"));
        assert_ne!(a, shared_hash("secret-2", "app", "correct-horse-battery"));
        assert_ne!(a, shared_hash("secret-1", "svc", "correct-horse-battery"));
    }
}
