//! Users through the RabbitMQ management HTTP API, authenticated as the agent's own user.
//!
//! Users are sent with `password_hash` (RabbitMQ's own salted SHA-256, computed by the agent
//! on apply, see `reconcile::users`), never with the plain password, and compared by that hash:
//! a sync changes nothing when nothing differs (re-applies do no work) and a password changed
//! behind FerryMQ's back shows up as drift.
//!
//! Tags and permissions: `console_access` is the `administrator` tag (Amazon MQ's RabbitMQ
//! console user); each of the user's `groups` becomes a tag of the same name (RabbitMQ's own
//! tags `management`, `monitoring`, `policymaker` give what RabbitMQ says they give; other
//! names are free labels). Every user may configure, write and read everything on vhost `/`.

use super::AGENT_USER;
use crate::engine::ObservedUsers;
use anyhow::{bail, Context, Result};
use ferrymq_api::agent::User;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The tag that gives a user the management console (Amazon MQ's `console_access`).
const CONSOLE_TAG: &str = "administrator";
/// RabbitMQ's name of the hashing it does and that the agent does for it.
const SHA256: &str = "rabbit_password_hashing_sha256";
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
        self.names().iter().any(|t| t == tag)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Tags::List(l) => l.clone(),
            Tags::Text(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
            Tags::None => vec![],
        };
        names.retain(|t| !t.is_empty());
        names.sort();
        names.dedup();
        names
    }
}

/// The tags a spec user has on RabbitMQ, sorted.
fn desired_tags(user: &User) -> Vec<String> {
    let mut tags: Vec<String> = user.groups.clone();
    if user.console_access {
        tags.push(CONSOLE_TAG.to_string());
    }
    tags.sort();
    tags.dedup();
    tags
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
    /// `tls`: trusts the deployment CA only; the console serves the broker's certificate.
    pub fn new(
        base: String,
        user: &str,
        password: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
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

    /// One authenticated call; the caller judges the status.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.with_context(|| format!("{method} {path}"))
    }

    pub(super) async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let resp = self.call(reqwest::Method::GET, path, None).await?;
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
        let resp = self.call(method.clone(), path, body).await?;
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
            let tags = desired_tags(want);
            let up_to_date = existing
                .get(&want.username)
                .is_some_and(|have| have.tags.names() == tags && password_matches(have, want));
            if !up_to_date {
                let tags = tags.join(",");
                let body = if want.password_hash.is_empty() {
                    json!({ "password": want.password, "tags": tags })
                } else {
                    json!({
                        "password_hash": want.password_hash,
                        "hashing_algorithm": SHA256,
                        "tags": tags,
                    })
                };
                self.send(
                    reqwest::Method::PUT,
                    &format!("/users/{}", want.username),
                    Some(body),
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

    /// Sets the default vhost's `max-queues` limit (RabbitMQ 3.10 has no node-wide queue
    /// limit; Amazon MQ applies its queue quota the same way, as a limit on `/`). Returns
    /// whether it changed anything.
    pub async fn ensure_max_queues(&self, max_queues: u32) -> Result<bool> {
        let path = format!("/vhost-limits/{VHOST}");
        let limits: Vec<VhostLimits> = self.get(&path).await?;
        if current_max_queues(&limits) == Some(u64::from(max_queues)) {
            return Ok(false);
        }
        self.send(
            reqwest::Method::PUT,
            &format!("{path}/max-queues"),
            Some(json!({ "value": max_queues })),
        )
        .await?;
        tracing::info!(max_queues, "vhost queue limit set");
        Ok(true)
    }

    /// The names of the nodes the cluster has as members, running or not.
    pub async fn cluster_nodes(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct ApiNode {
            name: String,
        }
        let nodes: Vec<ApiNode> = self.get("/nodes?columns=name").await?;
        Ok(nodes.into_iter().map(|n| n.name).collect())
    }

    /// Every member with the peers it reports being partitioned from (RabbitMQ asks each node).
    pub async fn partition_view(&self) -> Result<Vec<super::partition::NodeView>> {
        self.get("/nodes?columns=name,partitions").await
    }

    /// Why stopping this node now would leave a quorum queue without a majority of online
    /// members (RabbitMQ's own pre-restart check, `node-is-quorum-critical`), or `None` when it
    /// may stop: after a node rejoins, its queues' members catch up before this clears.
    pub async fn quorum_critical(&self) -> Result<Option<String>> {
        const PATH: &str = "/health/checks/node-is-quorum-critical";
        let resp = self.call(reqwest::Method::GET, PATH, None).await?;
        if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            #[derive(Deserialize)]
            struct Failed {
                #[serde(default)]
                reason: String,
            }
            let failed: Failed = resp.json().await.unwrap_or(Failed {
                reason: "quorum critical".into(),
            });
            return Ok(Some(failed.reason));
        }
        check(resp, "GET", PATH).await?;
        Ok(None)
    }

    /// Makes `queue_type` the default vhost's default queue type. RabbitMQ 3.10 sets it only
    /// when a vhost is created (`defaultqueuetype`), so a vhost without it is deleted and made
    /// again, and only while it holds no queue: a vhost with queues is left as it is, with a
    /// warning, rather than lose messages.
    pub async fn ensure_default_queue_type(&self, queue_type: &str) -> Result<()> {
        #[derive(Deserialize)]
        struct ApiVhost {
            #[serde(default)]
            metadata: serde_json::Value,
        }
        let vhost: ApiVhost = self.get(&format!("/vhosts/{VHOST}")).await?;
        if vhost
            .metadata
            .get("default_queue_type")
            .and_then(|v| v.as_str())
            == Some(queue_type)
        {
            return Ok(());
        }
        let queues: Vec<serde_json::Value> =
            self.get(&format!("/queues/{VHOST}?columns=name")).await?;
        if !queues.is_empty() {
            tracing::warn!(
                queues = queues.len(),
                "default vhost has queues; leaving its default queue type as it is"
            );
            return Ok(());
        }
        self.send(reqwest::Method::DELETE, &format!("/vhosts/{VHOST}"), None)
            .await?;
        self.send(
            reqwest::Method::PUT,
            &format!("/vhosts/{VHOST}"),
            Some(json!({ "defaultqueuetype": queue_type, "description": "default (FerryMQ)" })),
        )
        .await?;
        // No permissions to give the agent: the HTTP backend allows it every vhost (`auth`).
        tracing::info!(queue_type, "default vhost made with its default queue type");
        Ok(())
    }

    /// Deletes an internal user named `ferrymq-agent`; whether there was one. The agent
    /// itself is let in by the HTTP backend whichever way this goes (`auth`).
    pub async fn remove_internal_agent_user(&self) -> Result<bool> {
        let path = format!("/users/{AGENT_USER}");
        let resp = self.call(reqwest::Method::DELETE, &path, None).await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(resp, "DELETE", &path).await?;
        Ok(true)
    }

    pub async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers> {
        let mut observed = ObservedUsers::default();
        for have in self.users().await? {
            if have.name == AGENT_USER {
                continue;
            }
            if let Some(want) = desired.iter().find(|u| u.username == have.name) {
                if !password_matches(&have, want) {
                    observed.password_drift.push(have.name.clone());
                }
            }
            observed.users.push(User {
                username: have.name.clone(),
                console_access: have.tags.contains(CONSOLE_TAG),
                groups: have
                    .tags
                    .names()
                    .into_iter()
                    .filter(|t| t != CONSOLE_TAG)
                    .collect(),
                ..Default::default()
            });
        }
        Ok(observed)
    }
}

/// One entry of `GET /api/vhost-limits/{vhost}`: `{"vhost": "/", "value": {"max-queues": 2500}}`.
#[derive(Deserialize, Debug)]
struct VhostLimits {
    #[serde(default)]
    value: BTreeMap<String, i64>,
}

fn current_max_queues(limits: &[VhostLimits]) -> Option<u64> {
    limits
        .iter()
        .find_map(|l| l.value.get("max-queues"))
        .and_then(|v| u64::try_from(*v).ok())
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

/// Whether the engine's password is the spec's: the same hash the agent sent, or (for a spec
/// stored before hashes) the plain password checked against the engine's hash.
fn password_matches(have: &ApiUser, want: &User) -> bool {
    if have.hashing_algorithm != SHA256 {
        return false;
    }
    if !want.password_hash.is_empty() {
        return have.password_hash == want.password_hash;
    }
    hash_matches(have, &want.password)
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ‖ SHA-256(salt ‖ password)),
/// with a 4-byte salt.
fn hash_matches(user: &ApiUser, password: &str) -> bool {
    crate::password::verify(&user.password_hash, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashed(salt: [u8; 4], password: &str) -> String {
        crate::password::hash_with_salt(salt, password)
    }

    #[test]
    fn password_hashes_are_checked_like_rabbitmq() {
        let user = ApiUser {
            name: "app".into(),
            password_hash: hashed([1, 2, 3, 4], "right-password-1"),
            hashing_algorithm: "rabbit_password_hashing_sha256".into(),
            tags: Tags::List(vec!["administrator".into()]),
        };
        assert!(hash_matches(&user, "right-password-1"));
        assert!(!hash_matches(&user, "wrong-password-1"));
        let want = |hash: &str| User {
            password_hash: hash.into(),
            ..Default::default()
        };
        assert!(password_matches(&user, &want(&user.password_hash)));
        assert!(!password_matches(
            &user,
            &want(&hashed([9, 9, 9, 9], "right-password-1"))
        ));
        assert!(user.tags.contains(CONSOLE_TAG));
    }

    /// A management API that answers the deletion of the internal `ferrymq-agent` with the
    /// given status, over plain HTTP on loopback.
    async fn fake_api(delete: u16) -> Management {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (status, body) = if head.starts_with("DELETE /api/users/ferrymq-agent ") {
                    (delete, "")
                } else {
                    (500, "{}")
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        // Plain HTTP: the TLS configuration is never used.
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Management::new(
            format!("http://{addr}/api"),
            AGENT_USER,
            "pw",
            std::sync::Arc::new(tls),
        )
        .expect("client")
    }

    #[tokio::test]
    async fn the_internal_agent_user_is_deleted_idempotently() {
        let removed =
            |status| async move { fake_api(status).await.remove_internal_agent_user().await };
        assert!(removed(204).await.expect("deleted"));
        // Already gone (the usual case): nothing done, no error.
        assert!(!removed(404).await.expect("absent"));
        // An API that fails otherwise (a node starting) is an error, not a verdict.
        assert!(removed(503).await.is_err());
    }

    #[test]
    fn the_max_queues_limit_is_read_from_the_vhost_limits() {
        let set: Vec<VhostLimits> = serde_json::from_str(
            r#"[{"vhost":"/","value":{"max-connections":10,"max-queues":2500}}]"#,
        )
        .expect("json");
        assert_eq!(current_max_queues(&set), Some(2500));
        let none: Vec<VhostLimits> = serde_json::from_str("[]").expect("json");
        assert_eq!(current_max_queues(&none), None);
        // -1 is RabbitMQ's "no limit".
        let unlimited: Vec<VhostLimits> =
            serde_json::from_str(r#"[{"vhost":"/","value":{"max-queues":-1}}]"#).expect("json");
        assert_eq!(current_max_queues(&unlimited), None);
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
