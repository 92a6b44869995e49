//! The operator side of enrollment, `ferrymq-agent pki enroll --dir PKI --host ADDR --token T
//! --fingerprint SHA256`: checks in the TLS handshake that the host shows the bootstrap
//! certificate the operator read on its console (nothing is proven to anyone else: one proof
//! lets a weak token be guessed offline), proves the token over that certificate, checks the
//! host's proof, signs the host's CSR with the deployment CA (for ADDR, server and client use)
//! and installs it, then checks that the host answers the mutual-TLS API with the deployment's
//! client certificate.

use super::fingerprint::Fingerprint;
use super::proof::{self, Purpose};
use super::token::{self, WeakToken};
use crate::pki;
use anyhow::{bail, Context, Result};
use ferrymq_api::agent::agent_client::AgentClient;
use ferrymq_api::agent::enrollment_client::EnrollmentClient;
use ferrymq_api::agent::{EnrollRequest, GetHostFactsRequest, InstallCertificateRequest};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How far behind the operator's clock a host being enrolled may be.
const ENROLL_CLOCK_SKEW: time::Duration = time::Duration::days(1);

/// Why `pki enroll` stopped before proving anything.
#[derive(Debug, thiserror::Error)]
pub enum RefusedHost {
    #[error(
        "host {host} shows bootstrap certificate sha256 {seen}, not {expected} (--fingerprint): \
         it is not the host you read the fingerprint from, or its agent restarted since (read \
         the fingerprint again on its console or in its bootstrap-fingerprint file); no proof \
         was sent"
    )]
    WrongFingerprint {
        host: SocketAddr,
        seen: Fingerprint,
        expected: Fingerprint,
    },
    #[error(
        "the join token given is too weak ({0}); no host accepts it: give the host a token made \
         with `ferrymq-agent pki new-token`"
    )]
    WeakToken(WeakToken),
}

/// Accepts only the host's bootstrap certificate with the expected fingerprint, and records
/// the certificate shown: the proofs are bound to it, and a mismatch is reported with both
/// fingerprints. A wrong certificate fails the handshake, so no request (and no proof) can
/// follow. The handshake signature is still checked, so the peer holds that certificate's key.
#[derive(Debug)]
struct RecordingVerifier {
    expected: Fingerprint,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.to_vec());
        }
        if Fingerprint::of(end_entity) != self.expected {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Enrolls the host at `host` with `token`, using the CA in `pki_dir`, if it shows the bootstrap
/// certificate `expected`.
pub async fn enroll(
    pki_dir: &Path,
    host: SocketAddr,
    token: &str,
    expected: Fingerprint,
) -> Result<()> {
    token::check_strength(token).map_err(RefusedHost::WeakToken)?;
    let ca_pem = std::fs::read_to_string(pki_dir.join(pki::CA_CERT))
        .with_context(|| format!("reading {}", pki_dir.join(pki::CA_CERT).display()))?;
    let ca_key_path = pki_dir.join(pki::CA_KEY);
    let ca_key = KeyPair::from_pem(
        &std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?,
    )
    .with_context(|| format!("parsing {}", ca_key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).context("parsing the CA")?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let seen = Arc::new(Mutex::new(None));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordingVerifier {
            expected,
            seen: seen.clone(),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let shown = || seen.lock().ok().and_then(|s| s.clone());
    let channel = Endpoint::from_shared(format!("http://{host}"))
        .context("host address")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(host).await?;
                let name = ServerName::IpAddress(host.ip().into());
                let stream = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await;
    // The handshake failed on another certificate: say so with both fingerprints.
    if let Some(der) = shown() {
        let seen = Fingerprint::of(&der);
        if seen != expected {
            return Err(RefusedHost::WrongFingerprint {
                host,
                seen,
                expected,
            }
            .into());
        }
    }
    let channel =
        channel.with_context(|| format!("connecting to the enrollment service of {host}"))?;
    let bootstrap_der = shown().context("the host showed no certificate")?;
    println!("host {host}: bootstrap certificate sha256 {expected} as expected");

    let mut client = EnrollmentClient::new(channel);
    let answer = client
        .enroll(EnrollRequest {
            client_proof: proof::prove(token, Purpose::Client, &bootstrap_der, b""),
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "host {host} refused enrollment ({:?}): {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    if !proof::verify(
        token,
        Purpose::Host,
        &bootstrap_der,
        format!("{}{}", answer.csr_pem, answer.broker_ca_csr_pem).as_bytes(),
        &answer.host_proof,
    ) {
        bail!("host {host} did not prove it holds the join token (a relay in the middle?)");
    }

    // The CA decides the names: the address the operator enrolled, nothing the host asked for.
    let mut csr = CertificateSigningRequestParams::from_pem(&answer.csr_pem)
        .context("parsing the host's certificate request")?;
    csr.params = pki::host_params(vec![SanType::IpAddress(host.ip())])?;
    // A host just booted may not have synchronised its clock yet (found in the boot tests: a
    // guest minutes behind refused a certificate "not valid yet"): backdate the start.
    csr.params.not_before = time::OffsetDateTime::now_utc() - ENROLL_CLOCK_SKEW;
    let cert = csr
        .signed_by(&issuer)
        .context("signing the host certificate")?;
    let cert_pem = cert.pem();
    // The host's broker CA may sign server certificates only (path length 0).
    let mut broker_ca_csr = CertificateSigningRequestParams::from_pem(&answer.broker_ca_csr_pem)
        .context("parsing the host's broker CA request")?;
    broker_ca_csr.params = pki::broker_ca_params(host.ip())?;
    let broker_ca_pem = broker_ca_csr
        .signed_by(&issuer)
        .context("signing the host's broker CA")?
        .pem();
    client
        .install_certificate(InstallCertificateRequest {
            client_proof: proof::prove(
                token,
                Purpose::Install,
                &bootstrap_der,
                format!("{cert_pem}{broker_ca_pem}").as_bytes(),
            ),
            certificate_pem: cert_pem,
            broker_ca_pem,
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "host {host} refused its certificate ({:?}): {}",
                s.code(),
                s.message()
            )
        })?;

    wait_for_api(pki_dir, &ca_pem, host).await
}

/// The host switches to the mutual-TLS API right after the install: wait until it answers.
async fn wait_for_api(pki_dir: &Path, ca_pem: &str, host: SocketAddr) -> Result<()> {
    let read = |n: &str| std::fs::read_to_string(pki_dir.join(n));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(
            read(pki::CLIENT_CERT)?,
            read(pki::CLIENT_KEY)?,
        ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let channel = Endpoint::from_shared(format!("https://{host}"))?
                .tls_config(tls.clone())?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await?;
            AgentClient::new(channel)
                .get_host_facts(GetHostFactsRequest {})
                .await
                .map_err(anyhow::Error::from)
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!(
                    "host {host} enrolled but its agent API does not answer"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
