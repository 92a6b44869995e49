//! Enrollment and the agent API's refusal matrix, against the real binary on loopback.
//!
//! A host starts un-enrolled with a one-time join token and the deployment CA, is enrolled by
//! `ferrymq-agent pki enroll`, and then serves only the mutual-TLS API. Refused, each with
//! nothing changed on the host (every file under its state, TLS and enrollment directories
//! compared byte for byte): a wrong token, no client certificate, a certificate from another
//! CA, an expired certificate of the deployment CA, a replayed join token (after enrollment,
//! and on a host that already used its token).

use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::GetHostFactsRequest;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrymq-agent");
const TOKEN: &str = "q8T3vR1xZk0pWm5sLd7yHc2nBf4gJa9e";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn run(args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(args)
        .output()
        .expect("run agent cli")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// An un-enrolled host: its directories and its agent serving on a fresh loopback port.
struct Host {
    root: PathBuf,
    port: u16,
    _agent: Agent,
}

impl Host {
    fn start(root: PathBuf) -> Host {
        let port = free_port();
        let agent = Agent(
            Command::new(AGENT)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--supervisor", "direct"])
                .arg("--state-dir")
                .arg(root.join("state"))
                .arg("--tls-dir")
                .arg(root.join("tls"))
                .arg("--enrollment-dir")
                .arg(root.join("enroll"))
                .arg("--seed-dir")
                .arg(root.join("no-seed"))
                .env("FERRYMQ_LOG", "info")
                .spawn()
                .expect("start agent"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Host {
            root,
            port,
            _agent: agent,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every file the host keeps, for "nothing changed".
    fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        for d in ["state", "tls", "enroll"] {
            walk(&self.root.join(d), &mut out);
        }
        out
    }
}

fn enroll(pki: &Path, host: &Host, token: &str) -> Output {
    run(&[
        "pki",
        "enroll",
        "--dir",
        s(pki),
        "--host",
        &host.addr(),
        "--token",
        token,
    ])
}

async fn host_facts(
    port: u16,
    ca: &str,
    identity: Option<(String, String)>,
) -> Result<u32, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    AgentClient::new(channel)
        .get_host_facts(GetHostFactsRequest {})
        .await
        .map(|r| r.into_inner().cpus)
        .map_err(|e| e.to_string())
}

/// A client certificate of the deployment CA that expired yesterday.
fn expired_client(ca_dir: &Path) -> (String, String) {
    let read = |n: &str| std::fs::read_to_string(ca_dir.join(n)).expect("read");
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem"), &ca_key).expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_join_token_enrolls_once_and_strangers_are_refused_with_nothing_changed() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root = std::env::temp_dir().join(format!("ferrymq-enroll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (ca, other) = (root.join("ca"), root.join("other"));
    assert!(run(&["pki", "init", "--dir", s(&ca)]).status.success());
    assert!(run(&["pki", "init", "--dir", s(&other)]).status.success());
    let ca_pem = std::fs::read_to_string(ca.join("ca.pem")).expect("ca");
    let read = |d: &Path, n: &str| std::fs::read_to_string(d.join(n)).expect("read");

    let h = root.join("h1");
    std::fs::create_dir_all(h.join("enroll")).expect("mkdir");
    std::fs::write(h.join("enroll/join-token"), TOKEN).expect("token");
    std::fs::write(h.join("enroll/ca.pem"), &ca_pem).expect("ca");
    let host = Host::start(h);

    // A wrong token: refused, the token is still unused, no key was made.
    let before = host.files();
    let out = enroll(&ca, &host, "not-the-token-not-the-token-0000");
    assert!(!out.status.success(), "a wrong token enrolled the host");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong join token"));
    assert_eq!(host.files(), before, "a wrong token changed the host");

    // The operator enrolls the host; it then serves the mutual-TLS API.
    let out = enroll(&ca, &host, TOKEN);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(host.root.join("tls/agent.pem").exists());
    let good = Some((read(&ca, "client.pem"), read(&ca, "client-key.pem")));
    assert!(
        host_facts(host.port, &ca_pem, good.clone())
            .await
            .expect("served")
            >= 1
    );
    assert_eq!(
        std::fs::read_to_string(host.root.join("enroll/join-token.consumed")).expect("marker"),
        "",
        "the used token is still on disk"
    );

    let before = host.files();
    let strangers: [(&str, Option<(String, String)>); 3] = [
        ("no client certificate", None),
        (
            "a certificate from another CA",
            Some((read(&other, "client.pem"), read(&other, "client-key.pem"))),
        ),
        ("an expired certificate", Some(expired_client(&ca))),
    ];
    for (case, identity) in strangers {
        let got = host_facts(host.port, &ca_pem, identity).await;
        assert!(got.is_err(), "{case}: served");
        eprintln!(
            "refused: {case}: {}",
            got.unwrap_err().lines().next().unwrap_or("")
        );
        assert_eq!(host.files(), before, "{case}: the host changed");
    }
    let replay = enroll(&ca, &host, TOKEN);
    assert!(!replay.status.success(), "a replayed token enrolled again");
    assert_eq!(host.files(), before, "a replayed token changed the host");
    assert!(host_facts(host.port, &ca_pem, good).await.is_ok());

    // A host that used its token but lost its certificate (say, a RAM-booted host whose TLS
    // directory did not persist) serves enrollment again, and the old token is refused there.
    let h2 = root.join("h2");
    std::fs::create_dir_all(h2.join("enroll")).expect("mkdir");
    std::fs::write(h2.join("enroll/join-token.consumed"), "").expect("marker");
    std::fs::write(h2.join("enroll/ca.pem"), &ca_pem).expect("ca");
    let used = Host::start(h2);
    let before = used.files();
    let out = enroll(&ca, &used, TOKEN);
    assert!(!out.status.success(), "a used token enrolled a host");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(used.files(), before, "a replayed token changed the host");

    // The certificate must come from the host's own deployment CA: signed by another CA, the
    // host refuses it and stays un-enrolled.
    let h3 = root.join("h3");
    std::fs::create_dir_all(h3.join("enroll")).expect("mkdir");
    std::fs::write(h3.join("enroll/join-token"), TOKEN).expect("token");
    std::fs::write(h3.join("enroll/ca.pem"), &ca_pem).expect("ca");
    let foreign = Host::start(h3);
    let out = enroll(&other, &foreign, TOKEN);
    assert!(
        !out.status.success(),
        "a certificate of another CA was installed"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not issued by the deployment CA"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!foreign.root.join("tls/agent.pem").exists());

    drop((host, used, foreign));
    std::fs::remove_dir_all(&root).expect("cleanup");
}
