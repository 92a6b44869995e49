//! The join token on disk. `join-token` is unused; consuming it renames it to
//! `join-token.consumed` (atomic: of two racing enrollments exactly one rename succeeds), and only
//! then does the host make a key and answer. The consumed token stays until the certificate is
//! installed (the install call is proven with it) and is deleted then.
//!
//! It also holds the one rule for how strong a token must be ([`check_strength`]), applied to
//! every source (file, kernel command line, seed), by the host before it serves enrollment and
//! by `pki enroll` before it proves anything, and the maker of good tokens ([`new_token`]).

use super::{JOIN_TOKEN, JOIN_TOKEN_CONSUMED};
use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// The least a join token must carry. An attacker who saw one proof (see [`super::proof`]) can
/// guess the token offline at GPU speed; 128 bits keep that out of reach.
pub const MIN_TOKEN_BITS: usize = 128;
/// Hex characters carry 4 bits each: 32 of them make 128 bits.
pub const MIN_HEX_CHARS: usize = MIN_TOKEN_BITS.div_ceil(4);
/// Base64 (standard or URL-safe, padding not counted) characters carry 6 bits each.
pub const MIN_BASE64_CHARS: usize = MIN_TOKEN_BITS.div_ceil(6);
/// A random 32-character hex string has fewer than 8 distinct characters with a probability of
/// about 1e-7 (22 base64 characters fewer than 10: about 1e-8); fewer betrays a made-up token
/// such as `00000000000000000000000000001337`.
const MIN_DISTINCT_HEX: usize = 8;
const MIN_DISTINCT_BASE64: usize = 10;
/// What [`new_token`] reads from the OS RNG: 256 bits, twice the minimum.
const NEW_TOKEN_BYTES: usize = 32;

/// Why a join token is too weak to protect a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakToken {
    #[error("it is empty")]
    Empty,
    /// (Which character is not said: even a refused token is not logged.)
    #[error("it has characters other than hex or base64, so its strength cannot be told")]
    Alphabet,
    #[error(
        "{len} {alphabet} characters carry {bits} bits; at least {MIN_TOKEN_BITS} are needed \
         ({need} {alphabet} characters)"
    )]
    TooShort {
        len: usize,
        alphabet: &'static str,
        bits: usize,
        need: usize,
    },
    #[error("it has only {distinct} distinct characters: it was not drawn at random")]
    Repetitive { distinct: usize },
}

/// The measure of a token's entropy: its length times the bits of the smallest alphabet it fits
/// (hex: 4, base64/base64url: 6), which is what it carries if it was drawn at random from that
/// alphabet, plus a check that it does not repeat a few characters (a made-up token). No measure
/// can tell a random string from a clever made-up one: make tokens with [`new_token`]
/// (`ferrymq-agent pki new-token`).
pub fn check_strength(token: &str) -> Result<(), WeakToken> {
    let token = token.trim();
    if token.is_empty() {
        return Err(WeakToken::Empty);
    }
    let (alphabet, bits_per_char, need, min_distinct, chars) =
        if token.chars().all(|c| c.is_ascii_hexdigit()) {
            let chars: Vec<char> = token.chars().map(|c| c.to_ascii_lowercase()).collect();
            ("hex", 4, MIN_HEX_CHARS, MIN_DISTINCT_HEX, chars)
        } else {
            let body = token.trim_end_matches('=');
            if !body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_'))
            {
                return Err(WeakToken::Alphabet);
            }
            let chars = body.chars().collect();
            ("base64", 6, MIN_BASE64_CHARS, MIN_DISTINCT_BASE64, chars)
        };
    if chars.len() < need {
        return Err(WeakToken::TooShort {
            len: chars.len(),
            alphabet,
            bits: chars.len() * bits_per_char,
            need,
        });
    }
    let distinct = chars.iter().collect::<BTreeSet<_>>().len();
    if distinct < min_distinct {
        return Err(WeakToken::Repetitive { distinct });
    }
    Ok(())
}

/// A fresh join token: 32 bytes from the kernel's RNG (`/dev/urandom`, which never blocks once
/// the kernel is seeded and is what `getrandom(2)` reads), as 64 lowercase hex characters: safe on
/// a kernel command line, in YAML and in a file, and far above [`MIN_TOKEN_BITS`].
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; NEW_TOKEN_BYTES];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the join token was already used")]
    AlreadyUsed,
    #[error("this host has no join token")]
    Missing,
    #[error("{0}")]
    Io(String),
}

pub struct TokenStore {
    dir: PathBuf,
}

impl TokenStore {
    pub fn new(dir: &Path) -> Self {
        TokenStore {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> Result<String, TokenError> {
        match fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(TokenError::Missing),
            Err(e) => Err(TokenError::Io(format!("reading {name}: {e}"))),
        }
    }

    /// The unused token, to check a client's proof against before consuming it.
    pub fn unused(&self) -> Result<String, TokenError> {
        match self.read(JOIN_TOKEN) {
            Err(TokenError::Missing) if self.dir.join(JOIN_TOKEN_CONSUMED).exists() => {
                Err(TokenError::AlreadyUsed)
            }
            other => other,
        }
    }

    /// Consumes the token: only the first caller gets `Ok`, every later one `AlreadyUsed`.
    pub fn consume(&self) -> Result<(), TokenError> {
        // rename(2) of the same source succeeds once; the loser finds no source.
        match fs::rename(
            self.dir.join(JOIN_TOKEN),
            self.dir.join(JOIN_TOKEN_CONSUMED),
        ) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(TokenError::AlreadyUsed),
            Err(e) => return Err(TokenError::Io(format!("consuming the join token: {e}"))),
        }
        // The rename must reach the disk before the host acts on it.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The consumed token, which proves the install call of the same enrollment.
    pub fn consumed(&self) -> Result<String, TokenError> {
        match self.read(JOIN_TOKEN_CONSUMED)? {
            t if t.is_empty() => Err(TokenError::AlreadyUsed),
            t => Ok(t),
        }
    }

    /// Forgets the consumed token once the host holds its certificate. The emptied file stays as
    /// the record that this host used its token (a token on the next boot's command line is
    /// then not taken for a new one).
    pub fn finish(&self) -> Result<(), TokenError> {
        fs::write(self.dir.join(JOIN_TOKEN_CONSUMED), b"")
            .map_err(|e| TokenError::Io(format!("forgetting the used join token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store(tag: &str) -> (PathBuf, TokenStore) {
        let dir = std::env::temp_dir().join(format!("ferrymq-token-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(JOIN_TOKEN), "secret\n").expect("write");
        let s = TokenStore::new(&dir);
        (dir, s)
    }

    #[test]
    fn only_tokens_of_128_bits_pass() {
        // The attacker's token, and tokens the old 16-character rule let through.
        for weak in [
            "0000000000001337",
            "00000000000000000000000000001337",
            "0123456789abcdef0123",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "q8T3vR1xZk0pWm5sLd7yH",
            "correct horse battery staple and more",
            "",
            "   ",
        ] {
            assert!(check_strength(weak).is_err(), "{weak:?} passed");
        }
        assert!(matches!(
            check_strength("0123456789abcdef0123"),
            Err(WeakToken::TooShort {
                len: 20,
                bits: 80,
                need: 32,
                ..
            })
        ));
        assert!(matches!(
            check_strength("00000000000000000000000000001337"),
            Err(WeakToken::Repetitive { distinct: 4 })
        ));
        assert_eq!(
            check_strength("pass word with spaces, 1234567890"),
            Err(WeakToken::Alphabet)
        );
        for strong in [
            "3f9a1c07be52d48e6a0f9c2b7d1e5a43", // 32 hex: 128 bits
            "q8T3vR1xZk0pWm5sLd7yHc",           // 22 base64url: 132 bits
            "Zr4k/9Qe+Lm2Xw7Tb0Yc1A==",         // openssl rand -base64 16
            "q8T3vR1xZk0pWm5sLd7yHc2nBf4gJa9e", // the integration tests' token
            &new_token().expect("random"),
        ] {
            assert_eq!(check_strength(strong), Ok(()), "{strong:?}");
        }
    }

    #[test]
    fn new_tokens_are_64_hex_characters_and_differ() {
        let a = new_token().expect("random");
        let b = new_token().expect("random");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_token_is_consumed_once() {
        let (dir, s) = store("once");
        assert_eq!(s.unused().expect("unused"), "secret");
        s.consume().expect("first");
        assert!(matches!(s.consume(), Err(TokenError::AlreadyUsed)));
        assert!(matches!(s.unused(), Err(TokenError::AlreadyUsed)));
        assert_eq!(s.consumed().expect("consumed"), "secret");
        s.finish().expect("finish");
        assert!(matches!(s.unused(), Err(TokenError::AlreadyUsed)));
        assert!(matches!(s.consumed(), Err(TokenError::AlreadyUsed)));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn of_racing_consumers_exactly_one_wins() {
        let (dir, s) = store("race");
        let s = Arc::new(s);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || s.consume().is_ok())
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
