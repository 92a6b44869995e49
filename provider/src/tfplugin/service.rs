//! The tfplugin6 `Provider` gRPC service, adapting protocol messages to the
//! [`Provider`] trait.
//!
//! Every failure here (unknown type names, values that do not fit the
//! schema) becomes an error diagnostic in an ordinary response rather than
//! a gRPC error, because Terraform shows diagnostics to the user but turns
//! gRPC errors into a vague "plugin error".

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{decode_dynamic, diagnostics_to_proto, encode_dynamic};
use super::diagnostics::{Diagnostic, Diagnostics};
use super::proto::tfplugin6 as pb;
use super::provider::{unknown_type, ApplyRequest, PlanRequest, Provider};
use super::schema::{Schema, Type};
use super::value::Value;

/// A schema together with its value type, computed once.
struct Typed {
    schema: Schema,
    ty: Type,
}

impl Typed {
    fn new(schema: Schema) -> Self {
        let ty = schema.value_type();
        Self { schema, ty }
    }

    fn map(schemas: BTreeMap<String, Schema>) -> BTreeMap<String, Typed> {
        schemas
            .into_iter()
            .map(|(name, schema)| (name, Typed::new(schema)))
            .collect()
    }
}

/// Serves a [`Provider`] over tfplugin6. Schemas are asked for once, at
/// construction: they describe the provider binary and do not change.
pub(crate) struct ProviderService<P> {
    provider: Arc<P>,
    provider_schema: Typed,
    resources: BTreeMap<String, Typed>,
    data_sources: BTreeMap<String, Typed>,
}

impl<P: Provider> ProviderService<P> {
    pub(crate) fn new(provider: Arc<P>) -> Self {
        Self {
            provider_schema: Typed::new(provider.provider_schema()),
            resources: Typed::map(provider.resource_schemas()),
            data_sources: Typed::map(provider.data_source_schemas()),
            provider,
        }
    }

    fn resource(&self, type_name: &str) -> Result<&Typed, Diagnostics> {
        self.resources
            .get(type_name)
            .ok_or_else(|| vec![unknown_type(type_name)])
    }

    fn data_source(&self, type_name: &str) -> Result<&Typed, Diagnostics> {
        self.data_sources
            .get(type_name)
            .ok_or_else(|| vec![unknown_type(type_name)])
    }
}

/// Decodes a request value, or an error diagnostic saying which argument
/// could not be read.
fn decode(value: Option<&pb::DynamicValue>, ty: &Type, what: &str) -> Result<Value, Diagnostics> {
    decode_dynamic(value, ty).map_err(|err| {
        tracing::warn!("cannot decode {what}: {err}");
        vec![err.to_diagnostic(format!("Invalid {what} received from Terraform"))]
    })
}

/// Encodes a response value after [`Block::normalize`]; a value that does
/// not fit the schema is a provider bug, reported as an error diagnostic
/// at the offending path.
///
/// [`Block::normalize`]: super::schema::Block::normalize
fn encode(value: Value, typed: &Typed, diagnostics: &mut Diagnostics) -> Option<pb::DynamicValue> {
    let value = typed.schema.block.normalize(value);
    match encode_dynamic(&value, &typed.ty) {
        Ok(encoded) => Some(encoded),
        Err(err) => {
            tracing::error!("provider returned a value that does not fit its schema: {err}");
            diagnostics.push(err.to_diagnostic("Provider returned an invalid value"));
            None
        }
    }
}

fn schema_response(
    provider: &Typed,
    resources: &BTreeMap<String, Typed>,
    data_sources: &BTreeMap<String, Typed>,
) -> pb::get_provider_schema::Response {
    let convert = |map: &BTreeMap<String, Typed>| {
        map.iter()
            .map(|(name, typed)| (name.clone(), pb::Schema::from(&typed.schema)))
            .collect()
    };
    pb::get_provider_schema::Response {
        provider: Some(pb::Schema::from(&provider.schema)),
        resource_schemas: convert(resources),
        data_source_schemas: convert(data_sources),
        diagnostics: vec![],
    }
}

#[tonic::async_trait]
impl<P: Provider> pb::provider_server::Provider for ProviderService<P> {
    async fn get_provider_schema(
        &self,
        _request: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        tracing::debug!("GetProviderSchema");
        Ok(Response::new(schema_response(
            &self.provider_schema,
            &self.resources,
            &self.data_sources,
        )))
    }

    async fn validate_provider_config(
        &self,
        request: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let request = request.into_inner();
        tracing::debug!("ValidateProviderConfig");
        let diagnostics = match decode(
            request.config.as_ref(),
            &self.provider_schema.ty,
            "provider configuration",
        ) {
            Ok(config) => self.provider.validate_provider_config(&config).await,
            Err(diagnostics) => diagnostics,
        };
        Ok(Response::new(pb::validate_provider_config::Response {
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    async fn validate_resource_config(
        &self,
        request: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, "ValidateResourceConfig");
        let result = self
            .resource(type_name)
            .and_then(|typed| decode(request.config.as_ref(), &typed.ty, "configuration"));
        let diagnostics = match result {
            Ok(config) => {
                self.provider
                    .validate_resource_config(type_name, &config)
                    .await
            }
            Err(diagnostics) => diagnostics,
        };
        Ok(Response::new(pb::validate_resource_config::Response {
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    async fn validate_data_resource_config(
        &self,
        request: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, "ValidateDataResourceConfig");
        let result = self
            .data_source(type_name)
            .and_then(|typed| decode(request.config.as_ref(), &typed.ty, "configuration"));
        let diagnostics = match result {
            Ok(config) => {
                self.provider
                    .validate_data_source_config(type_name, &config)
                    .await
            }
            Err(diagnostics) => diagnostics,
        };
        Ok(Response::new(pb::validate_data_resource_config::Response {
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    async fn upgrade_resource_state(
        &self,
        request: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, version = request.version, "UpgradeResourceState");
        let typed = match self.resource(type_name) {
            Ok(typed) => typed,
            Err(diagnostics) => {
                return Ok(Response::new(pb::upgrade_resource_state::Response {
                    upgraded_state: None,
                    diagnostics: diagnostics_to_proto(&diagnostics),
                }))
            }
        };
        let raw = request.raw_state.unwrap_or_default();
        let raw_json = if !raw.json.is_empty() {
            serde_json::from_slice(&raw.json).map_err(|err| {
                Diagnostic::error(
                    "Cannot read stored state",
                    format!("The stored state is not valid JSON: {err}"),
                )
            })
        } else if !raw.flatmap.is_empty() {
            Err(Diagnostic::error(
                "Unsupported state format",
                "The stored state uses the legacy flatmap format, which this provider never wrote.",
            ))
        } else {
            Ok(serde_json::Value::Null)
        };
        let (state, mut diagnostics) = match raw_json {
            Ok(raw_json) => {
                self.provider
                    .upgrade_resource_state(type_name, request.version, raw_json)
                    .await
            }
            Err(diagnostic) => (Value::Null, vec![diagnostic]),
        };
        let upgraded_state = encode(state, typed, &mut diagnostics);
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state,
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    async fn configure_provider(
        &self,
        request: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        let request = request.into_inner();
        tracing::debug!(
            terraform_version = request.terraform_version,
            "ConfigureProvider"
        );
        let diagnostics = match decode(
            request.config.as_ref(),
            &self.provider_schema.ty,
            "provider configuration",
        ) {
            Ok(config) => self.provider.configure(config).await,
            Err(diagnostics) => diagnostics,
        };
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    async fn read_resource(
        &self,
        request: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, "ReadResource");
        let typed = match self.resource(type_name) {
            Ok(typed) => typed,
            Err(diagnostics) => {
                return Ok(Response::new(pb::read_resource::Response {
                    new_state: request.current_state,
                    diagnostics: diagnostics_to_proto(&diagnostics),
                    private: request.private,
                }))
            }
        };
        let current_state = match decode(request.current_state.as_ref(), &typed.ty, "current state")
        {
            Ok(state) => state,
            Err(diagnostics) => {
                return Ok(Response::new(pb::read_resource::Response {
                    new_state: request.current_state,
                    diagnostics: diagnostics_to_proto(&diagnostics),
                    private: request.private,
                }))
            }
        };
        let mut response = self
            .provider
            .read_resource(type_name, current_state, request.private)
            .await;
        let new_state = encode(response.new_state, typed, &mut response.diagnostics);
        Ok(Response::new(pb::read_resource::Response {
            new_state,
            diagnostics: diagnostics_to_proto(&response.diagnostics),
            private: response.private,
        }))
    }

    async fn plan_resource_change(
        &self,
        request: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, "PlanResourceChange");
        let decoded = self.resource(type_name).and_then(|typed| {
            let plan = PlanRequest {
                prior_state: decode(request.prior_state.as_ref(), &typed.ty, "prior state")?,
                proposed_new_state: decode(
                    request.proposed_new_state.as_ref(),
                    &typed.ty,
                    "proposed new state",
                )?,
                config: decode(request.config.as_ref(), &typed.ty, "configuration")?,
                prior_private: request.prior_private,
            };
            Ok((typed, plan))
        });
        let (typed, plan) = match decoded {
            Ok(decoded) => decoded,
            Err(diagnostics) => {
                return Ok(Response::new(pb::plan_resource_change::Response {
                    diagnostics: diagnostics_to_proto(&diagnostics),
                    ..Default::default()
                }))
            }
        };
        let mut response = self.provider.plan_resource_change(type_name, plan).await;
        let planned_state = encode(response.planned_state, typed, &mut response.diagnostics);
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state,
            requires_replace: response.requires_replace.iter().map(Into::into).collect(),
            planned_private: response.planned_private,
            diagnostics: diagnostics_to_proto(&response.diagnostics),
        }))
    }

    async fn apply_resource_change(
        &self,
        request: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, "ApplyResourceChange");
        let decoded = self.resource(type_name).and_then(|typed| {
            let apply = ApplyRequest {
                prior_state: decode(request.prior_state.as_ref(), &typed.ty, "prior state")?,
                planned_state: decode(request.planned_state.as_ref(), &typed.ty, "planned state")?,
                config: decode(request.config.as_ref(), &typed.ty, "configuration")?,
                planned_private: request.planned_private,
            };
            Ok((typed, apply))
        });
        let (typed, apply) = match decoded {
            Ok(decoded) => decoded,
            Err(diagnostics) => {
                return Ok(Response::new(pb::apply_resource_change::Response {
                    diagnostics: diagnostics_to_proto(&diagnostics),
                    ..Default::default()
                }))
            }
        };
        let mut response = self.provider.apply_resource_change(type_name, apply).await;
        let new_state = encode(response.new_state, typed, &mut response.diagnostics);
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state,
            private: response.private,
            diagnostics: diagnostics_to_proto(&response.diagnostics),
        }))
    }

    async fn import_resource_state(
        &self,
        request: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, id = request.id, "ImportResourceState");
        if let Err(diagnostics) = self.resource(type_name) {
            return Ok(Response::new(pb::import_resource_state::Response {
                imported_resources: vec![],
                diagnostics: diagnostics_to_proto(&diagnostics),
            }));
        }
        let (imported, mut diagnostics) = self
            .provider
            .import_resource_state(type_name, &request.id)
            .await;
        let mut imported_resources = Vec::with_capacity(imported.len());
        for resource in imported {
            // An importer may return objects of other types; an empty type
            // name means the requested one.
            let resource_type = if resource.type_name.is_empty() {
                type_name.to_owned()
            } else {
                resource.type_name
            };
            let typed = match self.resource(&resource_type) {
                Ok(typed) => typed,
                Err(mut unknown) => {
                    diagnostics.append(&mut unknown);
                    continue;
                }
            };
            let state = encode(resource.state, typed, &mut diagnostics);
            imported_resources.push(pb::import_resource_state::ImportedResource {
                type_name: resource_type,
                state,
                private: resource.private,
            });
        }
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources,
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    async fn read_data_source(
        &self,
        request: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        let request = request.into_inner();
        let type_name = request.type_name.as_str();
        tracing::debug!(type_name, "ReadDataSource");
        let decoded = self.data_source(type_name).and_then(|typed| {
            Ok((
                typed,
                decode(request.config.as_ref(), &typed.ty, "configuration")?,
            ))
        });
        let (typed, config) = match decoded {
            Ok(decoded) => decoded,
            Err(diagnostics) => {
                return Ok(Response::new(pb::read_data_source::Response {
                    state: None,
                    diagnostics: diagnostics_to_proto(&diagnostics),
                }))
            }
        };
        let (state, mut diagnostics) = self.provider.read_data_source(type_name, config).await;
        let state = encode(state, typed, &mut diagnostics);
        Ok(Response::new(pb::read_data_source::Response {
            state,
            diagnostics: diagnostics_to_proto(&diagnostics),
        }))
    }

    /// Terraform calls this when the user interrupts a run. Calls in flight
    /// are left to finish (they are bounded by their own timeouts); the
    /// process exits when go-plugin's controller asks it to.
    async fn stop_provider(
        &self,
        _request: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        tracing::info!("StopProvider");
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}
