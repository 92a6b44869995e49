//! Read-only lookups, one file each. They read the catalogue in `ferrymq-api`, the same one
//! the validators and the agents use.

pub mod engine_versions;
pub mod instance_type_recommendation;
pub mod instance_types;
