//! The trait a provider implements, in terms of decoded values.
//!
//! The gRPC layer decodes every `DynamicValue` with the right schema type
//! before calling in and encodes the results afterwards, so implementations
//! only see [`Value`]s and return [`Diagnostics`] instead of errors: the
//! user sees diagnostics in Terraform's output, a gRPC error only as an
//! opaque "plugin error".

use std::collections::BTreeMap;

use super::diagnostics::{AttributePath, Diagnostic, Diagnostics};
use super::json;
use super::schema::Schema;
use super::value::Value;

/// Input of [`Provider::plan_resource_change`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanRequest {
    /// `Null` when the resource is being created.
    pub prior_state: Value,
    /// Terraform's merge of configuration and prior state: configured
    /// attributes from config, computed ones from prior state (unknown on
    /// create). `Null` when the resource is being destroyed.
    pub proposed_new_state: Value,
    /// The configuration as written; `Null` on destroy.
    pub config: Value,
    pub prior_private: Vec<u8>,
}

/// Output of [`Provider::plan_resource_change`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanResponse {
    /// What the state will be after apply; unknown where only apply can
    /// tell. `Null` plans a destroy.
    pub planned_state: Value,
    /// Attributes whose change forces a replacement.
    pub requires_replace: Vec<AttributePath>,
    pub planned_private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

/// Input of [`Provider::apply_resource_change`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyRequest {
    /// `Null` when creating.
    pub prior_state: Value,
    /// `Null` when destroying.
    pub planned_state: Value,
    pub config: Value,
    pub planned_private: Vec<u8>,
}

/// Output of [`Provider::apply_resource_change`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyResponse {
    /// The state after apply, fully known; `Null` after a destroy.
    pub new_state: Value,
    pub private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

/// Output of [`Provider::read_resource`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadResponse {
    /// The refreshed state; `Null` when the object no longer exists, which
    /// makes Terraform drop it from state and plan to create it again.
    pub new_state: Value,
    pub private: Vec<u8>,
    pub diagnostics: Diagnostics,
}

/// One object found by [`Provider::import_resource_state`]. Terraform reads
/// it with [`Provider::read_resource`] right after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportedResource {
    pub type_name: String,
    pub state: Value,
    pub private: Vec<u8>,
}

/// A Terraform provider. The gRPC server in [`serve`](super::serve) calls
/// these methods concurrently (Terraform plans and applies resources in
/// parallel), hence `Send + Sync`.
#[tonic::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The schema of the `provider "ferrymq" { ... }` block.
    fn provider_schema(&self) -> Schema;
    /// Resource schemas by type name (e.g. `ferrymq_queue`).
    fn resource_schemas(&self) -> BTreeMap<String, Schema>;
    /// Data source schemas by type name.
    fn data_source_schemas(&self) -> BTreeMap<String, Schema>;

    /// Checks the provider configuration. Values may still be unknown.
    async fn validate_provider_config(&self, _config: &Value) -> Diagnostics {
        vec![]
    }

    /// Receives the provider configuration before any resource call that
    /// needs it (plan, apply, read, import, data sources).
    async fn configure(&self, config: Value) -> Diagnostics;

    /// Checks a resource's configuration. Values may still be unknown.
    async fn validate_resource_config(&self, type_name: &str, config: &Value) -> Diagnostics;

    /// Checks a data source's configuration. Values may still be unknown.
    async fn validate_data_source_config(&self, _type_name: &str, _config: &Value) -> Diagnostics {
        vec![]
    }

    async fn plan_resource_change(&self, type_name: &str, req: PlanRequest) -> PlanResponse;

    async fn apply_resource_change(&self, type_name: &str, req: ApplyRequest) -> ApplyResponse;

    async fn read_resource(
        &self,
        type_name: &str,
        current_state: Value,
        private: Vec<u8>,
    ) -> ReadResponse;

    /// Turns the id given to `terraform import` into state.
    async fn import_resource_state(
        &self,
        type_name: &str,
        id: &str,
    ) -> (Vec<ImportedResource>, Diagnostics);

    /// Converts stored state, written with schema `version`, to the current
    /// schema. Terraform calls this for every resource in state before
    /// reading or planning it.
    ///
    /// Default: decode the raw JSON state with the current schema's type.
    /// That is right as long as the stored version is the current one or
    /// the state only lost attributes since (attributes not in the schema
    /// are dropped); a provider that changes an attribute's meaning must
    /// bump the schema version and override this.
    async fn upgrade_resource_state(
        &self,
        type_name: &str,
        version: i64,
        raw_state: serde_json::Value,
    ) -> (Value, Diagnostics) {
        default_upgrade_resource_state(&self.resource_schemas(), type_name, version, &raw_state)
    }

    async fn read_data_source(&self, type_name: &str, config: Value) -> (Value, Diagnostics);
}

/// The default [`Provider::upgrade_resource_state`], callable from an
/// override that only handles some versions itself.
pub fn default_upgrade_resource_state(
    schemas: &BTreeMap<String, Schema>,
    type_name: &str,
    version: i64,
    raw_state: &serde_json::Value,
) -> (Value, Diagnostics) {
    let Some(schema) = schemas.get(type_name) else {
        return (Value::Null, vec![unknown_type(type_name)]);
    };
    if version > schema.version {
        return (
            Value::Null,
            vec![Diagnostic::error(
                "State written by a newer provider",
                format!(
                    "The state of this {type_name} has schema version {version}, but this \
                     provider only knows versions up to {}. Upgrade the provider.",
                    schema.version
                ),
            )],
        );
    }
    match json::decode(raw_state, &schema.value_type()) {
        Ok(value) => (value, vec![]),
        Err(err) => (
            Value::Null,
            vec![err.to_diagnostic("Cannot read stored state")],
        ),
    }
}

/// The diagnostic for a type name the provider has no schema for.
pub(crate) fn unknown_type(type_name: &str) -> Diagnostic {
    Diagnostic::error(
        "Unknown type",
        format!("This provider has no resource or data source type named {type_name:?}."),
    )
}
