//! The host side of enrollment: the `Enrollment` gRPC service behind a self-signed bootstrap
//! certificate, served until the host holds a CA-signed certificate and then shut down, so the
//! agent can serve the mutual-TLS API on the same port.
//!
//! What protects the token: it never crosses the wire (see [`super::proof`]); TLS keeps the CSR
//! and certificate exchange private, and both proofs are bound to the bootstrap certificate, so
//! a relay in the middle (which must show its own certificate) gets nothing it can use. The host
//! prints its bootstrap fingerprint (and writes it to `bootstrap-fingerprint`), which `pki
//! enroll --fingerprint` checks before it proves anything. Guessing is slowed and then locked
//! out (see [`super::lockout`]); a wrong proof never consumes the token.

use super::fingerprint::Fingerprint;
use super::lockout::{AfterFailure, Lockout, LockoutError, Policy};
use super::proof::{self, Purpose};
use super::token::{self, TokenError, TokenStore};
use super::{BOOTSTRAP_FINGERPRINT, CA_CERT, PENDING_BROKER_CA_KEY, PENDING_KEY};
use crate::pki;
use anyhow::{Context, Result};
use ferrymq_api::agent::enrollment_server::{Enrollment, EnrollmentServer};
use ferrymq_api::agent::{
    EnrollRequest, EnrollResponse, InstallCertificateRequest, InstallCertificateResponse,
};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{oneshot, Mutex};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

pub struct EnrollmentService {
    tokens: TokenStore,
    enrollment_dir: PathBuf,
    tls_dir: PathBuf,
    bootstrap_der: Vec<u8>,
    lockout: Lockout,
    /// One enrollment step at a time; the token's rename is the real guard against replays.
    /// Held through a wrong proof's delay, so guesses from many connections queue behind it.
    step: Mutex<Option<oneshot::Sender<()>>>,
}

fn locked(e: LockoutError) -> Status {
    match e {
        e @ LockoutError::Locked { .. } => {
            tracing::warn!("enrollment refused: {e}");
            Status::resource_exhausted(e.to_string())
        }
        LockoutError::Io(m) => {
            tracing::error!("enrollment: {m}");
            Status::internal(m)
        }
    }
}

fn refusal(e: TokenError) -> Status {
    match e {
        TokenError::AlreadyUsed => Status::permission_denied("the join token was already used"),
        TokenError::Missing => Status::failed_precondition("this host has no join token"),
        TokenError::Io(m) => Status::internal(m),
    }
}

fn internal(e: anyhow::Error) -> Status {
    tracing::error!("enrollment: {e:#}");
    Status::internal(format!("{e:#}"))
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = req.remote_addr();
        let req = req.into_inner();
        let guard = self.step.lock().await;
        if guard.is_none() {
            return Err(Status::failed_precondition("this host is already enrolled"));
        }
        let token = self.tokens.unused().map_err(refusal)?;
        // The file may have been replaced since the host checked it at start.
        if let Err(weak) = token::check_strength(&token) {
            return Err(Status::failed_precondition(format!(
                "this host's join token is too weak ({weak}): give it one made with \
                 `ferrymq-agent pki new-token`"
            )));
        }
        self.lockout
            .check(&token, SystemTime::now())
            .map_err(locked)?;
        if !proof::verify(
            &token,
            Purpose::Client,
            &self.bootstrap_der,
            b"",
            &req.client_proof,
        ) {
            return Err(self.wrong_proof(&token, peer).await);
        }
        // Consumed on disk before anything else happens: a replay finds no token.
        self.tokens.consume().map_err(refusal)?;
        // The token is spent: a count left behind only concerns it, so this is not fatal.
        if let Err(e) = self.lockout.clear() {
            tracing::warn!("enrollment: {e}");
        }
        let key = KeyPair::generate()
            .context("generating the host key")
            .map_err(internal)?;
        pki::write_secret(&self.tls_dir.join(PENDING_KEY), &key.serialize_pem())
            .map_err(internal)?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| internal(e.into()))?;
        params.distinguished_name = pki::name("ferrymq-agent");
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .context("making the certificate request")
            .map_err(internal)?;
        // The host's broker CA: an intermediate it signs its brokers' server certificates with.
        let broker_ca_key = KeyPair::generate()
            .context("generating the broker CA key")
            .map_err(internal)?;
        pki::write_secret(
            &self.tls_dir.join(PENDING_BROKER_CA_KEY),
            &broker_ca_key.serialize_pem(),
        )
        .map_err(internal)?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| internal(e.into()))?;
        params.distinguished_name = pki::name("FerryMQ broker CA");
        let broker_ca_csr_pem = params
            .serialize_request(&broker_ca_key)
            .and_then(|csr| csr.pem())
            .context("making the broker CA request")
            .map_err(internal)?;
        tracing::info!(
            ?peer,
            "join token accepted and consumed; certificate requests sent"
        );
        Ok(Response::new(EnrollResponse {
            host_proof: proof::prove(
                &token,
                Purpose::Host,
                &self.bootstrap_der,
                format!("{csr_pem}{broker_ca_csr_pem}").as_bytes(),
            ),
            csr_pem,
            addresses: vec![],
            broker_ca_csr_pem,
        }))
    }

    async fn install_certificate(
        &self,
        req: Request<InstallCertificateRequest>,
    ) -> Result<Response<InstallCertificateResponse>, Status> {
        let peer = req.remote_addr();
        let req = req.into_inner();
        let mut guard = self.step.lock().await;
        if guard.is_none() {
            return Err(Status::failed_precondition("this host is already enrolled"));
        }
        let token = self.tokens.consumed().map_err(|e| match e {
            TokenError::Missing => Status::failed_precondition("no enrollment in progress"),
            e => refusal(e),
        })?;
        self.lockout
            .check(&token, SystemTime::now())
            .map_err(locked)?;
        if !proof::verify(
            &token,
            Purpose::Install,
            &self.bootstrap_der,
            format!("{}{}", req.certificate_pem, req.broker_ca_pem).as_bytes(),
            &req.client_proof,
        ) {
            return Err(self.wrong_proof(&token, peer).await);
        }
        self.install(&req.certificate_pem, &req.broker_ca_pem)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        self.tokens.finish().map_err(refusal)?;
        tracing::info!("enrolled: certificate installed; switching to the mutual-TLS agent API");
        if let Some(done) = guard.take() {
            let _ = done.send(());
        }
        Ok(Response::new(InstallCertificateResponse {}))
    }
}

impl EnrollmentService {
    /// Counts a wrong proof (on disk, before answering), waits the failure delay while holding
    /// the enrollment step, and says how many attempts are left. The token is left unused.
    async fn wrong_proof(&self, token: &str, peer: Option<SocketAddr>) -> Status {
        let after = self.lockout.failed(token, SystemTime::now());
        tokio::time::sleep(self.lockout.failure_delay()).await;
        match after {
            Ok(AfterFailure::Left(left)) => {
                tracing::warn!(?peer, left, "enrollment refused: wrong join token proof");
                Status::unauthenticated(format!(
                    "wrong join token ({left} more wrong attempt(s) lock this host's enrollment)"
                ))
            }
            Ok(AfterFailure::Locked(lock)) => {
                tracing::warn!(
                    ?peer,
                    lock_seconds = lock.as_secs(),
                    "enrollment refused: wrong join token proof; enrollment now LOCKED"
                );
                Status::unauthenticated(format!(
                    "wrong join token; enrollment of this host is now locked for {} s (every \
                     attempt refused, even with the right token): check the token and the \
                     host's fingerprint, or give the host a new token (`ferrymq-agent pki \
                     new-token`)",
                    lock.as_secs()
                ))
            }
            Err(e) => locked(e),
        }
    }

    /// Checks the certificate (issued by the deployment CA, for the pending key) and installs
    /// it with the key and the CA; `agent.pem` is written last, as it marks the host enrolled.
    fn install(&self, cert_pem: &str, broker_ca_pem: &str) -> Result<()> {
        let ca_pem = fs::read_to_string(self.enrollment_dir.join(CA_CERT))
            .context("reading the deployment CA")?;
        let key_pem =
            fs::read_to_string(self.tls_dir.join(PENDING_KEY)).context("no pending host key")?;
        let cert = pem_certificate(cert_pem)?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem_certificate(&ca_pem)?)
            .context("the deployment CA")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .context("building the CA verifier")?
            .verify_client_cert(&cert, &[], UnixTime::now())
            .context("the certificate is not issued by the deployment CA, or not valid now")?;
        let key_der = PrivateKeyDer::try_from(
            KeyPair::from_pem(&key_pem)
                .context("the pending key")?
                .serialize_der(),
        )
        .map_err(|e| anyhow::anyhow!("the pending key: {e}"))?;
        rustls::sign::CertifiedKey::from_der(vec![cert], key_der, &provider)
            .context("the certificate is not for the key this host made")?;
        // The broker CA must be for the broker CA key this host made (its issuer is the
        // operator's CA: the install proof shows the token holder sent it).
        let broker_ca_key_pem = fs::read_to_string(self.tls_dir.join(PENDING_BROKER_CA_KEY))
            .context("no pending broker CA key")?;
        let broker_ca_key_der = PrivateKeyDer::try_from(
            KeyPair::from_pem(&broker_ca_key_pem)
                .context("the pending broker CA key")?
                .serialize_der(),
        )
        .map_err(|e| anyhow::anyhow!("the pending broker CA key: {e}"))?;
        rustls::sign::CertifiedKey::from_der(
            vec![pem_certificate(broker_ca_pem).context("the broker CA")?],
            broker_ca_key_der,
            &provider,
        )
        .context("the broker CA is not for the key this host made")?;
        pki::write_public(&self.tls_dir.join(pki::BROKER_CA_CERT), broker_ca_pem)?;
        fs::rename(
            self.tls_dir.join(PENDING_BROKER_CA_KEY),
            self.tls_dir.join(pki::BROKER_CA_KEY),
        )
        .context("installing the broker CA key")?;
        pki::write_public(&self.tls_dir.join(pki::CA_CERT), &ca_pem)?;
        fs::rename(
            self.tls_dir.join(PENDING_KEY),
            self.tls_dir.join(pki::AGENT_KEY),
        )
        .context("installing the host key")?;
        pki::write_public(&self.tls_dir.join(pki::AGENT_CERT), cert_pem)?;
        Ok(())
    }
}

fn pem_certificate(pem: &str) -> Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).context("not a PEM certificate")
}

/// Serves enrollment on `listen` until a certificate is installed. Returns then, with the host
/// enrolled; the caller serves the agent API next.
pub async fn serve_until_enrolled(
    listen: SocketAddr,
    enrollment_dir: &Path,
    tls_dir: &Path,
    policy: Policy,
) -> Result<()> {
    fs::create_dir_all(tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
    let bootstrap = rcgen::generate_simple_self_signed(vec!["ferrymq-bootstrap".to_string()])
        .context("making the bootstrap certificate")?;
    let bootstrap_der = bootstrap.cert.der().to_vec();
    let (done_tx, done_rx) = oneshot::channel();
    let service = EnrollmentService {
        tokens: TokenStore::new(enrollment_dir),
        enrollment_dir: enrollment_dir.to_path_buf(),
        tls_dir: tls_dir.to_path_buf(),
        bootstrap_der: bootstrap_der.clone(),
        lockout: Lockout::new(enrollment_dir, policy),
        step: Mutex::new(Some(done_tx)),
    };
    // The operator checks this before proving anything (`pki enroll --fingerprint`). A new
    // bootstrap key is made at every start, so the file and the console always show the one
    // being served.
    let fingerprint = Fingerprint::of(&bootstrap_der);
    let fingerprint_file = enrollment_dir.join(BOOTSTRAP_FINGERPRINT);
    fs::write(&fingerprint_file, format!("{fingerprint}\n"))
        .with_context(|| format!("writing {}", fingerprint_file.display()))?;
    tracing::warn!(
        "not enrolled: serving only enrollment on {listen} (bootstrap certificate sha256 \
         {fingerprint}; also in {}): enroll with `ferrymq-agent pki enroll --fingerprint \
         {fingerprint}`",
        fingerprint_file.display()
    );
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(
            bootstrap.cert.pem(),
            bootstrap.signing_key.serialize_pem(),
        )))
        .context("configuring the bootstrap TLS")?
        .add_service(EnrollmentServer::new(service))
        .serve_with_shutdown(listen, async {
            let _ = done_rx.await;
        })
        .await
        .context("serving enrollment")?;
    // Enrolled: that certificate is gone with the enrollment service.
    let _ = fs::remove_file(&fingerprint_file);
    Ok(())
}
