//! What the host runs of the window-bound fields, and what past windows did: kept in the
//! broker's directory so that a restarted agent neither applies a waiting change early nor
//! forgets the history it reports.

use super::gate::Gated;
use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use ferrymq_api::agent::{ConfigurationRef, MaintenanceEvent};
use std::path::Path;

const FILE: &str = "applied.json";
/// How many past changes the status reports.
const HISTORY_LIMIT: usize = 20;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppliedRecord {
    pub host_instance_type: String,
    pub engine_version: String,
    /// The configuration revision the engine was rendered with (its data included, so the
    /// host can run it while a newer one waits).
    #[serde(default)]
    pub configuration: Option<ConfigurationRef>,
    /// The last reboot the host carried out (RebootBroker).
    #[serde(default)]
    pub reboot_id: String,
    /// The appliance image the broker served on (empty in records from before images).
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub history: Vec<MaintenanceEvent>,
}

impl AppliedRecord {
    /// The record in `broker_dir`, or `None` for a broker this host has not run yet.
    pub fn load(broker_dir: &Path) -> Result<Option<Self>> {
        let path = broker_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The record after a pass converged toward `gated` at `now`: the values it runs, and an
    /// event for each change it began applying.
    pub fn after(previous: Option<&Self>, gated: &Gated, now: DateTime<Utc>) -> Self {
        let mut history = previous.map(|p| p.history.clone()).unwrap_or_default();
        let why = if gated.in_window {
            "maintenance window"
        } else {
            "apply_immediately"
        };
        for change in &gated.applying {
            let why = if change.attribute == super::gate::REBOOT {
                "RebootBroker"
            } else {
                why
            };
            history.push(MaintenanceEvent {
                at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
                change: format!("{change} ({why})"),
            });
        }
        let excess = history.len().saturating_sub(HISTORY_LIMIT);
        history.drain(..excess);
        AppliedRecord {
            host_instance_type: gated.spec.host_instance_type.clone(),
            engine_version: gated.spec.engine_version.clone(),
            configuration: gated.spec.configuration.clone(),
            reboot_id: gated.spec.reboot_id.clone(),
            image: gated.image.clone(),
            history,
        }
    }

    /// Adds an event that is not a change applied (a roll-back), keeping the history bounded.
    pub fn note(&mut self, now: DateTime<Utc>, what: &str) {
        self.history.push(MaintenanceEvent {
            at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
            change: what.to_string(),
        });
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }

    /// Writes the record when it changed.
    pub fn save_if_changed(&self, previous: Option<&Self>, broker_dir: &Path) -> Result<()> {
        if previous == Some(self) || !broker_dir.exists() {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(self)?;
        crate::store::write_atomically(&broker_dir.join(FILE), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maintenance::gate;
    use ferrymq_api::agent::BrokerSpec;

    #[test]
    fn applying_a_change_records_it_once_and_survives_a_reload() {
        let dir = tempfile_dir();
        let previous = AppliedRecord {
            host_instance_type: "mq.m5.large".into(),
            engine_version: "3.10.8".into(),
            ..Default::default()
        };
        let desired = BrokerSpec {
            broker_id: "b-1".into(),
            host_instance_type: "mq.t3.micro".into(),
            engine_version: "3.10.8".into(),
            apply_immediately: true,
            ..Default::default()
        };
        let now = Utc::now();
        let g = gate(&desired, Some(&previous), now);
        let record = AppliedRecord::after(Some(&previous), &g, now);
        assert_eq!(record.host_instance_type, "mq.t3.micro");
        assert_eq!(record.history.len(), 1);
        assert!(record.history[0].change.ends_with("(apply_immediately)"));
        record.save_if_changed(Some(&previous), &dir).unwrap();
        let loaded = AppliedRecord::load(&dir).unwrap().unwrap();
        assert_eq!(loaded, record);
        // The next pass finds nothing to apply and records nothing more.
        let g = gate(&desired, Some(&loaded), now);
        assert_eq!(AppliedRecord::after(Some(&loaded), &g, now), loaded);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn history_is_bounded() {
        let mut record = AppliedRecord::default();
        for i in 0..30 {
            let g = gate(
                &BrokerSpec {
                    broker_id: "b-1".into(),
                    host_instance_type: format!("t{}", i + 1),
                    apply_immediately: true,
                    ..Default::default()
                },
                Some(&AppliedRecord {
                    host_instance_type: format!("t{i}"),
                    ..record.clone()
                }),
                Utc::now(),
            );
            record = AppliedRecord::after(Some(&record), &g, Utc::now());
        }
        assert_eq!(record.history.len(), HISTORY_LIMIT);
        assert!(record.history[HISTORY_LIMIT - 1].change.contains("t30"));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrymq-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
