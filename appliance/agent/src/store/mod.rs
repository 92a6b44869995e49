//! Where the agent keeps the desired spec of each broker, so that a restarted agent (or a
//! rebooted host) converges to what was last applied without the provider calling again.
//!
//! The store does not interpret specs; it only keeps them durable and versioned.

mod fs;

pub use fs::{write_atomically, FsStore};

use anyhow::Result;
use ferrymq_api::agent::BrokerSpec;

/// The version of the stored form; a change of layout gets a migration step.
pub const SCHEMA_VERSION: u32 = 1;

pub trait SpecStore: Send + Sync {
    /// Every stored spec, in broker-id order.
    fn load_all(&self) -> Result<Vec<BrokerSpec>>;
    /// Stores the spec; returns false when the same spec was already stored.
    fn save(&self, spec: &BrokerSpec) -> Result<bool>;
    /// Forgets the broker; a missing one is not an error.
    fn remove(&self, broker_id: &str) -> Result<()>;
}
