//! When the host's certificates end, and the warning every broker status and the metrics carry
//! in their last 30 days: on that day the provider reaches no agent and no client verifies a
//! broker, so it must be seen well before.

use super::lifetime::WARN_BEFORE;
use super::{AGENT_CERT, BROKER_CA_CERT, CA_CERT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The end of the first certificate in `pem`.
pub fn not_after(pem: &str) -> Option<OffsetDateTime> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// The host's certificates by what they are (`agent`, `broker-ca`, `deployment-ca`) with their
/// ends; a file missing or unreadable is left out.
pub fn host_certificates(tls_dir: &Path) -> Vec<(&'static str, OffsetDateTime)> {
    [
        ("agent", AGENT_CERT),
        ("broker-ca", BROKER_CA_CERT),
        ("deployment-ca", CA_CERT),
    ]
    .into_iter()
    .filter_map(|(what, file)| {
        let pem = std::fs::read_to_string(tls_dir.join(file)).ok()?;
        Some((what, not_after(&pem)?))
    })
    .collect()
}

/// One sentence per certificate of the host that ends within [`WARN_BEFORE`] of `now`, saying
/// what to run.
pub fn warnings(certificates: &[(&str, OffsetDateTime)], now: OffsetDateTime) -> Vec<String> {
    certificates
        .iter()
        .filter(|(_, end)| *end - now < WARN_BEFORE)
        .map(|(what, end)| {
            let when = end
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let todo = if *what == "deployment-ca" {
                "make a new deployment CA and issue every host again (README: The PKI)"
            } else {
                "run `ferrymq-agent pki renew` with the deployment CA"
            };
            if *end <= now {
                format!("this host's {what} certificate expired at {when}: {todo}")
            } else {
                format!(
                    "this host's {what} certificate expires at {when} (in {} days): {todo}",
                    (*end - now).whole_days()
                )
            }
        })
        .collect()
}

/// `ferrymq_certificate_not_after_seconds{certificate}` per host certificate, as Prometheus'
/// blackbox exporter's `probe_ssl_earliest_cert_expiry`: alert on `… - time() < 30 * 86400`.
pub fn samples(tls_dir: &Path) -> Vec<crate::metrics::Sample> {
    host_certificates(tls_dir)
        .into_iter()
        .map(|(what, end)| {
            let mut s = crate::metrics::Sample::gauge(
                "ferrymq_certificate_not_after_seconds",
                "When this host's certificate ends (Unix seconds): agent, broker-ca, deployment-ca. `pki renew` renews the first two.",
                end.unix_timestamp() as f64,
            );
            s.labels.push(("certificate", what.to_string()));
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn only_certificates_in_their_last_30_days_warn() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
        let certs = [
            ("agent", now + Duration::days(29)),
            ("broker-ca", now + Duration::days(31)),
            ("deployment-ca", now - Duration::days(1)),
        ];
        let w = warnings(&certs, now);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("agent certificate expires") && w[0].contains("in 29 days"));
        assert!(w[0].contains("pki renew"));
        assert!(w[1].contains("deployment-ca certificate expired"));
    }
}
