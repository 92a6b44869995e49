//! Who is calling: the role a client certificate carries, accepted only when the deployment CA
//! issued that certificate itself.
//!
//! A TLS handshake against the deployment CA proves only that some chain leads to it, and a
//! host's broker CA is such a chain. So the role is read from a certificate the deployment CA
//! signed directly (its offline key), as Kubernetes' node authorizer trusts only node
//! credentials the cluster CA issued: a stolen host can mint certificates with its broker CA,
//! but none of them is an identity here.

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The operator's role (the provider, `ferrymq-agent reboot`, `pki renew`): the whole API.
pub const OPERATOR_URI: &str = "urn:ferrymq:role:operator";
/// An appliance host's role: peer calls about the brokers it serves, nothing else.
pub const HOST_URI: &str = "urn:ferrymq:role:host";
/// A scraper's role (Prometheus): the metrics listener, nothing on the agent API.
pub const MONITORING_URI: &str = "urn:ferrymq:role:monitoring";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    /// A host, by the addresses its certificate names.
    Host(Vec<IpAddr>),
    Monitoring,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Operator => f.write_str("the operator"),
            Role::Monitoring => f.write_str("a monitoring certificate"),
            Role::Host(addresses) => {
                let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                write!(f, "host {}", list.join(", "))
            }
        }
    }
}

/// Why a certificate is no identity; each says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no client certificate")]
    Missing,
    #[error(
        "the client certificate was not issued directly by the deployment CA ({0}): only the \
         operator's and the hosts' own certificates are identities on the agent API"
    )]
    NotIssuedByDeploymentCa(String),
    #[error(
        "the client certificate carries no FerryMQ role (operator, host or monitoring): issue it \
         again with `ferrymq-agent pki issue-client` (the operator's) or `pki renew` (a host's)"
    )]
    NoRole,
    #[error("the client certificate: {0}")]
    Malformed(String),
}

/// Reads roles from client certificates, trusting the deployment CA alone.
#[derive(Clone, Debug)]
pub struct Identities {
    direct: Arc<dyn ClientCertVerifier>,
}

impl Identities {
    pub fn new(ca_pem: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let roots = super::deployment_roots(ca_pem)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let direct = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .context("the client certificate verifier")?;
        Ok(Identities { direct })
    }

    /// The role of the client that presented `chain` (leaf first). Intermediates the client
    /// sent are ignored: the leaf must verify against the deployment CA by itself.
    pub fn role(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<Role, IdentityError> {
        let leaf = chain
            .and_then(|c| c.first())
            .ok_or(IdentityError::Missing)?;
        self.direct
            .verify_client_cert(leaf, &[], UnixTime::now())
            .map_err(|e| IdentityError::NotIssuedByDeploymentCa(e.to_string()))?;
        role_of(leaf)
    }
}

/// The role named in a certificate's subject alternative names.
pub fn role_of(leaf: &CertificateDer<'_>) -> Result<Role, IdentityError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let names = san
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    let mut roles = Vec::new();
    let mut addresses = Vec::new();
    for name in &names {
        match name {
            GeneralName::URI(OPERATOR_URI) => roles.push(Role::Operator),
            GeneralName::URI(MONITORING_URI) => roles.push(Role::Monitoring),
            GeneralName::URI(HOST_URI) => roles.push(Role::Host(vec![])),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_from_bytes(bytes) {
                    addresses.push(ip);
                }
            }
            _ => {}
        }
    }
    match roles.as_slice() {
        [] => Err(IdentityError::NoRole),
        [Role::Host(_)] if addresses.is_empty() => Err(IdentityError::Malformed(
            "a host certificate without an address".into(),
        )),
        [Role::Host(_)] => Ok(Role::Host(addresses)),
        [role] => Ok(role.clone()),
        _ => Err(IdentityError::Malformed("more than one role".into())),
    }
}

pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, lifetime, lifetime::Lifetime};
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    use rustls::pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
    }

    #[test]
    fn roles_come_only_from_certificates_the_deployment_ca_signed() {
        let dir = std::env::temp_dir().join(format!("ferrymq-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let year = Lifetime(lifetime::IDENTITY);
        pki::init(&dir, "20y".parse().expect("lifetime"), year).expect("init");
        let host_dir = dir.join("host");
        pki::issue_host(&dir, "10.1.2.3".parse().expect("ip"), &[], year, &host_dir)
            .expect("issue");
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).expect("read");
        let ids = Identities::new(&read(dir.join(pki::CA_CERT))).expect("ids");

        let operator = der(&read(dir.join(pki::CLIENT_CERT)));
        assert_eq!(ids.role(Some(&[operator])), Ok(Role::Operator));
        let agent = der(&read(host_dir.join(pki::AGENT_CERT)));
        assert_eq!(
            ids.role(Some(&[agent])),
            Ok(Role::Host(vec!["10.1.2.3".parse().expect("ip")]))
        );
        assert_eq!(ids.role(None), Err(IdentityError::Missing));

        // What a stolen host can mint with its broker CA: a client certificate claiming the
        // operator's role, sent with the broker CA as its intermediate.
        let broker_key =
            KeyPair::from_pem(&read(host_dir.join(pki::BROKER_CA_KEY))).expect("broker key");
        let broker_pem = read(host_dir.join(pki::BROKER_CA_CERT));
        let issuer = Issuer::from_ca_cert_pem(&broker_pem, broker_key).expect("issuer");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![
            SanType::URI(OPERATOR_URI.try_into().expect("uri")),
            SanType::IpAddress("10.1.2.3".parse().expect("ip")),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let minted = params
            .signed_by(&KeyPair::generate().expect("key"), &issuer)
            .expect("mint");
        let chain = [der(&minted.pem()), der(&broker_pem)];
        assert!(matches!(
            ids.role(Some(&chain)),
            Err(IdentityError::NotIssuedByDeploymentCa(_))
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
