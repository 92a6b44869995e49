//! In-process end-to-end tests: a real gRPC client, over mutual TLS with a
//! Terraform-like P-521 client certificate, against the server `serve`
//! runs. These cover in CI what the manual run against Terraform 1.0.3
//! showed, short of Terraform itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint, Uri};

use super::goplugin::ShutdownSignal;
use super::proto::{health, plugin, tfplugin6 as pb};
use super::tls::tests::{client_config, terraform_like_client_cert};
use super::tls::{parse_pem_certs, server_config, ServerIdentity};
use super::{
    msgpack, server, ApplyRequest, ApplyResponse, Attribute, AttributePath, Block, Diagnostic,
    Diagnostics, ImportedResource, NestedBlock, PlanRequest, PlanResponse, Provider, ReadResponse,
    Schema, Type, Value,
};

/// A provider whose plan marks `id` unknown and whose validation rejects
/// port 0, enough to exercise every conversion.
struct TestProvider;

fn thing_schema() -> Schema {
    Schema::new(
        Block::new()
            .attribute(Attribute::computed("id", Type::String))
            .attribute(Attribute::required("name", Type::String))
            .attribute(Attribute::optional("secret", Type::String).sensitive())
            .block(NestedBlock::list(
                "instance",
                Block::new().attribute(Attribute::optional("port", Type::Number)),
            )),
    )
    .with_version(1)
}

#[tonic::async_trait]
impl Provider for TestProvider {
    fn provider_schema(&self) -> Schema {
        Schema::new(Block::new().attribute(Attribute::optional("endpoint", Type::String)))
    }

    fn resource_schemas(&self) -> BTreeMap<String, Schema> {
        BTreeMap::from([("test_thing".to_owned(), thing_schema())])
    }

    fn data_source_schemas(&self) -> BTreeMap<String, Schema> {
        BTreeMap::new()
    }

    async fn configure(&self, _config: Value) -> Diagnostics {
        vec![]
    }

    async fn validate_resource_config(&self, _type_name: &str, config: &Value) -> Diagnostics {
        let ports = config.get("instance").as_list().unwrap_or_default();
        ports
            .iter()
            .enumerate()
            .filter(|(_, instance)| instance.get("port").as_i64() == Some(0))
            .map(|(i, _)| {
                Diagnostic::error("Invalid port", "")
                    .at(AttributePath::root("instance").index(i as i64).attr("port"))
            })
            .collect()
    }

    async fn plan_resource_change(&self, _type_name: &str, req: PlanRequest) -> PlanResponse {
        PlanResponse {
            planned_state: req.proposed_new_state.with("id", Value::Unknown),
            ..PlanResponse::default()
        }
    }

    async fn apply_resource_change(&self, _type_name: &str, req: ApplyRequest) -> ApplyResponse {
        ApplyResponse {
            // Deliberately wrong: "bogus" is not in the schema.
            new_state: req.planned_state.with("bogus", "x"),
            ..ApplyResponse::default()
        }
    }

    async fn read_resource(
        &self,
        _type_name: &str,
        current_state: Value,
        private: Vec<u8>,
    ) -> ReadResponse {
        ReadResponse {
            new_state: current_state,
            private,
            diagnostics: vec![],
        }
    }

    async fn import_resource_state(
        &self,
        type_name: &str,
        id: &str,
    ) -> (Vec<ImportedResource>, Diagnostics) {
        let state = Value::object([("id", id.into()), ("name", "imported".into())]);
        let imported = ImportedResource {
            type_name: type_name.to_owned(),
            state,
            private: vec![],
        };
        (vec![imported], vec![])
    }

    async fn read_data_source(&self, _type_name: &str, config: Value) -> (Value, Diagnostics) {
        (config, vec![])
    }
}

struct Harness {
    channel: Channel,
    shutdown: ShutdownSignal,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the server on a loopback port and connects a client the way
/// go-plugin does: trusting only the server certificate and presenting a
/// P-521 client certificate that the server pins.
async fn start() -> Harness {
    let identity = ServerIdentity::generate().expect("identity");
    let client = terraform_like_client_cert();
    let pinned = parse_pem_certs(&client.0).expect("pem");
    let tls = server_config(&identity, Some(pinned)).expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = ShutdownSignal::new();
    let server = tokio::spawn(server::run(TestProvider, listener, tls, shutdown.clone()));

    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&identity.cert, client)));
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(address).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .expect("connect");
    Harness {
        channel,
        shutdown,
        server,
    }
}

fn thing_type() -> Type {
    thing_schema().value_type()
}

fn dynamic(value: &Value) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: msgpack::encode(value, &thing_type()).expect("encode"),
        json: vec![],
    })
}

#[tokio::test]
async fn full_session_over_mutual_tls() {
    let harness = start().await;
    let mut client = pb::provider_client::ProviderClient::new(harness.channel.clone());

    // go-plugin opens these first.
    let mut stdio = plugin::grpc_stdio_client::GrpcStdioClient::new(harness.channel.clone())
        .stream_stdio(plugin::Empty {})
        .await
        .expect("stdio")
        .into_inner();
    let health = health::health_client::HealthClient::new(harness.channel.clone())
        .check(health::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        health::health_check_response::ServingStatus::Serving as i32
    );

    let schema = client
        .get_provider_schema(pb::get_provider_schema::Request {})
        .await
        .expect("schema")
        .into_inner();
    let thing = &schema.resource_schemas["test_thing"];
    assert_eq!(thing.version, 1);
    let block = thing.block.as_ref().expect("block");
    let secret = block
        .attributes
        .iter()
        .find(|a| a.name == "secret")
        .expect("secret");
    assert!(secret.sensitive);
    assert_eq!(block.block_types[0].type_name, "instance");

    // Validation diagnostics keep their attribute path.
    let config = Value::object([
        ("name", "n".into()),
        (
            "instance",
            Value::List(vec![
                Value::object([("port", 5672i64.into())]),
                Value::object([("port", 0i64.into())]),
            ]),
        ),
    ]);
    let validated = client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: "test_thing".into(),
            config: dynamic(&config),
        })
        .await
        .expect("validate")
        .into_inner();
    assert_eq!(validated.diagnostics.len(), 1);
    let path = AttributePath::from(validated.diagnostics[0].attribute.as_ref().expect("path"));
    assert_eq!(path.to_string(), "instance[1].port");

    // Plan: unknowns survive the round trip.
    let planned = client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dynamic(&Value::Null),
            proposed_new_state: dynamic(&config),
            config: dynamic(&config),
            prior_private: vec![],
        })
        .await
        .expect("plan")
        .into_inner();
    assert!(planned.diagnostics.is_empty(), "{:?}", planned.diagnostics);
    let planned_state = msgpack::decode(
        &planned.planned_state.expect("planned state").msgpack,
        &thing_type(),
    )
    .expect("decode");
    assert!(planned_state.get("id").is_unknown());
    assert_eq!(planned_state.get("name").as_str(), Some("n"));
    assert!(planned_state.get("secret").is_null());

    // A provider bug (extra attribute) is a diagnostic, not a crash.
    let applied = client
        .apply_resource_change(pb::apply_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dynamic(&Value::Null),
            planned_state: dynamic(&config),
            config: dynamic(&config),
            planned_private: vec![],
        })
        .await
        .expect("apply")
        .into_inner();
    assert!(applied.new_state.is_none());
    assert!(applied.diagnostics[0].detail.contains("bogus"));

    // Garbage from the client is a diagnostic too.
    let garbage = client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            config: Some(pb::DynamicValue {
                msgpack: vec![0x92, 0x01],
                json: vec![],
            }),
            ..Default::default()
        })
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(garbage.diagnostics.len(), 1);

    let unknown = client
        .read_resource(pb::read_resource::Request {
            type_name: "nope".into(),
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    assert!(unknown.diagnostics[0].detail.contains("nope"));

    let imported = client
        .import_resource_state(pb::import_resource_state::Request {
            type_name: "test_thing".into(),
            id: "abc".into(),
        })
        .await
        .expect("import")
        .into_inner();
    let state = msgpack::decode(
        &imported.imported_resources[0]
            .state
            .as_ref()
            .expect("state")
            .msgpack,
        &thing_type(),
    )
    .expect("decode");
    assert_eq!(state.get("id").as_str(), Some("abc"));
    // Left out by the provider, filled in as "no blocks" by the server.
    assert_eq!(state.get("instance"), &Value::List(vec![]));

    // Default state upgrade: stored JSON with a dropped attribute.
    let upgraded = client
        .upgrade_resource_state(pb::upgrade_resource_state::Request {
            type_name: "test_thing".into(),
            version: 1,
            raw_state: Some(pb::RawState {
                json: br#"{"id":"x","name":"n","old":true,"instance":[{"port":1}]}"#.to_vec(),
                flatmap: Default::default(),
            }),
        })
        .await
        .expect("upgrade")
        .into_inner();
    assert!(
        upgraded.diagnostics.is_empty(),
        "{:?}",
        upgraded.diagnostics
    );
    let state = msgpack::decode(
        &upgraded.upgraded_state.expect("state").msgpack,
        &thing_type(),
    )
    .expect("decode");
    assert_eq!(state.get("instance").as_list().map(<[Value]>::len), Some(1));

    let too_new = client
        .upgrade_resource_state(pb::upgrade_resource_state::Request {
            type_name: "test_thing".into(),
            version: 2,
            raw_state: Some(pb::RawState {
                json: b"{}".to_vec(),
                flatmap: Default::default(),
            }),
        })
        .await
        .expect("upgrade")
        .into_inner();
    assert_eq!(too_new.diagnostics.len(), 1);

    // Shutdown ends open streams and the server, promptly.
    let started = Instant::now();
    plugin::grpc_controller_client::GrpcControllerClient::new(harness.channel.clone())
        .shutdown(plugin::Empty {})
        .await
        .expect("shutdown");
    let finished = tokio::time::timeout(Duration::from_secs(2), harness.server)
        .await
        .expect("server must stop within 2 s")
        .expect("join");
    assert!(finished.is_ok(), "{finished:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), stdio.message())
            .await
            .expect("stdio stream must end")
            .map_or(true, |message| message.is_none()),
    );
    drop(harness.shutdown);
}
