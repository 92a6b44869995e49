//! The agent's own RabbitMQ user (`ferrymq-agent`, the node's `default_user`): what the agent
//! manages the broker with through the management API (users, quotas, the default queue type,
//! the partition view, metrics).
//!
//! Console users have the `administrator` tag, as on Amazon MQ, and RabbitMQ 3.10 lets every
//! administrator list, delete and change every user: there is no way to hide one user from
//! them with the internal user database. So the agent keeps its user rather than hides it:
//! every pass it logs in as itself, and when it cannot (deleted, password changed) or lost its
//! tag or permissions, it puts it back with `rabbitmqctl import_definitions`, which goes
//! through the Erlang distribution and the node's cookie (no console user has either) rather
//! than the management API it just lost. The definitions carry RabbitMQ's salted hash of the
//! password on the command's standard input: the password is on no command line and in no
//! file.

use super::AGENT_USER;
use anyhow::Result;
use serde_json::json;

/// The definitions that make the agent's user what the node's configuration made it at first
/// boot: `administrator`, everything on vhost `/`, its password as a salted hash.
pub fn definitions(agent_password: &str) -> Result<String> {
    let hash = crate::password::hash(agent_password)?;
    Ok(json!({
        "users": [{
            "name": AGENT_USER,
            "password_hash": hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": "administrator",
            "limits": {},
        }],
        "permissions": [{
            "user": AGENT_USER,
            "vhost": "/",
            "configure": ".*",
            "write": ".*",
            "read": ".*",
        }],
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_restore_the_user_from_a_hash_never_the_password() {
        let defs: serde_json::Value =
            serde_json::from_str(&definitions("s3cret-agent-pass").expect("defs")).expect("json");
        let user = &defs["users"][0];
        assert_eq!(user["name"], "ferrymq-agent");
        assert_eq!(user["tags"], "administrator");
        let hash = user["password_hash"].as_str().expect("hash");
        assert!(crate::password::verify(hash, "s3cret-agent-pass"));
        assert!(!defs.to_string().contains("s3cret-agent-pass"));
        let p = &defs["permissions"][0];
        assert_eq!(
            [
                &p["user"],
                &p["vhost"],
                &p["configure"],
                &p["write"],
                &p["read"]
            ],
            ["ferrymq-agent", "/", ".*", ".*", ".*"]
        );
    }
}
