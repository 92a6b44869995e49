//! How long the deployment's certificates live, and the `--lifetime` values that change it.
//!
//! The defaults (`pki init`'s `--ca-lifetime 20y`, `--lifetime 365d`) make the offline CA key rare work: the CA outlives any appliance (20 years), the
//! certificates that carry the hosts' and the operator's identities last a year and are renewed
//! by `pki renew` in their last 30 days. Tests pass lifetimes of minutes to watch a renewal.

use std::fmt;
use std::str::FromStr;
use time::Duration;

/// The operator's client certificate, the hosts' agent certificates and broker CAs.
pub const IDENTITY: Duration = Duration::days(365);
/// When status, metrics and `pki renew` start to act on a certificate's end.
pub const WARN_BEFORE: Duration = Duration::days(30);

/// A lifetime given on the command line: a number and a unit, `s`, `m`, `h`, `d` or `y`
/// (365 days), e.g. `20y`, `365d`, `10m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime(pub Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("lifetime {0:?}: expected a positive number and a unit (s, m, h, d, y), e.g. 365d or 10m")]
pub struct LifetimeError(String);

impl FromStr for Lifetime {
    type Err = LifetimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LifetimeError(s.to_string());
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (number, unit) = s.split_at(split);
        let n: i64 = number.parse().map_err(|_| err())?;
        let seconds_per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "y" => 365 * 86_400,
            _ => return Err(err()),
        };
        // Beyond a thousand years a certificate's date no longer fits X.509's GeneralizedTime.
        if n <= 0
            || n.checked_mul(seconds_per)
                .is_none_or(|t| t > 1_000 * 365 * 86_400)
        {
            return Err(err());
        }
        Ok(Lifetime(Duration::seconds(n * seconds_per)))
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.whole_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_with_their_unit() {
        assert_eq!("20y".parse(), Ok(Lifetime(Duration::days(7300))));
        assert_eq!("365d".parse(), Ok(Lifetime(Duration::days(365))));
        assert_eq!("10m".parse(), Ok(Lifetime(Duration::minutes(10))));
        assert_eq!("90s".parse(), Ok(Lifetime(Duration::seconds(90))));
        for bad in [
            "",
            "10",
            "d",
            "0d",
            "-1d",
            "10w",
            "1.5d",
            "99999999999999999y",
            "2000y",
        ] {
            assert!(bad.parse::<Lifetime>().is_err(), "{bad}");
        }
    }
}
