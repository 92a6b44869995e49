//! Brokers' TLS server certificates, issued on the host by its broker CA.
//!
//! `pki issue-host` gives every host, beside its agent certificate, an intermediate CA of the
//! deployment CA (CA:true, path length 0). The agent signs its brokers' server certificates
//! with it, so clients verify a broker with the deployment CA alone (the one `ca_certificate`
//! returns), while the deployment CA's key stays offline and a stolen host key can sign only
//! leaf certificates. Certificates last [`LIFETIME`] and are issued again once less than
//! [`RENEW_BEFORE`] is left, or when the broker's names change.
//!
//! A broker may instead serve a certificate the user supplies (`server_certificate`): the
//! agent checks it on apply, keeps its key only in the broker's TLS directory (never in the
//! spec store), installs it in place of an issued one and never renews it.

use crate::pki;
use anyhow::{Context, Result};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

pub const LIFETIME: Duration = Duration::days(90);
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The host's broker-issuing CA and the deployment CA above it.
pub struct BrokerCa {
    /// Where it was read from: the agent's TLS directory, with the host's other certificates.
    pub tls_dir: PathBuf,
    cert_pem: String,
    key_pem: String,
    pub deployment_ca_pem: String,
}

impl std::fmt::Debug for BrokerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerCa(..)")
    }
}

impl BrokerCa {
    /// Reads `broker-ca.pem`, `broker-ca-key.pem` and `ca.pem` from the agent's TLS directory.
    pub fn load(tls_dir: &Path) -> Result<BrokerCa> {
        let read = |name: &str| {
            let path = tls_dir.join(name);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (issue the host's certificates again with `ferrymq-agent pki issue-host`: it now also issues the host's broker CA)",
                    path.display()
                )
            })
        };
        Ok(BrokerCa {
            tls_dir: tls_dir.to_path_buf(),
            cert_pem: read(pki::BROKER_CA_CERT)?,
            key_pem: read(pki::BROKER_CA_KEY)?,
            deployment_ca_pem: read(pki::CA_CERT)?,
        })
    }

    /// Identifies this CA in issued certificates' records, so a host whose broker CA was
    /// issued again re-issues its brokers' certificates.
    fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.cert_pem.as_bytes()))
    }

    /// A server certificate for `names` (addresses become IP SANs, the rest DNS SANs).
    pub fn issue(&self, names: &[String], now: OffsetDateTime) -> Result<Issued> {
        self.check_permitted(names)?;
        self.sign(names, &[ExtendedKeyUsagePurpose::ServerAuth], now)
    }

    /// The node certificate of a clustered broker's instance (RabbitMQ's Erlang distribution
    /// over TLS): the host's own agent certificate and key, issued directly by the deployment
    /// CA for the host's address with serverAuth and clientAuth (each node is the server of the
    /// connections it accepts and the client of those it opens).
    ///
    /// Not one signed by the broker CA: OTP 25's path validation fails with an internal
    /// `function_clause` on a chain through the broker CA's name constraints (seen in the
    /// cluster acceptance test), so the peers would never connect. The engine's user then holds
    /// the host's identity, which may call only `GetBroker` of the brokers the host serves.
    pub fn issue_node(&self, address: IpAddr, _now: OffsetDateTime) -> Result<Issued> {
        let read = |name: &str| {
            let path = self.tls_dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let certificate_pem = read(pki::AGENT_CERT)?;
        let not_after = pki::expiry::not_after(&certificate_pem)
            .context("the agent certificate's end")?
            .unix_timestamp();
        Ok(Issued {
            private_key_pem: read(pki::AGENT_KEY)?,
            chain_pem: self.deployment_ca_pem.clone(),
            record: Record {
                names: vec![address.to_string()],
                not_after,
                issuer: self.fingerprint(),
            },
            certificate_pem,
        })
    }

    fn sign(
        &self,
        names: &[String],
        usages: &[ExtendedKeyUsagePurpose],
        now: OffsetDateTime,
    ) -> Result<Issued> {
        let ca_key = KeyPair::from_pem(&self.key_pem).context("parsing the broker CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &ca_key)
            .context("parsing the broker CA certificate")?;
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "FerryMQ");
        // Not an address: OpenSSL checks a common name that looks like a host name against the
        // broker CA's DNS name constraints, and an address is no DNS name ("permitted subtree
        // violation"). A DNS name of the certificate's, or a name that is no host name.
        let common_name = names
            .iter()
            .find(|n| n.parse::<IpAddr>().is_err())
            .map(String::as_str)
            .unwrap_or("FerryMQ broker");
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.as_str().try_into().with_context(
                    || format!("certificate name {n:?} is neither an address nor a DNS name"),
                )?)),
            })
            .collect::<Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages.to_vec();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + LIFETIME;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the certificate")?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            chain_pem: format!("{}{}", self.cert_pem, self.deployment_ca_pem),
            record: Record {
                names: names.to_vec(),
                not_after: params.not_after.unix_timestamp(),
                issuer: self.fingerprint(),
            },
        })
    }

    /// Refuses names outside the broker CA's name constraints up front: clients would refuse
    /// such a certificate, and the error here says what to do.
    fn check_permitted(&self, names: &[String]) -> Result<()> {
        let permitted = pki::permitted_names(&self.cert_pem)?;
        if permitted.is_empty() {
            // A broker CA from before name constraints.
            return Ok(());
        }
        let outside: Vec<&String> = names
            .iter()
            .filter(|n| !permitted.iter().any(|p| p.permits(n)))
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = permitted.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "certificate name(s) {outside:?} are outside what this host's broker CA may sign ({}): \
             renew the host's certificates with the name added \
             (`ferrymq-agent pki renew --dir PKI --host HOST --name NAME`)",
            list.join(", ")
        )
    }
}

/// A freshly issued certificate, its key, and the chain up to (and with) the deployment CA.
pub struct Issued {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub chain_pem: String,
    pub record: Record,
}

/// What was issued, kept beside the files to decide on renewal without parsing them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
    pub issuer: String,
}

impl Record {
    pub fn not_after_rfc3339(&self) -> String {
        OffsetDateTime::from_unix_timestamp(self.not_after)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// How a supplied certificate is recorded as `issuer`: never the broker CA's fingerprint, so
/// a broker switched back to an issued certificate gets one at once, and a rotated supplied
/// certificate (another certificate or chain) shows as a different record.
pub fn supplied_issuer(certificate_pem: &str, ca_chain_pem: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(certificate_pem.as_bytes());
    digest.update(ca_chain_pem.as_bytes());
    format!("supplied:{}", hex::encode(digest.finalize()))
}

/// Whether a certificate recorded as `have` must be issued again for `names` by `ca` at `now`.
pub fn needs_issue(
    have: Option<&Record>,
    names: &[String],
    ca: &BrokerCa,
    now: OffsetDateTime,
) -> bool {
    match have {
        None => true,
        Some(r) => {
            r.names != names
                || r.issuer != ca.fingerprint()
                || r.not_after - now.unix_timestamp() < RENEW_BEFORE.whole_seconds()
        }
    }
}

/// The broker's certificate files (PEM), as engines are configured with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The broker CA and the deployment CA: what a server sends after its certificate.
    pub chain: PathBuf,
    /// The deployment CA alone (with a supplied certificate, its chain's root): what the
    /// agent's own probes trust.
    pub deployment_ca: PathBuf,
    pub record: PathBuf,
    /// A supplied certificate's key as the last apply left it (0600, root), until the pass
    /// installs it as `private_key` together with its certificate: an apply never swaps the
    /// key under a running engine that still has the old certificate.
    pub supplied_key: PathBuf,
}

impl CertificateFiles {
    pub fn in_dir(dir: &Path) -> Self {
        CertificateFiles {
            certificate: dir.join("server.pem"),
            private_key: dir.join("server-key.pem"),
            chain: dir.join("chain.pem"),
            deployment_ca: dir.join("ca.pem"),
            record: dir.join("issued.json"),
            supplied_key: dir.join("supplied-key.pem"),
        }
    }

    pub fn read_record(&self) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(&self.record).ok()?).ok()
    }
}

/// A rustls client configuration trusting only the deployment CA: the agent's probes and
/// management calls check the broker's certificate as any client would.
pub fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let roots = crate::pki::deployment_roots(ca_pem)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn ca(dir: &Path) -> BrokerCa {
        let _ = std::fs::remove_dir_all(dir);
        let year = "365d".parse().expect("lifetime");
        pki::init(&dir.join("pki"), "20y".parse().expect("lifetime"), year).expect("init");
        pki::issue_host(
            &dir.join("pki"),
            "10.1.2.3".parse().expect("ip"),
            &["broker.example".parse().expect("name")],
            year,
            &dir.join("host"),
        )
        .expect("issue host");
        BrokerCa::load(&dir.join("host")).expect("load")
    }

    #[test]
    fn issued_certificates_verify_with_the_deployment_ca_alone() {
        let dir = std::env::temp_dir().join(format!("ferrymq-certs-{}", std::process::id()));
        let ca = ca(&dir);
        let now = OffsetDateTime::now_utc();
        let names = vec!["10.1.2.3".to_string(), "broker.example".to_string()];
        let issued = ca.issue(&names, now).expect("issue");
        let leaf = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("leaf");
        let chain: Vec<CertificateDer> =
            CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("chain");
        assert_eq!(chain.len(), 2, "broker CA then deployment CA");
        // rustls's own verifier, rooted at the deployment CA only, with the broker CA as the
        // intermediate a server sends.
        client_config(&ca.deployment_ca_pem).expect("client config");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.deployment_ca_pem.as_bytes()).expect("ca"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let v =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        for name in ["10.1.2.3", "broker.example"] {
            let server = rustls::pki_types::ServerName::try_from(name).expect("name");
            v.verify_server_cert(
                &leaf,
                &chain[..1],
                &server,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Outside the broker CA's names: refused here, before a client would refuse it.
        let err = ca
            .issue(&["10.9.9.9".to_string()], now)
            .err()
            .expect("outside the name constraints");
        assert!(err.to_string().contains("pki renew"), "{err}");
        let other = rustls::pki_types::ServerName::try_from("10.9.9.9").expect("name");
        assert!(v
            .verify_server_cert(
                &leaf,
                &chain[..1],
                &other,
                &[],
                rustls::pki_types::UnixTime::now()
            )
            .is_err());

        // Renewal: not before a third of the lifetime is left; at once for other names.
        let r = &issued.record;
        assert!(!needs_issue(Some(r), &names, &ca, now));
        assert!(!needs_issue(Some(r), &names, &ca, now + Duration::days(59)));
        assert!(needs_issue(Some(r), &names, &ca, now + Duration::days(61)));
        assert!(needs_issue(Some(r), &names[..1], &ca, now));
        assert!(needs_issue(None, &names, &ca, now));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn node_certificates_name_the_host_address_for_both_ends_of_a_connection() {
        let dir = std::env::temp_dir().join(format!("ferrymq-node-certs-{}", std::process::id()));
        let ca = ca(&dir);
        let now = OffsetDateTime::now_utc();
        let address: IpAddr = "10.1.2.3".parse().expect("ip");
        let issued = ca.issue_node(address, now).expect("issue");
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("der");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("eku present")
            .value;
        assert!(eku.server_auth && eku.client_auth);
        let san = cert
            .subject_alternative_name()
            .expect("san")
            .expect("san present")
            .value;
        // The host's agent certificate: its address (and its role URI).
        assert!(san
            .general_names
            .contains(&x509_parser::extensions::GeneralName::IPAddress(&[
                10, 1, 2, 3
            ])));
        assert_eq!(issued.record.names, ["10.1.2.3"]);
        let names = issued.record.names.clone();
        assert!(!needs_issue(Some(&issued.record), &names, &ca, now));
        // Copied again in the agent certificate's last 30 days (after `pki renew`, anew).
        assert!(needs_issue(
            Some(&issued.record),
            &names,
            &ca,
            now + Duration::days(340)
        ));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
