//! The SHA-256 fingerprint of a host's bootstrap certificate: what the host prints on its
//! console (and writes to `bootstrap-fingerprint` in its enrollment directory) when it serves
//! enrollment, and what `pki enroll --fingerprint` checks in the TLS handshake before it proves
//! anything. Without that check the operator would send a proof to whatever answers at the
//! address, and one proof lets a weak token be guessed offline.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// SHA-256 of a certificate's DER.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
}

/// Lowercase hex, 64 characters, no separators: one word to copy from a console.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a SHA-256 fingerprint (64 hex characters, `:` separators allowed): read it \
     from the host's console or its bootstrap-fingerprint file"
)]
pub struct BadFingerprint(pub String);

/// Accepts the console's form and `openssl x509 -fingerprint -sha256`'s (`AB:CD:…`).
impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: String = s
            .trim()
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| BadFingerprint(s.to_string()))?;
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_form_and_openssls_form_parse_to_the_same_fingerprint() {
        let f = Fingerprint::of(b"certificate");
        let shown = f.to_string();
        assert_eq!(shown.len(), 64);
        assert_eq!(shown.parse::<Fingerprint>(), Ok(f));
        let openssl = shown
            .to_ascii_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(openssl.parse::<Fingerprint>(), Ok(f));
        assert!("abcd".parse::<Fingerprint>().is_err());
        assert!(format!("{shown}00").parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }
}
