//! Server certificates the user supplies for a broker (`server_certificate`), checked with the
//! same words by the provider at plan time and by the agent on apply: the PEM parses, the key
//! belongs to the certificate, the certificate is valid now, chains to the root at the end of
//! `ca_chain_pem`, is for TLS servers, and names every address and name clients reach the
//! broker by. Messages name the attribute and what is wrong, never the key.

use crate::agent::{BrokerSpec, ServerCertificate};
use crate::validate::FieldError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::net::{IpAddr, SocketAddr};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

pub const CERTIFICATE_PEM: &str = "server_certificate.certificate_pem";
pub const PRIVATE_KEY_PEM: &str = "server_certificate.private_key_pem";
pub const CA_CHAIN_PEM: &str = "server_certificate.ca_chain_pem";

/// From how long before its end a supplied certificate is reported as expiring: the agent
/// cannot renew it, the user must apply a new one.
pub const WARN_BEFORE_SECONDS: i64 = 30 * 24 * 3600;

/// Every name the broker's certificate must hold: each instance's address (clients of an
/// active/standby pair or a cluster reach any of them), the spec's `certificate_names`, and
/// the load balancer's virtual IP (TLS passes through HAProxy untouched). Hosts given as
/// `IP:port` count by their address; anything else that is not an address is left out.
pub fn broker_names(spec: &BrokerSpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .instances
        .iter()
        .filter_map(|i| {
            let h = i.host.as_str();
            h.parse::<IpAddr>()
                .or_else(|_| h.parse::<SocketAddr>().map(|s| s.ip()))
                .ok()
        })
        .map(|ip| ip.to_string())
        .collect();
    let virtual_ip = spec.load_balancer.as_ref().map(|lb| &lb.virtual_ip);
    for n in spec.certificate_names.iter().chain(virtual_ip) {
        if !n.is_empty() && !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// What a supplied certificate that passed [`check`] tells the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The root CA of `ca_chain_pem` (PEM): what clients, and the agent's probes, trust.
    pub root_pem: String,
}

/// The root CA certificate (PEM) of a chain: its last self-issued certificate.
pub fn chain_root_pem(ca_chain_pem: &str) -> Option<String> {
    let certs = parse_all(ca_chain_pem).ok()?;
    let (der, _) = certs.iter().rev().find(|(_, issued)| *issued)?;
    Some(pem_of(der))
}

/// What the agent needs of a certificate it stored after [`check`]ed it at apply: its end
/// and its chain's root, without judging time or names again (a certificate that expires
/// while the broker runs keeps serving; the status warns).
pub fn inspect(supplied: &ServerCertificate) -> Result<Checked, String> {
    let leaf =
        parse_one(&supplied.certificate_pem).map_err(|m| format!("{CERTIFICATE_PEM}: {m}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("{CERTIFICATE_PEM}: is not an X.509 certificate: {e}"))?;
    let root_pem = chain_root_pem(&supplied.ca_chain_pem)
        .ok_or_else(|| format!("{CA_CHAIN_PEM}: holds no root CA certificate"))?;
    Ok(Checked {
        not_after: cert.validity().not_after.timestamp(),
        root_pem,
    })
}

/// Checks a supplied certificate for a broker reached by `names` at `now` (Unix seconds). An
/// empty `private_key_pem` is not checked (unknown at plan time, or stored without it).
pub fn check(
    supplied: &ServerCertificate,
    names: &[String],
    now: i64,
) -> Result<Checked, Vec<FieldError>> {
    let mut errors = Vec::new();
    let leaf_der = match parse_one(&supplied.certificate_pem) {
        Ok(der) => Some(der),
        Err(m) => {
            errors.push(FieldError::new(CERTIFICATE_PEM, m));
            None
        }
    };
    let chain = match parse_all(&supplied.ca_chain_pem) {
        Ok(c) if c.is_empty() => {
            errors.push(FieldError::new(
                CA_CHAIN_PEM,
                "holds no PEM certificate: give the CA certificates above certificate_pem, the root last",
            ));
            None
        }
        Ok(c) => Some(c),
        Err(m) => {
            errors.push(FieldError::new(CA_CHAIN_PEM, m));
            None
        }
    };
    let Some(leaf_der) = leaf_der else {
        return Err(errors);
    };
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(&leaf_der) else {
        return Err(vec![FieldError::new(
            CERTIFICATE_PEM,
            "is not an X.509 certificate",
        )]);
    };
    if !supplied.private_key_pem.is_empty() {
        if let Err(m) = key_matches(&supplied.private_key_pem, &leaf) {
            errors.push(FieldError::new(PRIVATE_KEY_PEM, m));
        }
    }
    let validity = leaf.validity();
    let not_after = validity.not_after.timestamp();
    if not_after <= now {
        errors.push(FieldError::new(
            CERTIFICATE_PEM,
            format!("expired at {}", rfc3339(not_after)),
        ));
    } else if validity.not_before.timestamp() > now {
        errors.push(FieldError::new(
            CERTIFICATE_PEM,
            format!(
                "is not valid before {}",
                rfc3339(validity.not_before.timestamp())
            ),
        ));
    }
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !names_host(&leaf_der, n))
        .collect();
    if !missing.is_empty() {
        errors.push(FieldError::new(
            CERTIFICATE_PEM,
            format!(
                "does not name {}, by which clients reach the broker (its subject alternative names: {})",
                missing.join(", "),
                subject_alt_names(&leaf).join(", "),
            ),
        ));
    }
    let mut root_pem = String::new();
    if let Some(chain) = chain {
        match verify_chain(&leaf_der, &chain, now) {
            Ok(root) => root_pem = root,
            Err(m) => errors.push(FieldError::new(CA_CHAIN_PEM, m)),
        }
    }
    if errors.is_empty() {
        Ok(Checked {
            not_after,
            root_pem,
        })
    } else {
        Err(errors)
    }
}

/// The single certificate of `certificate_pem`.
fn parse_one(pem: &str) -> Result<CertificateDer<'static>, String> {
    let mut certs = parse_all(pem)?;
    match (certs.pop(), certs.len()) {
        (None, _) => Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()),
        (Some((der, _)), 0) => Ok(der),
        (Some(_), n) => Err(format!(
            "holds {} certificates: give the broker's own here and its CAs in ca_chain_pem",
            n + 1
        )),
    }
}

/// Every certificate of a PEM text, each with whether it is self-issued (a root).
fn parse_all(pem: &str) -> Result<Vec<(CertificateDer<'static>, bool)>, String> {
    let mut out = Vec::new();
    for (i, der) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
        let der = der.map_err(|e| format!("certificate {} is not valid PEM: {e}", i + 1))?;
        let issued = {
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| format!("certificate {} is not an X.509 certificate: {e}", i + 1))?;
            cert.subject().as_raw() == cert.issuer().as_raw()
        };
        out.push((der, issued));
    }
    Ok(out)
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Whether the private key is the certificate's: the same public key.
fn key_matches(key_pem: &str, leaf: &X509Certificate<'_>) -> Result<(), String> {
    let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
        "is not an unencrypted PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)".to_string()
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(der)
        .map_err(|_| "is a key type TLS servers cannot use (RSA, ECDSA or Ed25519)".to_string())?;
    let public = key
        .public_key()
        .ok_or_else(|| "its public key cannot be derived to compare".to_string())?;
    if public.as_ref() != leaf.public_key().raw {
        return Err("does not belong to certificate_pem (their public keys differ)".into());
    }
    Ok(())
}

/// Whether the certificate names `name` (an address or a DNS name) in its SANs.
fn names_host(leaf: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(leaf) else {
        return false;
    };
    let Ok(server) = ServerName::try_from(name) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &server).is_ok()
}

fn subject_alt_names(leaf: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return vec!["none".into()];
    };
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                Ok(v4) => format!("IP:{}", IpAddr::from(v4)),
                Err(_) => match <[u8; 16]>::try_from(*b) {
                    Ok(v6) => format!("IP:{}", IpAddr::from(v6)),
                    Err(_) => "IP:?".into(),
                },
            },
            other => other.to_string(),
        })
        .collect()
}

/// Verifies the leaf up to the chain's root (the last self-issued certificate) with the
/// chain's other certificates as intermediates, as a client would; returns the root's PEM.
fn verify_chain(
    leaf: &CertificateDer<'_>,
    chain: &[(CertificateDer<'static>, bool)],
    now: i64,
) -> Result<String, String> {
    let Some(root) = chain
        .iter()
        .rev()
        .find(|(_, issued)| *issued)
        .map(|(d, _)| d)
    else {
        return Err(
            "holds no root CA certificate (one issued by itself): add the root last".into(),
        );
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(root.clone())
        .map_err(|e| format!("its root CA certificate cannot be a trust anchor: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> = chain
        .iter()
        .filter(|(d, _)| d != root)
        .map(|(d, _)| d.clone())
        .collect();
    let parsed = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| format!("certificate_pem cannot be verified: {e}"))?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &intermediates,
        at,
        algorithms,
    )
    .map_err(|e| chain_error(&e))?;
    Ok(pem_of(root))
}

fn chain_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "does not verify certificate_pem: it is not issued by these CAs (or an intermediate is missing)".into()
        }
        rustls::Error::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "verifies certificate_pem, but certificate_pem is not for TLS servers (its extended key usage lacks serverAuth)".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "holds an expired CA certificate".into()
        }
        other => format!("does not verify certificate_pem: {other}"),
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), |t| t.to_rfc3339())
}

/// A CA of a user's own for tests of supplied certificates (here, in the agent, in the
/// provider): with `test-ca`, a feature only their dev-dependencies turn on.
#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    pub struct TestCa {
        /// The CA's self-signed certificate: a `ca_chain_pem` of one root.
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub fn new(name: &str) -> TestCa {
            let key = KeyPair::generate().expect("CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let pem = params.self_signed(&key).expect("self-signed CA").pem();
            TestCa {
                pem,
                issuer: Issuer::new(params, key),
            }
        }

        /// A TLS server certificate for `names` valid from `from` to `until` (Unix seconds):
        /// its PEM and its key's (PKCS#8).
        pub fn issue(&self, names: &[&str], from: i64, until: i64) -> (String, String) {
            let key = KeyPair::generate().expect("server key");
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).expect("server params");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("from");
            params.not_after = time::OffsetDateTime::from_unix_timestamp(until).expect("until");
            let cert = params.signed_by(&key, &self.issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_ca::TestCa;
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn supplied(cert: &str, key: &str, chain: &str) -> ServerCertificate {
        ServerCertificate {
            certificate_pem: cert.into(),
            private_key_pem: key.into(),
            ca_chain_pem: chain.into(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    /// Each error as `path: message`, for asserting on both.
    fn errors(r: Result<Checked, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_certificate_naming_every_address_of_the_users_ca_passes() {
        let ca = TestCa::new("User Root CA");
        let (cert, key) = ca.issue(&["10.0.0.1", "mq.example"], NOW - 60, NOW + 86_400 * 90);
        let checked = check(
            &supplied(&cert, &key, &ca.pem),
            &names(&["10.0.0.1", "mq.example"]),
            NOW,
        )
        .expect("valid");
        assert_eq!(checked.root_pem.trim(), ca.pem.trim());
        assert_eq!(checked.not_after, NOW + 86_400 * 90);
        assert_eq!(
            chain_root_pem(&ca.pem).as_deref().map(str::trim),
            Some(ca.pem.trim())
        );
        // Without the key (stored specs, unknown at plan) the rest is still checked.
        assert!(check(&supplied(&cert, "", &ca.pem), &names(&["10.0.0.1"]), NOW).is_ok());
    }

    #[test]
    fn a_missing_name_is_named_with_the_names_the_certificate_has() {
        let ca = TestCa::new("User Root CA");
        let (cert, key) = ca.issue(&["10.0.0.1"], NOW - 60, NOW + 86_400);
        let e = errors(check(
            &supplied(&cert, &key, &ca.pem),
            &names(&["10.0.0.1", "10.0.0.9", "mq.example"]),
            NOW,
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "server_certificate.certificate_pem: does not name 10.0.0.9, mq.example,"
            ),
            "{e:?}"
        );
        assert!(e[0].contains("IP:10.0.0.1"), "{e:?}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_and_never_quoted() {
        let ca = TestCa::new("User Root CA");
        let (cert, _) = ca.issue(&["10.0.0.1"], NOW - 60, NOW + 86_400);
        let (_, other_key) = ca.issue(&["10.0.0.1"], NOW - 60, NOW + 86_400);
        let e = errors(check(
            &supplied(&cert, &other_key, &ca.pem),
            &names(&["10.0.0.1"]),
            NOW,
        ));
        assert_eq!(
            e,
            ["server_certificate.private_key_pem: does not belong to certificate_pem (their public keys differ)"]
        );
        let e = errors(check(&supplied(&cert, "not a key", &ca.pem), &[], NOW));
        assert!(
            e[0].starts_with(
                "server_certificate.private_key_pem: is not an unencrypted PEM private key"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        let ca = TestCa::new("User Root CA");
        let (cert, key) = ca.issue(&["10.0.0.1"], NOW - 86_400, NOW - 3600);
        let e = errors(check(
            &supplied(&cert, &key, &ca.pem),
            &names(&["10.0.0.1"]),
            NOW,
        ));
        assert!(
            e.iter().any(|m| m.starts_with(
                "server_certificate.certificate_pem: expired at 2027-01-15T07:00:00+00:00"
            )),
            "{e:?}"
        );
        let (cert, key) = ca.issue(&["10.0.0.1"], NOW + 3600, NOW + 86_400);
        let e = errors(check(
            &supplied(&cert, &key, &ca.pem),
            &names(&["10.0.0.1"]),
            NOW,
        ));
        assert!(
            e.iter()
                .any(|m| m.contains("certificate_pem: is not valid before")),
            "{e:?}"
        );
    }

    #[test]
    fn the_chain_must_hold_the_root_that_issued_the_certificate() {
        let ca1 = TestCa::new("User Root CA");
        let other = TestCa::new("Someone Else's CA");
        let (cert, key) = ca1.issue(&["10.0.0.1"], NOW - 60, NOW + 86_400);
        let e = errors(check(
            &supplied(&cert, &key, &other.pem),
            &names(&["10.0.0.1"]),
            NOW,
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("server_certificate.ca_chain_pem: does not verify certificate_pem: it is not issued by these CAs"), "{e:?}");
        let e = errors(check(&supplied(&cert, &key, ""), &[], NOW));
        assert!(
            e[0].starts_with("server_certificate.ca_chain_pem: holds no PEM certificate"),
            "{e:?}"
        );
        // The broker's own certificate is no CA.
        let e = errors(check(&supplied(&cert, &key, &cert), &[], NOW));
        assert!(
            e[0].starts_with("server_certificate.ca_chain_pem: holds no root CA certificate"),
            "{e:?}"
        );
    }

    #[test]
    fn certificate_pem_holds_exactly_one_certificate() {
        let ca = TestCa::new("User Root CA");
        let (cert, key) = ca.issue(&["10.0.0.1"], NOW - 60, NOW + 86_400);
        let e = errors(check(
            &supplied(&format!("{cert}{}", ca.pem), &key, &ca.pem),
            &[],
            NOW,
        ));
        assert_eq!(e, ["server_certificate.certificate_pem: holds 2 certificates: give the broker's own here and its CAs in ca_chain_pem"]);
        let e = errors(check(
            &supplied(
                "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
                &key,
                &ca.pem,
            ),
            &[],
            NOW,
        ));
        assert!(
            e[0].starts_with("server_certificate.certificate_pem: certificate 1 is not"),
            "{e:?}"
        );
    }

    #[test]
    fn broker_names_are_instances_extra_names_and_the_virtual_ip() {
        let spec = BrokerSpec {
            instances: ["10.0.0.1", "10.0.0.2:7443"]
                .iter()
                .map(|h| crate::agent::Instance {
                    host: h.to_string(),
                    volume: String::new(),
                })
                .collect(),
            certificate_names: names(&["mq.example", "10.0.0.1"]),
            load_balancer: Some(crate::agent::LoadBalancer {
                virtual_ip: "10.0.0.100".into(),
                hosts: vec![],
            }),
            ..Default::default()
        };
        assert_eq!(
            broker_names(&spec),
            ["10.0.0.1", "10.0.0.2", "mq.example", "10.0.0.100"]
        );
    }
}
