//! Users' passwords on their way into the store: the store keeps a salted hash, never the
//! password (see `crate::password`). The plain password of an apply stays in the agent's
//! memory only until the broker has converged, for engines that must write it themselves
//! (ActiveMQ's JAAS file).

use crate::password;
use anyhow::{Context, Result};
use ferrymq_api::agent::User;
use std::collections::BTreeMap;

/// Replaces each user's password by its hash and returns the passwords by username. A user
/// whose stored hash still matches keeps it, so that re-applying the same password changes
/// nothing (same spec, same generation, no work on the engine). With a `cluster_secret` (a
/// cluster's instances) new hashes are the ones every instance makes alike.
pub fn seal(
    users: &mut [User],
    previous: &[User],
    cluster_secret: &str,
) -> Result<BTreeMap<String, String>> {
    let mut plain = BTreeMap::new();
    for u in users {
        if u.password.is_empty() {
            continue;
        }
        let kept = previous
            .iter()
            .find(|p| p.username == u.username)
            .map(|p| p.password_hash.as_str())
            .filter(|h| password::verify(h, &u.password));
        u.password_hash = match kept {
            Some(h) => h.to_string(),
            None if !cluster_secret.is_empty() => {
                password::shared_hash(cluster_secret, &u.username, &u.password)
            }
            None => password::hash(&u.password).context("hashing a password")?,
        };
        plain.insert(u.username.clone(), std::mem::take(&mut u.password));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str) -> User {
        User {
            username: name.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    #[test]
    fn passwords_become_hashes_and_same_passwords_keep_theirs() {
        let mut first = vec![user("app", "app-password-12")];
        let plain = seal(&mut first, &[], "").expect("seal");
        assert_eq!(first[0].password, "");
        assert!(password::verify(&first[0].password_hash, "app-password-12"));
        assert_eq!(plain["app"], "app-password-12");

        let mut again = vec![user("app", "app-password-12")];
        seal(&mut again, &first, "").expect("seal");
        assert_eq!(again, first, "same password, same stored user");

        let mut changed = vec![user("app", "new-password-123")];
        seal(&mut changed, &first, "").expect("seal");
        assert_ne!(changed[0].password_hash, first[0].password_hash);
        let json = serde_json::to_string(&changed).unwrap_or_default();
        assert!(!json.contains("new-password-123"));
    }
}
