//! A supplied server certificate's key on its way in: checked with the certificate, then taken
//! out of the spec before the spec is stored, and left in the broker's TLS directory (0600)
//! for the pass to install. The spec store, the API's answers and the logs never hold it.

use super::broker::certificate_names;
use crate::certificates::CertificateFiles;
use anyhow::Result;
use ferrymq_api::agent::BrokerSpec;
use ferrymq_api::server_certificate::{self, PRIVATE_KEY_PEM};
use ferrymq_api::validate::FieldError;

/// Checks the spec's supplied certificate (if any) as the provider did at plan time, and
/// removes its private key from the spec, returning it.
pub fn take_key(spec: &mut BrokerSpec) -> Result<Option<String>, Vec<FieldError>> {
    let names = certificate_names(spec);
    let Some(supplied) = spec.server_certificate.as_mut() else {
        return Ok(None);
    };
    if supplied.private_key_pem.is_empty() {
        return Err(vec![FieldError::new(PRIVATE_KEY_PEM, "is required")]);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    server_certificate::check(supplied, &names, now)?;
    Ok(Some(std::mem::take(&mut supplied.private_key_pem)))
}

/// Leaves the key where the pass installs it from; only root reads it until then.
pub fn stage_key(files: &CertificateFiles, key: &str) -> Result<()> {
    crate::store::write_atomically(&files.supplied_key, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FsStore, SpecStore};
    use ferrymq_api::agent::{Instance, ServerCertificate};
    use ferrymq_api::server_certificate::test_ca::TestCa;

    /// A CA and a server certificate from it for `names`: (certificate, key, CA).
    fn supplied_for(names: &[&str]) -> (String, String, String) {
        let ca = TestCa::new("User Root CA");
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (cert, key) = ca.issue(names, now - 60, now + 86_400 * 90);
        (cert, key, ca.pem)
    }

    fn spec(cert: &str, key: &str, ca: &str) -> BrokerSpec {
        BrokerSpec {
            broker_id: "b-1".into(),
            instances: vec![Instance {
                host: "10.0.0.1".into(),
                volume: "/dev/null".into(),
            }],
            server_certificate: Some(ServerCertificate {
                certificate_pem: cert.into(),
                private_key_pem: key.into(),
                ca_chain_pem: ca.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_key_is_staged_0600_and_the_store_never_holds_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferrymq-supplied-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, key, ca) = supplied_for(&["10.0.0.1"]);
        let mut s = spec(&cert, &key, &ca);
        let taken = take_key(&mut s).expect("valid").expect("a key");
        assert_eq!(taken, key);
        let files = CertificateFiles::in_dir(&dir.join("b-1").join("engine").join("tls"));
        stage_key(&files, &taken).expect("stage");
        let mode = std::fs::metadata(&files.supplied_key)
            .expect("staged")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let store = FsStore::new(&dir);
        store.save(&s).expect("save");
        let text = std::fs::read_to_string(dir.join("b-1").join("spec.json")).expect("spec");
        assert!(
            text.contains("BEGIN CERTIFICATE"),
            "the certificate is kept"
        );
        // The key's first line (PEM wraps at 64) and its label, as the store could hold it.
        let first_line = key.lines().nth(1).expect("key body");
        assert!(!text.contains(first_line) && !text.contains("PRIVATE KEY"));
        let stored = store.load_all().expect("load");
        let stored = stored[0].spec.server_certificate.as_ref().expect("kept");
        assert_eq!(stored.private_key_pem, "");
        assert_eq!(stored.certificate_pem, cert);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_certificate_without_the_hosts_address_or_its_key_is_refused() {
        let (cert, key, ca) = supplied_for(&["10.0.0.2"]);
        let e = take_key(&mut spec(&cert, &key, &ca)).expect_err("refused");
        assert!(
            e[0].to_string()
                .starts_with("server_certificate.certificate_pem: does not name 10.0.0.1"),
            "{e:?}"
        );
        let (cert, _, ca) = supplied_for(&["10.0.0.1"]);
        let e = take_key(&mut spec(&cert, "", &ca)).expect_err("refused");
        assert_eq!(
            e[0].to_string(),
            "server_certificate.private_key_pem: is required"
        );
        let mut none = BrokerSpec::default();
        assert_eq!(take_key(&mut none), Ok(None));
    }
}
