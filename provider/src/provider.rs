//! The `ferrymq` provider: its configuration (the mutual-TLS material for the agents) and the
//! list of resources and data sources. Resource logic lives in `resources/`.

use crate::client::Credentials;
use crate::data_sources::{engine_versions, instance_type_recommendation, instance_types};
use crate::resources::{broker, broker_user, configuration};
use crate::tfplugin::{
    ApplyRequest, ApplyResponse, Attribute, AttributePath, Block, Diagnostic, Diagnostics,
    ImportedResource, PlanRequest, PlanResponse, Provider, ReadResponse, Schema, Type, Value,
};
use std::collections::BTreeMap;
use std::sync::RwLock;

/// Provider attributes and the environment variables that stand in for them.
const CREDENTIALS: [(&str, &str); 3] = [
    ("ca_cert", "FERRYMQ_CA_CERT"),
    ("client_cert", "FERRYMQ_CLIENT_CERT"),
    ("client_key", "FERRYMQ_CLIENT_KEY"),
];

/// Where agents fetch engine bundles they lack, and its environment variable.
const BUNDLE_MIRROR: (&str, &str) = ("bundle_mirror", "FERRYMQ_BUNDLE_MIRROR");

#[derive(Default)]
pub struct FerryMq {
    credentials: RwLock<Option<Credentials>>,
}

impl FerryMq {
    fn credentials(&self) -> Result<Credentials, Diagnostic> {
        self.credentials
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                Diagnostic::error(
                    "Provider not configured",
                    "the ferrymq provider has no credentials for the agents (ca_cert, client_cert, client_key)",
                )
            })
    }
}

/// The bundle mirror from the attribute, else the environment variable; "" for none.
fn bundle_mirror(config: &Value) -> Result<String, Diagnostic> {
    let (attr, var) = BUNDLE_MIRROR;
    let value = match config.get(attr).as_str() {
        Some(v) => v.to_string(),
        None => std::env::var(var).unwrap_or_default(),
    };
    if value.is_empty() {
        return Ok(value);
    }
    ferrymq_api::validate::bundle_mirror(&value)
        .map(|()| value)
        .map_err(|m| Diagnostic::error("Invalid bundle_mirror", m).at(AttributePath::root(attr)))
}

fn unknown_type(kind: &str, name: &str) -> Diagnostic {
    Diagnostic::error(
        format!("Unknown {kind}"),
        format!("this provider has no {kind} {name:?}"),
    )
}

/// PEM from the attribute, else from the environment variable: PEM text or a file path.
fn credential(config: &Value, attr: &str, var: &str) -> Result<String, Diagnostic> {
    let (value, from) = match config.get(attr).as_str() {
        Some(v) => (v.to_string(), format!("provider attribute {attr}")),
        None => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => (v, format!("environment variable {var}")),
            _ => {
                return Err(Diagnostic::error(
                    "Missing agent credentials",
                    format!("set the provider attribute {attr} or the environment variable {var} (PEM text or a file path); `ferrymq-agent pki init` makes them"),
                )
                .at(AttributePath::root(attr)))
            }
        },
    };
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value);
    }
    std::fs::read_to_string(value.trim()).map_err(|e| {
        Diagnostic::error(
            "Unreadable agent credentials",
            format!(
                "{from} is neither PEM text nor a readable file ({:?}): {e}",
                value.trim()
            ),
        )
        .at(AttributePath::root(attr))
    })
}

#[tonic::async_trait]
impl Provider for FerryMq {
    fn provider_schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .attribute(
                    Attribute::optional("ca_cert", Type::String)
                        .description("PEM of the deployment CA (or FERRYMQ_CA_CERT: PEM or path)."),
                )
                .attribute(
                    Attribute::optional("client_cert", Type::String).description(
                        "PEM of the provider's client certificate (or FERRYMQ_CLIENT_CERT).",
                    ),
                )
                .attribute(
                    Attribute::optional("client_key", Type::String)
                        .sensitive()
                        .description("PEM of the client key (or FERRYMQ_CLIENT_KEY)."),
                )
                .attribute(Attribute::optional(BUNDLE_MIRROR.0, Type::String).description(
                    "An http(s) URL serving engine bundles (`<engine>-<version>.tar.gz`) that agents fetch when a broker needs a version they lack (or FERRYMQ_BUNDLE_MIRROR). Each bundle is checked against the SHA-256 in the agent's catalogue before use.",
                )),
        )
    }

    fn resource_schemas(&self) -> BTreeMap<String, Schema> {
        BTreeMap::from([
            (broker::TYPE_NAME.to_string(), broker::schema()),
            (broker_user::TYPE_NAME.to_string(), broker_user::schema()),
            (
                configuration::TYPE_NAME.to_string(),
                configuration::schema(),
            ),
        ])
    }

    fn data_source_schemas(&self) -> BTreeMap<String, Schema> {
        BTreeMap::from([
            (
                instance_types::TYPE_NAME.to_string(),
                instance_types::schema(),
            ),
            (
                engine_versions::TYPE_NAME.to_string(),
                engine_versions::schema(),
            ),
            (
                instance_type_recommendation::TYPE_NAME.to_string(),
                instance_type_recommendation::schema(),
            ),
        ])
    }

    async fn configure(&self, config: Value) -> Diagnostics {
        // Values only known after apply (e.g. from a tls resource) are read when first used.
        if CREDENTIALS
            .iter()
            .any(|(attr, _)| config.get(attr).is_unknown())
        {
            return vec![];
        }
        let mut diags = Vec::new();
        let mut get = |attr: &str, var: &str| match credential(&config, attr, var) {
            Ok(v) => v,
            Err(d) => {
                diags.push(d);
                String::new()
            }
        };
        let creds = Credentials {
            ca_cert: get(CREDENTIALS[0].0, CREDENTIALS[0].1),
            client_cert: get(CREDENTIALS[1].0, CREDENTIALS[1].1),
            client_key: get(CREDENTIALS[2].0, CREDENTIALS[2].1),
            bundle_mirror: match bundle_mirror(&config) {
                Ok(m) => m,
                Err(d) => {
                    diags.push(d);
                    String::new()
                }
            },
        };
        if diags.is_empty() {
            if let Ok(mut c) = self.credentials.write() {
                *c = Some(creds);
            }
        }
        diags
    }

    async fn validate_resource_config(&self, type_name: &str, config: &Value) -> Diagnostics {
        match type_name {
            broker::TYPE_NAME => broker::validate(config),
            broker_user::TYPE_NAME => broker_user::validate(config),
            configuration::TYPE_NAME => configuration::validate(config),
            other => vec![unknown_type("resource type", other)],
        }
    }

    async fn plan_resource_change(&self, type_name: &str, req: PlanRequest) -> PlanResponse {
        match type_name {
            broker::TYPE_NAME => broker::plan(req),
            broker_user::TYPE_NAME => broker_user::plan(req),
            configuration::TYPE_NAME => configuration::plan(req),
            other => PlanResponse {
                diagnostics: vec![unknown_type("resource type", other)],
                ..Default::default()
            },
        }
    }

    async fn apply_resource_change(&self, type_name: &str, req: ApplyRequest) -> ApplyResponse {
        let creds = match self.credentials() {
            Ok(c) => c,
            Err(d) => {
                return ApplyResponse {
                    new_state: req.prior_state,
                    diagnostics: vec![d],
                    ..Default::default()
                }
            }
        };
        match type_name {
            broker::TYPE_NAME => broker::apply(&creds, req).await,
            broker_user::TYPE_NAME => broker_user::apply(&creds, req).await,
            configuration::TYPE_NAME => configuration::apply(&creds, req).await,
            other => ApplyResponse {
                new_state: req.prior_state,
                diagnostics: vec![unknown_type("resource type", other)],
                ..Default::default()
            },
        }
    }

    async fn read_resource(
        &self,
        type_name: &str,
        current_state: Value,
        private: Vec<u8>,
    ) -> ReadResponse {
        let creds = match self.credentials() {
            Ok(c) => c,
            Err(d) => {
                return ReadResponse {
                    new_state: current_state,
                    private,
                    diagnostics: vec![d],
                }
            }
        };
        match type_name {
            broker::TYPE_NAME => broker::read(&creds, current_state).await,
            broker_user::TYPE_NAME => broker_user::read(&creds, current_state).await,
            configuration::TYPE_NAME => configuration::read(&creds, current_state).await,
            other => ReadResponse {
                new_state: current_state,
                private,
                diagnostics: vec![unknown_type("resource type", other)],
            },
        }
    }

    async fn import_resource_state(
        &self,
        type_name: &str,
        id: &str,
    ) -> (Vec<ImportedResource>, Diagnostics) {
        match type_name {
            broker::TYPE_NAME => broker::import(id),
            broker_user::TYPE_NAME => broker_user::import(id),
            configuration::TYPE_NAME => configuration::import(id),
            other => (vec![], vec![unknown_type("resource type", other)]),
        }
    }

    async fn read_data_source(&self, type_name: &str, config: Value) -> (Value, Diagnostics) {
        match type_name {
            instance_types::TYPE_NAME => instance_types::read(config),
            engine_versions::TYPE_NAME => engine_versions::read(config),
            instance_type_recommendation::TYPE_NAME => instance_type_recommendation::read(config),
            other => (Value::Null, vec![unknown_type("data source", other)]),
        }
    }
}
