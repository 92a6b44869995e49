//! The join token on disk. `join-token` is unused; consuming it renames it to
//! `join-token.consumed` (atomic: of two racing enrollments exactly one rename succeeds), and only
//! then does the host make a key and answer. The consumed token stays until the certificate is
//! installed (the install call is proven with it) and is deleted then.

use super::{JOIN_TOKEN, JOIN_TOKEN_CONSUMED};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

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
