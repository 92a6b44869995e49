//! `serve`: runs a [`Provider`] as a Terraform plugin process.
//!
//! The sequence is go-plugin's: check the magic cookie, make a server
//! certificate, listen on loopback, print the handshake line, then serve
//! gRPC over mutual TLS until Terraform calls `GRPCController.Shutdown`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;

use super::goplugin::{Broker, Controller, Health, ShutdownSignal, Stdio};
use super::handshake;
use super::incoming::accept_tls;
use super::proto::{health, plugin, tfplugin6};
use super::provider::Provider;
use super::service::ProviderService;
use super::tls;

/// How long responses already in flight (above all the reply to Shutdown
/// itself) get to reach Terraform before the server stops regardless.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Serves `provider` to the Terraform process that started this one.
///
/// Exits the process with status 1 after a human message when not started
/// by Terraform. Returns once Terraform has asked the plugin to shut down
/// (the caller should then just return from `main`), or with an error when
/// the plugin cannot start.
pub async fn serve<P: Provider>(provider: P) -> anyhow::Result<()> {
    if !handshake::cookie_matches(env(handshake::MAGIC_COOKIE_KEY).as_deref()) {
        eprintln!("{}", handshake::NOT_A_PLUGIN_MESSAGE);
        std::process::exit(1);
    }
    init_logging();
    handshake::check_protocol_versions(env("PLUGIN_PROTOCOL_VERSIONS").as_deref())?;

    let identity = tls::ServerIdentity::generate()?;
    let client_certs = env("PLUGIN_CLIENT_CERT")
        .filter(|pem| !pem.trim().is_empty())
        .map(|pem| tls::parse_pem_certs(&pem))
        .transpose()?;
    if client_certs.is_none() {
        tracing::warn!("PLUGIN_CLIENT_CERT is not set: serving TLS without client authentication");
    }
    let tls_config = tls::server_config(&identity, client_certs)?;
    let range = handshake::port_range(
        env("PLUGIN_MIN_PORT").as_deref(),
        env("PLUGIN_MAX_PORT").as_deref(),
    )?;
    let listener = handshake::bind(range).await?;
    let address = listener
        .local_addr()
        .context("cannot read the listening address")?;

    let shutdown = ShutdownSignal::new();
    ignore_interrupts();
    announce(&handshake::handshake_line(address, identity.cert.as_ref()))?;
    tracing::info!(%address, "serving Terraform plugin protocol 6");
    run(provider, listener, tls_config, shutdown).await
}

/// Serves gRPC on `listener` until `shutdown` triggers (normally through
/// `GRPCController.Shutdown`), then gives in-flight responses
/// [`SHUTDOWN_GRACE`] to reach the client and returns even if connections
/// are still open, so the process exits promptly.
pub(crate) async fn run<P: Provider>(
    provider: P,
    listener: TcpListener,
    tls_config: ServerConfig,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let incoming = accept_tls(
        listener,
        TlsAcceptor::from(Arc::new(tls_config)),
        shutdown.clone(),
    );
    let router = Server::builder()
        .add_service(tfplugin6::provider_server::ProviderServer::new(
            ProviderService::new(Arc::new(provider)),
        ))
        .add_service(plugin::grpc_controller_server::GrpcControllerServer::new(
            Controller {
                shutdown: shutdown.clone(),
            },
        ))
        .add_service(plugin::grpc_stdio_server::GrpcStdioServer::new(Stdio {
            shutdown: shutdown.clone(),
        }))
        .add_service(plugin::grpc_broker_server::GrpcBrokerServer::new(Broker {
            shutdown: shutdown.clone(),
        }))
        .add_service(health::health_server::HealthServer::new(Health));

    let graceful = shutdown.clone();
    let server =
        router.serve_with_incoming_shutdown(incoming, async move { graceful.wait().await });
    let deadline = async {
        shutdown.wait().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result.context("the gRPC server failed")?,
        () = deadline => tracing::debug!("connections still open after shutdown; exiting anyway"),
    }
    tracing::debug!("plugin server stopped");
    Ok(())
}

/// Prints the handshake line. go-plugin reads stdout line by line, so the
/// line must be complete and flushed before anything else happens.
fn announce(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").context("cannot write the handshake to stdout")?;
    stdout
        .flush()
        .context("cannot flush the handshake to stdout")
}

/// Ctrl-C in a terminal reaches every process of the group, providers
/// included. Terraform handles it by calling StopProvider and letting
/// running operations finish, so the provider must not die on SIGINT (as
/// go-plugin servers don't) or the results of in-flight applies are lost.
fn ignore_interrupts() {
    tokio::spawn(async {
        while tokio::signal::ctrl_c().await.is_ok() {
            tracing::debug!("interrupt received; waiting for Terraform to stop the provider");
        }
    });
}

/// Sends `tracing` output to stderr, which go-plugin copies into
/// Terraform's log (visible with `TF_LOG=DEBUG`). The level comes from
/// `RUST_LOG` if set, else from `TF_LOG_PROVIDER` or `TF_LOG` (for this
/// crate; dependencies log warnings only), else info.
/// Does nothing if a subscriber is already installed.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let level = env("TF_LOG_PROVIDER")
            .or_else(|| env("TF_LOG"))
            .map(|level| level.to_ascii_lowercase())
            .filter(|level| ["trace", "debug", "info", "warn", "error"].contains(&level.as_str()))
            .unwrap_or_else(|| "info".to_owned());
        // Dependencies (h2, hyper, rustls) only at warn: their trace output
        // would drown the provider's own lines in Terraform's log.
        EnvFilter::new(format!(
            "warn,terraform_provider_ferrymq={level},ferrymq_api={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
