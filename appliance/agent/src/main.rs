//! `ferrymq-agent`: runs on every appliance host, serves the agent API behind mutual TLS and
//! converges the brokers applied to it. `pki` makes the deployment's certificates.

mod api;
mod archive;
mod bundle;
mod certificates;
mod engine;
mod enrollment;
mod host;
mod image;
mod load_balancer;
mod maintenance;
mod metrics;
mod operator;
mod password;
mod pki;
mod readiness;
mod reconcile;
mod sizing;
mod storage;
mod store;
mod supervisor;
mod tls;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferrymq_api::agent::agent_server::AgentServer;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;

#[derive(Parser)]
#[command(name = "ferrymq-agent", version, about = "FerryMQ appliance agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reboot a broker (Amazon MQ's RebootBroker): every host restarts its engine once, one at
    /// a time by the rolling rules. Credentials: FERRYMQ_CA_CERT, FERRYMQ_CLIENT_CERT and
    /// FERRYMQ_CLIENT_KEY (the provider's).
    Reboot {
        /// The broker's id (b-…).
        #[arg(long)]
        broker_id: String,
        /// Every instance's agent address, IP[:PORT] (repeat the option).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// How long to wait for every host to have restarted and serve again, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Serve the agent API and keep this host's brokers converged.
    Serve {
        /// Address and port of the agent API (the host's address, port 7443 by default).
        #[arg(long, env = "FERRYMQ_LISTEN")]
        listen: SocketAddr,
        /// Where specs, engine configuration and volume mount points live.
        #[arg(long, env = "FERRYMQ_STATE_DIR", default_value = "/var/lib/ferrymq")]
        state_dir: PathBuf,
        /// Directory with ca.pem, agent.pem, agent-key.pem, broker-ca.pem and broker-ca-key.pem
        /// (see `pki issue-host`).
        #[arg(long, env = "FERRYMQ_TLS_DIR", default_value = "/etc/ferrymq/tls")]
        tls_dir: PathBuf,
        /// Where a host without agent.pem finds its join token and the deployment CA
        /// (join-token, ca.pem), or imports them from the kernel command line or a NoCloud
        /// seed; the host then serves only enrollment until enrolled, writing there the
        /// fingerprint of its bootstrap certificate (bootstrap-fingerprint) and its count of
        /// wrong proofs (enrollment-lockout). Unset: no enrollment.
        #[arg(long, env = "FERRYMQ_ENROLLMENT_DIR")]
        enrollment_dir: Option<PathBuf>,
        /// A mounted NoCloud seed (CIDATA) to read the token and CA from.
        #[arg(long, env = "FERRYMQ_SEED_DIR", default_value = "/run/ferrymq/seed")]
        seed_dir: PathBuf,
        /// How brokers are run: `systemd` units (needs systemd as PID 1, in the agent's
        /// network namespace), `direct` child processes, or `auto` (systemd where it can).
        #[arg(long, env = "FERRYMQ_SUPERVISOR", default_value = "auto")]
        supervisor: supervisor::Backend,
        /// Address and port of the Prometheus metrics listener (`GET /metrics`): plain HTTP on
        /// a loopback address (127.0.0.1:9404); on any other (the host's address and 9404)
        /// HTTPS only, with the agent's certificate, and a client certificate of the deployment
        /// CA required. None when unset.
        #[arg(long, env = "FERRYMQ_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// The loopback port RabbitMQ nodes ask the agent about its own engine user on
        /// (`rabbitmq_auth_backend_http`, bound to 127.0.0.1 only); 0: any free port, for
        /// several agents in one network namespace (tests).
        #[arg(long, env = "FERRYMQ_ENGINE_AUTH_PORT", default_value_t = engine::rabbitmq::auth::PORT)]
        engine_auth_port: u16,
        /// Where engine bundles missing on this host come from: a directory or an http://
        /// mirror serving `<engine>-<version>.tar.gz` (digests are the catalogue's).
        #[arg(long, env = "FERRYMQ_BUNDLE_SOURCE")]
        bundle_source: Option<String>,
        /// Seconds a window-bound change (engine version, instance type, configuration
        /// revision, reboot) gets to serve before this host puts back what it ran before and
        /// leaves the change for the next window.
        #[arg(long, env = "FERRYMQ_ROLLBACK_AFTER", default_value_t = maintenance::DEFAULT_ROLLBACK_AFTER.as_secs())]
        rollback_after: u64,
        /// Milliseconds every wrong join token proof waits before it is answered (attempts are
        /// answered one at a time, so this bounds the guessing rate of all clients together).
        #[arg(long, env = "FERRYMQ_ENROLL_FAILURE_DELAY_MS", default_value_t = 1000)]
        enroll_failure_delay_ms: u64,
        /// Seconds enrollment is locked after 5 wrong proofs (each further one doubles it, up
        /// to a day); a new join token unlocks at once.
        #[arg(long, env = "FERRYMQ_ENROLL_LOCKOUT_SECONDS", default_value_t = 60)]
        enroll_lockout_seconds: u64,
    },
    /// Appliance images: stage one to be switched to in the brokers' maintenance window.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Make the deployment's certificates.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Verify an image archive against its published SHA-256, unpack it and stage it: the agent
    /// reports `image: A -> B` as pending and switches in the window, one host at a time.
    Stage {
        /// The agent's state directory.
        #[arg(long, env = "FERRYMQ_STATE_DIR", default_value = "/var/lib/ferrymq")]
        state_dir: PathBuf,
        /// The image archive (.tar.gz with image.json and bin/ferrymq-agent).
        #[arg(long)]
        archive: PathBuf,
        /// The archive's SHA-256, as published with the image.
        #[arg(long)]
        sha256: String,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create the deployment CA and the operator's (provider's) client certificate.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// How long the deployment CA lives (s, m, h, d, y).
        #[arg(long, default_value = "20y")]
        ca_lifetime: pki::lifetime::Lifetime,
        /// How long the operator's client certificate lives.
        #[arg(long, default_value = "365d")]
        lifetime: pki::lifetime::Lifetime,
    },
    /// Issue the operator's client certificate again (a new key) from the CA in --dir: before
    /// it ends, or for a deployment made before certificates carried roles.
    IssueClient {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "365d")]
        lifetime: pki::lifetime::Lifetime,
    },
    /// Issue a client certificate for Prometheus (role monitoring: it reads every host's
    /// metrics listener and calls nothing on the agent API) into --out.
    IssueMonitoring {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "365d")]
        lifetime: pki::lifetime::Lifetime,
    },
    /// Issue a host's agent certificate and broker CA from the CA in --dir.
    IssueHost {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        address: IpAddr,
        #[arg(long)]
        out: PathBuf,
        /// A name the host's broker CA may sign besides the host's address: a virtual IP, a
        /// subnet of them (ADDRESS/PREFIX) or a DNS name of `certificate_names` (repeat).
        #[arg(long = "name")]
        names: Vec<pki::PermittedName>,
        /// How long the agent certificate and the broker CA live.
        #[arg(long, default_value = "365d")]
        lifetime: pki::lifetime::Lifetime,
    },
    /// Renew the agent certificate and broker CA of hosts (for the keys they hold, no
    /// restart) that end within --before: run where the CA key is, e.g. monthly.
    Renew {
        #[arg(long)]
        dir: PathBuf,
        /// Every host's agent address, IP[:PORT] (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// A name to add to every broker CA's permitted names (repeat).
        #[arg(long = "name")]
        names: Vec<pki::PermittedName>,
        #[arg(long, default_value = "365d")]
        lifetime: pki::lifetime::Lifetime,
        /// Renew what ends within this.
        #[arg(long, default_value = "30d")]
        before: pki::lifetime::Lifetime,
        /// Renew whatever is left.
        #[arg(long)]
        force: bool,
    },
    /// Enroll a host that booted with a join token: sign its key with the CA in --dir.
    Enroll {
        #[arg(long)]
        dir: PathBuf,
        /// The host's agent address, IP[:PORT] (port 7443 by default).
        #[arg(long)]
        host: String,
        /// The host's one-time join token (or FERRYMQ_JOIN_TOKEN).
        #[arg(long, env = "FERRYMQ_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// SHA-256 of the host's bootstrap certificate, as its console prints it (also in
        /// bootstrap-fingerprint in its enrollment directory): checked in the TLS handshake,
        /// before any proof of the token is sent.
        #[arg(long, env = "FERRYMQ_BOOTSTRAP_FINGERPRINT")]
        fingerprint: enrollment::fingerprint::Fingerprint,
    },
    /// Print a fresh join token (256 bits from the OS RNG, 64 hex characters): one per host.
    NewToken,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Reboot {
            broker_id,
            hosts,
            timeout,
        } => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let creds = operator::reboot::Credentials::from_env()?;
            let id = tokio::runtime::Runtime::new()?.block_on(operator::reboot::reboot(
                &creds,
                &broker_id,
                &hosts,
                std::time::Duration::from_secs(timeout),
            ))?;
            println!("{broker_id}: reboot {id} done on {} host(s)", hosts.len());
            Ok(())
        }
        Command::Image {
            command:
                ImageCommand::Stage {
                    state_dir,
                    archive,
                    sha256,
                },
        } => {
            let version = image::Images::new(&state_dir).stage(&archive, &sha256)?;
            println!(
                "staged image {version} in {}: it is switched to in the maintenance window",
                state_dir.display()
            );
            Ok(())
        }
        Command::Pki { command } => match command {
            PkiCommand::Init {
                dir,
                ca_lifetime,
                lifetime,
            } => {
                pki::init(&dir, ca_lifetime, lifetime)?;
                println!(
                    "wrote the deployment CA and client certificate to {}",
                    dir.display()
                );
                Ok(())
            }
            PkiCommand::IssueClient { dir, lifetime } => {
                pki::issue_client(&dir, lifetime)?;
                println!(
                    "wrote the operator's client certificate to {}",
                    dir.display()
                );
                Ok(())
            }
            PkiCommand::IssueMonitoring { dir, out, lifetime } => {
                pki::issue_monitoring(&dir, &out, lifetime)?;
                println!(
                    "wrote the monitoring certificate to {} ({}, {})",
                    out.display(),
                    pki::MONITORING_CERT,
                    pki::MONITORING_KEY
                );
                Ok(())
            }
            PkiCommand::IssueHost {
                dir,
                address,
                out,
                names,
                lifetime,
            } => {
                pki::issue_host(&dir, address, &names, lifetime, &out)?;
                println!("wrote the certificates of {address} to {}", out.display());
                Ok(())
            }
            PkiCommand::Renew {
                dir,
                hosts,
                names,
                lifetime,
                before,
                force,
            } => {
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let lines = tokio::runtime::Runtime::new()?.block_on(operator::renew::renew(
                    &operator::renew::Renewal {
                        pki_dir: &dir,
                        hosts: &hosts,
                        names: &names,
                        lifetime,
                        before: before.0,
                        force,
                    },
                ))?;
                for line in lines {
                    println!("{line}");
                }
                Ok(())
            }
            PkiCommand::NewToken => {
                println!("{}", enrollment::token::new_token()?);
                Ok(())
            }
            PkiCommand::Enroll {
                dir,
                host,
                token,
                fingerprint,
            } => {
                let host: SocketAddr = match host.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, ferrymq_api::DEFAULT_AGENT_PORT),
                    Err(_) => host
                        .parse()
                        .with_context(|| format!("--host {host:?} is not IP or IP:PORT"))?,
                };
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                tokio::runtime::Runtime::new()?.block_on(enrollment::operator::enroll(
                    &dir,
                    host,
                    &token,
                    fingerprint,
                ))?;
                println!("enrolled {host}");
                Ok(())
            }
        },
        Command::Serve {
            listen,
            state_dir,
            tls_dir,
            enrollment_dir,
            seed_dir,
            supervisor,
            metrics_listen,
            engine_auth_port,
            bundle_source,
            rollback_after,
            enroll_failure_delay_ms,
            enroll_lockout_seconds,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("FERRYMQ_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            image::boot_current(&state_dir);
            tokio::runtime::Runtime::new()?.block_on(async {
                readiness::spawn_watchdog();
                // RabbitMQ asks this endpoint about the agent's own user (see
                // `engine::rabbitmq::auth`): bound before the first pass starts a node, and a
                // port already taken stops the agent.
                let engine_auth = engine::rabbitmq::auth::bind(engine_auth_port).await?;
                tokio::spawn(engine::rabbitmq::auth::serve(
                    engine_auth,
                    engine::rabbitmq::auth::Passwords::global().clone(),
                ));
                if !tls_dir.join(pki::AGENT_CERT).exists() {
                    let Some(dir) = enrollment_dir else {
                        anyhow::bail!(
                            "{} has no {} and no --enrollment-dir was given",
                            tls_dir.display(),
                            pki::AGENT_CERT
                        );
                    };
                    let policy = enrollment::lockout::Policy {
                        failure_delay: Duration::from_millis(enroll_failure_delay_ms),
                        first_lock: Duration::from_secs(enroll_lockout_seconds),
                        ..Default::default()
                    };
                    enroll_first(listen, &dir, &seed_dir, &tls_dir, policy).await?;
                }
                serve(
                    listen,
                    state_dir,
                    tls_dir,
                    supervisor,
                    metrics_listen,
                    bundle_source,
                    Duration::from_secs(rollback_after),
                )
                .await
            })
        }
    }
}

/// Waits for a good join token (saying so on the console: none, or a weak one), then serves
/// enrollment until enrolled.
async fn enroll_first(
    listen: SocketAddr,
    dir: &std::path::Path,
    seed_dir: &std::path::Path,
    tls_dir: &std::path::Path,
    policy: enrollment::lockout::Policy,
) -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut said = false;
    // The last error said, so a different one (say, another weak token) is said again.
    let mut said_error = String::new();
    loop {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        match enrollment::material::ensure(dir, &cmdline, Some(seed_dir)).await {
            Ok(Some(origin)) => {
                tracing::info!("join token and deployment CA from {origin}");
                break;
            }
            Ok(None) if !said => {
                tracing::warn!(
                    "NO JOIN TOKEN: this host cannot be enrolled. Give it one: {}/join-token and \
                     ca.pem, ferrymq.join_token=... ferrymq.ca=... on the kernel command line, \
                     or a NoCloud seed (ferrymq_join_token, ferrymq_ca)",
                    dir.display()
                );
                readiness::ready("no join token: cannot be enrolled");
                said = true;
            }
            Ok(None) => {}
            Err(e) if format!("{e:#}") != said_error => {
                said_error = format!("{e:#}");
                tracing::error!("enrollment material: {said_error}");
                readiness::ready(if e.is::<enrollment::material::WeakTokenError>() {
                    "weak join token: cannot be enrolled"
                } else {
                    "bad enrollment material"
                });
                said = true;
            }
            Err(_) => {}
        }
        // A token may still arrive (a seed mounted late, an operator's file): look again.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    readiness::ready("not enrolled: serving enrollment");
    enrollment::service::serve_until_enrolled(listen, dir, tls_dir, policy).await
}

async fn serve(
    listen: SocketAddr,
    state_dir: PathBuf,
    tls_dir: PathBuf,
    backend: supervisor::Backend,
    metrics_listen: Option<SocketAddr>,
    bundle_source: Option<String>,
    rollback_after: Duration,
) -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca_path = tls_dir.join(pki::CA_CERT);
    let ca_pem = std::fs::read_to_string(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    let certificate = tls::AgentCertificate::load(&tls_dir)?;
    let api_tls = tls::server_config(certificate.clone(), &ca_pem, &[b"h2"])?;
    let identities = pki::identity::Identities::new(&ca_pem)?;

    let brokers_dir = state_dir.join("brokers");
    let configurations = Arc::new(store::ConfigurationStore::new(
        state_dir.join("configurations"),
    ));
    let store = Arc::new(store::FsStore::new(&brokers_dir));
    let supervisor = supervisor::select(backend, &state_dir)?;
    let kind = supervisor.kind();
    // Without a broker CA (a host issued before TLS everywhere) the agent still serves; each
    // broker then fails with what to do.
    let broker_ca = certificates::BrokerCa::load(&tls_dir).map_err(|e| format!("{e:#}"));
    if let Err(e) = &broker_ca {
        tracing::warn!("no broker CA: {e}");
    }
    let peers = maintenance::Peers::from_tls_dir(&tls_dir)?;
    let bundles = bundle::Store::new(state_dir.join("bundles"), bundle_source);
    let reconciler = Arc::new(
        reconcile::Reconciler::new(brokers_dir, store, supervisor, broker_ca)
            .with_peers(peers)
            .with_bundles(bundles)
            .with_rollback_after(rollback_after),
    );
    // One pass before serving, so the first status a client reads after an agent restart is
    // what the host runs, not "creation in progress".
    reconciler.pass().await.context("first reconcile pass")?;
    tokio::spawn(reconciler.clone().run());
    if let Some(metrics_listen) = metrics_listen {
        let source = reconciler.clone();
        let collect = move || {
            let source = source.clone();
            async move {
                let mut samples = tokio::task::spawn_blocking(metrics::host::samples)
                    .await
                    .ok()
                    .and_then(|r| r.map_err(|e| tracing::warn!("host metrics: {e:#}")).ok())
                    .unwrap_or_default();
                samples.extend(source.metrics().await);
                metrics::render(&samples)
            }
        };
        // Plain HTTP on loopback only; HTTPS with client certificates anywhere else. Built
        // and bound before serving the API, so a missing certificate or a port already taken
        // stops the agent at start.
        let transport =
            metrics::http::Transport::for_listen(metrics_listen, certificate.clone(), &ca_pem)?;
        let listener = metrics::http::bind(metrics_listen).await?;
        tokio::spawn(async move {
            if let Err(e) = metrics::http::serve(listener, transport, collect).await {
                tracing::error!("metrics listener stopped: {e:#}");
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the agent API to {listen}"))?;
    tracing::info!(%listen, state_dir = %state_dir.display(), supervisor = kind, "agent serving");
    readiness::ready("serving the agent API");
    Server::builder()
        .add_service(AgentServer::new(api::AgentService::new(
            reconciler,
            kind,
            configurations,
            identities,
            tls_dir,
            certificate,
        )))
        .serve_with_incoming_shutdown(api::tls::incoming(listener, api_tls), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the agent API")
}
