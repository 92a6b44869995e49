//! Broker engines: what each renders, runs, and how it is asked whether it serves clients.
//!
//! An engine knows its own configuration, processes, health and user management. It does not
//! know how processes are supervised or where its volume came from: the reconciler hands it a
//! data directory and runs the units it describes.

pub mod activemq;
pub mod connect;
pub mod rabbitmq;

use crate::certificates::CertificateFiles;
use crate::metrics::Sample;
use crate::supervisor::UnitSpec;
use anyhow::Result;
use ferrymq_api::agent::{ConfigurationRef, Logs, User};
use ferrymq_api::catalogue::{EngineType, InstanceType};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// Where and as what one instance of a broker runs on this host: everything an engine needs
/// to render its configuration, decided by the reconciler from the spec.
#[derive(Clone, Debug)]
pub struct Placement {
    pub broker_id: String,
    /// This host's address: listeners bind to it.
    pub address: IpAddr,
    /// Configuration, credentials and console log: on the host's state directory.
    pub config_dir: PathBuf,
    /// Message store and engine logs: on the broker's volume (block or shared).
    pub data_dir: PathBuf,
    pub instance_type: &'static InstanceType,
    /// Size of the filesystem the data directory is on, in bytes (0 when unknown): engines
    /// derive their disk limits from it so a full volume stops producers, not the broker.
    pub volume_bytes: u64,
    /// The spec's users, passwords included.
    pub users: Vec<User>,
    /// The agent's own engine credential, generated once per broker.
    pub agent_password: String,
    /// A secret shared by a broker's instances (the Erlang cookie for RabbitMQ).
    pub cookie: String,
    /// Every instance's address, in the spec's order (this host's included): the members of a
    /// cluster. One entry for a single instance.
    pub peers: Vec<IpAddr>,
    /// This host's position in `peers`.
    pub instance_index: usize,
    /// The broker's TLS server certificate, key and chain: every listener serves TLS.
    pub certificate: CertificateFiles,
    /// The node certificate, key and chain of a clustered broker's instances, by which they
    /// authenticate each other (issued by the host's broker CA when the engine wants one).
    pub node_certificate: CertificateFiles,
    /// The deployment CA (PEM): the agent's probes and management calls trust only it.
    pub deployment_ca_pem: String,
    /// Serve the plain (non-TLS) listeners as well, because the user asked for them.
    pub plain_listeners: bool,
    /// Password of the PKCS12 keystore Java reads the certificate from (made by the agent).
    pub keystore_password: String,
    /// Plaintext passwords sent with the latest apply, held in memory only until the users are
    /// converged: for engines that must have them (ActiveMQ's JAAS files). Others use the
    /// users' `password_hash`.
    pub passwords: BTreeMap<String, String>,
    /// The configuration revision to merge into what the engine renders (its data is
    /// validated again by the engine's allow-list before use).
    pub configuration: Option<ConfigurationRef>,
    /// Amazon MQ's `logs { general, audit }`.
    pub logs: Logs,
    /// The engine's install tree from its bundle (`<bundle>/home` of the bundle the broker's
    /// `engine-current` link names), or None to run the host's Debian package.
    pub engine_home: Option<PathBuf>,
}

impl Placement {
    /// Whether the instances form one cluster (RabbitMQ CLUSTER_MULTI_AZ).
    pub fn clustered(&self) -> bool {
        self.peers.len() > 1
    }
}

/// A port the engine serves clients on, as a load balancer in front of it needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Short name (`amqp`, `console`, `openwire`…): names the HAProxy frontend and backend.
    pub name: &'static str,
    pub port: u16,
    pub check: ListenerCheck,
}

/// The listeners of an engine this host does not run (a dedicated load-balancer host has no
/// engine installed), from the spec alone.
pub fn listeners_of(engine: EngineType, plain_listeners: bool) -> Vec<Listener> {
    match engine {
        EngineType::RabbitMq => rabbitmq::listeners(plain_listeners),
        EngineType::ActiveMq => activemq::listeners(plain_listeners),
    }
}

/// The client endpoints of an engine at an address (the load balancer's virtual IP), from the
/// spec alone.
pub fn endpoints_of(engine: EngineType, address: IpAddr, plain_listeners: bool) -> Vec<String> {
    match engine {
        EngineType::RabbitMq => rabbitmq::endpoints(address, plain_listeners),
        EngineType::ActiveMq => activemq::endpoints(address, plain_listeners),
    }
}

/// How a load balancer tells that an instance serves a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerCheck {
    /// The port accepts connections (an ActiveMQ standby opens none).
    Connect,
    /// The AMQP 0-9-1 protocol header gets a `connection.start` frame back.
    AmqpHeader,
    /// The same inside TLS (AMQPS): the check shakes hands, the clients' TLS passes through.
    AmqpHeaderTls,
}

/// A configuration file as the engine wants it on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub contents: String,
    /// Secrets (cookies, credentials) are written 0600, other files 0640; all are owned by
    /// the engine's user.
    pub secret: bool,
    /// Whether a change takes a restart of the engine; files the engine re-reads by itself
    /// (ActiveMQ's JAAS user files) change without one.
    pub restart_on_change: bool,
}

/// Whether the engine serves clients now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Serving,
    /// Healthy and waiting to take over (ActiveMQ's standby, blocked on the store's lock).
    Standby,
    NotServing(String),
}

/// Users as the engine has them, without passwords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedUsers {
    pub users: Vec<User>,
    /// Users present on the engine whose password is not the one in the spec.
    pub password_drift: Vec<String>,
}

#[tonic::async_trait]
pub trait Engine: Send + Sync {
    /// Every configuration file, complete; the reconciler writes those that changed.
    fn render(&self) -> Result<Vec<RenderedFile>>;
    /// The processes to keep running, in start order.
    fn units(&self) -> Vec<UnitSpec>;
    /// The system user owning the engine's files.
    fn system_user(&self) -> &'static str;
    /// Directories the engine writes to, created and owned by its user before start.
    fn data_dirs(&self) -> Vec<PathBuf>;
    async fn health(&self) -> Health;
    /// Applies the instance type's quotas that the engine takes at run time rather than in
    /// its configuration files (RabbitMQ's queue limit); returns whether anything changed.
    async fn apply_quotas(&self) -> Result<bool> {
        Ok(false)
    }
    /// Makes the engine's users those of the spec; returns whether anything was changed.
    async fn sync_users(&self, desired: &[User]) -> Result<bool>;
    async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers>;
    /// Client endpoints, first the one clients should use.
    fn endpoints(&self) -> Vec<String>;
    fn console_url(&self) -> String;
    /// The ports a load balancer forwards to this engine, with how it checks them.
    fn listeners(&self) -> Vec<Listener>;
    /// Whether the engine's units may be started now; `Err(why)` holds the start back (a
    /// cluster node that has never run waits for the node it joins).
    async fn ready_to_start(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether the instances authenticate each other with node certificates, which the
    /// reconciler then issues into `Placement::node_certificate` (RabbitMQ's TLS
    /// distribution between cluster nodes).
    fn wants_node_certificate(&self) -> bool {
        false
    }
    /// Host-level preparation just before the engine's units start (they are not running).
    async fn before_start(&self) -> Result<()> {
        Ok(())
    }
    /// Whether this instance may be stopped for a rolling change now without taking
    /// availability from the others; `Err(why)` holds the roll-out (a cluster node whose
    /// quorum queues' members have not caught up yet).
    async fn ready_to_stop(&self) -> Result<(), String> {
        Ok(())
    }
    /// Repairs a running engine stuck in a state it does not leave by itself (a RabbitMQ node
    /// still partitioned after the network came back); says what it did, if anything.
    async fn heal(&self) -> Result<Option<String>> {
        Ok(None)
    }
    /// Engine settings of the broker as a whole (e.g. RabbitMQ's default queue type), made
    /// once the engine serves; idempotent.
    async fn sync_broker_settings(&self) -> Result<()> {
        Ok(())
    }
    /// Makes the engine use its certificate files; `changed` when they were just (re)issued.
    /// Returns whether the engine must restart for it.
    async fn install_certificate(&self, changed: bool) -> Result<bool>;
    /// Host-level leftovers once the engine's units are stopped for good.
    async fn after_stop(&self) -> Result<()>;
    /// The engine's figures for the metrics endpoint (Amazon MQ's metric names in the HELP);
    /// fails when the engine does not answer.
    async fn metrics(&self) -> Result<Vec<Sample>>;
}
