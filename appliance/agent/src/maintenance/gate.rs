//! The decision, at one instant, of what the host converges to.

use super::record::AppliedRecord;
use chrono::{DateTime, SecondsFormat, Utc};
use ferrymq_api::agent::{BrokerSpec, BrokerStatus, ConfigurationRef};
use ferrymq_api::catalogue::{self, EngineType};
use ferrymq_api::window::{Window, WindowStart};
use std::fmt;

/// A difference between the desired spec and what the host runs, in a window-bound field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// The Terraform attribute, e.g. `host_instance_type`.
    pub attribute: &'static str,
    pub from: String,
    pub to: String,
}

impl fmt::Display for PendingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.attribute, self.from, self.to)
    }
}

/// What to converge to now, and why.
#[derive(Debug, Clone)]
pub struct Gated {
    /// The desired spec with the window-bound fields still waiting held at the running values.
    pub spec: BrokerSpec,
    /// Changes that wait for the window.
    pub pending: Vec<PendingChange>,
    /// Changes this pass starts applying (the window is open, or `apply_immediately`).
    pub applying: Vec<PendingChange>,
    /// Whether the changes being applied are applied because the window is open.
    pub in_window: bool,
    pub window: WindowStart,
    /// The window now open, or the next one.
    pub current_or_next: Window,
    /// The configuration revision the host runs, to hold a new one back with.
    running_configuration: Option<ConfigurationRef>,
    /// The appliance image the host is to run after this pass (see `with_image`).
    pub image: String,
    /// Whether window-bound changes may apply now (the window is open, or `apply_immediately`).
    may_apply: bool,
}

impl Gated {
    /// Reports the window and the pending work in the broker's status.
    pub fn report(&self, status: &mut BrokerStatus) {
        status.maintenance_window = self.window.to_string();
        status.next_maintenance_window = self
            .current_or_next
            .start
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        // After what the engine reported itself (a configuration revision waiting).
        status
            .pending_changes
            .extend(self.pending.iter().map(ToString::to_string));
        status.pending_engine_version = self
            .pending
            .iter()
            .find(|c| c.attribute == "engine_version")
            .map(|c| c.to.clone())
            .unwrap_or_default();
    }
}

impl Gated {
    /// Takes back the changes this pass was about to apply: another instance goes first.
    pub fn hold(&mut self) {
        for change in self.applying.drain(..) {
            match change.attribute {
                "host_instance_type" => self.spec.host_instance_type = change.from.clone(),
                "engine_version" => self.spec.engine_version = change.from.clone(),
                CONFIGURATION => self.spec.configuration = self.running_configuration.clone(),
                REBOOT => self.spec.reboot_id = change.from.clone(),
                IMAGE => self.image = change.from.clone(),
                _ => {}
            }
            self.pending.push(change);
        }
    }
}

/// The attribute of a configuration revision change (`configuration { id, revision }`).
const CONFIGURATION: &str = "configuration";

/// The attribute of an asked-for reboot (RebootBroker).
pub(super) const REBOOT: &str = "reboot";

/// The attribute of an appliance image change (`ferrymq-agent image stage`).
pub(super) const IMAGE: &str = "image";

/// How a configuration reference reads in a change: `c-… revision 2`, or `none`.
fn describe(c: &Option<ConfigurationRef>) -> String {
    match c {
        Some(c) => format!("{} revision {}", c.id, c.revision),
        None => "none".into(),
    }
}

/// The broker's window: the one in the spec (validated on apply), else the one FerryMQ picks.
pub fn window_of(spec: &BrokerSpec) -> WindowStart {
    spec.maintenance_window
        .as_ref()
        .and_then(|w| WindowStart::parse(&w.day_of_week, &w.time_of_day, &w.time_zone).ok())
        .unwrap_or_else(|| WindowStart::default_for(&spec.broker_id))
}

/// Holds each window-bound field of `desired` at the value the host runs (`applied`) unless the
/// window is open at `now` or the user asked for `apply_immediately`. A broker the host has
/// never run (no record) takes the desired spec whole: there is nothing to keep available.
pub fn gate(desired: &BrokerSpec, applied: Option<&AppliedRecord>, now: DateTime<Utc>) -> Gated {
    let window = window_of(desired);
    let current_or_next = window.current_or_next(now);
    let in_window = current_or_next.contains(now);
    let mut gated = Gated {
        spec: desired.clone(),
        pending: Vec::new(),
        applying: Vec::new(),
        in_window: in_window && !desired.apply_immediately,
        window,
        current_or_next,
        running_configuration: applied.and_then(|a| a.configuration.clone()),
        image: String::new(),
        may_apply: desired.apply_immediately || in_window,
    };
    let Some(applied) = applied else {
        return gated;
    };
    // auto_minor_version_upgrade: the spec's version stands for its newest patch, and a later
    // patch the host already runs (an earlier window's upgrade) satisfies it.
    if desired.auto_minor_version_upgrade {
        if let Ok(engine) = desired.engine_type.parse::<EngineType>() {
            let wanted = desired.engine_version.as_str();
            let base = if catalogue::patch_of(engine, wanted, &applied.engine_version) {
                applied.engine_version.as_str()
            } else {
                wanted
            };
            gated.spec.engine_version = catalogue::newest_patch(engine, base)
                .unwrap_or(base)
                .to_string();
        }
    }
    let may_apply = desired.apply_immediately || in_window;
    let fields: [(&'static str, &str, &mut String); 2] = [
        (
            "host_instance_type",
            applied.host_instance_type.as_str(),
            &mut gated.spec.host_instance_type,
        ),
        (
            "engine_version",
            applied.engine_version.as_str(),
            &mut gated.spec.engine_version,
        ),
    ];
    for (attribute, running, field) in fields {
        if running.is_empty() || running == field.as_str() {
            continue;
        }
        let change = PendingChange {
            attribute,
            from: running.to_string(),
            to: field.clone(),
        };
        if may_apply {
            gated.applying.push(change);
        } else {
            *field = running.to_string();
            gated.pending.push(change);
        }
    }
    // A new configuration revision restarts the engine (both engines read it only at start).
    if applied.configuration != desired.configuration {
        let change = PendingChange {
            attribute: CONFIGURATION,
            from: describe(&applied.configuration),
            to: describe(&desired.configuration),
        };
        if may_apply {
            gated.applying.push(change);
        } else {
            gated.spec.configuration = applied.configuration.clone();
            gated.pending.push(change);
        }
    }
    // A reboot is asked for now (it is an operation, not a change waiting for the window), and
    // takes its turn like any other restart.
    if !desired.reboot_id.is_empty() && applied.reboot_id != desired.reboot_id {
        gated.applying.push(PendingChange {
            attribute: REBOOT,
            from: applied.reboot_id.clone(),
            to: desired.reboot_id.clone(),
        });
    }
    gated
}

impl Gated {
    /// Adds the host's appliance image: a staged image (`staged`) replaces the one the broker
    /// last served on (`applied`, else the one `running`) when window-bound changes may apply,
    /// and is pending until then. `image` is then the image the host is to run.
    pub fn with_image(
        mut self,
        applied: Option<&AppliedRecord>,
        running: &str,
        staged: Option<&str>,
    ) -> Self {
        let served_on = applied
            .map(|a| a.image.as_str())
            .filter(|i| !i.is_empty())
            .unwrap_or(running);
        let wanted = staged.unwrap_or(running);
        if applied.is_none() || wanted == served_on {
            // A broker the host has never run starts on the image the host runs.
            self.image = running.to_string();
            return self;
        }
        let change = PendingChange {
            attribute: IMAGE,
            from: served_on.to_string(),
            to: wanted.to_string(),
        };
        if self.may_apply {
            self.image = wanted.to_string();
            self.applying.push(change);
        } else {
            self.image = served_on.to_string();
            self.pending.push(change);
        }
        self
    }

    /// Whether this pass applies an image change.
    pub fn switching_image(&self) -> bool {
        self.applying.iter().any(|c| c.attribute == IMAGE)
    }

    /// Whether this pass restarts the engine for an asked-for reboot.
    pub fn rebooting(&self) -> bool {
        self.applying.iter().any(|c| c.attribute == REBOOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrymq_api::agent::MaintenanceWindow;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn desired() -> BrokerSpec {
        BrokerSpec {
            broker_id: "b-1".into(),
            host_instance_type: "mq.t3.micro".into(),
            engine_version: "3.10.8".into(),
            maintenance_window: Some(MaintenanceWindow {
                day_of_week: "SUNDAY".into(),
                time_of_day: "02:00".into(),
                time_zone: "UTC".into(),
            }),
            ..Default::default()
        }
    }

    fn running_large() -> AppliedRecord {
        AppliedRecord {
            host_instance_type: "mq.m5.large".into(),
            engine_version: "3.10.8".into(),
            ..Default::default()
        }
    }

    #[test]
    fn automatic_minor_upgrades_wait_for_the_window_and_stay_applied() {
        let mut want = desired();
        want.engine_type = "ActiveMQ".into();
        want.engine_version = "5.17.2".into();
        want.host_instance_type = "mq.m5.large".into();
        want.auto_minor_version_upgrade = true;
        let on = |v: &str| AppliedRecord {
            engine_version: v.into(),
            ..running_large()
        };
        // Outside the window the newest patch is pending; inside it applies.
        let g = gate(&want, Some(&on("5.17.2")), utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec.engine_version, "5.17.2");
        assert_eq!(g.pending[0].to_string(), "engine_version: 5.17.2 -> 5.17.6");
        let g = gate(&want, Some(&on("5.17.2")), utc("2026-11-22T02:30:00Z"));
        assert_eq!(g.spec.engine_version, "5.17.6");
        assert_eq!(g.applying.len(), 1);
        // Once upgraded, the spec's 5.17.2 is satisfied: nothing pending, no downgrade.
        let g = gate(&want, Some(&on("5.17.6")), utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec.engine_version, "5.17.6");
        assert!(g.pending.is_empty() && g.applying.is_empty());
        // Without the flag the spec's version is kept as it is.
        want.auto_minor_version_upgrade = false;
        let g = gate(&want, Some(&on("5.17.2")), utc("2026-11-22T02:30:00Z"));
        assert_eq!(g.spec.engine_version, "5.17.2");
        assert!(g.applying.is_empty());
    }

    #[test]
    fn a_staged_image_waits_for_the_window_and_can_be_held() {
        let on = |image: &str| AppliedRecord {
            image: image.into(),
            ..running_large()
        };
        let mut want = desired();
        want.host_instance_type = "mq.m5.large".into();
        // Outside the window: pending, the host stays on the image it runs.
        let g = gate(&want, Some(&on("factory")), utc("2026-11-18T10:00:00Z")).with_image(
            Some(&on("factory")),
            "factory",
            Some("2026.11.2"),
        );
        assert_eq!(g.pending[0].to_string(), "image: factory -> 2026.11.2");
        assert_eq!(g.image, "factory");
        assert!(!g.switching_image());
        // In the window: applying, and the turn is for the new image.
        let mut g = gate(&want, Some(&on("factory")), utc("2026-11-22T02:30:00Z")).with_image(
            Some(&on("factory")),
            "factory",
            Some("2026.11.2"),
        );
        assert!(g.switching_image() && g.image == "2026.11.2");
        g.hold();
        assert_eq!(g.image, "factory");
        // On the new image, before it served on it: still applying (the engine restarts once).
        let g = gate(&want, Some(&on("factory")), utc("2026-11-22T02:31:00Z")).with_image(
            Some(&on("factory")),
            "2026.11.2",
            None,
        );
        assert!(g.switching_image() && g.image == "2026.11.2");
        // Served on it: nothing left; a broker new to the host takes the running image.
        let g = gate(&want, Some(&on("2026.11.2")), utc("2026-11-18T10:00:00Z")).with_image(
            Some(&on("2026.11.2")),
            "2026.11.2",
            None,
        );
        assert!(g.pending.is_empty() && g.applying.is_empty());
        let g = gate(&want, None, utc("2026-11-18T10:00:00Z")).with_image(None, "2026.11.2", None);
        assert_eq!(g.image, "2026.11.2");
    }

    #[test]
    fn a_reboot_goes_now_once_and_can_be_held() {
        let mut want = desired();
        want.host_instance_type = "mq.m5.large".into();
        want.reboot_id = "r-1".into();
        let mut g = gate(&want, Some(&running_large()), utc("2026-11-18T10:00:00Z"));
        assert!(g.rebooting());
        assert_eq!(g.applying[0].to_string(), "reboot:  -> r-1");
        g.hold();
        assert!(!g.rebooting() && g.spec.reboot_id.is_empty());
        let done = AppliedRecord {
            reboot_id: "r-1".into(),
            ..running_large()
        };
        let g = gate(&want, Some(&done), utc("2026-11-18T10:00:00Z"));
        assert!(!g.rebooting() && g.applying.is_empty() && g.pending.is_empty());
    }

    #[test]
    fn a_new_configuration_revision_waits_for_the_window_and_can_be_held() {
        let revision = |n: u32| ConfigurationRef {
            id: "c-1".into(),
            revision: n,
            data: format!("heartbeat = {n}\n"),
        };
        let mut want = desired();
        want.host_instance_type = "mq.m5.large".into();
        want.configuration = Some(revision(2));
        let running = AppliedRecord {
            configuration: Some(revision(1)),
            ..running_large()
        };
        // Outside the window: the engine keeps revision 1 (its data too), revision 2 waits.
        let g = gate(&want, Some(&running), utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec.configuration, Some(revision(1)));
        assert!(g.applying.is_empty());
        assert_eq!(
            g.pending
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["configuration: c-1 revision 1 -> c-1 revision 2"]
        );
        // In the window it applies, unless another instance goes first.
        let mut g = gate(&want, Some(&running), utc("2026-11-22T02:30:00Z"));
        assert_eq!(g.spec.configuration, Some(revision(2)));
        assert_eq!(g.applying.len(), 1);
        g.hold();
        assert_eq!(g.spec.configuration, Some(revision(1)));
        assert_eq!(g.pending.len(), 1);
        // A broker's first configuration counts as a change too; apply_immediately takes it.
        want.apply_immediately = true;
        let g = gate(&want, Some(&running_large()), utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec.configuration, Some(revision(2)));
        assert_eq!(g.applying[0].from, "none");
    }

    #[test]
    fn a_new_broker_takes_the_desired_spec() {
        let g = gate(&desired(), None, utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec, desired());
        assert!(g.pending.is_empty() && g.applying.is_empty());
    }

    #[test]
    fn outside_the_window_a_new_type_waits() {
        let g = gate(
            &desired(),
            Some(&running_large()),
            utc("2026-11-18T10:00:00Z"),
        );
        assert_eq!(g.spec.host_instance_type, "mq.m5.large");
        assert_eq!(
            g.pending[0].to_string(),
            "host_instance_type: mq.m5.large -> mq.t3.micro"
        );
        let mut status = BrokerStatus::default();
        g.report(&mut status);
        assert_eq!(status.maintenance_window, "SUNDAY 02:00 UTC");
        assert_eq!(status.next_maintenance_window, "2026-11-22T02:00:00Z");
        assert_eq!(status.pending_changes.len(), 1);
        assert_eq!(status.pending_engine_version, "");
    }

    #[test]
    fn inside_the_window_it_applies() {
        let g = gate(
            &desired(),
            Some(&running_large()),
            utc("2026-11-22T02:10:00Z"),
        );
        assert_eq!(g.spec.host_instance_type, "mq.t3.micro");
        assert!(g.pending.is_empty());
        assert_eq!(g.applying.len(), 1);
        assert!(g.in_window);
    }

    #[test]
    fn a_held_change_stays_pending() {
        let mut g = gate(
            &desired(),
            Some(&running_large()),
            utc("2026-11-22T02:10:00Z"),
        );
        g.hold();
        assert_eq!(g.spec.host_instance_type, "mq.m5.large");
        assert!(g.applying.is_empty());
        assert_eq!(g.pending.len(), 1);
    }

    #[test]
    fn apply_immediately_does_not_wait() {
        let mut d = desired();
        d.apply_immediately = true;
        let g = gate(&d, Some(&running_large()), utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec.host_instance_type, "mq.t3.micro");
        assert_eq!(g.applying.len(), 1);
        assert!(!g.in_window);
    }

    #[test]
    fn an_engine_version_change_is_reported_as_pending_version() {
        let mut d = desired();
        d.host_instance_type = "mq.m5.large".into();
        d.engine_version = "3.11.28".into();
        let g = gate(&d, Some(&running_large()), utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.spec.engine_version, "3.10.8");
        let mut status = BrokerStatus::default();
        g.report(&mut status);
        assert_eq!(status.pending_engine_version, "3.11.28");
    }

    #[test]
    fn without_a_window_the_default_one_is_reported() {
        let mut d = desired();
        d.maintenance_window = None;
        let g = gate(&d, None, utc("2026-11-18T10:00:00Z"));
        assert_eq!(g.window, WindowStart::default_for("b-1"));
    }
}
