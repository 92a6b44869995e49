//! The deployment's PKI: one CA per deployment, a client certificate for the operator (the
//! provider), and per host an agent certificate and a broker CA, so that the agent API is mutual
//! TLS from the first call and every certificate says what its holder may do.
//!
//! - The deployment CA lives 20 years; its key stays offline and takes part only in `pki init`,
//!   `pki issue-host`, `pki enroll`, `pki issue-client` and `pki renew`.
//! - Identities are issued directly by the deployment CA and carry their role as a URI in the
//!   subject alternative names ([`identity`]): the operator's may call the whole agent API, a
//!   host's only the peer calls its brokers need. The agent refuses every other certificate,
//!   whatever chains it (see `api::authorize`).
//! - A host's broker CA (path length 0) may sign server certificates for the names it was
//!   issued for only: name constraints (the host's address and the operator's `--name`s: a
//!   virtual IP, DNS aliases) and an extended key usage of server authentication (plus client
//!   authentication, left from when it signed the Erlang distribution's node certificates; the
//!   agent API never accepts what the broker CA signs). A stolen host can then mint certificates
//!   for its own names only, which it serves anyway.
//!
//! Keys are ECDSA P-256 (every TLS stack verifies it) and are written 0600.

pub mod expiry;
pub mod identity;
pub mod lifetime;
pub mod renewal;

use anyhow::{bail, Context, Result};
use lifetime::Lifetime;
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CLIENT_CERT: &str = "client.pem";
pub const CLIENT_KEY: &str = "client-key.pem";
pub const AGENT_CERT: &str = "agent.pem";
pub const AGENT_KEY: &str = "agent-key.pem";
/// The host's broker-issuing CA: an intermediate of the deployment CA (CA:true, pathlen 0), so
/// the agent signs its brokers' server certificates without holding the deployment CA's key,
/// and clients verify them with the deployment CA alone.
pub const BROKER_CA_CERT: &str = "broker-ca.pem";
pub const BROKER_CA_KEY: &str = "broker-ca-key.pem";

/// A name a host's broker CA may sign beyond the host's own address: an address, a subnet
/// (`10.0.0.96/28`, for the virtual IPs of a load balancer) or a DNS name (and its subdomains).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PermittedName {
    Subnet(IpAddr, u8),
    Dns(String),
}

impl FromStr for PermittedName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PermittedName::Subnet(
                ip,
                if ip.is_ipv4() { 32 } else { 128 },
            ));
        }
        if let Some((addr, prefix)) = s.split_once('/') {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("--name {s:?}: {addr:?} is not an address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return match prefix.parse::<u8>() {
                Ok(p) if p <= max => Ok(PermittedName::Subnet(ip, p)),
                _ => Err(format!("--name {s:?}: the prefix must be 0 to {max}")),
            };
        }
        let valid = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if valid {
            Ok(PermittedName::Dns(s.to_ascii_lowercase()))
        } else {
            Err(format!(
                "--name {s:?}: expected an address, a subnet (ADDRESS/PREFIX) or a DNS name"
            ))
        }
    }
}

impl PermittedName {
    fn subtree(&self) -> GeneralSubtree {
        match self {
            PermittedName::Subnet(ip, prefix) => {
                GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(*ip, *prefix))
            }
            PermittedName::Dns(name) => GeneralSubtree::DnsName(name.clone()),
        }
    }
}

impl PermittedName {
    /// Whether a certificate name (an address or a DNS name) falls under this one, as RFC 5280
    /// name constraints match it.
    pub fn permits(&self, name: &str) -> bool {
        match (self, name.parse::<IpAddr>()) {
            (PermittedName::Subnet(net, prefix), Ok(ip)) => in_subnet(ip, *net, *prefix),
            (PermittedName::Dns(base), Err(_)) => {
                let name = name.to_ascii_lowercase();
                name == *base || name.ends_with(&format!(".{base}"))
            }
            _ => false,
        }
    }
}

fn in_subnet(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let bits = |a: IpAddr| -> u128 {
        match a {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        }
    };
    let width = if net.is_ipv4() { 32 } else { 128 };
    if ip.is_ipv4() != net.is_ipv4() || prefix > width {
        return false;
    }
    let shift = u32::from(width - prefix);
    bits(ip).checked_shr(shift).unwrap_or(0) == bits(net).checked_shr(shift).unwrap_or(0)
}

impl std::fmt::Display for PermittedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PermittedName::Subnet(ip, prefix)
                if u32::from(*prefix) == if ip.is_ipv4() { 32 } else { 128 } =>
            {
                write!(f, "{ip}")
            }
            PermittedName::Subnet(ip, prefix) => write!(f, "{ip}/{prefix}"),
            PermittedName::Dns(name) => f.write_str(name),
        }
    }
}

/// The names a broker CA permits (none for one issued before name constraints).
pub fn permitted_names(pem: &str) -> Result<Vec<PermittedName>> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .context("the broker CA is not a PEM certificate")?;
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("parsing the broker CA: {e}"))?;
    let constraints = cert
        .name_constraints()
        .map_err(|e| anyhow::anyhow!("name constraints: {e}"))?;
    let subtrees = constraints
        .and_then(|c| c.value.permitted_subtrees.clone())
        .unwrap_or_default();
    Ok(subtrees
        .iter()
        .filter_map(|t| match &t.base {
            GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                let (addr, mask) = b.split_at(b.len() / 2);
                let prefix = mask.iter().map(|m| m.count_ones()).sum::<u32>();
                Some(PermittedName::Subnet(
                    identity::ip_from_bytes(addr)?,
                    prefix as u8,
                ))
            }
            GeneralName::DNSName(n) => Some(PermittedName::Dns(n.to_string())),
            _ => None,
        })
        .collect())
}

/// The deployment CA as the only trust anchor: what every check of a FerryMQ certificate uses.
pub fn deployment_roots(ca_pem: &str) -> Result<std::sync::Arc<rustls::RootCertStore>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("parsing the deployment CA")?)
            .context("adding the deployment CA")?;
    }
    Ok(std::sync::Arc::new(roots))
}

/// Creates the deployment CA and the operator's client certificate in `dir`.
pub fn init(dir: &Path, ca_lifetime: Lifetime, client_lifetime: Lifetime) -> Result<()> {
    if dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a CA ({CA_KEY}); refusing to overwrite it",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_params = ca_params(ca_lifetime)?;
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the CA")?;
    write_public(&dir.join(CA_CERT), &ca_cert.pem())?;
    write_secret(&dir.join(CA_KEY), &ca_key.serialize_pem())?;
    issue_client(dir, client_lifetime)
}

/// The deployment CA in `ca_dir` as an issuer (reads the offline key).
pub fn load_issuer(ca_dir: &Path) -> Result<(String, Issuer<'static, KeyPair>)> {
    let ca_pem = read(&ca_dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY))?)
        .with_context(|| format!("parsing {}", ca_dir.join(CA_KEY).display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("parsing {}", ca_dir.join(CA_CERT).display()))?;
    Ok((ca_pem, issuer))
}

/// Issues (again) the operator's client certificate in `dir` with a new key: also how a
/// deployment made before roles gets an operator certificate the agents accept.
pub fn issue_client(dir: &Path, lifetime: Lifetime) -> Result<()> {
    let (_, issuer) = load_issuer(dir)?;
    let client_key = KeyPair::generate().context("generating the client key")?;
    let client = operator_params(lifetime)?
        .signed_by(&client_key, &issuer)
        .context("signing the client certificate")?;
    write_public(&dir.join(CLIENT_CERT), &client.pem())?;
    write_secret(&dir.join(CLIENT_KEY), &client_key.serialize_pem())?;
    Ok(())
}

pub const MONITORING_CERT: &str = "monitoring.pem";
pub const MONITORING_KEY: &str = "monitoring-key.pem";

/// Issues a scraper's client certificate (role monitoring: the metrics listeners of every host,
/// nothing on the agent API) into `out`, with a copy of the CA certificate.
pub fn issue_monitoring(dir: &Path, out: &Path, lifetime: Lifetime) -> Result<()> {
    let (ca_pem, issuer) = load_issuer(dir)?;
    let key = KeyPair::generate().context("generating the monitoring key")?;
    let uri = SanType::URI(
        identity::MONITORING_URI
            .try_into()
            .context("the monitoring role URI")?,
    );
    let mut params = leaf_params(
        "ferrymq-monitoring",
        vec![uri],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    set_lifetime(&mut params, lifetime);
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the monitoring certificate")?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_public(&out.join(CA_CERT), &ca_pem)?;
    write_public(&out.join(MONITORING_CERT), &cert.pem())?;
    write_secret(&out.join(MONITORING_KEY), &key.serialize_pem())?;
    Ok(())
}

/// Issues the agent certificate of one host (its address as the only name) and its broker CA
/// (the address and `names` permitted) from the CA in `ca_dir`, into `out` together with a copy
/// of the CA certificate.
pub fn issue_host(
    ca_dir: &Path,
    address: IpAddr,
    names: &[PermittedName],
    lifetime: Lifetime,
    out: &Path,
) -> Result<()> {
    let (ca_pem, issuer) = load_issuer(ca_dir)?;
    let key = KeyPair::generate().context("generating the host key")?;
    let mut params = host_params(vec![SanType::IpAddress(address)])?;
    set_lifetime(&mut params, lifetime);
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the host certificate")?;
    let broker_ca_key = KeyPair::generate().context("generating the broker CA key")?;
    let mut params = broker_ca_params_for(address, names)?;
    set_lifetime(&mut params, lifetime);
    let broker_ca = params
        .signed_by(&broker_ca_key, &issuer)
        .context("signing the broker CA")?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_public(&out.join(CA_CERT), &ca_pem)?;
    write_public(&out.join(AGENT_CERT), &cert.pem())?;
    write_secret(&out.join(AGENT_KEY), &key.serialize_pem())?;
    write_public(&out.join(BROKER_CA_CERT), &broker_ca.pem())?;
    write_secret(&out.join(BROKER_CA_KEY), &broker_ca_key.serialize_pem())?;
    Ok(())
}

/// The broker CA of a host whose only permitted name is its address (what enrollment issues).
pub fn broker_ca_params(address: IpAddr) -> Result<CertificateParams> {
    broker_ca_params_for(address, &[])
}

/// An intermediate that may sign server certificates only (path length 0, key usage certificate
/// signing), for `address` and `names` only, per host so that losing one host's key exposes
/// one host's names.
pub fn broker_ca_params_for(address: IpAddr, names: &[PermittedName]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(&format!("FerryMQ broker CA {address}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let own = PermittedName::Subnet(address, if address.is_ipv4() { 32 } else { 128 });
    let mut permitted = vec![own.subtree()];
    permitted.extend(
        names
            .iter()
            .filter(|n| **n != own)
            .map(PermittedName::subtree),
    );
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: vec![],
    });
    set_lifetime(&mut params, Lifetime(lifetime::IDENTITY));
    Ok(params)
}

/// The certificate of a host for its addresses (also what `pki enroll` signs): server
/// authentication for the agent API, client authentication and the host role for peer calls.
pub fn host_params(names: Vec<SanType>) -> Result<CertificateParams> {
    let common_name = match names.first() {
        Some(SanType::IpAddress(ip)) => format!("ferrymq-agent {ip}"),
        _ => "ferrymq-agent".to_string(),
    };
    let mut names = names;
    names.push(SanType::URI(
        identity::HOST_URI.try_into().context("the host role URI")?,
    ));
    let mut params = leaf_params(&common_name, names, ExtendedKeyUsagePurpose::ServerAuth)?;
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ClientAuth);
    Ok(params)
}

/// The operator's client certificate: the role that may call the whole agent API.
pub fn operator_params(lifetime: Lifetime) -> Result<CertificateParams> {
    let uri = SanType::URI(
        identity::OPERATOR_URI
            .try_into()
            .context("the operator role URI")?,
    );
    let mut params = leaf_params(
        "ferrymq-operator",
        vec![uri],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    set_lifetime(&mut params, lifetime);
    Ok(params)
}

fn ca_params(lifetime: Lifetime) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("FerryMQ deployment CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_lifetime(&mut params, lifetime);
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
    set_lifetime(&mut params, Lifetime(lifetime::IDENTITY));
    Ok(params)
}

pub fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "FerryMQ");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// From five minutes ago (a host's clock a little behind) for `lifetime`.
pub fn set_lifetime(params: &mut CertificateParams, lifetime: Lifetime) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + lifetime.0;
}

/// A PEM file of the PKI, with its path in the error.
pub(crate) fn read(path: &Path) -> Result<String> {
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
        let year = Lifetime(lifetime::IDENTITY);
        init(&dir, "20y".parse().expect("lifetime"), year).expect("init");
        assert!(init(&dir, "20y".parse().expect("lifetime"), year)
            .unwrap_err()
            .to_string()
            .contains("refusing"));
        let host = dir.join("host");
        issue_host(&dir, "10.1.2.3".parse().expect("ip"), &[], year, &host).expect("issue");
        for f in [CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY] {
            assert!(dir.join(f).exists(), "{f}");
        }
        for f in [
            CA_CERT,
            AGENT_CERT,
            AGENT_KEY,
            BROKER_CA_CERT,
            BROKER_CA_KEY,
        ] {
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
