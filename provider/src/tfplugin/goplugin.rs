//! The go-plugin services a Terraform provider serves besides tfplugin6.
//!
//! Terraform drives providers through HashiCorp's go-plugin, whose client
//! opens a stdio stream and a broker stream on connect, may ping the
//! health service, and on exit calls `GRPCController.Shutdown` then waits up
//! to two seconds for the process to exit. Serving these keeps Terraform's
//! logs free of warnings and makes every provider process exit at once.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::proto::health::{self, health_check_response::ServingStatus};
use super::proto::plugin;

/// A one-way latch telling the server and its open streams to finish.
#[derive(Clone, Debug)]
pub(crate) struct ShutdownSignal {
    sender: Arc<watch::Sender<bool>>,
}

impl ShutdownSignal {
    pub(crate) fn new() -> Self {
        Self {
            sender: Arc::new(watch::channel(false).0),
        }
    }

    pub(crate) fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once [`trigger`](Self::trigger) has been called.
    pub(crate) async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = receiver.wait_for(|triggered| *triggered).await;
    }
}

/// `plugin.GRPCController`: the host's way to make the plugin exit.
pub(crate) struct Controller {
    pub(crate) shutdown: ShutdownSignal,
}

#[tonic::async_trait]
impl plugin::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(
        &self,
        _request: Request<plugin::Empty>,
    ) -> Result<Response<plugin::Empty>, Status> {
        tracing::debug!("GRPCController.Shutdown");
        self.shutdown.trigger();
        Ok(Response::new(plugin::Empty {}))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream that sends nothing and ends when `shutdown` triggers.
fn idle_stream<T: Send + 'static>(shutdown: ShutdownSignal) -> BoxStream<T> {
    let (sender, receiver) = mpsc::channel::<Result<T, Status>>(1);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown.wait() => {}
            () = sender.closed() => {}
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// `plugin.GRPCStdio`: the provider writes its logs to stderr, which
/// go-plugin already captures from the process, and nothing to stdout after
/// the handshake, so the stream stays open and silent.
pub(crate) struct Stdio {
    pub(crate) shutdown: ShutdownSignal,
}

#[tonic::async_trait]
impl plugin::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<plugin::StdioData>;

    async fn stream_stdio(
        &self,
        _request: Request<plugin::Empty>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        tracing::debug!("GRPCStdio.StreamStdio");
        Ok(Response::new(idle_stream(self.shutdown.clone())))
    }
}

/// `plugin.GRPCBroker`: Terraform providers open no extra connections, so
/// incoming messages are read and ignored and nothing is ever sent.
pub(crate) struct Broker {
    pub(crate) shutdown: ShutdownSignal,
}

#[tonic::async_trait]
impl plugin::grpc_broker_server::GrpcBroker for Broker {
    type StartStreamStream = BoxStream<plugin::ConnInfo>;

    async fn start_stream(
        &self,
        request: Request<Streaming<plugin::ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        tracing::debug!("GRPCBroker.StartStream");
        let mut inbound = request.into_inner();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.wait() => break,
                    message = inbound.next() => match message {
                        Some(Ok(info)) => tracing::debug!(service_id = info.service_id, "ignoring broker message"),
                        Some(Err(_)) | None => break,
                    },
                }
            }
        });
        Ok(Response::new(idle_stream(self.shutdown.clone())))
    }
}

/// `grpc.health.v1.Health`: go-plugin's `Ping` checks service "plugin".
pub(crate) struct Health;

#[tonic::async_trait]
impl health::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        tracing::debug!(service, "Health.Check");
        match service.as_str() {
            "" | "plugin" => Ok(Response::new(health::HealthCheckResponse {
                status: ServingStatus::Serving.into(),
            })),
            _ => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }
}
