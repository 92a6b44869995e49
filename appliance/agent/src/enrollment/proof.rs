//! Proofs of knowing the join token: HMAC-SHA256 keyed by the token over a purpose label and the
//! bootstrap certificate the client saw (plus what the message vouches for). The token itself
//! never crosses the wire, and a relay that shows its own certificate cannot reuse a proof.
//! Verification is constant-time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a proof vouches for; each purpose has its own label so one proof cannot stand for another.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// The client asks to enroll this host.
    Client,
    /// The host answers with a CSR.
    Host,
    /// The client hands over the signed certificate.
    Install,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Client => b"ferrymq-enroll-client",
            Purpose::Host => b"ferrymq-enroll-host",
            Purpose::Install => b"ferrymq-enroll-install",
        }
    }
}

fn mac(token: &str, purpose: Purpose, bootstrap_cert_der: &[u8], payload: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = match HmacSha256::new_from_slice(token.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    for part in [purpose.label(), bootstrap_cert_der, payload] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

pub fn prove(token: &str, purpose: Purpose, bootstrap_cert_der: &[u8], payload: &[u8]) -> Vec<u8> {
    mac(token, purpose, bootstrap_cert_der, payload)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Constant-time check of a proof.
pub fn verify(
    token: &str,
    purpose: Purpose,
    bootstrap_cert_der: &[u8],
    payload: &[u8],
    proof: &[u8],
) -> bool {
    mac(token, purpose, bootstrap_cert_der, payload)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_token_purpose_certificate_and_payload() {
        let p = prove("tok", Purpose::Client, b"cert", b"");
        assert!(verify("tok", Purpose::Client, b"cert", b"", &p));
        assert!(!verify("other", Purpose::Client, b"cert", b"", &p));
        assert!(!verify("tok", Purpose::Install, b"cert", b"", &p));
        assert!(!verify("tok", Purpose::Client, b"relay-cert", b"", &p));
        assert!(!verify("tok", Purpose::Client, b"cert", b"x", &p));
        assert!(!verify("tok", Purpose::Client, b"cert", b"", &p[..16]));
        // Length-prefixed parts: moving bytes between certificate and payload changes the proof.
        assert_ne!(
            prove("tok", Purpose::Host, b"ab", b"c"),
            prove("tok", Purpose::Host, b"a", b"bc")
        );
    }
}
