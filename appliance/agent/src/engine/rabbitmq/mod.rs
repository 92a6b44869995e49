//! RabbitMQ, run from Debian's `rabbitmq-server` with every path and listener set by FerryMQ,
//! so several hosts (network namespaces) can share one filesystem and one installation.

mod config;
mod management;
mod metrics;
mod probe;

use super::{Engine, Health, ObservedUsers, Placement, RenderedFile};
use crate::metrics::Sample;
use crate::supervisor::UnitSpec;
use anyhow::Result;
use ferrymq_api::agent::User;
use management::Management;
use std::net::IpAddr;
use std::path::PathBuf;

pub const AMQP_PORT: u16 = 5672;
pub const CONSOLE_PORT: u16 = 15672;
/// The engine user the agent manages the broker with; never reported as a broker user.
pub const AGENT_USER: &str = "ferrymq-agent";
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// One RabbitMQ node of one broker on this host.
pub struct RabbitMq {
    pub placement: Placement,
    management: Management,
}

impl RabbitMq {
    pub fn new(placement: Placement) -> Result<Self> {
        let management = Management::new(
            format!("http://{}/api", socket(placement.address, CONSOLE_PORT)),
            AGENT_USER,
            &placement.agent_password,
        )?;
        Ok(RabbitMq {
            placement,
            management,
        })
    }

    fn node_name(&self) -> String {
        format!("rabbit@{}", self.placement.address)
    }

    fn mnesia_dir(&self) -> PathBuf {
        self.placement.data_dir.join("mnesia")
    }

    fn log_dir(&self) -> PathBuf {
        self.placement.data_dir.join("log")
    }
}

/// `ip:port`, with brackets for IPv6.
fn socket(address: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(address, port).to_string()
}

#[tonic::async_trait]
impl Engine for RabbitMq {
    fn render(&self) -> Result<Vec<RenderedFile>> {
        config::render(self)
    }

    fn units(&self) -> Vec<UnitSpec> {
        let d = |p: &PathBuf| p.display().to_string();
        let env = vec![
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOME".into(), d(&self.placement.config_dir)),
            ("LANG".into(), "C.UTF-8".into()),
            ("RABBITMQ_NODENAME".into(), self.node_name()),
            ("RABBITMQ_USE_LONGNAME".into(), "true".into()),
            ("RABBITMQ_MNESIA_BASE".into(), d(&self.mnesia_dir())),
            ("RABBITMQ_LOG_BASE".into(), d(&self.log_dir())),
            (
                "RABBITMQ_CONFIG_FILE".into(),
                d(&self.placement.config_dir.join(config::CONF)),
            ),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                d(&self.placement.config_dir.join(config::PLUGINS)),
            ),
            (
                "RABBITMQ_CONF_ENV_FILE".into(),
                d(&self.placement.config_dir.join(config::ENV)),
            ),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".into(),
                d(&self.placement.config_dir.join("advanced.config")),
            ),
            (
                "RABBITMQ_PID_FILE".into(),
                d(&self.placement.config_dir.join("rabbitmq.pid")),
            ),
        ];
        vec![UnitSpec {
            name: format!("{}-rabbitmq", self.placement.broker_id),
            program: SERVER.into(),
            args: vec![],
            env,
            user: Some(self.system_user().into()),
            working_dir: self.placement.config_dir.clone(),
            console_log: self.placement.config_dir.join("console.log"),
            limits: Some(crate::sizing::resource_limits(self.placement.instance_type)),
        }]
    }

    fn system_user(&self) -> &'static str {
        "rabbitmq"
    }

    fn data_dirs(&self) -> Vec<PathBuf> {
        vec![
            self.placement.data_dir.clone(),
            self.mnesia_dir(),
            self.log_dir(),
        ]
    }

    async fn health(&self) -> Health {
        match probe::amqp(self.placement.address, AMQP_PORT).await {
            Ok(()) => Health::Serving,
            Err(e) => Health::NotServing(format!(
                "AMQP on {}: {e:#}",
                socket(self.placement.address, AMQP_PORT)
            )),
        }
    }

    async fn sync_users(&self, desired: &[User]) -> Result<bool> {
        self.management.sync_users(desired).await
    }

    async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers> {
        self.management.observed_users(desired).await
    }

    fn endpoints(&self) -> Vec<String> {
        vec![format!(
            "amqp://{}",
            socket(self.placement.address, AMQP_PORT)
        )]
    }

    fn console_url(&self) -> String {
        format!("http://{}", socket(self.placement.address, CONSOLE_PORT))
    }

    async fn after_stop(&self) -> Result<()> {
        // rabbitmq-server starts epmd as a daemon that outlives the node; one broker runs per
        // host, so with the node stopped nothing else needs it. `-kill` refuses while nodes
        // are still registered.
        let out = tokio::process::Command::new("epmd")
            .arg("-kill")
            .output()
            .await;
        if let Ok(out) = out {
            tracing::debug!(status = %out.status, "epmd -kill");
        }
        Ok(())
    }

    async fn metrics(&self) -> Result<Vec<Sample>> {
        metrics::samples(&self.management, &self.node_name()).await
    }
}
