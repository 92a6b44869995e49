//! `ferrymq-agent`: runs on every appliance host, serves the agent API behind mutual TLS and
//! converges the brokers applied to it. `pki` makes the deployment's certificates.

mod api;
mod bundle;
mod engine;
mod host;
mod pki;
mod reconcile;
mod sizing;
mod storage;
mod store;
mod supervisor;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferrymq_api::agent::agent_server::AgentServer;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

#[derive(Parser)]
#[command(name = "ferrymq-agent", version, about = "FerryMQ appliance agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the agent API and keep this host's brokers converged.
    Serve {
        /// Address and port of the agent API (the host's address, port 7443 by default).
        #[arg(long, env = "FERRYMQ_LISTEN")]
        listen: SocketAddr,
        /// Where specs, engine configuration and volume mount points live.
        #[arg(long, env = "FERRYMQ_STATE_DIR", default_value = "/var/lib/ferrymq")]
        state_dir: PathBuf,
        /// Directory with ca.pem, agent.pem and agent-key.pem (see `pki issue-host`).
        #[arg(long, env = "FERRYMQ_TLS_DIR", default_value = "/etc/ferrymq/tls")]
        tls_dir: PathBuf,
        /// Where engine bundles missing on this host come from: a directory or an http://
        /// mirror serving `<engine>-<version>.tar.gz` (digests are the catalogue's).
        #[arg(long, env = "FERRYMQ_BUNDLE_SOURCE")]
        bundle_source: Option<String>,
    },
    /// Make the deployment's certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the deployment CA and the provider's client certificate.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a host's server certificate from the CA in --dir.
    IssueHost {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        address: IpAddr,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Pki { command } => match command {
            PkiCommand::Init { dir } => {
                pki::init(&dir)?;
                println!(
                    "wrote the deployment CA and client certificate to {}",
                    dir.display()
                );
                Ok(())
            }
            PkiCommand::IssueHost { dir, address, out } => {
                pki::issue_host(&dir, address, &out)?;
                println!("wrote the certificate of {address} to {}", out.display());
                Ok(())
            }
        },
        Command::Serve {
            listen,
            state_dir,
            tls_dir,
            bundle_source,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("FERRYMQ_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            tokio::runtime::Runtime::new()?.block_on(serve(
                listen,
                state_dir,
                tls_dir,
                bundle_source,
            ))
        }
    }
}

async fn serve(
    listen: SocketAddr,
    state_dir: PathBuf,
    tls_dir: PathBuf,
    bundle_source: Option<String>,
) -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let read = |name: &str| {
        let path = tls_dir.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(pki::AGENT_CERT)?,
            read(pki::AGENT_KEY)?,
        ))
        .client_ca_root(Certificate::from_pem(read(pki::CA_CERT)?));

    let brokers_dir = state_dir.join("brokers");
    let store = Arc::new(store::FsStore::new(&brokers_dir));
    let supervisor = Arc::new(supervisor::DirectSupervisor::new(state_dir.join("units")));
    let kind = supervisor::Supervisor::kind(supervisor.as_ref());
    let bundles = bundle::Store::new(state_dir.join("bundles"), bundle_source);
    let reconciler =
        Arc::new(reconcile::Reconciler::new(brokers_dir, store, supervisor).with_bundles(bundles));
    // One pass before serving, so the first status a client reads after an agent restart is
    // what the host runs, not "creation in progress".
    reconciler.pass().await.context("first reconcile pass")?;
    tokio::spawn(reconciler.clone().run());

    tracing::info!(%listen, state_dir = %state_dir.display(), "agent serving");
    Server::builder()
        .tls_config(tls)
        .context("configuring TLS")?
        .add_service(AgentServer::new(api::AgentService::new(reconciler, kind)))
        .serve_with_shutdown(listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the agent API")
}
