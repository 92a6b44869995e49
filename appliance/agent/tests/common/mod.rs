//! What the agent's integration tests share: the real binary, its PKI commands, an agent on
//! loopback and a gRPC channel to it with a chosen client certificate.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const AGENT: &str = env!("CARGO_BIN_EXE_ferrymq-agent");

/// A running agent, killed when dropped.
pub struct Agent(pub Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Agent {
    /// Starts `ferrymq-agent serve` on `address:port` and waits until it listens.
    pub async fn start(address: &str, port: u16, state: &Path, tls: &Path) -> Agent {
        let agent = Agent(
            Command::new(AGENT)
                .args(["serve", "--listen", &format!("{address}:{port}")])
                .arg("--state-dir")
                .arg(state)
                .arg("--tls-dir")
                .arg(tls)
                .spawn()
                .expect("start agent"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((address, port)).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent
    }
}

/// Runs `ferrymq-agent pki ARGS`, asserting success; returns its standard output.
pub fn pki(args: &[&str]) -> String {
    let out = Command::new(AGENT)
        .arg("pki")
        .args(args)
        .output()
        .expect("run pki");
    assert!(
        out.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read pem")
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A connected channel to the agent at `address:port`, verifying it with `ca` and presenting
/// `identity` (certificate chain and key, PEM).
pub async fn channel(
    address: &str,
    port: u16,
    ca: &str,
    identity: Option<(String, String)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{address}:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}
