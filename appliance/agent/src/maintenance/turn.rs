//! This host's turn in a roll-out, kept on disk from the moment it takes it until the change
//! serves (or the window closes and the change is rolled back).
//!
//! The rolling rules decide from the peers' status *before* a host goes down. Once it has gone,
//! its own status (restarting, no role yet) would no longer pass those rules, and asking again
//! would put the old values back halfway through: the engine would restart twice. So a host
//! that took its turn for a given target keeps it — across agent restarts too — and the others
//! keep waiting because its status is not RUNNING with nothing pending.

use anyhow::Result;
use ferrymq_api::agent::BrokerSpec;
use std::path::Path;

const FILE: &str = "roll-turn.json";
/// The reboot whose restart this host has carried out (before it serves again).
const REBOOT_FILE: &str = "reboot-started";
/// The appliance image whose engine restart this host has carried out.
const IMAGE_FILE: &str = "image-started";

/// Whether the engine must be restarted now for reboot `reboot_id`: true once per reboot (it is
/// recorded before the restart), so the passes that follow until the engine serves again do not
/// restart it again.
pub fn reboot_restart_due(broker_dir: &Path, reboot_id: &str) -> Result<bool> {
    restart_due(&broker_dir.join(REBOOT_FILE), reboot_id)
}

/// Whether the engine must be restarted now on the appliance image `image` the agent switched
/// to (a new image restarts the engine as the reboot onto it would): once per image.
pub fn image_restart_due(broker_dir: &Path, image: &str) -> Result<bool> {
    restart_due(&broker_dir.join(IMAGE_FILE), image)
}

fn restart_due(record: &Path, id: &str) -> Result<bool> {
    if std::fs::read_to_string(record).is_ok_and(|done| done == id) {
        return Ok(false);
    }
    crate::store::write_atomically(record, id.as_bytes())?;
    Ok(true)
}

/// The window-bound values a turn was taken for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    host_instance_type: String,
    engine_version: String,
    configuration: Option<(String, u32)>,
    #[serde(default)]
    reboot_id: String,
    #[serde(default)]
    image: String,
}

impl Turn {
    pub fn for_spec(spec: &BrokerSpec) -> Turn {
        Turn {
            host_instance_type: spec.host_instance_type.clone(),
            engine_version: spec.engine_version.clone(),
            configuration: spec
                .configuration
                .as_ref()
                .map(|c| (c.id.clone(), c.revision)),
            reboot_id: spec.reboot_id.clone(),
            image: String::new(),
        }
    }

    /// The turn for these values on appliance image `image` (`Gated::image`).
    pub fn on_image(mut self, image: &str) -> Turn {
        self.image = image.to_string();
        self
    }

    /// Whether this host already holds its turn for these values.
    pub fn held(&self, broker_dir: &Path) -> bool {
        std::fs::read(broker_dir.join(FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Turn>(&b).ok())
            .is_some_and(|t| &t == self)
    }

    pub fn take(&self, broker_dir: &Path) -> Result<()> {
        crate::store::write_atomically(&broker_dir.join(FILE), &serde_json::to_vec(self)?)
    }

    /// Gives the turn back: the change served, or there is nothing to apply any more.
    pub fn release(broker_dir: &Path) -> Result<()> {
        crate::store::remove_if_present(&broker_dir.join(FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_is_held_for_its_own_target_only() {
        let dir = std::env::temp_dir().join(format!("ferrymq-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut spec = BrokerSpec {
            engine_version: "5.17.6".into(),
            ..Default::default()
        };
        let turn = Turn::for_spec(&spec);
        assert!(!turn.held(&dir));
        turn.take(&dir).expect("take");
        assert!(turn.held(&dir));
        spec.engine_version = "5.17.2".into();
        assert!(!Turn::for_spec(&spec).held(&dir));
        Turn::release(&dir).expect("release");
        Turn::release(&dir).expect("release twice");
        assert!(!turn.held(&dir));
        assert!(reboot_restart_due(&dir, "r-1").expect("due"));
        assert!(!reboot_restart_due(&dir, "r-1").expect("done"));
        assert!(reboot_restart_due(&dir, "r-2").expect("due"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
