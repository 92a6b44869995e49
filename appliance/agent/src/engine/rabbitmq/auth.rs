//! The agent's own RabbitMQ user (`ferrymq-agent`), kept out of the node's user database.
//!
//! Console users have the `administrator` tag, as on Amazon MQ, and RabbitMQ 3.10 shows every
//! user of its internal database to every administrator and lets them delete or change it. So
//! the agent's user is not in that database at all: RabbitMQ asks the agent itself, through
//! `rabbitmq_auth_backend_http`, configured as the second backend after `internal`. The agent
//! answers on loopback (the node and the agent share the host's network namespace):
//! `allow administrator` for `ferrymq-agent` with that broker's agent password, `allow` for
//! that user's vhost, resource and topic checks, `deny` for everything else, so every other
//! user goes on being checked by the internal database alone.
//!
//! RabbitMQ tries its backends in order and goes on to the next one when a backend refuses a
//! login (`rabbit_access_control:check_user_login/3`): an internal `ferrymq-agent` a console
//! user makes with another password refuses the agent's password, and this endpoint then lets
//! the agent in. The agent also deletes that internal user on every pass (see `heal`).
//!
//! Each broker's node asks under its own path (`/auth/<broker id>/user`, rendered into its
//! `rabbitmq.conf`), so the endpoint checks the password of the broker that asks. One request
//! per login: the management API logs the agent in on every call (one HTTP round trip on
//! loopback, plus one per vhost check).

use super::AGENT_USER;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// The loopback port the endpoint listens on by default (`serve --engine-auth-port`).
pub const PORT: u16 = 15699;
/// The port the endpoint is bound to, which every node's `rabbitmq.conf` names: `PORT` until
/// `bind` says otherwise (port 0, any free port, for tests running several agents in one
/// network namespace; a port that changed would restart every node at the next render).
static BOUND_PORT: AtomicU16 = AtomicU16::new(PORT);

/// The port nodes ask the agent on.
pub fn port() -> u16 {
    BOUND_PORT.load(Ordering::Relaxed)
}
/// How long RabbitMQ gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A check's request is a form of a few short fields.
const MAX_REQUEST: usize = 16 * 1024;

/// The agent password of every RabbitMQ broker on this host, by broker id.
#[derive(Clone, Default)]
pub struct Passwords(Arc<RwLock<HashMap<String, String>>>);

impl Passwords {
    /// The agent's one table: filled as brokers' engines are made (`RabbitMq::new`), read by
    /// the endpoint.
    pub fn global() -> &'static Passwords {
        static GLOBAL: LazyLock<Passwords> = LazyLock::new(Passwords::default);
        &GLOBAL
    }

    pub fn set(&self, broker_id: &str, password: &str) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.get(broker_id).map(String::as_str) != Some(password) {
            map.insert(broker_id.to_string(), password.to_string());
        }
    }

    fn matches(&self, broker_id: &str, password: &str) -> bool {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.get(broker_id)
            .is_some_and(|want| constant_time_eq(want.as_bytes(), password.as_bytes()))
    }

    fn knows(&self, broker_id: &str) -> bool {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        map.contains_key(broker_id)
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right (the length may show: the agent's passwords have a fixed one).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What RabbitMQ's HTTP backend reads in a 200 answer's body.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    AllowAdministrator,
    Allow,
    Deny,
}

impl Answer {
    fn body(&self) -> &'static str {
        match self {
            Answer::AllowAdministrator => "allow administrator",
            Answer::Allow => "allow",
            Answer::Deny => "deny",
        }
    }
}

/// Why a request gets no answer RabbitMQ can read: the caller answers 404 or 405.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not found: checks are POSTed to /auth/<broker id>/{{user,vhost,resource,topic}}")]
    NotFound,
    #[error("POST only")]
    BadMethod,
}

/// The answer to one check: `method` and `target` of the request line, `body` its form.
pub fn answer(
    passwords: &Passwords,
    method: &str,
    target: &str,
    body: &str,
) -> Result<Answer, Refused> {
    let path = target.split('?').next().unwrap_or_default();
    let mut parts = path
        .strip_prefix("/auth/")
        .ok_or(Refused::NotFound)?
        .split('/');
    let (Some(broker_id), Some(check), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refused::NotFound);
    };
    if broker_id.is_empty() || !["user", "vhost", "resource", "topic"].contains(&check) {
        return Err(Refused::NotFound);
    }
    if method != "POST" {
        return Err(Refused::BadMethod);
    }
    let form = parse_form(body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("username") != Some(AGENT_USER) {
        return Ok(Answer::Deny);
    }
    Ok(match check {
        "user" => match field("password") {
            Some(p) if passwords.matches(broker_id, p) => Answer::AllowAdministrator,
            _ => Answer::Deny,
        },
        // Asked only for a user this backend logged in: the agent, on any vhost, resource or
        // topic of its broker.
        _ if passwords.knows(broker_id) => Answer::Allow,
        _ => Answer::Deny,
    })
}

/// `application/x-www-form-urlencoded` pairs; a field that does not decode is left out (and
/// so denied).
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Binds the endpoint on 127.0.0.1 only (RabbitMQ's node is on the same host) and makes its
/// port the one rendered into nodes' configuration.
pub async fn bind(port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the RabbitMQ auth endpoint {addr}"))?;
    BOUND_PORT.store(listener.local_addr()?.port(), Ordering::Relaxed);
    Ok(listener)
}

/// Answers RabbitMQ's checks until the process ends.
pub async fn serve(listener: TcpListener, passwords: Passwords) {
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "RabbitMQ auth endpoint serving on /auth/<broker id>/");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("RabbitMQ auth endpoint: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let passwords = passwords.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &passwords).await {
                tracing::debug!(%peer, "RabbitMQ auth request: {e:#}");
            }
        });
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    passwords: &Passwords,
) -> Result<()> {
    let (head, body) = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream))
        .await
        .context("request timed out")??;
    let mut line = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        line.next().unwrap_or_default(),
        line.next().unwrap_or_default(),
    );
    let (status, text) = match answer(passwords, method, target, &body) {
        Ok(a) => ("200 OK", a.body().to_string()),
        Err(e @ Refused::NotFound) => ("404 Not Found", e.to_string()),
        Err(e @ Refused::BadMethod) => ("405 Method Not Allowed", e.to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// The request's head and its body (`Content-Length` bytes).
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the request's head ended");
        buf.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(buf.len() <= MAX_REQUEST, "request too large");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .context("bad Content-Length")?
        .unwrap_or(0);
    anyhow::ensure!(head_end + length <= MAX_REQUEST, "request too large");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the request's body ended");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        let p = Passwords::default();
        p.set("b-1", "s3cret-agent-pass");
        p.set("b-2", "other-broker-pass");
        p
    }

    fn user(broker: &str, form: &str) -> Result<Answer, Refused> {
        answer(&passwords(), "POST", &format!("/auth/{broker}/user"), form)
    }

    #[test]
    fn only_the_agent_with_its_brokers_password_is_let_in() {
        assert_eq!(
            user("b-1", "username=ferrymq-agent&password=s3cret-agent-pass"),
            Ok(Answer::AllowAdministrator)
        );
        // Wrong password, another broker's password, an unknown broker.
        for (broker, form) in [
            ("b-1", "username=ferrymq-agent&password=s3cret-agent-pasS"),
            ("b-1", "username=ferrymq-agent&password="),
            ("b-1", "username=ferrymq-agent"),
            ("b-1", "username=ferrymq-agent&password=other-broker-pass"),
            ("b-9", "username=ferrymq-agent&password=s3cret-agent-pass"),
        ] {
            assert_eq!(user(broker, form), Ok(Answer::Deny), "{broker} {form}");
        }
        // Every other user, even with the agent's password: the internal database's.
        for name in ["admin", "guest", "ferrymq-agent2", "ferrymq%2Dagen"] {
            assert_eq!(
                user(
                    "b-1",
                    &format!("username={name}&password=s3cret-agent-pass")
                ),
                Ok(Answer::Deny),
                "{name}"
            );
        }
    }

    #[test]
    fn form_fields_are_percent_decoded() {
        let p = Passwords::default();
        p.set("b-1", "a b&c=d%");
        assert_eq!(
            answer(
                &p,
                "POST",
                "/auth/b-1/user",
                "username=ferrymq%2Dagent&password=a+b%26c%3Dd%25"
            ),
            Ok(Answer::AllowAdministrator)
        );
        assert_eq!(
            answer(
                &p,
                "POST",
                "/auth/b-1/user",
                "username=ferrymq-agent&password=a+b%2"
            ),
            Ok(Answer::Deny)
        );
    }

    #[test]
    fn vhost_resource_and_topic_checks_allow_the_agent_only() {
        let p = passwords();
        for check in ["vhost", "resource", "topic"] {
            let at = |broker: &str, form: &str| {
                answer(&p, "POST", &format!("/auth/{broker}/{check}"), form)
            };
            assert_eq!(
                at("b-1", "username=ferrymq-agent&vhost=%2F&ip=127.0.0.1"),
                Ok(Answer::Allow)
            );
            assert_eq!(at("b-1", "username=admin&vhost=%2F"), Ok(Answer::Deny));
            assert_eq!(
                at("b-9", "username=ferrymq-agent&vhost=%2F"),
                Ok(Answer::Deny)
            );
        }
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let p = passwords();
        let form = "username=ferrymq-agent&password=s3cret-agent-pass";
        for target in [
            "/",
            "/auth/b-1",
            "/auth//user",
            "/auth/b-1/login",
            "/auth/b-1/user/x",
        ] {
            assert_eq!(
                answer(&p, "POST", target, form),
                Err(Refused::NotFound),
                "{target}"
            );
        }
        assert_eq!(
            answer(&p, "GET", "/auth/b-1/user", form),
            Err(Refused::BadMethod)
        );
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[tokio::test]
    async fn rabbitmqs_post_is_answered_over_http() {
        // Not `bind`: the rendered port of other tests stays the default.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert!(addr.ip().is_loopback());
        tokio::spawn(serve(listener, passwords()));
        let ask = |form: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let request = format!(
                "POST /auth/b-1/user HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 content-length: {}\r\n\r\n{form}",
                form.len()
            );
            s.write_all(request.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = ask("username=ferrymq-agent&password=s3cret-agent-pass").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nallow administrator"), "{ok}");
        let no = ask("username=ferrymq-agent&password=guess").await;
        assert!(no.ends_with("\r\n\r\ndeny"), "{no}");
    }
}
