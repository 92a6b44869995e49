//! A tiny provider showing how to use the `tfplugin` layer end to end.
//!
//! It manages "toys": JSON files in a directory given in the provider
//! configuration. One resource, `ferrymq_toy`, has a required `name` (a
//! change forces replacement), an optional `greeting` (updated in place), a
//! sensitive `secret`, a computed `id` and a list of nested `instance`
//! blocks. One data source, `ferrymq_echo`, upper-cases its input.
//!
//! Try it with the real Terraform: build it, copy the binary as
//! `terraform-provider-ferrymq` into a directory DIR, and point
//! `TF_CLI_CONFIG_FILE` at a file holding
//! `provider_installation { dev_overrides { "ferrymq/ferrymq" = "DIR" } direct {} }`.
//! Then `terraform plan`/`apply`/`import`/`destroy` work without `init`.
//!
//! ```hcl
//! terraform {
//!   required_providers {
//!     ferrymq = { source = "ferrymq/ferrymq" }
//!   }
//! }
//! provider "ferrymq" { directory = "/tmp/toys" }
//! resource "ferrymq_toy" "a" {
//!   name   = "alpha"
//!   secret = "hunter2"
//!   instance {
//!     host = "node1"
//!     port = 5672
//!   }
//! }
//! data "ferrymq_echo" "e" { input = ferrymq_toy.a.id }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::RwLock;

use anyhow::Context;
use terraform_provider_ferrymq::tfplugin::{
    self, json, ApplyRequest, ApplyResponse, Attribute, AttributePath, Block, Diagnostic,
    Diagnostics, ImportedResource, NestedBlock, PlanRequest, PlanResponse, Provider, ReadResponse,
    Schema, Type, Value,
};

const TOY: &str = "ferrymq_toy";
const ECHO: &str = "ferrymq_echo";

#[derive(Default)]
struct ToyProvider {
    /// Where toys are stored; set by `configure`.
    directory: RwLock<Option<PathBuf>>,
}

fn toy_schema() -> Schema {
    let instance = Block::new()
        .attribute(Attribute::required("host", Type::String).description("Host name"))
        .attribute(Attribute::optional("port", Type::Number).description("TCP port"));
    Schema::new(
        Block::new()
            .description("A toy stored as a JSON file")
            .attribute(Attribute::computed("id", Type::String))
            .attribute(Attribute::required("name", Type::String))
            .attribute(Attribute::optional("greeting", Type::String))
            .attribute(Attribute::optional("secret", Type::String).sensitive())
            .attribute(Attribute::optional("labels", Type::map(Type::String)))
            .block(NestedBlock::list("instance", instance).max_items(3)),
    )
}

fn echo_schema() -> Schema {
    Schema::new(
        Block::new()
            .attribute(Attribute::required("input", Type::String))
            .attribute(Attribute::computed("upper", Type::String))
            .attribute(Attribute::computed("id", Type::String)),
    )
}

impl ToyProvider {
    fn directory(&self) -> anyhow::Result<PathBuf> {
        let guard = self
            .directory
            .read()
            .map_err(|_| anyhow::anyhow!("provider state lock poisoned"))?;
        guard
            .clone()
            .context("the provider is not configured (no directory)")
    }

    fn path(&self, id: &str) -> anyhow::Result<PathBuf> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            anyhow::bail!("{id:?} is not a toy id");
        }
        Ok(self.directory()?.join(format!("{id}.json")))
    }

    /// Reads a stored toy; `None` when it does not exist.
    fn load(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let path = self.path(id)?;
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let value = json::decode_bytes(&text, &toy_schema().value_type())
            .with_context(|| format!("{} is not a toy", path.display()))?;
        Ok(Some(value))
    }

    fn store(&self, state: &Value) -> anyhow::Result<()> {
        let id = state.get("id").as_str().context("state has no id")?;
        let path = self.path(id)?;
        let json = json::encode(state, &toy_schema().value_type())?;
        std::fs::write(&path, json.to_string())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn remove(&self, id: &str) -> anyhow::Result<()> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("cannot delete {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Provider for ToyProvider {
    fn provider_schema(&self) -> Schema {
        Schema::new(Block::new().attribute(
            Attribute::required("directory", Type::String).description("Where toys are stored"),
        ))
    }

    fn resource_schemas(&self) -> BTreeMap<String, Schema> {
        BTreeMap::from([(TOY.to_owned(), toy_schema())])
    }

    fn data_source_schemas(&self) -> BTreeMap<String, Schema> {
        BTreeMap::from([(ECHO.to_owned(), echo_schema())])
    }

    async fn configure(&self, config: Value) -> Diagnostics {
        let Some(directory) = config.get("directory").as_str() else {
            return vec![
                Diagnostic::error("Missing directory", "").at(AttributePath::root("directory"))
            ];
        };
        if let Err(err) = std::fs::create_dir_all(directory) {
            return vec![
                Diagnostic::error("Cannot create the directory", err.to_string())
                    .at(AttributePath::root("directory")),
            ];
        }
        match self.directory.write() {
            Ok(mut guard) => *guard = Some(Path::new(directory).to_owned()),
            Err(_) => return vec![Diagnostic::error("Provider state lock poisoned", "")],
        }
        vec![]
    }

    async fn validate_resource_config(&self, _type_name: &str, config: &Value) -> Diagnostics {
        let mut diagnostics = vec![];
        if config
            .get("name")
            .as_str()
            .is_some_and(|name| name.contains(' '))
        {
            diagnostics.push(
                Diagnostic::error("Invalid name", "A toy name cannot contain spaces.")
                    .at(AttributePath::root("name")),
            );
        }
        for (i, instance) in config
            .get("instance")
            .as_list()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if instance
                .get("port")
                .as_i64()
                .is_some_and(|port| !(1..=65535).contains(&port))
            {
                diagnostics.push(
                    Diagnostic::error("Invalid port", "A port must be between 1 and 65535.")
                        .at(AttributePath::root("instance").index(i as i64).attr("port")),
                );
            }
        }
        diagnostics
    }

    async fn plan_resource_change(&self, _type_name: &str, req: PlanRequest) -> PlanResponse {
        // Destroy: nothing to compute.
        if req.proposed_new_state.is_null() {
            return PlanResponse::default();
        }
        let mut planned = req.proposed_new_state;
        let mut requires_replace = vec![];
        if req.prior_state.is_null() {
            planned.set_attr("id", Value::Unknown);
        } else if req.prior_state.get("name") != planned.get("name") {
            requires_replace.push(AttributePath::root("name"));
            planned.set_attr("id", Value::Unknown);
        } else {
            planned.set_attr("id", req.prior_state.get("id").clone());
        }
        PlanResponse {
            planned_state: planned,
            requires_replace,
            ..PlanResponse::default()
        }
    }

    async fn apply_resource_change(&self, _type_name: &str, req: ApplyRequest) -> ApplyResponse {
        let result = if req.planned_state.is_null() {
            let id = req
                .prior_state
                .get("id")
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.remove(&id).map(|()| Value::Null)
        } else {
            let mut state = req.planned_state;
            if state.get("id").is_unknown() {
                state.set_attr("id", uuid::Uuid::new_v4().to_string());
            }
            self.store(&state).map(|()| state)
        };
        match result {
            Ok(new_state) => ApplyResponse {
                new_state,
                ..ApplyResponse::default()
            },
            Err(err) => ApplyResponse {
                // Keep what was there so Terraform does not forget it.
                new_state: req.prior_state,
                diagnostics: vec![Diagnostic::from_error("Cannot save the toy", &err)],
                ..ApplyResponse::default()
            },
        }
    }

    async fn read_resource(
        &self,
        _type_name: &str,
        current_state: Value,
        private: Vec<u8>,
    ) -> ReadResponse {
        let id = current_state
            .get("id")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match self.load(&id) {
            Ok(found) => ReadResponse {
                new_state: found.unwrap_or(Value::Null),
                private,
                diagnostics: vec![],
            },
            Err(err) => ReadResponse {
                new_state: current_state,
                private,
                diagnostics: vec![Diagnostic::from_error("Cannot read the toy", &err)],
            },
        }
    }

    async fn import_resource_state(
        &self,
        type_name: &str,
        id: &str,
    ) -> (Vec<ImportedResource>, Diagnostics) {
        match self.load(id) {
            Ok(Some(state)) => (
                vec![ImportedResource {
                    type_name: type_name.to_owned(),
                    state,
                    private: vec![],
                }],
                vec![],
            ),
            Ok(None) => (
                vec![],
                vec![Diagnostic::error(
                    "Cannot import",
                    format!("There is no toy with id {id:?}."),
                )],
            ),
            Err(err) => (vec![], vec![Diagnostic::from_error("Cannot import", &err)]),
        }
    }

    async fn read_data_source(&self, _type_name: &str, config: Value) -> (Value, Diagnostics) {
        let input = config.get("input").as_str().unwrap_or_default().to_owned();
        let state = config.with("upper", input.to_uppercase()).with("id", input);
        (state, vec![])
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match tfplugin::serve(ToyProvider::default()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}`: the cause chain on one line and never a backtrace.
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
