//! Lock-out of join token guessing. Every wrong proof is counted in `enrollment-lockout` (in the
//! enrollment directory, so an agent restart does not reset it) and slowed by a fixed delay; after
//! [`Policy::max_failures`] wrong proofs the host refuses every attempt, the right token too, for
//! [`Policy::first_lock`], doubled with every further wrong proof up to [`Policy::longest_lock`].
//!
//! Why a growing lock and not a permanent one: anyone who reaches the port can send wrong
//! proofs, and the appliance has no shell login, so a permanent lock would let a stranger brick
//! the enrollment of a VM whose token came on a seed. A lock that doubles up to a day bounds a
//! guesser to a handful of tries a day (nothing against 128 bits) and heals by itself. A new
//! token (a different `join-token`) starts a fresh count at once: the record is kept per token
//! (its SHA-256), so the operator who gives one never waits.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How guessing is slowed and stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wrong proofs allowed before the lock.
    pub max_failures: u32,
    /// The first lock; each further wrong proof doubles it.
    pub first_lock: Duration,
    /// The longest lock.
    pub longest_lock: Duration,
    /// Added to every wrong proof, while the host holds the one enrollment step: attempts from
    /// all connections together go no faster than one per delay.
    pub failure_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_failures: 5,
            first_lock: Duration::from_secs(60),
            longest_lock: Duration::from_secs(24 * 3600),
            failure_delay: Duration::from_secs(1),
        }
    }
}

impl Policy {
    /// The lock after `failures` wrong proofs (none below the limit).
    fn lock_for(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.max_failures)?;
        let factor = 1u32.checked_shl(over).unwrap_or(u32::MAX);
        Some(
            self.first_lock
                .checked_mul(factor)
                .unwrap_or(self.longest_lock)
                .min(self.longest_lock),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockoutError {
    #[error(
        "enrollment of this host is locked after {failures} wrong join token proofs: every \
         attempt, even with the right token, is refused for {} s more. Check the token and the \
         host's bootstrap fingerprint, then try again after the lock; or give the host a new \
         token (`ferrymq-agent pki new-token`), which unlocks it at once",
        .remaining.as_secs().max(1)
    )]
    Locked { failures: u32, remaining: Duration },
    #[error("{0}")]
    Io(String),
}

/// What a wrong proof left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Attempts left before the lock.
    Left(u32),
    /// This failure locked the host for that long.
    Locked(Duration),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// SHA-256 (hex) of the token guessed at: a new token starts a fresh count.
    token_sha256: String,
    failures: u32,
    /// Seconds since the epoch; 0 when not locked.
    locked_until: u64,
}

pub struct Lockout {
    path: PathBuf,
    policy: Policy,
}

fn token_id(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Lockout {
    pub fn new(dir: &Path, policy: Policy) -> Self {
        Lockout {
            path: dir.join(super::LOCKOUT),
            policy,
        }
    }

    pub fn failure_delay(&self) -> Duration {
        self.policy.failure_delay
    }

    /// The record of `token`; a record of another token counts as none.
    fn load(&self, token: &str) -> Result<Record, LockoutError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Record::default()),
            Err(e) => return Err(self.io("reading", e)),
        };
        // Fails closed: an unreadable record is not a fresh start (writes are atomic, so only
        // someone with root on the host can make one).
        let record: Record = serde_json::from_str(&text).map_err(|e| {
            LockoutError::Io(format!(
                "{} is damaged ({e}): remove it to count wrong proofs afresh",
                self.path.display()
            ))
        })?;
        Ok(if record.token_sha256 == token_id(token) {
            record
        } else {
            Record::default()
        })
    }

    fn io(&self, what: &str, e: std::io::Error) -> LockoutError {
        LockoutError::Io(format!("{what} {}: {e}", self.path.display()))
    }

    fn store(&self, record: &Record) -> Result<(), LockoutError> {
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_string(record).map_err(|e| LockoutError::Io(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.io("writing", e))
    }

    /// Refuses while a lock on `token` lasts.
    pub fn check(&self, token: &str, now: SystemTime) -> Result<(), LockoutError> {
        let mut record = self.load(token)?;
        let now = unix(now);
        // A lock ending further away than the longest lock was set by a clock that was ahead (a
        // host just booted, before its time was synchronised): it runs from now instead, so it
        // cannot last until the wrong date comes round.
        if record.locked_until > now.saturating_add(self.policy.longest_lock.as_secs()) {
            let lock = self
                .policy
                .lock_for(record.failures)
                .unwrap_or(self.policy.first_lock);
            record.locked_until = now.saturating_add(lock.as_secs());
            self.store(&record)?;
        }
        if record.failures >= self.policy.max_failures && record.locked_until > now {
            return Err(LockoutError::Locked {
                failures: record.failures,
                remaining: Duration::from_secs(record.locked_until - now),
            });
        }
        Ok(())
    }

    /// Counts a wrong proof against `token`, on disk before the caller answers.
    pub fn failed(&self, token: &str, now: SystemTime) -> Result<AfterFailure, LockoutError> {
        let mut record = self.load(token)?;
        record.token_sha256 = token_id(token);
        record.failures = record.failures.saturating_add(1);
        let after = match self.policy.lock_for(record.failures) {
            Some(lock) => {
                record.locked_until = unix(now).saturating_add(lock.as_secs());
                AfterFailure::Locked(lock)
            }
            None => AfterFailure::Left(self.policy.max_failures - record.failures),
        };
        self.store(&record)?;
        Ok(after)
    }

    /// Forgets the count once the right token was proven.
    pub fn clear(&self) -> Result<(), LockoutError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("removing", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockout(tag: &str) -> (PathBuf, Lockout) {
        let dir =
            std::env::temp_dir().join(format!("ferrymq-lockout-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let l = Lockout::new(&dir, Policy::default());
        (dir, l)
    }

    #[test]
    fn five_wrong_proofs_lock_for_a_minute_and_each_further_one_doubles_the_lock() {
        let (dir, l) = lockout("grow");
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for left in (1..5).rev() {
            l.check("tok", t0).expect("not locked yet");
            assert_eq!(
                l.failed("tok", t0).expect("count"),
                AfterFailure::Left(left)
            );
        }
        assert_eq!(
            l.failed("tok", t0).expect("count"),
            AfterFailure::Locked(Duration::from_secs(60))
        );
        // A fresh reader (an agent restarted) sees the same lock.
        let again = Lockout::new(&dir, Policy::default());
        match again.check("tok", t0 + Duration::from_secs(59)) {
            Err(LockoutError::Locked {
                failures: 5,
                remaining,
            }) => assert_eq!(remaining, Duration::from_secs(1)),
            other => panic!("not locked: {other:?}"),
        }
        again
            .check("tok", t0 + Duration::from_secs(60))
            .expect("lock over");
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(
            again.failed("tok", t1).expect("count"),
            AfterFailure::Locked(Duration::from_secs(120))
        );
        assert!(again.check("tok", t1 + Duration::from_secs(119)).is_err());
        // A new token starts afresh.
        again
            .check("new-token", t1)
            .expect("a new token is not locked");
        assert_eq!(
            again.failed("new-token", t1).expect("count"),
            AfterFailure::Left(4)
        );
        again.clear().expect("clear");
        again.check("tok", t1).expect("cleared");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_lock_stops_growing_at_a_day() {
        let p = Policy::default();
        assert_eq!(p.lock_for(4), None);
        assert_eq!(p.lock_for(6), Some(Duration::from_secs(120)));
        assert_eq!(p.lock_for(20), Some(Duration::from_secs(24 * 3600)));
        assert_eq!(p.lock_for(u32::MAX), Some(Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn a_lock_set_by_a_clock_that_was_ahead_runs_from_now() {
        let (dir, l) = lockout("clock");
        let ahead = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        for _ in 0..5 {
            l.failed("tok", ahead).expect("count");
        }
        // The clock is set back by a year: the lock is a minute from now, not a year.
        let now = ahead - Duration::from_secs(365 * 24 * 3600);
        match l.check("tok", now) {
            Err(LockoutError::Locked { remaining, .. }) => {
                assert_eq!(remaining, Duration::from_secs(60))
            }
            other => panic!("not locked: {other:?}"),
        }
        l.check("tok", now + Duration::from_secs(60))
            .expect("lock over");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_damaged_record_keeps_the_host_locked() {
        let (dir, l) = lockout("damaged");
        fs::write(dir.join(crate::enrollment::LOCKOUT), "{not json").expect("write");
        assert!(matches!(
            l.check("tok", SystemTime::now()),
            Err(LockoutError::Io(_))
        ));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
