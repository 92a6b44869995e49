//! The agent's TLS servers (the agent API and the metrics listener): mutual TLS against the
//! deployment CA, TLS 1.2 and 1.3 with rustls's AEAD-only suites (AES-GCM, ChaCha20-Poly1305),
//! and the agent certificate that `pki renew` replaces under a running agent.
//!
//! tonic's own TLS reads the certificate once at start; serving renewed certificates without a
//! restart needs a certificate resolver that can be swapped ([`AgentCertificate`]), so the agent
//! does its own handshakes (rustls) and hands the streams to tonic or the metrics handler, which
//! read the client's certificate from them for authorization.

use crate::pki;
use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The certificate the agent serves (and presents to its peers), read again on [`reload`].
///
/// [`reload`]: AgentCertificate::reload
#[derive(Debug)]
pub struct AgentCertificate {
    tls_dir: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl AgentCertificate {
    pub fn load(tls_dir: &Path) -> Result<Arc<Self>> {
        Ok(Arc::new(AgentCertificate {
            current: RwLock::new(certified_key(tls_dir)?),
            tls_dir: tls_dir.to_path_buf(),
        }))
    }

    /// Serves the certificate now in the TLS directory from the next handshake on.
    pub fn reload(&self) -> Result<()> {
        let key = certified_key(&self.tls_dir)?;
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }
}

impl ResolvesServerCert for AgentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn certified_key(tls_dir: &Path) -> Result<Arc<CertifiedKey>> {
    let cert_path = tls_dir.join(pki::AGENT_CERT);
    let key_path = tls_dir.join(pki::AGENT_KEY);
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = CertifiedKey::from_der(certs, key, &provider).with_context(|| {
        format!(
            "{} does not match {}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(key))
}

/// Client certificates are required and must chain to the deployment CA (intermediates
/// included: who may do what is then decided from the certificate, see `pki::identity`);
/// TLS 1.2/1.3 with the provider's AEAD-only suites; `alpn` offered (HTTP/2 for gRPC).
pub fn server_config(
    certificate: Arc<AgentCertificate>,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>> {
    let roots = crate::pki::deployment_roots(ca_pem)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .context("the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
