//! Renewing a host's agent certificate and broker CA before they end, without a restart.
//!
//! The deployment CA's key is offline, so a host cannot renew by itself: the operator runs
//! `ferrymq-agent pki renew --dir PKI --host ADDR…` where that key is. It reads each host's
//! certificates over the agent API (operator role), signs them again **for the keys the host
//! already holds**, with the same names and name constraints, and installs them. Keeping the
//! keys means nothing issued under the old certificates changes: brokers' server certificates
//! still chain to the renewed broker CA, peers and the provider still see the same host.
//!
//! The agent checks what it is given before it writes anything ([`install`]): both certificates
//! for its own keys, the agent certificate issued directly by the deployment CA for its own
//! addresses, and a certificate signed with the renewed broker CA verifying up to the
//! deployment CA. Then it serves the new agent certificate on the next handshake.

use super::identity::{self, Role};
use super::lifetime::Lifetime;
use super::{expiry, PermittedName, AGENT_CERT, AGENT_KEY, BROKER_CA_CERT, BROKER_CA_KEY, CA_CERT};
use anyhow::{bail, Context, Result};
use ferrymq_api::agent::HostCertificates;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The host's certificates as they are, with their ends and warnings.
pub fn current(tls_dir: &Path) -> Result<HostCertificates> {
    let mut out = ends(tls_dir);
    out.agent_certificate_pem = super::read(&tls_dir.join(AGENT_CERT))?;
    // A host issued before broker CAs has none: renewal then issues it one.
    out.broker_ca_pem = super::read(&tls_dir.join(BROKER_CA_CERT)).unwrap_or_default();
    Ok(out)
}

/// Only when the host's certificates end, and the warnings (what `GetHostFacts` reports).
pub fn ends(tls_dir: &Path) -> HostCertificates {
    let certs = expiry::host_certificates(tls_dir);
    let when = |what: &str| {
        certs
            .iter()
            .find(|(w, _)| *w == what)
            .and_then(|(_, t)| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    HostCertificates {
        agent_certificate_not_after: when("agent"),
        broker_ca_not_after: when("broker-ca"),
        deployment_ca_not_after: when("deployment-ca"),
        warnings: expiry::warnings(&certs, OffsetDateTime::now_utc()),
        ..Default::default()
    }
}

/// Why an installation was refused: the caller's fault, or the host's.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Checks `new` against the keys and addresses of this host and the deployment CA, then writes
/// it (each file atomically). Nothing is written when any check fails.
pub fn install(tls_dir: &Path, new: &HostCertificates) -> Result<(), InstallError> {
    let read = |name: &str| super::read(&tls_dir.join(name)).map_err(InstallError::Internal);
    let ca_pem = read(CA_CERT)?;
    let agent_key = KeyPair::from_pem(&read(AGENT_KEY)?).context("parsing the agent key")?;
    let broker_key =
        KeyPair::from_pem(&read(BROKER_CA_KEY)?).context("parsing the broker CA key")?;
    let old_agent = der(&read(AGENT_CERT)?).map_err(InstallError::Internal)?;
    // The host's addresses are its certificate's IP names (what its host role carries, and all
    // a certificate from before roles has).
    let addresses = ips(&old_agent)?;
    install_checked(tls_dir, new, &ca_pem, &agent_key, &broker_key, &addresses)
}

fn install_checked(
    tls_dir: &Path,
    new: &HostCertificates,
    ca_pem: &str,
    agent_key: &KeyPair,
    broker_key: &KeyPair,
    addresses: &[IpAddr],
) -> Result<(), InstallError> {
    let invalid = InstallError::Invalid;
    let agent = der(&new.agent_certificate_pem)
        .map_err(|e| invalid(format!("agent_certificate_pem: {e:#}")))?;
    let broker_ca =
        der(&new.broker_ca_pem).map_err(|e| invalid(format!("broker_ca_pem: {e:#}")))?;
    if spki(&agent)? != agent_key.public_key_raw() {
        return Err(invalid(
            "agent_certificate_pem is not for this host's agent key".into(),
        ));
    }
    if spki(&broker_ca)? != broker_key.public_key_raw() {
        return Err(invalid(
            "broker_ca_pem is not for this host's broker CA key".into(),
        ));
    }
    match identity::role_of(&agent) {
        Ok(Role::Host(new_addresses)) if sorted(&new_addresses) == sorted(addresses) => {}
        other => {
            return Err(invalid(format!(
                "agent_certificate_pem must carry the host role for {addresses:?}, found {other:?}"
            )))
        }
    }
    let verifier = server_verifier(ca_pem)?;
    let address = *addresses
        .first()
        .ok_or_else(|| invalid("this host's certificate names no address".into()))?;
    let name = ServerName::IpAddress(address.into());
    verifier
        .verify_server_cert(&agent, &[], &name, &[], UnixTime::now())
        .map_err(|e| {
            invalid(format!(
                "agent_certificate_pem does not verify as issued by the deployment CA for {address}: {e}"
            ))
        })?;
    // The broker CA must still sign what brokers need: a server certificate for this host.
    let issuer = Issuer::from_ca_cert_der(&broker_ca, broker_key)
        .map_err(|e| invalid(format!("broker_ca_pem: {e}")))?;
    let mut probe = CertificateParams::new(Vec::<String>::new()).context("probe")?;
    probe.subject_alt_names = vec![SanType::IpAddress(address)];
    probe.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let probe_key = KeyPair::generate().context("probe key")?;
    let probe = probe
        .signed_by(&probe_key, &issuer)
        .context("signing a probe certificate")?;
    verifier
        .verify_server_cert(
            probe.der(),
            std::slice::from_ref(&broker_ca),
            &name,
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            invalid(format!(
                "broker_ca_pem does not verify under the deployment CA for {address}: {e}"
            ))
        })?;
    crate::store::write_atomically(&tls_dir.join(BROKER_CA_CERT), new.broker_ca_pem.as_bytes())?;
    crate::store::write_atomically(
        &tls_dir.join(AGENT_CERT),
        new.agent_certificate_pem.as_bytes(),
    )?;
    Ok(())
}

/// The operator's side: `current`'s certificates signed again by `issuer` for the same keys,
/// names and name constraints (plus `extra` names), valid for `lifetime` from now.
pub fn reissue(
    issuer: &Issuer<'_, KeyPair>,
    current: &HostCertificates,
    extra: &[PermittedName],
    lifetime: Lifetime,
) -> Result<HostCertificates> {
    let agent = der(&current.agent_certificate_pem).context("the host's agent certificate")?;
    let addresses = ips(&agent)?;
    let Some(&address) = addresses.first() else {
        bail!("the host's agent certificate names no address");
    };
    let mut params =
        super::host_params(addresses.iter().map(|ip| SanType::IpAddress(*ip)).collect())?;
    super::set_lifetime(&mut params, lifetime);
    let agent_pem = params
        .signed_by(&public_key(&agent)?, issuer)
        .context("signing the agent certificate")?
        .pem();

    let broker_ca = der(&current.broker_ca_pem).context("the host's broker CA")?;
    let mut names = super::permitted_names(&current.broker_ca_pem)?;
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut params = super::broker_ca_params_for(address, &names)?;
    super::set_lifetime(&mut params, lifetime);
    let broker_ca_pem = params
        .signed_by(&public_key(&broker_ca)?, issuer)
        .context("signing the broker CA")?
        .pem();
    Ok(HostCertificates {
        agent_certificate_pem: agent_pem,
        broker_ca_pem,
        ..Default::default()
    })
}

/// Whether a certificate ending at `not_after` (RFC 3339) is due: within `before` of `now`.
pub fn due(not_after: &str, before: time::Duration, now: OffsetDateTime) -> bool {
    match OffsetDateTime::parse(not_after, &time::format_description::well_known::Rfc3339) {
        Ok(end) => end - now < before,
        Err(_) => true,
    }
}

fn der(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).context("not a PEM certificate")
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>> {
    Ok(X509Certificate::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("parsing a certificate: {e}"))?
        .1)
}

/// The certificate's public key bits, as `KeyPair::public_key_raw` gives a key's.
fn spki(der: &CertificateDer<'_>) -> Result<Vec<u8>, InstallError> {
    Ok(parse(der)?.public_key().subject_public_key.data.to_vec())
}

fn public_key(der: &CertificateDer<'_>) -> Result<rcgen::SubjectPublicKeyInfo> {
    rcgen::SubjectPublicKeyInfo::from_der(parse(der)?.public_key().raw)
        .context("the certificate's public key")
}

fn ips(der: &CertificateDer<'_>) -> Result<Vec<IpAddr>> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("subject alternative names: {e}"))?;
    Ok(san
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| match n {
            GeneralName::IPAddress(b) => identity::ip_from_bytes(b),
            _ => None,
        })
        .collect())
}

fn sorted(a: &[IpAddr]) -> Vec<IpAddr> {
    let mut a = a.to_vec();
    a.sort();
    a
}

fn server_verifier(ca_pem: &str) -> Result<Arc<rustls::client::WebPkiServerVerifier>> {
    let roots = super::deployment_roots(ca_pem)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .context("the server certificate verifier")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, lifetime};
    use rustls::client::danger::ServerCertVerifier;

    fn lab(tag: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ferrymq-renew-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let short = Lifetime(time::Duration::minutes(10));
        pki::init(&dir, "20y".parse().expect("lifetime"), short).expect("init");
        let names = [
            "10.1.2.96/28".parse().expect("subnet"),
            "mq.example".parse().expect("dns"),
        ];
        pki::issue_host(
            &dir,
            "10.1.2.3".parse().expect("ip"),
            &names,
            short,
            &dir.join("host"),
        )
        .expect("issue");
        (dir.clone(), dir.join("host"))
    }

    #[test]
    fn a_renewal_keeps_keys_names_and_constraints_and_is_installed() {
        let (pki_dir, host) = lab("ok");
        let before = current(&host).expect("current");
        assert!(!before.warnings.is_empty(), "a 10-minute certificate warns");
        assert!(due(
            &before.agent_certificate_not_after,
            lifetime::WARN_BEFORE,
            OffsetDateTime::now_utc()
        ));
        let (_, issuer) = pki::load_issuer(&pki_dir).expect("issuer");
        let new = reissue(&issuer, &before, &[], Lifetime(lifetime::IDENTITY)).expect("reissue");
        install(&host, &new).expect("install");
        let after = current(&host).expect("current");
        assert_eq!(after.agent_certificate_pem, new.agent_certificate_pem);
        assert!(after.warnings.is_empty(), "{:?}", after.warnings);
        let broker_ca = der(&after.broker_ca_pem).expect("der");
        assert_eq!(
            pki::permitted_names(&after.broker_ca_pem).expect("names"),
            vec![
                PermittedName::Subnet("10.1.2.3".parse().expect("ip"), 32),
                PermittedName::Subnet("10.1.2.96".parse().expect("ip"), 28),
                PermittedName::Dns("mq.example".into()),
            ]
        );
        // A broker certificate issued before the renewal still verifies with the new broker CA.
        let ca = crate::certificates::BrokerCa::load(&host).expect("load");
        let leaf = ca
            .issue(&["10.1.2.3".into()], OffsetDateTime::now_utc())
            .expect("issue");
        let v = server_verifier(&std::fs::read_to_string(host.join(CA_CERT)).expect("ca"))
            .expect("verifier");
        v.verify_server_cert(
            &der(&leaf.certificate_pem).expect("leaf"),
            &[broker_ca],
            &ServerName::try_from("10.1.2.3").expect("name"),
            &[],
            UnixTime::now(),
        )
        .expect("verifies");
        std::fs::remove_dir_all(&pki_dir).expect("cleanup");
    }

    #[test]
    fn certificates_for_other_keys_or_names_are_refused_and_nothing_is_written() {
        let (pki_dir, host) = lab("bad");
        let (_, issuer) = pki::load_issuer(&pki_dir).expect("issuer");
        let before = current(&host).expect("current");
        // Another host's certificates (other keys, other address).
        let other = pki_dir.join("other");
        pki::issue_host(
            &pki_dir,
            "10.1.2.4".parse().expect("ip"),
            &[],
            Lifetime(lifetime::IDENTITY),
            &other,
        )
        .expect("issue");
        let theirs = current(&other).expect("current");
        let mixed = HostCertificates {
            agent_certificate_pem: theirs.agent_certificate_pem.clone(),
            ..reissue(&issuer, &before, &[], Lifetime(lifetime::IDENTITY)).expect("reissue")
        };
        let err = install(&host, &mixed).expect_err("refused");
        assert!(err.to_string().contains("agent key"), "{err}");
        // Signed by another CA for this host's keys.
        let foreign = pki_dir.join("foreign");
        pki::init(
            &foreign,
            "20y".parse().expect("lifetime"),
            Lifetime(lifetime::IDENTITY),
        )
        .expect("init");
        let (_, foreign_issuer) = pki::load_issuer(&foreign).expect("issuer");
        let forged =
            reissue(&foreign_issuer, &before, &[], Lifetime(lifetime::IDENTITY)).expect("reissue");
        let err = install(&host, &forged).expect_err("refused");
        assert!(err.to_string().contains("deployment CA"), "{err}");
        assert_eq!(
            current(&host).expect("current").agent_certificate_pem,
            before.agent_certificate_pem
        );
        assert_eq!(
            current(&host).expect("current").broker_ca_pem,
            before.broker_ca_pem
        );
        std::fs::remove_dir_all(&pki_dir).expect("cleanup");
    }
}
