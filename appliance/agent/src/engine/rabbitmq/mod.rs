//! RabbitMQ, run from Debian's `rabbitmq-server` with every path and listener set by FerryMQ,
//! so several hosts (network namespaces) can share one filesystem and one installation.

pub mod auth;
mod config;
mod distribution;
mod management;
mod metrics;
mod partition;
mod probe;

use super::{Engine, Health, Listener, ListenerCheck, ObservedUsers, Placement, RenderedFile};
use crate::metrics::Sample;
use crate::supervisor::UnitSpec;
use anyhow::{Context, Result};
use distribution::Distribution;
use ferrymq_api::agent::User;
use management::Management;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Amazon MQ's ports: AMQPS and the console over HTTPS, always served.
pub const AMQPS_PORT: u16 = 5671;
pub const CONSOLE_TLS_PORT: u16 = 15671;
/// Plain AMQP and HTTP console, only with `plain_listeners`.
pub const AMQP_PORT: u16 = 5672;
pub const CONSOLE_PORT: u16 = 15672;
/// The engine user the agent manages the broker with; never reported as a broker user, and
/// not in the node's user database: RabbitMQ asks the agent about it (see `auth`).
pub const AGENT_USER: &str = "ferrymq-agent";
/// The scripts of Debian's package; a bundle has the same ones under `<home>/sbin`.
const DEBIAN_SBIN: &str = "/usr/lib/rabbitmq/bin";

/// One RabbitMQ node of one broker on this host.
pub struct RabbitMq {
    pub placement: Placement,
    /// Decided once from the placement and the node's database (see `distribution`).
    distribution: Distribution,
    management: Management,
    tls: std::sync::Arc<rustls::ClientConfig>,
}

impl RabbitMq {
    pub fn new(placement: Placement) -> Result<Self> {
        let tls = crate::certificates::client_config(&placement.deployment_ca_pem)?;
        // Before the node can ask: the endpoint lets the agent in with this password.
        auth::Passwords::global().set(&placement.broker_id, &placement.agent_password);
        let management = Management::new(
            format!(
                "https://{}/api",
                socket(placement.address, CONSOLE_TLS_PORT)
            ),
            AGENT_USER,
            &placement.agent_password,
            tls.clone(),
        )?;
        let distribution = distribution_of(&placement);
        Ok(RabbitMq {
            placement,
            distribution,
            management,
            tls,
        })
    }

    fn node_name(&self) -> String {
        format!("rabbit@{}", self.distribution.node_host())
    }

    /// A RabbitMQ script (`rabbitmq-server`, `rabbitmqctl`) of the placed bundle, else of the
    /// host's Debian package. The scripts find their home from their own path, so the bundle's
    /// run its own server tree (plugins, escripts) on the host's Erlang.
    fn script(&self, name: &str) -> PathBuf {
        match &self.placement.engine_home {
            Some(home) => home.join("sbin").join(name),
            None => PathBuf::from(DEBIAN_SBIN).join(name),
        }
    }

    /// Where the node writes its VM's pid (`RABBITMQ_PID_FILE`).
    fn pid_file(&self) -> PathBuf {
        self.placement.config_dir.join("rabbitmq.pid")
    }

    /// Whether this node has never run: no database of its own yet.
    fn blank(&self) -> bool {
        let dir = self.mnesia_dir().join(self.node_name());
        std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
    }

    /// Every node name of the broker's cluster, this one included.
    fn cluster_node_names(&self) -> Vec<String> {
        self.placement.peers.iter().map(|p| node_name(*p)).collect()
    }

    fn mnesia_dir(&self) -> PathBuf {
        self.placement.data_dir.join("mnesia")
    }

    fn log_dir(&self) -> PathBuf {
        self.placement.data_dir.join("log")
    }

    /// `ERL_EPMD_ADDRESS` for the node and the CLI: either may start epmd when none runs.
    fn epmd_env(&self) -> Vec<(String, String)> {
        self.distribution
            .epmd_address()
            .map(|a| ("ERL_EPMD_ADDRESS".to_string(), a))
            .into_iter()
            .collect()
    }

    /// Runs `rabbitmqctl` against this node as the engine's user (its home holds the cookie).
    async fn rabbitmqctl(&self, args: &[&str]) -> Result<std::process::Output> {
        self.rabbitmqctl_command(args)?
            .output()
            .await
            .with_context(|| format!("rabbitmqctl {}", args.join(" ")))
    }

    fn rabbitmqctl_command(&self, args: &[&str]) -> Result<tokio::process::Command> {
        let user = nix::unistd::User::from_name(self.system_user())?
            .with_context(|| format!("no system user {}", self.system_user()))?;
        let mut cmd = tokio::process::Command::new(self.script("rabbitmqctl"));
        cmd.args(["--longnames", "-n", &self.node_name()])
            .args(args)
            .env("HOME", &self.placement.config_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("RABBITMQ_CTL_ERL_ARGS", self.distribution.ctl_args())
            .envs(self.epmd_env())
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw());
        Ok(cmd)
    }

    /// Deletes `ferrymq-agent` from the node's user database, where console users would see
    /// and change it: the default user of a node's first boot, a broker made before the agent
    /// logged in through `auth`, or one a console user made. Says so when it did.
    async fn remove_internal_agent_user(&self) -> Result<Option<String>> {
        if !node_process_alive(&self.pid_file()) {
            return Ok(None);
        }
        // An API that does not answer (the node starting) is no proof of anything: next pass.
        let Ok(removed) = self.management.remove_internal_agent_user().await else {
            return Ok(None);
        };
        Ok(removed.then(|| {
            format!(
                "the internal user {AGENT_USER} was deleted: the agent logs in through the \
                 HTTP backend, console users do not see its user"
            )
        }))
    }

    /// `rabbitmqctl` that must succeed; its output.
    async fn rabbitmqctl_ok(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self.rabbitmqctl(args).await?;
        if !out.status.success() {
            anyhow::bail!(
                "rabbitmqctl {} on {}: {} {}",
                args.join(" "),
                self.node_name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Whether every peer answers AMQPS: a partition is only healed once its fault is over.
    async fn peers_answer(&self) -> bool {
        for peer in self
            .placement
            .peers
            .iter()
            .filter(|a| **a != self.placement.address)
        {
            if probe::amqp(*peer, AMQPS_PORT, Some(&self.tls))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// The partitions the running members report at this moment (`cluster_status` asks each of
    /// them), where the management API shows statistics collected every few seconds.
    async fn partitions_now(&self) -> Result<Vec<partition::NodeView>> {
        let out = self
            .rabbitmqctl_ok(&["cluster_status", "--formatter", "json"])
            .await?;
        partition::from_cluster_status(&out.stdout)
    }
}

/// How long a partition must stay the same before the node it picks restarts.
const PARTITION_CONFIRM: std::time::Duration = std::time::Duration::from_secs(5);
/// How many times a node stopped to end a partition is asked to start again, 5 s apart.
const START_APP_ATTEMPTS: u32 = 3;

/// The name of a cluster node (and of a single instance an older agent made): a long node
/// name on the host's address (`RABBITMQ_USE_LONGNAME`), which resolves on every host without
/// DNS or /etc/hosts, which network namespaces entered with `nsenter` do not get.
pub fn node_name(address: IpAddr) -> String {
    format!("rabbit@{address}")
}

/// A cluster node speaks TLS on the host's address; a single instance stays on loopback,
/// unless its database was made under its address-named node by an older agent.
fn distribution_of(p: &Placement) -> Distribution {
    if p.clustered() {
        return Distribution::Tls {
            address: p.address,
            optfile: p.config_dir.join(config::DIST_OPTFILE),
        };
    }
    let mnesia = p.data_dir.join("mnesia");
    let has_data =
        |node: &str| std::fs::read_dir(mnesia.join(node)).is_ok_and(|mut d| d.next().is_some());
    let loopback = format!("rabbit@{}", Distribution::Loopback.node_host());
    if has_data(&node_name(p.address)) && !has_data(&loopback) {
        Distribution::HostAddress(p.address)
    } else {
        Distribution::Loopback
    }
}

/// `ip:port`, with brackets for IPv6.
fn socket(address: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(address, port).to_string()
}

/// AMQPS and the HTTPS console always, the plain ones when the user asked for them; TLS
/// passes through the load balancer untouched, its checks speak TLS to the node. A function of
/// the spec alone: a dedicated load-balancer host knows them without an engine.
pub fn listeners(plain_listeners: bool) -> Vec<Listener> {
    let mut listeners = vec![
        Listener {
            name: "amqps",
            port: AMQPS_PORT,
            check: ListenerCheck::AmqpHeaderTls,
        },
        Listener {
            name: "console",
            port: CONSOLE_TLS_PORT,
            check: ListenerCheck::Connect,
        },
    ];
    if plain_listeners {
        listeners.extend([
            Listener {
                name: "amqp",
                port: AMQP_PORT,
                check: ListenerCheck::AmqpHeader,
            },
            Listener {
                name: "console_plain",
                port: CONSOLE_PORT,
                check: ListenerCheck::Connect,
            },
        ]);
    }
    listeners
}

/// The client endpoints at `address` (an instance's, or the load balancer's virtual IP).
pub fn endpoints(address: IpAddr, plain_listeners: bool) -> Vec<String> {
    let mut endpoints = vec![format!("amqps://{}", socket(address, AMQPS_PORT))];
    if plain_listeners {
        endpoints.push(format!("amqp://{}", socket(address, AMQP_PORT)));
    }
    endpoints
}

#[tonic::async_trait]
impl Engine for RabbitMq {
    fn render(&self) -> Result<Vec<RenderedFile>> {
        config::render(self)
    }

    fn units(&self) -> Vec<UnitSpec> {
        let d = |p: &PathBuf| p.display().to_string();
        let mut env: Vec<(String, String)> = vec![
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
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(),
                self.distribution.server_args(),
            ),
            ("RABBITMQ_PID_FILE".into(), d(&self.pid_file())),
        ];
        env.extend(self.epmd_env());
        vec![UnitSpec {
            name: format!("{}-rabbitmq", self.placement.broker_id),
            program: self.script("rabbitmq-server"),
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
        if let Err(e) = probe::amqp(self.placement.address, AMQPS_PORT, Some(&self.tls)).await {
            return Health::NotServing(format!(
                "AMQPS on {}: {e:#}",
                socket(self.placement.address, AMQPS_PORT)
            ));
        }
        if !self.placement.clustered() {
            return Health::Serving;
        }
        // A node that booted alone (its peers unreachable at first boot) serves AMQP but is
        // not the broker: it must know every peer as a member.
        match self.management.cluster_nodes().await {
            Ok(members) => {
                let missing: Vec<String> = self
                    .cluster_node_names()
                    .into_iter()
                    .filter(|n| !members.contains(n))
                    .collect();
                if missing.is_empty() {
                    Health::Serving
                } else {
                    Health::NotServing(format!(
                        "node {} is not clustered with {}",
                        self.node_name(),
                        missing.join(", ")
                    ))
                }
            }
            Err(e) => Health::NotServing(format!("cluster membership: {e:#}")),
        }
    }

    fn listeners(&self) -> Vec<Listener> {
        listeners(self.placement.plain_listeners)
    }

    async fn ready_to_start(&self) -> Result<(), String> {
        let p = &self.placement;
        if !p.clustered() || p.instance_index == 0 || !self.blank() {
            return Ok(());
        }
        // A blank node joins the cluster through classic peer discovery, which takes the first
        // listed node it reaches; started before any peer serves it would form a cluster of
        // its own. The first instance never waits: it is the one a new cluster forms on.
        for peer in p.peers.iter().filter(|a| **a != p.address) {
            if probe::amqp(*peer, AMQPS_PORT, Some(&self.tls))
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(format!(
            "node {} waits for a cluster peer to serve before its first start",
            self.node_name()
        ))
    }

    async fn ready_to_stop(&self) -> Result<(), String> {
        if !self.placement.clustered() {
            return Ok(());
        }
        match self.management.quorum_critical().await {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(format!(
                "waiting: node {} is quorum critical ({reason})",
                self.node_name()
            )),
            Err(e) => Err(format!(
                "waiting: node {} cannot tell whether it is quorum critical ({e:#})",
                self.node_name()
            )),
        }
    }

    /// Ends a partition RabbitMQ keeps after a short link cut (see `partition`): the chosen
    /// node restarts its application, not its VM, and rejoins the others' view. The choice is
    /// read twice, `PARTITION_CONFIRM` apart and the second time from the members themselves,
    /// so a report RabbitMQ clears by itself right after the nodes reconnect restarts nothing.
    /// First, on every node: an internal user named like the agent's is deleted (see `auth`).
    async fn heal(&self) -> Result<Option<String>> {
        if let Some(done) = self.remove_internal_agent_user().await? {
            return Ok(Some(done));
        }
        if !self.placement.clustered() || !node_process_alive(&self.pid_file()) {
            return Ok(None);
        }
        let me = self.node_name();
        // The management view is cheap to read on every pass, but it lags: a node RabbitMQ
        // itself restarted to end the partition can still show the lists from before it. What
        // the members report now, after PARTITION_CONFIRM, decides.
        let picked = |view: &[partition::NodeView]| {
            partition::node_to_restart(view).as_deref() == Some(me.as_str())
        };
        match self.management.partition_view().await {
            Ok(view) if picked(&view) && self.peers_answer().await => {}
            _ => return Ok(None),
        }
        tokio::time::sleep(PARTITION_CONFIRM).await;
        let now = self.partitions_now().await?;
        if !picked(&now) {
            tracing::info!(
                "node {me} not restarted: the partition the management view showed is not \
                 reported by the members now ({now:?})"
            );
            return Ok(None);
        }
        if !self.peers_answer().await {
            return Ok(None);
        }
        self.rabbitmqctl_ok(&["stop_app"]).await?;
        // With its application stopped the node serves nothing, and no later pass would start
        // it (the VM still runs, and the partition view is read through the application).
        let mut attempt = 1;
        while let Err(e) = self.rabbitmqctl_ok(&["start_app"]).await {
            if attempt == START_APP_ATTEMPTS {
                return Err(e.context(format!(
                    "node {me} stopped to end a partition did not start again"
                )));
            }
            tracing::warn!("starting the application of node {me} again: {e:#}");
            attempt += 1;
            tokio::time::sleep(PARTITION_CONFIRM).await;
        }
        Ok(Some(format!(
            "node {me} stayed partitioned after its peers answered again: its application was restarted"
        )))
    }

    async fn sync_broker_settings(&self) -> Result<()> {
        // Quorum queues by default on a cluster (Amazon MQ's default). RabbitMQ 3.10 takes a
        // vhost's default queue type only when the vhost is created, and policies cannot change
        // a queue's type: the first instance recreates the still-empty default vhost with it.
        if self.placement.clustered() && self.placement.instance_index == 0 {
            self.management.ensure_default_queue_type("quorum").await?;
        }
        Ok(())
    }

    async fn apply_quotas(&self) -> Result<bool> {
        let limits = crate::sizing::rabbitmq(self.placement.instance_type);
        self.management.ensure_max_queues(limits.queues).await
    }

    async fn sync_users(&self, desired: &[User]) -> Result<bool> {
        self.management.sync_users(desired).await
    }

    async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers> {
        self.management.observed_users(desired).await
    }

    fn endpoints(&self) -> Vec<String> {
        endpoints(self.placement.address, self.placement.plain_listeners)
    }

    fn console_url(&self) -> String {
        format!(
            "https://{}",
            socket(self.placement.address, CONSOLE_TLS_PORT)
        )
    }

    fn wants_node_certificate(&self) -> bool {
        self.placement.clustered()
    }

    /// epmd runs once per network namespace and outlives the nodes: one that listens where
    /// this node's distribution must not be reachable (started by an older agent, or without
    /// `ERL_EPMD_ADDRESS`) is stopped, so the node starts its own as `distribution` says.
    /// The node is not running here, so no node of this host is registered with it.
    async fn before_start(&self) -> Result<()> {
        let stray: Vec<IpAddr> = distribution::listening_addresses(distribution::EPMD_PORT)
            .into_iter()
            .filter(|a| !self.distribution.epmd_may_listen_on(*a))
            .collect();
        if stray.is_empty() {
            return Ok(());
        }
        let out = tokio::process::Command::new("epmd")
            .arg("-kill")
            .output()
            .await
            .context("epmd -kill")?;
        tracing::info!(broker = %self.placement.broker_id, ?stray, status = %out.status, "stopped an epmd listening beyond where the node's distribution may be reached");
        Ok(())
    }

    /// RabbitMQ reads certificate files again once Erlang's PEM caches are cleared: renewed
    /// files take effect for new connections without a restart, and open ones keep going.
    /// The TLS distribution has a cache of its own (`ssl_pem_cache_dist`, which
    /// `ssl:clear_pem_cache()` leaves alone; it also re-reads changed files by itself, but only
    /// every 2 minutes): a renewed node certificate is served to the next peer at once.
    async fn install_certificate(&self, changed: bool) -> Result<bool> {
        // A node that does not run reads the files when it starts. Asking it anyway costs a
        // whole rabbitmqctl (an Erlang VM that retries the missing node): over a minute of CPU
        // on a software-emulated appliance, at every first start.
        if !changed || !node_process_alive(&self.pid_file()) {
            return Ok(false);
        }
        let out = self.rabbitmqctl(&["eval", CLEAR_PEM_CACHES]).await;
        match out {
            Ok(o) if o.status.success() => {
                tracing::info!(broker = %self.placement.broker_id, "certificate reloaded (PEM cache cleared)")
            }
            // Not running yet: it reads the new files when it starts.
            Ok(o) => tracing::debug!(status = %o.status, "clear_pem_cache"),
            Err(e) => tracing::debug!("clear_pem_cache: {e:#}"),
        }
        Ok(false)
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

/// Clears the PEM caches of the node's TLS listeners and of its TLS distribution (when it has
/// one); the caches read the files again at the next connection.
const CLEAR_PEM_CACHES: &str = "ssl:clear_pem_cache(), \
    case whereis(ssl_pem_cache_dist) of \
        undefined -> ok; \
        Dist -> ok = gen_server:call(Dist, {unconditionally_clear_pem_cache, self()}, infinity) \
    end.";

/// Whether the process a pid file names (RabbitMQ writes its VM's pid once it boots) is alive;
/// false without the file or with a stale one.
fn node_process_alive(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid > 0 && Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::{Engine, Placement};

    #[test]
    fn a_single_instance_is_reached_on_loopback_and_a_cluster_node_over_tls() {
        let single = RabbitMq::new(placement()).expect("node");
        assert_eq!(single.node_name(), "rabbit@127.0.0.1");
        let env = |node: &RabbitMq, key: &str| {
            node.units()[0]
                .env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            env(&single, "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS").as_deref(),
            Some("-kernel inet_dist_use_interface {127,0,0,1}")
        );
        assert_eq!(
            env(&single, "RABBITMQ_NODENAME").as_deref(),
            Some("rabbit@127.0.0.1")
        );
        assert_eq!(
            env(&single, "ERL_EPMD_ADDRESS").as_deref(),
            Some("127.0.0.1")
        );
        assert!(!single.wants_node_certificate());

        let mut p = placement();
        p.peers = vec![p.address, "10.9.8.8".parse().expect("ip")];
        let node = RabbitMq::new(p).expect("node");
        assert_eq!(node.node_name(), "rabbit@10.9.8.7");
        assert!(env(&node, "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS")
            .expect("args")
            .starts_with(
                "-proto_dist inet_tls -ssl_dist_optfile /state/b-1/engine/dist-tls.conf \
                 -kernel inet_dist_use_interface {10,9,8,7} "
            ));
        assert_eq!(
            env(&node, "ERL_EPMD_ADDRESS").as_deref(),
            Some("127.0.0.1,10.9.8.7")
        );
        assert!(node.wants_node_certificate());
    }

    #[test]
    fn a_single_instance_made_under_its_address_keeps_its_node_name() {
        let dir =
            std::env::temp_dir().join(format!("ferrymq-rabbit-legacy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut p = placement();
        p.data_dir = dir.clone();
        let old = dir.join("mnesia/rabbit@10.9.8.7");
        std::fs::create_dir_all(&old).expect("mkdir");
        // An empty directory is no database.
        assert_eq!(
            RabbitMq::new(p.clone()).expect("node").node_name(),
            "rabbit@127.0.0.1"
        );
        std::fs::write(old.join("schema.DAT"), "x").expect("write");
        let legacy = RabbitMq::new(p.clone()).expect("node");
        assert_eq!(legacy.node_name(), "rabbit@10.9.8.7");
        assert_eq!(legacy.epmd_env(), vec![]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A node of broker `b-1` on 10.9.8.7, run from the host's Debian package.
    pub(crate) fn placement() -> Placement {
        let address = "10.9.8.7".parse().expect("ip");
        Placement {
            broker_id: "b-1".into(),
            address,
            config_dir: "/state/b-1/engine".into(),
            data_dir: "/state/b-1/volume/rabbitmq".into(),
            instance_type: ferrymq_api::catalogue::instance_type("mq.m5.large").expect("type"),
            volume_bytes: 0,
            users: vec![],
            agent_password: "s3cret-agent-pass".into(),
            cookie: "COOKIE".into(),
            peers: vec![address],
            instance_index: 0,
            certificate: crate::certificates::CertificateFiles::in_dir(std::path::Path::new(
                "/state/b-1/engine/tls",
            )),
            node_certificate: crate::certificates::CertificateFiles::in_dir(std::path::Path::new(
                "/state/b-1/engine/node-tls",
            )),
            deployment_ca_pem: String::new(),
            plain_listeners: false,
            keystore_password: String::new(),
            passwords: Default::default(),
            configuration: None,
            logs: Default::default(),
            engine_home: None,
        }
    }

    #[test]
    fn the_server_runs_from_the_bundle_when_one_is_placed() {
        let debian = RabbitMq::new(placement()).expect("node");
        assert_eq!(
            debian.units()[0].program,
            PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")
        );
        let bundled = RabbitMq::new(Placement {
            engine_home: Some("/state/bundles/rabbitmq-3.10.8-20d9469c9ec8/home".into()),
            ..placement()
        })
        .expect("node");
        assert_eq!(
            bundled.units()[0].program,
            PathBuf::from("/state/bundles/rabbitmq-3.10.8-20d9469c9ec8/home/sbin/rabbitmq-server")
        );
        assert_eq!(
            bundled.script("rabbitmqctl"),
            PathBuf::from("/state/bundles/rabbitmq-3.10.8-20d9469c9ec8/home/sbin/rabbitmqctl")
        );
    }

    #[test]
    fn a_node_runs_only_while_its_pid_file_names_a_live_process() {
        let dir = std::env::temp_dir().join(format!("ferrymq-rabbit-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let pid_file = dir.join("rabbitmq.pid");
        assert!(!node_process_alive(&pid_file), "no pid file");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).expect("write");
        assert!(node_process_alive(&pid_file), "this test's own pid");
        // Above the kernel's pid_max (at most 2^22): no such process.
        std::fs::write(&pid_file, "99999999\n").expect("write");
        assert!(!node_process_alive(&pid_file), "a stale pid file");
        std::fs::write(&pid_file, "not a pid").expect("write");
        assert!(!node_process_alive(&pid_file), "garbage");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
