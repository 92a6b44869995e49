//! The agent API answers only clients holding a certificate from the deployment CA.
//!
//! Runs the real binary on loopback with a PKI made by `ferrymq-agent pki`, then calls it with
//! the deployment's client certificate, with none, and with one from another CA.

mod common;

use common::{channel, pki, read, Agent};
use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::GetHostFactsRequest;
use std::path::PathBuf;
use tonic::transport::Channel;

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

    let port = common::free_port();
    let _agent = Agent::start("127.0.0.1", port, &root.join("state"), &host).await;

    let ca_pem = read(&ca, "ca.pem");
    let good = channel(
        "127.0.0.1",
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
        match channel("127.0.0.1", port, &ca_pem, identity).await {
            Err(_) => {}
            Ok(ch) => assert!(
                host_facts(ch).await.is_err(),
                "served a client (certificate: {with_cert}) outside the deployment CA"
            ),
        }
    }
    std::fs::remove_dir_all(&root).expect("cleanup");
}
