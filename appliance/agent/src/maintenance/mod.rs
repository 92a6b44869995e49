//! Maintenance windows on the host: which applied changes wait for the broker's weekly window,
//! and the record of what the host runs now and what past windows did.
//!
//! Amazon MQ applies a new instance type or engine version in the broker's maintenance window
//! unless the user asks for `apply_immediately`; everything else (users, say) applies at once.
//! The agent keeps that promise by itself: Terraform stores the desired spec and returns, and
//! the reconciler converges to the *gated* spec — the desired one with the window-bound fields
//! held at the values the host runs — until the window opens.

mod gate;
mod peers;
mod record;
mod roll;

pub use gate::gate;
pub use peers::Peers;
pub use record::AppliedRecord;
pub use roll::may_go;

/// Whether a restart-requiring change that is not held in the spec's window-bound fields (a new
/// configuration revision) may be carried out now: with `apply_immediately`, or while the
/// broker's window is open.
pub fn may_restart_now(spec: &ferrymq_api::agent::BrokerSpec) -> bool {
    spec.apply_immediately || gate::window_of(spec).is_open(chrono::Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_api::agent::{BrokerSpec, MaintenanceWindow};

    #[test]
    fn restarts_wait_unless_applied_immediately_or_in_the_window() {
        let now = chrono::Utc::now();
        // A window that opened a minute ago (UTC), and one that opens in three days.
        let window = |at: chrono::DateTime<chrono::Utc>| MaintenanceWindow {
            day_of_week: ferrymq_api::window::day_name(chrono::Datelike::weekday(&at)).into(),
            time_of_day: at.format("%H:%M").to_string(),
            time_zone: "UTC".into(),
        };
        let mut spec = BrokerSpec {
            maintenance_window: Some(window(now + chrono::TimeDelta::days(3))),
            ..Default::default()
        };
        assert!(!may_restart_now(&spec));
        spec.apply_immediately = true;
        assert!(may_restart_now(&spec));
        spec.apply_immediately = false;
        spec.maintenance_window = Some(window(now - chrono::TimeDelta::minutes(1)));
        assert!(may_restart_now(&spec));
    }
}
