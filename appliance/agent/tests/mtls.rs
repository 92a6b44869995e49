//! The agent API answers only clients holding a certificate from the deployment CA.
//!
//! Runs the real binary on loopback with a PKI made by `ferrymq-agent pki`, then calls it with
//! the deployment's client certificate, with none, and with one from another CA.

use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::GetHostFactsRequest;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrymq-agent");

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pki(args: &[&str]) {
    let status = Command::new(AGENT)
        .arg("pki")
        .args(args)
        .status()
        .expect("run pki");
    assert!(status.success(), "pki {args:?}");
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read pem")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn channel(
    port: u16,
    ca: &str,
    identity: Option<(String, String)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn host_facts(channel: Channel) -> Result<u32, tonic::Status> {
    AgentClient::new(channel)
        .get_host_facts(GetHostFactsRequest {})
        .await
        .map(|r| r.into_inner().cpus)
}

#[tokio::test]
async fn only_clients_of_the_deployment_ca_are_served() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root: PathBuf = std::env::temp_dir().join(format!("ferrymq-mtls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (ca, other, host) = (root.join("ca"), root.join("other"), root.join("host"));
    pki(&["init", "--dir", ca.to_str().expect("utf8")]);
    pki(&["init", "--dir", other.to_str().expect("utf8")]);
    pki(&[
        "issue-host",
        "--dir",
        ca.to_str().expect("utf8"),
        "--address",
        "127.0.0.1",
        "--out",
        host.to_str().expect("utf8"),
    ]);

    let port = free_port();
    let _agent = Agent(
        Command::new(AGENT)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--tls-dir")
            .arg(&host)
            .spawn()
            .expect("start agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agent did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ca_pem = read(&ca, "ca.pem");
    let good = channel(
        port,
        &ca_pem,
        Some((read(&ca, "client.pem"), read(&ca, "client-key.pem"))),
    )
    .await
    .expect("connect with the deployment's client certificate");
    assert!(host_facts(good).await.expect("host facts") >= 1);

    // No certificate, and a certificate from another CA: the handshake or the first call fails.
    let strangers = [
        None,
        Some((read(&other, "client.pem"), read(&other, "client-key.pem"))),
    ];
    for identity in strangers {
        let with_cert = identity.is_some();
        match channel(port, &ca_pem, identity).await {
            Err(_) => {}
            Ok(ch) => assert!(
                host_facts(ch).await.is_err(),
                "served a client (certificate: {with_cert}) outside the deployment CA"
            ),
        }
    }
    std::fs::remove_dir_all(&root).expect("cleanup");
}
