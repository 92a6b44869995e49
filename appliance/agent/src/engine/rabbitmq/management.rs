//! Users through the RabbitMQ management HTTP API, authenticated as the agent's own user.
//!
//! Passwords are compared against the engine's own salted SHA-256 hashes, so a sync changes
//! nothing when nothing differs (re-applies do no work) and a password changed behind
//! FerryMQ's back shows up as drift.

use super::AGENT_USER;
use crate::engine::ObservedUsers;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ferrymq_api::agent::User;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The tag that gives a user the management console (Amazon MQ's `console_access`).
const CONSOLE_TAG: &str = "administrator";
const VHOST: &str = "%2F";

pub struct Management {
    base: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

#[derive(Deserialize, Debug)]
struct ApiUser {
    name: String,
    #[serde(default)]
    password_hash: String,
    #[serde(default)]
    hashing_algorithm: String,
    #[serde(default)]
    tags: Tags,
}

/// RabbitMQ 3.9+ lists tags as an array, older versions as a comma-separated string.
#[derive(Deserialize, Debug, Default)]
#[serde(untagged)]
enum Tags {
    List(Vec<String>),
    Text(String),
    #[default]
    None,
}

impl Tags {
    fn contains(&self, tag: &str) -> bool {
        match self {
            Tags::List(l) => l.iter().any(|t| t == tag),
            Tags::Text(s) => s.split(',').any(|t| t.trim() == tag),
            Tags::None => false,
        }
    }
}

#[derive(Deserialize, Debug)]
struct ApiPermission {
    user: String,
    vhost: String,
    configure: String,
    write: String,
    read: String,
}

impl Management {
    pub fn new(base: String, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the management HTTP client")?;
        Ok(Management {
            base,
            user: user.to_string(),
            password: password.to_string(),
            http,
        })
    }

    pub(super) async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        check(resp, "GET", path)
            .await?
            .json()
            .await
            .with_context(|| format!("decoding GET {path}"))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        check(resp, method.as_str(), path).await?;
        Ok(())
    }

    async fn users(&self) -> Result<Vec<ApiUser>> {
        self.get("/users").await
    }

    pub async fn sync_users(&self, desired: &[User]) -> Result<bool> {
        let existing: BTreeMap<String, ApiUser> = self
            .users()
            .await?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        let permissions: Vec<ApiPermission> = self.get("/permissions").await?;
        let mut changed = false;
        for want in desired {
            let up_to_date = existing.get(&want.username).is_some_and(|have| {
                have.tags.contains(CONSOLE_TAG) == want.console_access
                    && password_matches(have, &want.password)
            });
            if !up_to_date {
                let tags = if want.console_access { CONSOLE_TAG } else { "" };
                self.send(
                    reqwest::Method::PUT,
                    &format!("/users/{}", want.username),
                    Some(json!({ "password": want.password, "tags": tags })),
                )
                .await?;
                tracing::info!(user = %want.username, "user set");
                changed = true;
            }
            let has_all = permissions.iter().any(|p| {
                p.user == want.username
                    && p.vhost == "/"
                    && p.configure == ".*"
                    && p.write == ".*"
                    && p.read == ".*"
            });
            if !has_all {
                self.send(
                    reqwest::Method::PUT,
                    &format!("/permissions/{VHOST}/{}", want.username),
                    Some(json!({ "configure": ".*", "write": ".*", "read": ".*" })),
                )
                .await?;
                changed = true;
            }
        }
        for name in existing.keys() {
            if name != AGENT_USER && !desired.iter().any(|u| &u.username == name) {
                self.send(reqwest::Method::DELETE, &format!("/users/{name}"), None)
                    .await?;
                tracing::info!(user = %name, "user removed");
                changed = true;
            }
        }
        Ok(changed)
    }

    pub async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers> {
        let mut observed = ObservedUsers::default();
        for have in self.users().await? {
            if have.name == AGENT_USER {
                continue;
            }
            if let Some(want) = desired.iter().find(|u| u.username == have.name) {
                if !password_matches(&have, &want.password) {
                    observed.password_drift.push(have.name.clone());
                }
            }
            observed.users.push(User {
                username: have.name.clone(),
                password: String::new(),
                console_access: have.tags.contains(CONSOLE_TAG),
                groups: vec![],
            });
        }
        Ok(observed)
    }
}

async fn check(resp: reqwest::Response, method: &str, path: &str) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    bail!(
        "{method} {path}: {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)),
/// with a 4-byte salt.
fn password_matches(user: &ApiUser, password: &str) -> bool {
    if user.hashing_algorithm != "rabbit_password_hashing_sha256" {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&user.password_hash) else {
        return false;
    };
    if raw.len() != 4 + 32 {
        return false;
    }
    let (salt, hash) = raw.split_at(4);
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().as_slice() == hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed(salt: [u8; 4], password: &str) -> String {
        let mut raw = salt.to_vec();
        raw.extend_from_slice(
            &Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize(),
        );
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn password_hashes_are_checked_like_rabbitmq() {
        let user = ApiUser {
            name: "app".into(),
            password_hash: hashed([1, 2, 3, 4], "right-password-1"),
            hashing_algorithm: "rabbit_password_hashing_sha256".into(),
            tags: Tags::List(vec!["administrator".into()]),
        };
        assert!(password_matches(&user, "right-password-1"));
        assert!(!password_matches(&user, "wrong-password-1"));
        assert!(user.tags.contains(CONSOLE_TAG));
    }

    #[test]
    fn tags_parse_in_both_shapes() {
        let list: ApiUser =
            serde_json::from_str(r#"{"name":"a","tags":["administrator"]}"#).expect("json");
        let text: ApiUser =
            serde_json::from_str(r#"{"name":"a","tags":"management,administrator"}"#)
                .expect("json");
        let none: ApiUser = serde_json::from_str(r#"{"name":"a","tags":""}"#).expect("json");
        assert!(list.tags.contains(CONSOLE_TAG));
        assert!(text.tags.contains(CONSOLE_TAG));
        assert!(!none.tags.contains(CONSOLE_TAG));
    }
}
