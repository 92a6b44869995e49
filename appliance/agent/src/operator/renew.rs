//! `ferrymq-agent pki renew --dir PKI --host ADDR…`: where the deployment CA's key is, renew the
//! agent certificate and broker CA of every host given that ends within `--before` (see
//! `pki::renewal`). Hosts are renewed one after the other and each is reported; one host that
//! cannot be reached or refuses does not stop the others, but makes the command fail.

use super::Credentials;
use crate::pki::lifetime::Lifetime;
use crate::pki::{self, renewal, PermittedName};
use anyhow::Result;
use ferrymq_api::agent::GetHostCertificatesRequest;
use std::path::Path;

/// What to renew and how.
pub struct Renewal<'a> {
    pub pki_dir: &'a Path,
    pub hosts: &'a [String],
    /// Names added to every broker CA's constraints (a new virtual IP, a DNS alias).
    pub names: &'a [PermittedName],
    pub lifetime: Lifetime,
    /// Renew what ends within this; everything with `force`.
    pub before: time::Duration,
    pub force: bool,
}

/// Renews each host; returns one line per host, or the hosts that failed.
pub async fn renew(r: &Renewal<'_>) -> Result<Vec<String>> {
    let creds = Credentials {
        ca_cert: pki::read(&r.pki_dir.join(pki::CA_CERT))?,
        client_cert: pki::read(&r.pki_dir.join(pki::CLIENT_CERT))?,
        client_key: pki::read(&r.pki_dir.join(pki::CLIENT_KEY))?,
    };
    let (_, issuer) = pki::load_issuer(r.pki_dir)?;
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for host in r.hosts {
        match renew_one(&creds, &issuer, host, r).await {
            Ok(line) => lines.push(line),
            Err(e) => {
                lines.push(format!("{host}: FAILED: {e:#}"));
                failed.push(host.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(lines)
    } else {
        anyhow::bail!("{}\nnot renewed: {}", lines.join("\n"), failed.join(", "))
    }
}

async fn renew_one(
    creds: &Credentials,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    host: &str,
    r: &Renewal<'_>,
) -> Result<String> {
    let mut client = creds.client(host)?;
    let current = client
        .get_host_certificates(GetHostCertificatesRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("reading its certificates: {}", s.message()))?
        .into_inner();
    let now = time::OffsetDateTime::now_utc();
    let due = r.force
        || !r.names.is_empty()
        || current.broker_ca_pem.is_empty()
        || renewal::due(&current.agent_certificate_not_after, r.before, now)
        || renewal::due(&current.broker_ca_not_after, r.before, now);
    if !due {
        return Ok(format!(
            "{host}: not due (agent certificate until {}, broker CA until {})",
            current.agent_certificate_not_after, current.broker_ca_not_after
        ));
    }
    anyhow::ensure!(
        !current.broker_ca_pem.is_empty(),
        "it has no broker CA: issue it again with `pki issue-host`"
    );
    let new = renewal::reissue(issuer, &current, r.names, r.lifetime)?;
    let installed = client
        .install_host_certificates(new)
        .await
        .map_err(|s| anyhow::anyhow!("it refused the renewed certificates: {}", s.message()))?
        .into_inner();
    Ok(format!(
        "{host}: renewed (agent certificate until {}, broker CA until {})",
        installed.agent_certificate_not_after, installed.broker_ca_not_after
    ))
}
