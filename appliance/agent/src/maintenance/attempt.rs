//! A roll-out step that does not come back healthy: how long a host gives a change to serve,
//! and the record that keeps the change rolled back until the next window.
//!
//! Without it a change whose engine never serves (a configuration the engine refuses at start,
//! say) would keep the host down for the rest of the window — up to two hours — with the other
//! hosts holding their turns behind it. So a host that has applied a change and does not serve
//! within the roll-back deadline puts the values it ran before back, records the failure in its
//! maintenance history and leaves the change pending: the roll-out stops there (its peers wait
//! for it, as it still has work pending), and the change is tried again in the next window.
//! Under `apply_immediately` it waits for a new desired value or for the window.
//!
//! Kept on disk, so a restarted agent neither forgets the deadline nor retries in the same window.

use super::gate::Gated;
use super::turn::Turn;
use anyhow::Result;
use chrono::{DateTime, Utc};
use std::path::Path;
use std::time::Duration;

const FILE: &str = "roll-attempt.json";

/// How long a host gives a change to serve before it rolls back, unless the agent is told
/// otherwise (`--rollback-after`): an engine on an emulated appliance takes a minute or two to
/// start, one on a real host seconds.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

/// One try at applying a set of window-bound values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    turn: Turn,
    /// The window the try was made in (its start), `None` under `apply_immediately`.
    window: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    /// The changes, as reported (`engine_version: 5.17.2 -> 5.17.6`).
    changes: Vec<String>,
    /// When it was given up and rolled back.
    rolled_back: Option<DateTime<Utc>>,
}

/// What became of the try after a pass that did not serve.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// Still within the deadline.
    Waiting,
    /// The deadline passed: roll back; the text says what and why, for the history and the log.
    RollBack(String),
}

impl Attempt {
    /// The try `gated` stands for: its values, and the window it applies in.
    fn of(gated: &Gated, now: DateTime<Utc>) -> Attempt {
        Attempt {
            turn: Turn::for_spec(&gated.spec).on_image(&gated.image),
            window: gated.in_window.then_some(gated.current_or_next.start),
            started: now,
            changes: gated.applying.iter().map(ToString::to_string).collect(),
            rolled_back: None,
        }
    }

    fn same_try(&self, other: &Attempt) -> bool {
        self.turn == other.turn && self.window == other.window
    }

    fn load(broker_dir: &Path) -> Option<Attempt> {
        let bytes = std::fs::read(broker_dir.join(FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, broker_dir: &Path) -> Result<()> {
        crate::store::write_atomically(&broker_dir.join(FILE), &serde_json::to_vec_pretty(self)?)
    }

    /// Why `gated`'s changes must not be applied now: the same values were rolled back in this
    /// same window (or under the same `apply_immediately`).
    pub fn rolled_back_before(broker_dir: &Path, gated: &Gated) -> Option<String> {
        let past = Attempt::load(broker_dir)?;
        let at = past.rolled_back?;
        past.same_try(&Attempt::of(gated, at)).then(|| {
            format!(
                "rolled back at {}: {} did not serve within the deadline; {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                past.changes.join(", "),
                if past.window.is_some() {
                    "it is tried again in the next maintenance window"
                } else {
                    "it is tried again in the maintenance window"
                }
            )
        })
    }

    /// Notes a pass that applied `gated`'s changes and did not serve: the first such pass starts
    /// the clock, and one past `deadline` gives the try up (recorded, so it is not retried in
    /// this window).
    pub fn not_serving(
        broker_dir: &Path,
        gated: &Gated,
        deadline: Duration,
        now: DateTime<Utc>,
    ) -> Result<Progress> {
        let this = Attempt::of(gated, now);
        let mut attempt = match Attempt::load(broker_dir) {
            Some(past) if past.same_try(&this) && past.rolled_back.is_none() => past,
            _ => {
                this.save(broker_dir)?;
                return Ok(Progress::Waiting);
            }
        };
        let waited = (now - attempt.started).to_std().unwrap_or_default();
        if waited < deadline {
            return Ok(Progress::Waiting);
        }
        attempt.rolled_back = Some(now);
        attempt.save(broker_dir)?;
        Ok(Progress::RollBack(format!(
            "rolled back: {} did not serve within {} s",
            attempt.changes.join(", "),
            deadline.as_secs()
        )))
    }

    /// The changes served: the try is over.
    pub fn served(broker_dir: &Path) -> Result<()> {
        crate::store::remove_if_present(&broker_dir.join(FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::{gate, AppliedRecord};
    use ferrymq_api::agent::{BrokerSpec, MaintenanceWindow};

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn upgrade() -> (BrokerSpec, AppliedRecord) {
        let desired = BrokerSpec {
            broker_id: "b-1".into(),
            engine_type: "ActiveMQ".into(),
            host_instance_type: "mq.m5.large".into(),
            engine_version: "5.17.6".into(),
            maintenance_window: Some(MaintenanceWindow {
                day_of_week: "SUNDAY".into(),
                time_of_day: "02:00".into(),
                time_zone: "UTC".into(),
            }),
            ..Default::default()
        };
        let running = AppliedRecord {
            host_instance_type: "mq.m5.large".into(),
            engine_version: "5.17.2".into(),
            ..Default::default()
        };
        (desired, running)
    }

    fn dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferrymq-attempt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_change_that_does_not_serve_is_rolled_back_after_the_deadline_and_held_in_that_window() {
        let dir = dir("deadline");
        let (desired, running) = upgrade();
        let deadline = Duration::from_secs(60);
        let t0 = utc("2026-11-22T02:05:00Z");
        let g = gate(&desired, Some(&running), t0);
        assert!(!g.applying.is_empty());
        assert_eq!(Attempt::rolled_back_before(&dir, &g), None);
        let progress = |at: &str| {
            let now = utc(at);
            Attempt::not_serving(&dir, &gate(&desired, Some(&running), now), deadline, now)
                .expect("note")
        };
        assert_eq!(progress("2026-11-22T02:05:00Z"), Progress::Waiting);
        assert_eq!(progress("2026-11-22T02:05:59Z"), Progress::Waiting);
        let Progress::RollBack(why) = progress("2026-11-22T02:06:01Z") else {
            panic!("not rolled back after the deadline");
        };
        assert!(
            why.contains("engine_version: 5.17.2 -> 5.17.6") && why.contains("60 s"),
            "{why}"
        );
        // Held for the rest of this window, across reloads ...
        let later = gate(&desired, Some(&running), utc("2026-11-22T03:30:00Z"));
        let held = Attempt::rolled_back_before(&dir, &later).expect("held");
        assert!(held.contains("next maintenance window"), "{held}");
        // ... tried again in the next one, and forgotten once it serves.
        let next = gate(&desired, Some(&running), utc("2026-11-29T02:01:00Z"));
        assert_eq!(Attempt::rolled_back_before(&dir, &next), None);
        Attempt::served(&dir).expect("served");
        Attempt::served(&dir).expect("served twice");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn another_target_starts_a_new_clock() {
        let dir = dir("target");
        let (mut desired, running) = upgrade();
        let deadline = Duration::from_secs(60);
        let t0 = utc("2026-11-22T02:05:00Z");
        let t1 = utc("2026-11-22T02:07:00Z");
        assert_eq!(
            Attempt::not_serving(&dir, &gate(&desired, Some(&running), t0), deadline, t0)
                .expect("note"),
            Progress::Waiting
        );
        desired.host_instance_type = "mq.m5.xlarge".into();
        assert_eq!(
            Attempt::not_serving(&dir, &gate(&desired, Some(&running), t1), deadline, t1)
                .expect("note"),
            Progress::Waiting
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
