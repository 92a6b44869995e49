//! The metrics listener's TLS: the agent's own certificate (`agent.pem`, `agent-key.pem`),
//! client certificates required and verified against the deployment CA (`ca.pem`), TLS 1.2
//! and 1.3 with rustls's suites (AEAD only: AES-GCM and ChaCha20-Poly1305).
//!
//! The figures name brokers and queues, so anything but loopback gets them only over mutual
//! TLS, as the agent API does. [`server_config`] is the one place the configuration is built
//! from the TLS directory: a caller that wants a certificate renewed under a running listener
//! changes it there.

use crate::pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS configuration could not be built: a file missing or unreadable, or a file that
/// is not what it should be (a bad PEM, a key that is not the certificate's).
#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the deployment CA in {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("the agent's certificate and key in {dir}: {source}")]
    Identity { dir: PathBuf, source: rustls::Error },
}

/// The server configuration of a metrics listener that is not on loopback, from the TLS
/// directory of `ferrymq-agent serve` (see `pki issue-host`).
pub fn server_config(tls_dir: &Path) -> Result<Arc<rustls::ServerConfig>, ServerConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca_path = tls_dir.join(pki::CA_CERT);
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&ca_path)? {
        roots.add(ca).map_err(|e| ServerConfigError::Ca {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
    }
    // Required: `build()` refuses a client without a certificate (no `allow_unauthenticated`).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ServerConfigError::Ca {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
    let chain = certificates(&tls_dir.join(pki::AGENT_CERT))?;
    let key_path = tls_dir.join(pki::AGENT_KEY);
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|source| ServerConfigError::Read {
            path: key_path,
            source,
        })?;
    let identity = |source| ServerConfigError::Identity {
        dir: tls_dir.to_path_buf(),
        source,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(identity)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(identity)?;
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerConfigError> {
    let read = |source| ServerConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(ServerConfigError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TLS directory as `pki issue-host` makes it, and the provider's client credentials
    /// (`pki init`), in a fresh temporary directory.
    pub fn pki_dirs(name: &str) -> (PathBuf, PathBuf) {
        let root =
            std::env::temp_dir().join(format!("ferrymq-metrics-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (pki_dir, host_dir) = (root.join("pki"), root.join("host"));
        pki::init(&pki_dir).expect("pki init");
        pki::issue_host(&pki_dir, "127.0.0.1".parse().expect("ip"), &host_dir).expect("issue host");
        (pki_dir, host_dir)
    }

    #[test]
    fn builds_from_the_host_tls_dir_and_names_what_is_missing() {
        let (pki_dir, host_dir) = pki_dirs("build");
        let config = server_config(&host_dir).expect("config");
        assert!(config.alpn_protocols.is_empty());
        // A TLS directory without the agent's key: the error names the file.
        let e = server_config(&pki_dir).expect_err("pki dir has no agent.pem");
        assert!(
            matches!(&e, ServerConfigError::Read { path, .. } if path.ends_with(pki::AGENT_CERT)),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(pki_dir.parent().expect("root"));
    }
}
