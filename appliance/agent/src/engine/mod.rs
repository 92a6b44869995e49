//! Broker engines: what each renders, runs, and how it is asked whether it serves clients.
//!
//! An engine knows its own configuration, processes, health and user management. It does not
//! know how processes are supervised or where its volume came from: the reconciler hands it a
//! data directory and runs the units it describes.

pub mod activemq;
pub mod rabbitmq;

use crate::supervisor::UnitSpec;
use anyhow::Result;
use ferrymq_api::agent::User;
use ferrymq_api::catalogue::InstanceType;
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
    /// The engine's install tree from its bundle (`<bundle>/home` of the bundle the broker's
    /// `engine-current` link names), or None to run the host's Debian package.
    pub engine_home: Option<PathBuf>,
}

/// A configuration file as the engine wants it on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub contents: String,
    /// Secrets (cookies, credentials) are written 0600 and owned by the engine's user.
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
    /// Makes the engine's users those of the spec; returns whether anything was changed.
    async fn sync_users(&self, desired: &[User]) -> Result<bool>;
    async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers>;
    /// Client endpoints, first the one clients should use.
    fn endpoints(&self) -> Vec<String>;
    fn console_url(&self) -> String;
    /// Host-level leftovers once the engine's units are stopped for good.
    async fn after_stop(&self) -> Result<()>;
}
