//! The deployment's PKI: one CA per deployment, a client certificate for the provider, and a
//! server certificate per host, so that the agent API is mutual TLS from the first call.
//!
//! Keys are ECDSA P-256 (every TLS stack verifies it) and are written 0600.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";
pub const AGENT_CERT: &str = "agent.pem";
pub const AGENT_KEY: &str = "agent-key.pem";

/// Certificates last a year; renewal arrives with the TLS-everywhere work.
const VALIDITY: Duration = Duration::days(365);

/// Creates the deployment CA and the provider's client certificate in `dir`.
pub fn init(dir: &Path) -> Result<()> {
    if dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a CA ({CA_KEY}); refusing to overwrite it",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let client_key = KeyPair::generate().context("generating the client key")?;
    let client = leaf_params(
        "ferrymq-provider",
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?
    .signed_by(&client_key, &issuer)
    .context("signing the client certificate")?;

    write_public(&dir.join(CA_CERT), &ca_cert.pem())?;
    write_secret(&dir.join(CA_KEY), &ca_key.serialize_pem())?;
    write_public(&dir.join(CLIENT_CERT), &client.pem())?;
    write_secret(&dir.join(CLIENT_KEY), &client_key.serialize_pem())?;
    Ok(())
}

/// Issues the server certificate of one host (its address as the only name) from the CA in
/// `ca_dir`, into `out` together with a copy of the CA certificate.
pub fn issue_host(ca_dir: &Path, address: IpAddr, out: &Path) -> Result<()> {
    let ca_pem = read(&ca_dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY))?)
        .with_context(|| format!("parsing {}", ca_dir.join(CA_KEY).display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)
        .with_context(|| format!("parsing {}", ca_dir.join(CA_CERT).display()))?;
    let key = KeyPair::generate().context("generating the host key")?;
    let cert = host_params(vec![SanType::IpAddress(address)])?
        .signed_by(&key, &issuer)
        .context("signing the host certificate")?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_public(&out.join(CA_CERT), &ca_pem)?;
    write_public(&out.join(AGENT_CERT), &cert.pem())?;
    write_secret(&out.join(AGENT_KEY), &key.serialize_pem())?;
    Ok(())
}

/// The certificate of a host for its addresses (also what `pki enroll` signs).
pub fn host_params(names: Vec<SanType>) -> Result<CertificateParams> {
    let common_name = match names.first() {
        Some(SanType::IpAddress(ip)) => format!("ferrymq-agent {ip}"),
        _ => "ferrymq-agent".to_string(),
    };
    let mut params = leaf_params(&common_name, names, ExtendedKeyUsagePurpose::ServerAuth)?;
    // Agents also call their peers, so the same certificate authenticates them as clients.
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ClientAuth);
    Ok(params)
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("FerryMQ deployment CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    Ok(params)
}

fn leaf_params(
    common_name: &str,
    names: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name);
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    validity(&mut params);
    Ok(params)
}

pub fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "FerryMQ");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + VALIDITY;
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn write_public(path: &Path, pem: &str) -> Result<()> {
    write_mode(path, pem, 0o644)
}

pub fn write_secret(path: &Path, pem: &str) -> Result<()> {
    write_mode(path, pem, 0o600)
}

fn write_mode(path: &Path, pem: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_issue_writes_a_chain_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("ferrymq-pki-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        init(&dir).expect("init");
        assert!(init(&dir).unwrap_err().to_string().contains("refusing"));
        let host = dir.join("host");
        issue_host(&dir, "10.1.2.3".parse().expect("ip"), &host).expect("issue");
        for f in [CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY] {
            assert!(dir.join(f).exists(), "{f}");
        }
        for f in [CA_CERT, AGENT_CERT, AGENT_KEY] {
            assert!(host.join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(host.join(AGENT_KEY))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
