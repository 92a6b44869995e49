//! Enrollment and the agent API's refusal matrix, against the real binary on loopback.
//!
//! A host starts un-enrolled with a one-time join token and the deployment CA, is enrolled by
//! `ferrymq-agent pki enroll`, and then serves only the mutual-TLS API. Refused, each with
//! nothing changed on the host (every file under its state, TLS and enrollment directories
//! compared by SHA-256): a wrong token, no client certificate, a certificate from another
//! CA, an expired certificate of the deployment CA, a replayed join token (after enrollment,
//! and on a host that already used its token).
//!
//! The attacks of issue 20, each refused with the host unchanged: a weak token (from the file
//! and from a NoCloud seed: the host stays un-enrolled and says so; `pki enroll` refuses one
//! too), guessing the token (locked after 5 wrong proofs, even for the right token, across an
//! agent restart, until a new token; 100 concurrent guesses get 5 answers), and `pki enroll` against a host that is not the one whose
//! bootstrap fingerprint the operator read (no proof is sent).

use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::GetHostFactsRequest;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const AGENT: &str = env!("CARGO_BIN_EXE_ferrymq-agent");
const TOKEN: &str = "q8T3vR1xZk0pWm5sLd7yHc2nBf4gJa9e";
/// The token the attacker's test found accepted.
const WEAK: &str = "0000000000001337";
/// The host's count of wrong proofs: the one file a wrong proof may write.
const LOCKOUT: &str = "enroll/enrollment-lockout";
/// What a wrong proof costs in these tests (1 s on a real host).
const FAILURE_DELAY_MS: u64 = 200;

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
    /// Starts the agent and waits until it serves (enrollment).
    fn start(root: PathBuf) -> Host {
        let host = Host::spawn(root);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", host.port)).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        host
    }

    /// Starts the agent (its log appended to `agent.log`) without waiting for it to serve.
    fn spawn(root: PathBuf) -> Host {
        let port = free_port();
        std::fs::create_dir_all(&root).expect("mkdir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("agent.log"))
            .expect("log");
        let agent = Agent(
            Command::new(AGENT)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--supervisor", "direct"])
                // Several agents at once on this host's one loopback.
                .args(["--engine-auth-port", "0"])
                .arg("--state-dir")
                .arg(root.join("state"))
                .arg("--tls-dir")
                .arg(root.join("tls"))
                .arg("--enrollment-dir")
                .arg(root.join("enroll"))
                .arg("--seed-dir")
                .arg(root.join("seed"))
                .args(["--enroll-failure-delay-ms", &FAILURE_DELAY_MS.to_string()])
                .args(["--enroll-lockout-seconds", "3600"])
                .env("FERRYMQ_LOG", "info")
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start agent"),
        );
        Host {
            root,
            port,
            _agent: agent,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent.log")).unwrap_or_default()
    }

    /// Waits until the agent's log says `what`.
    fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(what) {
            assert!(
                Instant::now() < deadline,
                "the agent never said {what:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn serves(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// The fingerprint of the bootstrap certificate the host serves, as the operator reads it.
    fn fingerprint(&self) -> String {
        let f = std::fs::read_to_string(self.root.join("enroll/bootstrap-fingerprint"))
            .expect("the host wrote no bootstrap-fingerprint");
        let f = f.trim().to_string();
        assert!(
            self.log()
                .contains(&format!("bootstrap certificate sha256 {f}")),
            "the console does not show {f}:\n{}",
            self.log()
        );
        f
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every file the host keeps, for "nothing changed".
    fn files(&self) -> Files {
        files_of(&self.root)
    }
}

/// A host's files and the SHA-256 of each (short to print when they differ).
type Files = BTreeMap<PathBuf, String>;

/// Every file a host keeps under `root` (its state, TLS and enrollment directories).
fn files_of(root: &Path) -> Files {
    files_in(root, &["state", "tls", "enroll"])
}

/// What enrollment may change: the TLS and enrollment directories (the state directory gets a
/// copy of the agent at its first start, whatever the token).
fn enrollment_files(root: &Path) -> Files {
    files_in(root, &["tls", "enroll"])
}

fn files_in(root: &Path, dirs: &[&str]) -> Files {
    {
        fn walk(dir: &Path, out: &mut Files) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    out.insert(p.clone(), hex::encode(Sha256::digest(bytes)));
                }
            }
        }
        let mut out = BTreeMap::new();
        for d in dirs {
            walk(&root.join(d), &mut out);
        }
        out
    }
}

/// `pki enroll` with the fingerprint the host shows on its console.
fn enroll(pki: &Path, host: &Host, token: &str) -> Output {
    enroll_expecting(pki, host, token, &host.fingerprint())
}

fn enroll_expecting(pki: &Path, host: &Host, token: &str, fingerprint: &str) -> Output {
    run(&[
        "pki",
        "enroll",
        "--dir",
        s(pki),
        "--host",
        &host.addr(),
        "--token",
        token,
        "--fingerprint",
        fingerprint,
    ])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn new_token() -> String {
    let out = run(&["pki", "new-token"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// A host's files but its count of wrong proofs.
fn without_lockout(host: &Host, mut files: Files) -> Files {
    files.remove(&host.root.join(LOCKOUT));
    files
}

/// An un-enrolled host holding `token` (none when `None`) and the deployment CA, not started.
fn host_dir(root: &Path, name: &str, token: Option<&str>, ca_pem: &str) -> PathBuf {
    let h = root.join(name);
    std::fs::create_dir_all(h.join("enroll")).expect("mkdir");
    if let Some(token) = token {
        std::fs::write(h.join("enroll/join-token"), token).expect("token");
    }
    std::fs::write(h.join("enroll/ca.pem"), ca_pem).expect("ca");
    h
}

/// A fresh test root with a deployment CA; returns the root, the CA directory and its PEM.
fn deployment(tag: &str) -> (PathBuf, PathBuf, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root = std::env::temp_dir().join(format!("ferrymq-enroll-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ca = root.join("ca");
    assert!(run(&["pki", "init", "--dir", s(&ca)]).status.success());
    let ca_pem = std::fs::read_to_string(ca.join("ca.pem")).expect("ca");
    (root, ca, ca_pem)
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

    // A wrong token: refused, the token is still unused, no key was made (only the count of
    // wrong proofs changed).
    let before = host.files();
    let out = enroll(&ca, &host, &new_token());
    assert!(!out.status.success(), "a wrong token enrolled the host");
    assert!(
        stderr(&out).contains("wrong join token"),
        "{}",
        stderr(&out)
    );
    assert!(
        host.root.join(LOCKOUT).exists(),
        "the wrong proof was not counted"
    );
    assert_eq!(
        without_lockout(&host, host.files()),
        before,
        "a wrong token changed the host"
    );

    // The operator enrolls the host; it then serves the mutual-TLS API.
    let fingerprint = host.fingerprint();
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
    assert!(
        !host.root.join(LOCKOUT).exists(),
        "the count of wrong proofs outlived the enrollment"
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
    // The operator's command again: the host now shows its agent certificate, not the
    // bootstrap one, so nothing is even proven.
    let replay = enroll_expecting(&ca, &host, TOKEN, &fingerprint);
    assert!(!replay.status.success(), "a replayed token enrolled again");
    assert!(
        stderr(&replay).contains("no proof was sent"),
        "{}",
        stderr(&replay)
    );
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

#[test]
fn new_token_prints_64_hex_characters_and_nothing_else() {
    let out = run(&["pki", "new-token"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf8");
    let token = text.strip_suffix('\n').expect("one line");
    assert_eq!(token.len(), 64, "{text:?}");
    assert!(
        token.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{text:?}"
    );
    assert_ne!(token, new_token(), "two tokens alike");
}

#[test]
fn a_weak_token_leaves_the_host_unenrolled_saying_so_and_pki_enroll_refuses_one() {
    let (root, ca, ca_pem) = deployment("weak");

    // From the file: the agent runs, says so, serves nothing; nothing on the host changes.
    let file_dir = host_dir(&root, "file", Some(WEAK), &ca_pem);
    let file_before = enrollment_files(&file_dir);
    let from_file = Host::spawn(file_dir);
    // From a NoCloud seed: the same, and the token is not imported.
    let seeded = host_dir(&root, "seed", None, &ca_pem);
    std::fs::create_dir_all(seeded.join("seed")).expect("mkdir");
    std::fs::remove_file(seeded.join("enroll/ca.pem")).expect("rm");
    let ca_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&ca_pem)
    };
    std::fs::write(
        seeded.join("seed/user-data"),
        format!("#cloud-config\nferrymq_join_token: {WEAK}\nferrymq_ca: {ca_b64}\n"),
    )
    .expect("seed");
    let seed_before = enrollment_files(&seeded);
    let from_seed = Host::spawn(seeded);

    for (host, source, before) in [
        (
            &from_file,
            "the enrollment directory (join-token)",
            file_before,
        ),
        (&from_seed, "the NoCloud seed", seed_before),
    ] {
        host.wait_log(&format!("WEAK JOIN TOKEN from {source}"));
        assert!(host.log().contains("pki new-token"), "{}", host.log());
        assert!(!host.serves(), "{source}: a host with a weak token serves");
        assert_eq!(
            enrollment_files(&host.root),
            before,
            "{source}: the host changed"
        );
    }
    assert!(
        !from_seed.root.join("enroll/join-token").exists(),
        "the weak token of the seed was imported"
    );
    assert_eq!(
        std::fs::read_to_string(from_file.root.join("enroll/join-token")).expect("token"),
        WEAK,
        "the weak token was changed"
    );

    // Still running, the agent takes a good token as soon as it is given (it looks every 5 s).
    std::fs::write(from_file.root.join("enroll/join-token"), TOKEN).expect("token");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !from_file.serves() {
        assert!(Instant::now() < deadline, "{}", from_file.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // The operator's side refuses a weak token before it connects: nothing reaches the host.
    let before = from_file.files();
    let out = enroll(&ca, &from_file, WEAK);
    assert!(!out.status.success(), "a weak token was used");
    assert!(stderr(&out).contains("too weak"), "{}", stderr(&out));
    assert_eq!(from_file.files(), before, "a weak token changed the host");

    drop((from_file, from_seed));
    std::fs::remove_dir_all(&root).expect("cleanup");
}

#[test]
fn guessing_the_token_locks_the_host_even_for_the_right_token_across_a_restart() {
    let (root, ca, ca_pem) = deployment("guess");
    let dir = host_dir(&root, "h", Some(TOKEN), &ca_pem);
    let host = Host::start(dir.clone());
    let before = host.files();

    let started = Instant::now();
    for attempt in 1..=5 {
        let t0 = Instant::now();
        let out = enroll(&ca, &host, &new_token());
        assert!(!out.status.success(), "a guess enrolled the host");
        let err = stderr(&out);
        assert!(err.contains("wrong join token"), "{err}");
        assert!(
            t0.elapsed() >= Duration::from_millis(FAILURE_DELAY_MS),
            "a wrong proof was answered at once"
        );
        if attempt == 5 {
            assert!(err.contains("now locked"), "{err}");
        } else {
            assert!(
                err.contains(&format!("{} more wrong", 5 - attempt)),
                "{err}"
            );
        }
    }
    let rate = 5.0 / started.elapsed().as_secs_f64();
    eprintln!("5 wrong proofs at {rate:.1}/s, then locked");
    assert!(
        host.log().contains("enrollment now LOCKED"),
        "{}",
        host.log()
    );

    // Locked: the right token is refused too, with a clear status; the token is unused, no key.
    let locked = |host: &Host| {
        let out = enroll(&ca, host, TOKEN);
        assert!(
            !out.status.success(),
            "the right token enrolled a locked host"
        );
        let err = stderr(&out);
        assert!(err.contains("ResourceExhausted"), "{err}");
        assert!(err.contains("is locked"), "{err}");
        assert!(err.contains("pki new-token"), "{err}");
        // The fingerprint file changes at a restart (a new bootstrap certificate).
        let fingerprint = host.root.join("enroll/bootstrap-fingerprint");
        let (mut now, mut then) = (host.files(), before.clone());
        now.remove(&fingerprint);
        then.remove(&fingerprint);
        assert_eq!(
            without_lockout(host, now),
            without_lockout(host, then),
            "a locked host changed"
        );
        assert_eq!(
            std::fs::read_to_string(host.root.join("enroll/join-token")).expect("token"),
            TOKEN,
            "the token was consumed"
        );
        assert!(!host.root.join("tls/agent-key.pem.pending").exists());
    };
    locked(&host);

    // The lock is on disk: a restarted agent (a new bootstrap certificate) keeps it.
    drop(host);
    let host = Host::start(dir);
    locked(&host);

    // The operator gives the host a new token: the lock is over at once.
    let fresh = new_token();
    std::fs::write(host.root.join("enroll/join-token"), &fresh).expect("token");
    let out = enroll(&ca, &host, &fresh);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(host.root.join("tls/agent.pem").exists());
    assert!(!host.root.join(LOCKOUT).exists());

    drop(host);
    std::fs::remove_dir_all(&root).expect("cleanup");
}

#[test]
fn pki_enroll_sends_no_proof_to_a_host_with_another_bootstrap_certificate() {
    let (root, ca, ca_pem) = deployment("impostor");
    // The host the operator means, and an impostor answering at the address given.
    let meant = Host::start(host_dir(&root, "meant", Some(TOKEN), &ca_pem));
    let impostor = Host::start(host_dir(&root, "impostor", Some(&new_token()), &ca_pem));
    let (expected, shown) = (meant.fingerprint(), impostor.fingerprint());
    assert_ne!(expected, shown);
    let before = (meant.files(), impostor.files());

    let out = enroll_expecting(&ca, &impostor, TOKEN, &expected);
    assert!(!out.status.success(), "enrolled an impostor");
    let err = stderr(&out);
    assert!(err.contains(&expected) && err.contains(&shown), "{err}");
    assert!(err.contains("no proof was sent"), "{err}");
    // Had a proof reached the impostor (an agent here), it would have counted a wrong proof.
    assert_eq!((meant.files(), impostor.files()), before, "a host changed");
    assert!(!impostor.root.join(LOCKOUT).exists());
    assert!(
        !impostor.log().contains("enrollment refused"),
        "{}",
        impostor.log()
    );

    // The fingerprint as `openssl x509 -fingerprint -sha256` prints it is taken as well.
    let openssl = expected
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let out = enroll_expecting(&ca, &meant, TOKEN, &openssl);
    assert!(out.status.success(), "{}", stderr(&out));

    drop((meant, impostor));
    std::fs::remove_dir_all(&root).expect("cleanup");
}

/// The attacker's client: speaks to the enrollment service directly, accepting any bootstrap
/// certificate (the handshake signature is still checked).
mod raw {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub async fn channel(port: u16) -> tonic::transport::Channel {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .expect("connect")
    }
}

#[tokio::test]
async fn a_flood_of_concurrent_guesses_gets_five_answers_and_then_only_the_lock() {
    use ferrymq_api::agent::enrollment_client::EnrollmentClient;
    use ferrymq_api::agent::EnrollRequest;
    let (root, _ca, ca_pem) = deployment("flood");
    let host = Host::start(host_dir(&root, "h", Some(TOKEN), &ca_pem));
    let channel = raw::channel(host.port).await;

    // The attacker's test sent about 900 wrong proofs a second; here 100 at once.
    let started = Instant::now();
    let guesses: Vec<_> = (0..100u8)
        .map(|i| {
            let mut client = EnrollmentClient::new(channel.clone());
            tokio::spawn(async move {
                client
                    .enroll(EnrollRequest {
                        client_proof: vec![i; 32],
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            })
        })
        .collect();
    let mut answers = BTreeMap::new();
    for g in guesses {
        let code = g.await.expect("join").expect_err("a guess was accepted");
        *answers.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    let took = started.elapsed();
    eprintln!("100 concurrent guesses in {took:?}: {answers:?}");
    assert_eq!(answers.get("Unauthenticated"), Some(&5), "{answers:?}");
    assert_eq!(answers.get("ResourceExhausted"), Some(&95), "{answers:?}");
    // Checked one at a time, each after the delay.
    assert!(
        took >= Duration::from_millis(5 * FAILURE_DELAY_MS),
        "{took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(host.root.join("enroll/join-token")).expect("token"),
        TOKEN,
        "the token was consumed"
    );

    drop(host);
    std::fs::remove_dir_all(&root).expect("cleanup");
}
