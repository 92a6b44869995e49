//! The host side of enrollment: the `Enrollment` gRPC service behind a self-signed bootstrap
//! certificate, served until the host holds a CA-signed certificate and then shut down, so the
//! agent can serve the mutual-TLS API on the same port.
//!
//! What protects the token: it never crosses the wire (see [`super::proof`]); TLS keeps the CSR
//! and certificate exchange private, and both proofs are bound to the bootstrap certificate, so
//! a relay in the middle (which must show its own certificate) gets nothing it can use. An
//! operator who wants more can compare the bootstrap fingerprint the console prints with the
//! one `pki enroll` prints.

use super::proof::{self, Purpose};
use super::token::{TokenError, TokenStore};
use super::{CA_CERT, PENDING_KEY};
use crate::pki;
use anyhow::{Context, Result};
use ferrymq_api::agent::enrollment_server::{Enrollment, EnrollmentServer};
use ferrymq_api::agent::{
    EnrollRequest, EnrollResponse, InstallCertificateRequest, InstallCertificateResponse,
};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{oneshot, Mutex};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

pub struct EnrollmentService {
    tokens: TokenStore,
    enrollment_dir: PathBuf,
    tls_dir: PathBuf,
    bootstrap_der: Vec<u8>,
    /// One enrollment step at a time; the token's rename is the real guard against replays.
    step: Mutex<Option<oneshot::Sender<()>>>,
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
        if !proof::verify(
            &token,
            Purpose::Client,
            &self.bootstrap_der,
            b"",
            &req.client_proof,
        ) {
            tracing::warn!(?peer, "enrollment refused: wrong join token proof");
            return Err(Status::unauthenticated("wrong join token"));
        }
        // Consumed on disk before anything else happens: a replay finds no token.
        self.tokens.consume().map_err(refusal)?;
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
        tracing::info!(
            ?peer,
            "join token accepted and consumed; certificate request sent"
        );
        Ok(Response::new(EnrollResponse {
            host_proof: proof::prove(
                &token,
                Purpose::Host,
                &self.bootstrap_der,
                csr_pem.as_bytes(),
            ),
            csr_pem,
            addresses: vec![],
        }))
    }

    async fn install_certificate(
        &self,
        req: Request<InstallCertificateRequest>,
    ) -> Result<Response<InstallCertificateResponse>, Status> {
        let req = req.into_inner();
        let mut guard = self.step.lock().await;
        if guard.is_none() {
            return Err(Status::failed_precondition("this host is already enrolled"));
        }
        let token = self.tokens.consumed().map_err(|e| match e {
            TokenError::Missing => Status::failed_precondition("no enrollment in progress"),
            e => refusal(e),
        })?;
        if !proof::verify(
            &token,
            Purpose::Install,
            &self.bootstrap_der,
            req.certificate_pem.as_bytes(),
            &req.client_proof,
        ) {
            return Err(Status::unauthenticated("wrong join token"));
        }
        self.install(&req.certificate_pem)
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
    /// Checks the certificate (issued by the deployment CA, for the pending key) and installs
    /// it with the key and the CA; `agent.pem` is written last, as it marks the host enrolled.
    fn install(&self, cert_pem: &str) -> Result<()> {
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

/// SHA-256 of a certificate, as `ab:cd:…`, for an operator to compare.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Serves enrollment on `listen` until a certificate is installed. Returns then, with the host
/// enrolled; the caller serves the agent API next.
pub async fn serve_until_enrolled(
    listen: SocketAddr,
    enrollment_dir: &Path,
    tls_dir: &Path,
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
        step: Mutex::new(Some(done_tx)),
    };
    tracing::warn!(
        "not enrolled: serving only enrollment on {listen} (bootstrap certificate sha256 {})",
        fingerprint(&bootstrap_der)
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
        .context("serving enrollment")
}
