//! Weekly maintenance windows, as Amazon MQ defines them: a start (day of week, `HH:MM`, time
//! zone) and a fixed length of two hours.
//!
//! The provider validates the window at plan time and the agents decide on their own clocks
//! whether pending work may run now, so both must compute the same instants. The arithmetic is
//! therefore here, next to the catalogue, and it works in the window's own time zone: a window
//! set for "Sunday 02:30 Europe/Berlin" follows Berlin's daylight-saving changes, as a user who
//! picked a quiet local hour expects.
//!
//! Daylight-saving edge cases are settled once, here:
//! - a start time that does not exist on a given day (the hour skipped in spring) starts the
//!   window at the first instant after the gap, so the week still has its window;
//! - a start time that happens twice (the hour repeated in autumn) starts at its first
//!   occurrence, so the window is never entered twice in one week.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime,
    TimeDelta, TimeZone, Utc, Weekday,
};

/// How long a window lasts; Amazon MQ's windows are two hours.
pub const WINDOW_LENGTH: TimeDelta = TimeDelta::hours(2);

/// The time zone of a window: an IANA name or a fixed UTC offset (`UTC`, `UTC+05:30`, `-08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowZone {
    Named(chrono_tz::Tz),
    Offset(FixedOffset),
}

impl WindowZone {
    /// The zone used when the user gives none, as in Amazon MQ.
    pub const UTC: WindowZone = WindowZone::Named(chrono_tz::UTC);

    /// Parses an IANA name (`Europe/Berlin`) or a UTC offset (`UTC`, `UTC+2`, `UTC-08:00`,
    /// `+05:30`). An empty string is UTC.
    pub fn parse(value: &str) -> Result<Self, String> {
        let text = value.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("UTC") || text.eq_ignore_ascii_case("GMT") {
            return Ok(Self::UTC);
        }
        if let Some(offset) = parse_offset(text) {
            return Ok(Self::Offset(offset));
        }
        chrono_tz::Tz::from_str(text).map(Self::Named).map_err(|_| {
            format!(
                "{value:?} is not a time zone: use an IANA name such as \"Europe/Berlin\" or a \
                 UTC offset such as \"UTC+02:00\""
            )
        })
    }

    /// The instant that `local` on this zone's wall clock means, settling gaps and folds as the
    /// module documentation says.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self {
            Self::Offset(offset) => resolve(offset, local),
            Self::Named(zone) => resolve(zone, local),
        }
    }

    /// The wall-clock date of `at` in this zone.
    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        match self {
            Self::Offset(offset) => at.with_timezone(offset).date_naive(),
            Self::Named(zone) => at.with_timezone(zone).date_naive(),
        }
    }
}

impl fmt::Display for WindowZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Named(zone) => f.write_str(zone.name()),
            Self::Offset(offset) => write!(f, "UTC{offset}"),
        }
    }
}

/// `local` in `zone`, moving a non-existent time past the gap and taking the first of two.
fn resolve<Z: TimeZone>(zone: &Z, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a few hours in any real zone; walk forward a minute at a time to
            // the first wall-clock time that exists, which is where the gap ends.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += TimeDelta::minutes(1);
                if let Some(at) = zone.from_local_datetime(&probe).earliest() {
                    return at.with_timezone(&Utc);
                }
            }
            // No zone has a day-long gap; fall back to reading the time as UTC.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// `UTC`, `GMT`, `UTC+2`, `UTC-08:00`, `+05:30`, `-0800`.
fn parse_offset(text: &str) -> Option<FixedOffset> {
    let upper = text.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    if rest.is_empty() {
        return (upper == "UTC" || upper == "GMT").then(|| FixedOffset::east_opt(0))?;
    }
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let (hours, minutes) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    if hours.is_empty() || hours.len() > 2 || minutes.len() > 2 {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// The weekly start of a maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStart {
    pub day_of_week: Weekday,
    pub time_of_day: NaiveTime,
    pub time_zone: WindowZone,
}

/// One occurrence of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

impl WindowStart {
    /// Parses the three attributes of `maintenance_window_start_time`. Each error names the
    /// attribute it is about, so the provider can put it on that attribute's path.
    pub fn parse(
        day_of_week: &str,
        time_of_day: &str,
        time_zone: &str,
    ) -> Result<Self, WindowError> {
        let day_of_week = parse_day(day_of_week).ok_or_else(|| WindowError {
            attribute: "day_of_week",
            message: format!(
                "{day_of_week:?} is not a day of the week: use MONDAY, TUESDAY, WEDNESDAY, \
                 THURSDAY, FRIDAY, SATURDAY or SUNDAY"
            ),
        })?;
        let time_of_day = parse_time(time_of_day).ok_or_else(|| WindowError {
            attribute: "time_of_day",
            message: format!(
                "{time_of_day:?} is not a time of day: use 24-hour HH:MM, such as \"02:30\""
            ),
        })?;
        let time_zone = WindowZone::parse(time_zone).map_err(|message| WindowError {
            attribute: "time_zone",
            message,
        })?;
        Ok(Self {
            day_of_week,
            time_of_day,
            time_zone,
        })
    }

    /// The window FerryMQ picks for a broker whose configuration names none, as Amazon MQ picks
    /// one for you. It is derived from the broker id alone so that every agent of the broker
    /// (and the provider reporting it) arrives at the same window without talking to each other,
    /// and brokers of one deployment spread over the week rather than all restarting together.
    pub fn default_for(broker_id: &str) -> Self {
        // FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in broker_id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let day = Weekday::try_from((hash % 7) as u8).unwrap_or(Weekday::Sun);
        // Half-hour steps in the quiet hours 00:00-05:30 UTC.
        let slot = (hash / 7) % 12;
        let time_of_day = NaiveTime::from_hms_opt((slot / 2) as u32, ((slot % 2) * 30) as u32, 0)
            .unwrap_or(NaiveTime::MIN);
        Self {
            day_of_week: day,
            time_of_day,
            time_zone: WindowZone::UTC,
        }
    }

    /// The window open at `now`, or else the next one to open.
    pub fn current_or_next(&self, now: DateTime<Utc>) -> Window {
        self.occurrences_around(now)
            .find(|window| now < window.end)
            .unwrap_or_else(|| self.window_on(self.time_zone.local_date(now) + Days::new(7)))
    }

    /// The next window that opens strictly after `now` (the one after the current, if open).
    pub fn next_after(&self, now: DateTime<Utc>) -> Window {
        self.occurrences_around(now)
            .find(|window| now < window.start)
            .unwrap_or_else(|| self.window_on(self.time_zone.local_date(now) + Days::new(14)))
    }

    /// Whether pending work may run at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.current_or_next(now).contains(now)
    }

    /// The occurrences from a week before `now`'s local date to two weeks after, in order.
    fn occurrences_around(&self, now: DateTime<Utc>) -> impl Iterator<Item = Window> + '_ {
        let today = self.time_zone.local_date(now);
        let first = today - Days::new(7);
        (0..22u64)
            .map(move |offset| first + Days::new(offset))
            .filter(|date| date.weekday() == self.day_of_week)
            .map(|date| self.window_on(date))
    }

    fn window_on(&self, date: NaiveDate) -> Window {
        let start = self.time_zone.instant(date.and_time(self.time_of_day));
        Window {
            start,
            end: start + WINDOW_LENGTH,
        }
    }
}

impl fmt::Display for WindowStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            day_name(self.day_of_week),
            self.time_of_day.format("%H:%M"),
            self.time_zone
        )
    }
}

/// A window attribute that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {message}")]
pub struct WindowError {
    /// `day_of_week`, `time_of_day` or `time_zone`.
    pub attribute: &'static str,
    pub message: String,
}

/// Amazon MQ's spelling of a day: `MONDAY` … `SUNDAY` (case-insensitive here).
pub fn day_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "MONDAY",
        Weekday::Tue => "TUESDAY",
        Weekday::Wed => "WEDNESDAY",
        Weekday::Thu => "THURSDAY",
        Weekday::Fri => "FRIDAY",
        Weekday::Sat => "SATURDAY",
        Weekday::Sun => "SUNDAY",
    }
}

fn parse_day(value: &str) -> Option<Weekday> {
    let upper = value.trim().to_ascii_uppercase();
    [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ]
    .into_iter()
    .find(|day| day_name(*day) == upper)
}

/// Strictly `HH:MM` on a 24-hour clock, as Amazon MQ takes it.
fn parse_time(value: &str) -> Option<NaiveTime> {
    let (hours, minutes) = value.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(hours.parse().ok()?, minutes.parse().ok()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn next_window_in_utc() {
        let window = WindowStart::parse("SUNDAY", "02:00", "UTC").unwrap();
        // Wednesday 2026-11-18 → Sunday 2026-11-22 02:00.
        let next = window.current_or_next(utc("2026-11-18T10:00:00Z"));
        assert_eq!(next.start, utc("2026-11-22T02:00:00Z"));
        assert_eq!(next.end, utc("2026-11-22T04:00:00Z"));
        assert!(!window.is_open(utc("2026-11-18T10:00:00Z")));
    }

    #[test]
    fn inside_the_window_it_is_open_until_two_hours_later() {
        let window = WindowStart::parse("sunday", "02:00", "").unwrap();
        assert!(window.is_open(utc("2026-11-22T02:00:00Z")));
        assert!(window.is_open(utc("2026-11-22T03:59:59Z")));
        assert!(!window.is_open(utc("2026-11-22T04:00:00Z")));
        assert_eq!(
            window.current_or_next(utc("2026-11-22T03:00:00Z")).start,
            utc("2026-11-22T02:00:00Z")
        );
        assert_eq!(
            window.next_after(utc("2026-11-22T03:00:00Z")).start,
            utc("2026-11-29T02:00:00Z")
        );
        // Right after the end, the next one is a week later.
        assert_eq!(
            window.current_or_next(utc("2026-11-22T04:00:00Z")).start,
            utc("2026-11-29T02:00:00Z")
        );
    }

    #[test]
    fn a_named_zone_follows_daylight_saving_time() {
        let window = WindowStart::parse("MONDAY", "09:00", "America/New_York").unwrap();
        // Summer (EDT, UTC-4) and winter (EST, UTC-5).
        assert_eq!(
            window.current_or_next(utc("2026-07-01T00:00:00Z")).start,
            utc("2026-07-06T13:00:00Z")
        );
        assert_eq!(
            window.current_or_next(utc("2026-12-01T00:00:00Z")).start,
            utc("2026-12-07T14:00:00Z")
        );
    }

    #[test]
    fn a_start_in_the_spring_gap_opens_when_the_gap_ends() {
        // Europe/Berlin skips 02:00-03:00 on Sunday 2026-03-29.
        let window = WindowStart::parse("SUNDAY", "02:30", "Europe/Berlin").unwrap();
        let next = window.current_or_next(utc("2026-03-28T12:00:00Z"));
        // 03:00 CEST = 01:00 UTC.
        assert_eq!(next.start, utc("2026-03-29T01:00:00Z"));
        assert_eq!(next.end - next.start, WINDOW_LENGTH);
    }

    #[test]
    fn a_start_in_the_autumn_fold_opens_at_its_first_occurrence() {
        // Europe/Berlin repeats 02:00-03:00 on Sunday 2026-10-25; the first 02:30 is CEST.
        let window = WindowStart::parse("SUNDAY", "02:30", "Europe/Berlin").unwrap();
        let next = window.current_or_next(utc("2026-10-24T12:00:00Z"));
        assert_eq!(next.start, utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn offsets_are_fixed() {
        let window = WindowStart::parse("FRIDAY", "23:30", "UTC+05:30").unwrap();
        assert_eq!(
            window.current_or_next(utc("2026-11-18T00:00:00Z")).start,
            utc("2026-11-20T18:00:00Z")
        );
        for zone in [
            "UTC",
            "GMT",
            "utc-8",
            "UTC-08:00",
            "+0530",
            "-03:00",
            "UTC+14",
        ] {
            assert!(WindowZone::parse(zone).is_ok(), "{zone}");
        }
        for zone in ["UTC+15", "+5:61", "Mars/Olympus", "UTC+", "12:00"] {
            assert!(WindowZone::parse(zone).is_err(), "{zone}");
        }
    }

    #[test]
    fn a_window_crossing_the_week_boundary_is_found_from_the_next_day() {
        let window = WindowStart::parse("SUNDAY", "23:00", "UTC").unwrap();
        // Monday 00:30 is inside Sunday's window.
        assert!(window.is_open(utc("2026-11-23T00:30:00Z")));
    }

    #[test]
    fn errors_name_the_attribute_and_the_value() {
        let err = WindowStart::parse("Funday", "02:00", "UTC").unwrap_err();
        assert_eq!(err.attribute, "day_of_week");
        assert!(err.message.contains("Funday"));
        for bad in ["2:00", "24:00", "02:60", "0200", "02:00:00", ""] {
            let err = WindowStart::parse("MONDAY", bad, "UTC").unwrap_err();
            assert_eq!(err.attribute, "time_of_day", "{bad}");
        }
        let err = WindowStart::parse("MONDAY", "02:00", "Europe/Bern").unwrap_err();
        assert_eq!(err.attribute, "time_zone");
        assert!(err.message.contains("Europe/Bern"));
    }

    #[test]
    fn the_default_window_is_stable_and_spread() {
        let a = WindowStart::default_for("b-1234");
        assert_eq!(a, WindowStart::default_for("b-1234"));
        assert!(a.time_of_day < NaiveTime::from_hms_opt(6, 0, 0).unwrap());
        let days: std::collections::HashSet<_> = (0..50)
            .map(|n| WindowStart::default_for(&format!("b-{n}")).day_of_week)
            .collect();
        assert!(
            days.len() > 3,
            "default windows should spread over the week"
        );
    }

    #[test]
    fn display_round_trips() {
        let window = WindowStart::parse("tuesday", "04:15", "Asia/Tokyo").unwrap();
        assert_eq!(window.to_string(), "TUESDAY 04:15 Asia/Tokyo");
    }
}
