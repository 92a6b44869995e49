//! Where the agent keeps the desired spec of each broker, so that a restarted agent (or a
//! rebooted host) converges to what was last applied without the provider calling again.
//!
//! The store does not interpret specs; it only keeps them durable and versioned.

mod configurations;
mod fs;

pub use configurations::{ConfigurationStore, PutError};
pub use fs::{remove_if_present, write_atomically, FsStore};

use anyhow::Result;
use ferrymq_api::agent::BrokerSpec;

/// The version of the stored form; a change of layout gets a migration step.
pub const SCHEMA_VERSION: u32 = 1;

/// A spec with its generation: how many times an apply changed it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredSpec {
    pub generation: u64,
    pub spec: BrokerSpec,
}

pub trait SpecStore: Send + Sync {
    /// Every stored spec, in broker-id order.
    fn load_all(&self) -> Result<Vec<StoredSpec>>;
    /// Stores the spec and returns its generation; the same spec again keeps its generation.
    fn save(&self, spec: &BrokerSpec) -> Result<u64>;
    /// Forgets the broker; a missing one is not an error.
    fn remove(&self, broker_id: &str) -> Result<()>;
}
