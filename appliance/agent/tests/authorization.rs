//! A stolen host stays one host: what its certificates can do against another host's agent, and
//! the renewal of a host's certificates under a running agent.
//!
//! Runs the real binary on loopback (the target host at 127.0.0.1) with a PKI made by
//! `ferrymq-agent pki`; the attacker holds everything of a second host (127.0.0.2): its agent
//! certificate and key and its broker CA's key.

mod common;

use common::{channel, pki, read, Agent};
use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::{
    ApplyBrokerRequest, ApplyBrokerUserRequest, BrokerSpec, ConfigurationRevision,
    DeleteBrokerRequest, DeleteBrokerUserRequest, GetBrokerRequest, GetConfigurationRequest,
    GetHostCertificatesRequest, GetHostFactsRequest, HostCertificates, PutConfigurationRequest,
    RebootBrokerRequest, User,
};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use tonic::Code;

/// Every file under `dir` with its content: what "nothing changed on the host" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.insert(p, bytes);
            }
        }
    }
    out
}

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    r.map(|_| ())
}

/// Calls every state-changing RPC (and the operator-only reads) with `ch`; returns each code.
async fn every_call(ch: Channel) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut c = AgentClient::new(ch);
    let user = User {
        username: "intruder".into(),
        password: "intruder-password-1".into(),
        console_access: true,
        ..Default::default()
    };
    vec![
        (
            "GetHostFacts",
            ok(c.get_host_facts(GetHostFactsRequest {}).await),
        ),
        (
            "ApplyBroker",
            ok(c.apply_broker(ApplyBrokerRequest {
                spec: Some(BrokerSpec {
                    broker_id: "b-intruder".into(),
                    ..Default::default()
                }),
            })
            .await),
        ),
        (
            "DeleteBroker",
            ok(c.delete_broker(DeleteBrokerRequest {
                broker_id: "b-target".into(),
            })
            .await),
        ),
        (
            "RebootBroker",
            ok(c.reboot_broker(RebootBrokerRequest {
                broker_id: "b-target".into(),
                reboot_id: "r1".into(),
            })
            .await),
        ),
        (
            "ApplyBrokerUser",
            ok(c.apply_broker_user(ApplyBrokerUserRequest {
                broker_id: "b-target".into(),
                user: Some(user),
            })
            .await),
        ),
        (
            "DeleteBrokerUser",
            ok(c.delete_broker_user(DeleteBrokerUserRequest {
                broker_id: "b-target".into(),
                username: "admin".into(),
            })
            .await),
        ),
        (
            "PutConfiguration",
            ok(c.put_configuration(PutConfigurationRequest {
                revision: Some(ConfigurationRevision {
                    id: "c-intruder".into(),
                    revision: 1,
                    engine_type: "RabbitMQ".into(),
                    data: "heartbeat = 5\n".into(),
                    ..Default::default()
                }),
            })
            .await),
        ),
        (
            "GetHostCertificates",
            ok(c.get_host_certificates(GetHostCertificatesRequest {}).await),
        ),
        (
            "InstallHostCertificates",
            ok(c.install_host_certificates(HostCertificates::default())
                .await),
        ),
        (
            "GetBroker",
            ok(c.get_broker(GetBrokerRequest {
                broker_id: "b-target".into(),
            })
            .await),
        ),
    ]
}

fn mint_operator_with_broker_ca(host_dir: &Path) -> (String, String) {
    let broker_pem = read(host_dir, "broker-ca.pem");
    let broker_key = KeyPair::from_pem(&read(host_dir, "broker-ca-key.pem")).expect("key");
    let issuer = Issuer::from_ca_cert_pem(&broker_pem, broker_key).expect("issuer");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![
        SanType::URI("urn:ferrymq:role:operator".try_into().expect("uri")),
        SanType::IpAddress("127.0.0.2".parse().expect("ip")),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("mint");
    // Sent with the broker CA, so the chain leads to the deployment CA.
    (format!("{}{broker_pem}", cert.pem()), key.serialize_pem())
}

#[tokio::test]
async fn another_hosts_certificates_change_nothing_and_the_operator_renews_without_a_restart() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root = std::env::temp_dir().join(format!("ferrymq-authz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (ca, target, stolen) = (root.join("ca"), root.join("target"), root.join("stolen"));
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    pki(&["init", "--dir", &s(&ca)]);
    for (dir, address, lifetime) in [(&target, "127.0.0.1", "1h"), (&stolen, "127.0.0.2", "365d")] {
        pki(&[
            "issue-host",
            "--dir",
            &s(&ca),
            "--address",
            address,
            "--out",
            &s(dir),
            "--lifetime",
            lifetime,
        ]);
    }
    let port = common::free_port();
    let state = root.join("state");
    let mut agent = Agent::start("127.0.0.1", port, &state, &target).await;
    let ca_pem = read(&ca, "ca.pem");
    let before = snapshot(&root.join("state"));
    let tls_before = snapshot(&target);

    // The stolen host's own certificate, and an "operator" minted with its broker CA.
    let attackers = [
        (
            "host certificate",
            (read(&stolen, "agent.pem"), read(&stolen, "agent-key.pem")),
        ),
        (
            "broker-CA-minted operator",
            mint_operator_with_broker_ca(&stolen),
        ),
    ];
    for (who, identity) in attackers {
        let ch = channel("127.0.0.1", port, &ca_pem, Some(identity))
            .await
            .expect("TLS: the chain leads to the deployment CA");
        for (call, result) in every_call(ch).await {
            let status = result.expect_err(&format!("{who} {call} was served"));
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{who} {call}: {status:?}"
            );
        }
    }
    assert_eq!(snapshot(&state), before, "the target's state changed");
    assert_eq!(
        snapshot(&target),
        tls_before,
        "the target's certificates changed"
    );

    // The operator is served, and nothing the attackers sent was stored.
    let operator = channel(
        "127.0.0.1",
        port,
        &ca_pem,
        Some((read(&ca, "client.pem"), read(&ca, "client-key.pem"))),
    )
    .await
    .expect("operator");
    let mut c = AgentClient::new(operator);
    let facts = c
        .get_host_facts(GetHostFactsRequest {})
        .await
        .expect("facts")
        .into_inner();
    let certs = facts.certificates.expect("certificates");
    assert_eq!(
        certs.warnings.len(),
        2,
        "a 1-hour agent certificate and broker CA warn: {certs:?}"
    );
    let missing = c
        .get_configuration(GetConfigurationRequest {
            id: "c-intruder".into(),
            revision: 0,
        })
        .await
        .expect_err("not stored");
    assert_eq!(missing.code(), Code::NotFound);

    // Renewal by the operator: the same agent process serves the new certificate.
    let out = pki(&[
        "renew",
        "--dir",
        &s(&ca),
        "--host",
        &format!("127.0.0.1:{port}"),
        "--before",
        "2h",
    ]);
    assert!(out.contains("renewed"), "{out}");
    let after = c
        .get_host_facts(GetHostFactsRequest {})
        .await
        .expect("facts after renewal")
        .into_inner()
        .certificates
        .expect("certificates");
    assert!(after.warnings.is_empty(), "{after:?}");
    assert!(after.agent_certificate_not_after > certs.agent_certificate_not_after);
    assert_eq!(read(&target, "agent.pem"), after_pem(&mut c).await);
    assert!(
        agent.0.try_wait().expect("wait").is_none(),
        "the agent restarted"
    );
    // Not due again: nothing is signed.
    let out = pki(&[
        "renew",
        "--dir",
        &s(&ca),
        "--host",
        &format!("127.0.0.1:{port}"),
    ]);
    assert!(out.contains("not due"), "{out}");
    // A new connection is served the renewed certificate.
    let served = served_certificate(port, &ca_pem, &ca).await;
    let renewed =
        CertificateDer::from_pem_slice(read(&target, "agent.pem").as_bytes()).expect("pem");
    assert_eq!(served, renewed.as_ref());
    drop(agent);
    std::fs::remove_dir_all(&root).expect("cleanup");
}

/// The certificate the agent serves in a fresh handshake (as the operator).
async fn served_certificate(port: u16, ca_pem: &str, ca: &Path) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let certs = CertificateDer::pem_slice_iter(read(ca, "client.pem").as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("client");
    let key = PrivateKeyDer::from_pem_slice(read(ca, "client-key.pem").as_bytes()).expect("key");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("config");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("served")[0].to_vec()
}

async fn after_pem(c: &mut AgentClient<Channel>) -> String {
    c.get_host_certificates(GetHostCertificatesRequest {})
        .await
        .expect("certificates")
        .into_inner()
        .agent_certificate_pem
}

/// A server certificate for `address`, minted with the stolen host's broker CA, and its key.
fn mint_server_with_broker_ca(
    host_dir: &Path,
    address: &str,
) -> (Vec<CertificateDer<'static>>, String) {
    let broker_pem = read(host_dir, "broker-ca.pem");
    let broker_key = KeyPair::from_pem(&read(host_dir, "broker-ca-key.pem")).expect("key");
    let issuer = Issuer::from_ca_cert_pem(&broker_pem, broker_key).expect("issuer");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![SanType::IpAddress(address.parse().expect("ip"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("mint");
    let broker = CertificateDer::from_pem_slice(broker_pem.as_bytes()).expect("pem");
    (vec![cert.der().clone(), broker], key.serialize_pem())
}

#[tokio::test]
async fn a_fake_agent_with_a_minted_certificate_gets_nothing_from_the_operator() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root = std::env::temp_dir().join(format!("ferrymq-fake-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (ca, stolen) = (root.join("ca"), root.join("stolen"));
    let s = |p: &Path| p.to_str().expect("utf8").to_string();
    pki(&["init", "--dir", &s(&ca)]);
    pki(&[
        "issue-host",
        "--dir",
        &s(&ca),
        "--address",
        "127.0.0.2",
        "--out",
        &s(&stolen),
    ]);

    // The fake answers at 127.0.0.1 (another host's address) with a certificate for it.
    let (chain, key) = mint_server_with_broker_ca(&stolen, "127.0.0.1");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = received.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let fake = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                    count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    });

    // The provider's channel (the one both the provider and peers use).
    let channel = ferrymq_api::channel::agent_channel(
        &format!("127.0.0.1:{port}"),
        &read(&ca, "ca.pem"),
        &read(&ca, "client.pem"),
        &read(&ca, "client-key.pem"),
        std::time::Duration::from_secs(5),
    )
    .expect("channel");
    let err = AgentClient::new(channel)
        .apply_broker(ApplyBrokerRequest {
            spec: Some(BrokerSpec {
                broker_id: "b-1".into(),
                users: vec![User {
                    username: "admin".into(),
                    password: "a-secret-password".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .expect_err("the fake agent was trusted");
    let text = format!("{err:?}");
    assert!(text.contains("NameConstraintViolation"), "{text}");
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the fake got data"
    );
    fake.abort();
    std::fs::remove_dir_all(&root).expect("cleanup");
}
