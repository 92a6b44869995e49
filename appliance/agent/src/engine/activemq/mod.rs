//! ActiveMQ Classic, run from its engine bundle (or Debian's `activemq` 5.17.2 package) with every path, listener and
//! credential set by FerryMQ (Debian's `/etc/activemq` and `/usr/bin/activemq` are not used).
//!
//! One instance serves alone (SINGLE_INSTANCE, its KahaDB on the broker's block volume) or as
//! one of two that share a KahaDB directory (ACTIVE_STANDBY_MULTI_AZ on shared storage): the
//! instance that holds KahaDB's file lock opens its connectors, the other waits for the lock
//! without opening any port. The engine does not know which storage it is on.
//!
//! What Debian's package cannot do, and so FerryMQ does not offer for this bundle:
//! - AMQP: no `activemq-amqp` (nor proton-j) is packaged; an `amqp://` connector stops the broker.
//! - WebSocket: the server side of `ws://` lives in `activemq-http` (with Jetty), which Debian
//!   does not package; `activemq-client` only has the client-side `transport/ws` classes, and a
//!   `ws://` connector stops the broker with "Transport scheme NOT recognized: [ws]".
//! - The web console (`activemq-web-console`, Jetty) is not packaged either.

mod config;
mod probe;
mod statistics;
mod users;

use super::{Engine, Health, Listener, ListenerCheck, ObservedUsers, Placement, RenderedFile};
use crate::metrics::Sample;
use crate::supervisor::UnitSpec;
use anyhow::{Context, Result};
use ferrymq_api::agent::User;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Amazon MQ's port numbers, TLS only: `ssl://` (OpenWire), `stomp+ssl://`, `mqtt+ssl://`.
pub const OPENWIRE_PORT: u16 = 61617;
pub const STOMP_PORT: u16 = 61614;
pub const MQTT_PORT: u16 = 8883;
/// ActiveMQ's own plain ports, served only with `plain_listeners`.
pub const OPENWIRE_PLAIN_PORT: u16 = 61616;
pub const STOMP_PLAIN_PORT: u16 = 61613;
pub const MQTT_PLAIN_PORT: u16 = 1883;
/// Java reads keys from keystores, not PEM: the agent converts the broker's PEM files with
/// `openssl pkcs12` (OpenSSL is on every appliance; see `build_keystore`).
const OPENSSL: &str = "openssl";
/// The broker user the agent reads statistics as (STOMP); never reported as a broker user.
pub const AGENT_USER: &str = "ferrymq-agent";

const HOME: &str = "/usr/share/activemq";
const JVM_DIR: &str = "/usr/lib/jvm";
/// The JRE the package is built for; `/usr/bin/java` (the alternatives' choice, which may be
/// another major version) only when it is missing.
const JAVA_MAJOR_PREFIX: &str = "java-17-openjdk-";
const FALLBACK_JAVA: &str = "/usr/bin/java";
/// What ActiveMQ 5.17 needs opened on Java 17 (reflection into these packages).
const ADD_OPENS: &[&str] = &[
    "java.base/java.lang=ALL-UNNAMED",
    "java.base/java.util=ALL-UNNAMED",
    "java.base/java.util.concurrent=ALL-UNNAMED",
    "java.base/java.net=ALL-UNNAMED",
];

/// Jars ActiveMQ's STOMP transport needs to send map and advisory messages (the statistics
/// plugin's answers, which the agent reads for its metrics) and Debian's `activemq` package does
/// not pull in: XStream with its JSON (Jettison) and XML pull (XPP3) drivers, from Debian's
/// `libxstream-java`, `libjettison-java` and `libxpp3-java`.
const STOMP_MAP_JARS: &[&str] = &[
    "/usr/share/java/xstream.jar",
    "/usr/share/java/jettison.jar",
    "/usr/share/java/xpp3.jar",
];

/// One ActiveMQ broker instance of one broker on this host.
pub struct ActiveMq {
    pub placement: Placement,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ActiveMq {
    /// Never fails on the spec's content (users are checked when rendering), so that a broker
    /// can always be stopped.
    pub fn new(placement: Placement) -> Result<Self> {
        // A broker whose CA cannot be read must still be stoppable: probes then fail instead.
        let tls = crate::certificates::client_config(&placement.deployment_ca_pem).ok();
        Ok(ActiveMq { placement, tls })
    }

    fn kahadb_dir(&self) -> PathBuf {
        self.placement.data_dir.join("kahadb")
    }

    fn config_file(&self, name: &str) -> PathBuf {
        self.placement.config_dir.join(name)
    }

    /// The broker's own log of this run (`log4j.properties` truncates it at start).
    fn log_file(&self) -> PathBuf {
        self.config_file(config::LOG)
    }

    /// The JVM's maximum heap for the instance type (see `sizing`).
    fn heap_mib(&self) -> u64 {
        crate::sizing::activemq_heap_mib(self.placement.instance_type)
    }

    /// ActiveMQ's home: the placed bundle's, else Debian's package.
    fn home(&self) -> String {
        self.placement
            .engine_home
            .as_deref()
            .map_or_else(|| HOME.to_string(), display)
    }

    fn socket(&self, port: u16) -> String {
        SocketAddr::new(self.placement.address, port).to_string()
    }

    /// The PKCS12 keystore the broker's `sslContext` reads, beside the PEM files.
    fn keystore(&self) -> PathBuf {
        self.placement
            .certificate
            .certificate
            .with_file_name("server.p12")
    }

    /// Writes the keystore (certificate, key, and the chain to the deployment CA) from the PEM
    /// files, 0600 for the engine's user. The password goes through the environment, never a
    /// command line. OpenSSL 3 writes AES-256/PBKDF2 PKCS12, which Java 17 reads.
    async fn build_keystore(&self) -> Result<()> {
        let c = &self.placement.certificate;
        let target = self.keystore();
        let tmp = target.with_extension("p12.tmp");
        let out = tokio::process::Command::new(OPENSSL)
            .arg("pkcs12")
            .arg("-export")
            .arg("-in")
            .arg(&c.certificate)
            .arg("-inkey")
            .arg(&c.private_key)
            .arg("-certfile")
            .arg(&c.chain)
            .args([
                "-name",
                "broker",
                "-passout",
                "env:FERRYMQ_KEYSTORE_PASSWORD",
                "-out",
            ])
            .arg(&tmp)
            .env(
                "FERRYMQ_KEYSTORE_PASSWORD",
                &self.placement.keystore_password,
            )
            .output()
            .await
            .context("running openssl pkcs12")?;
        if !out.status.success() {
            anyhow::bail!(
                "openssl pkcs12 failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .chars()
                    .take(300)
                    .collect::<String>()
            );
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        if let Ok(Some(user)) = nix::unistd::User::from_name(self.system_user()) {
            nix::unistd::chown(&tmp, Some(user.uid), Some(user.gid))?;
        }
        std::fs::rename(&tmp, &target).with_context(|| format!("writing {}", target.display()))?;
        Ok(())
    }
}

/// The Java 17 runtime: `/usr/lib/jvm/java-17-openjdk-<arch>/bin/java` when installed.
fn java() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(JVM_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(JAVA_MAJOR_PREFIX)
        })
        .map(|e| e.path().join("bin/java"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from(FALLBACK_JAVA))
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[tonic::async_trait]
impl Engine for ActiveMq {
    fn render(&self) -> Result<Vec<RenderedFile>> {
        config::render(self)
    }

    fn units(&self) -> Vec<UnitSpec> {
        let p = &self.placement;
        let conf = display(&p.config_dir);
        let home = self.home();
        let mut args = vec![
            "-Xms64m".to_string(),
            format!("-Xmx{}m", self.heap_mib()),
            // A broker out of heap is half alive and, as the active one, keeps the store's lock:
            // better to exit and be restarted (the standby takes over meanwhile).
            "-XX:+ExitOnOutOfMemoryError".into(),
        ];
        for open in ADD_OPENS {
            args.push("--add-opens".into());
            args.push((*open).into());
        }
        args.extend([
            format!("-Dactivemq.home={home}"),
            format!("-Dactivemq.base={conf}"),
            format!("-Dactivemq.conf={conf}"),
            format!("-Dactivemq.data={}", display(&p.data_dir)),
            format!(
                "-Djava.security.auth.login.config={}",
                display(&self.config_file(config::LOGIN_CONFIG))
            ),
            // Debian's package logs through slf4j-log4j12 and log4j 1.2.17 (not log4j2, whatever
            // its example log4j2.properties suggests): log4j 1.2 reads this property.
            format!(
                "-Dlog4j.configuration=file:{}",
                display(&self.config_file(config::LOG4J))
            ),
            format!("-Dactivemq.classpath={}", STOMP_MAP_JARS.join(":")),
            "-jar".into(),
            format!("{home}/bin/activemq.jar"),
            "start".into(),
            format!("xbean:file:{}", display(&self.config_file(config::XML))),
        ]);
        let env = vec![
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOME".into(), conf),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        vec![UnitSpec {
            name: format!("{}-activemq", p.broker_id),
            program: java(),
            args,
            env,
            user: Some(self.system_user().into()),
            working_dir: p.config_dir.clone(),
            console_log: p.config_dir.join("console.log"),
            limits: Some(crate::sizing::resource_limits(p.instance_type)),
        }]
    }

    fn system_user(&self) -> &'static str {
        "activemq"
    }

    fn data_dirs(&self) -> Vec<PathBuf> {
        vec![self.placement.data_dir.clone(), self.kahadb_dir()]
    }

    async fn health(&self) -> Health {
        let address = self.placement.address;
        match probe::openwire(address, OPENWIRE_PORT, self.tls.as_ref()).await {
            Ok(()) => Health::Serving,
            Err(e) => {
                let log = self.log_file();
                let standby = tokio::task::spawn_blocking(move || probe::waits_for_lock(&log))
                    .await
                    .unwrap_or(false);
                if standby {
                    Health::Standby
                } else {
                    Health::NotServing(format!("OpenWire on {}: {e:#}", self.socket(OPENWIRE_PORT)))
                }
            }
        }
    }

    /// The last run's log goes before a start: until the new JVM's log4j truncates it, its
    /// "waiting for the lock" line would pass the new process off as a ready standby, and in a
    /// roll-out the active would fail over to a broker that is still starting.
    async fn ready_to_start(&self) -> Result<(), String> {
        match std::fs::remove_file(self.log_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!(
                "removing the last run's log {}: {e}",
                self.log_file().display()
            )),
            _ => Ok(()),
        }
    }

    /// Users are files that JAAS re-reads by itself (`reload=true`): `render` has written them.
    async fn sync_users(&self, _desired: &[User]) -> Result<bool> {
        Ok(false)
    }

    async fn observed_users(&self, desired: &[User]) -> Result<ObservedUsers> {
        let users = self.config_file(users::USERS);
        let groups = self.config_file(users::GROUPS);
        let desired = desired.to_vec();
        tokio::task::spawn_blocking(move || users::observe(&users, &groups, &desired)).await?
    }

    fn endpoints(&self) -> Vec<String> {
        endpoints(self.placement.address, self.placement.plain_listeners)
    }

    /// Java reads its keystore once, at start: a new certificate takes a restart (on
    /// active/standby, a restart of the active one is a failover to the standby).
    async fn install_certificate(&self, changed: bool) -> Result<bool> {
        if changed || !self.keystore().exists() {
            self.build_keystore().await?;
            return Ok(true);
        }
        Ok(false)
    }

    fn listeners(&self) -> Vec<Listener> {
        listeners(self.placement.plain_listeners)
    }

    /// Empty: Debian's `activemq` package has no web console (no `activemq-web-console`, no
    /// Jetty in the broker's class path), so there is no URL to give.
    fn console_url(&self) -> String {
        String::new()
    }

    async fn after_stop(&self) -> Result<()> {
        Ok(())
    }

    async fn metrics(&self) -> Result<Vec<Sample>> {
        let p = &self.placement;
        // Counted before the agent's own STOMP connection opens.
        let mut ports = vec![OPENWIRE_PORT, STOMP_PORT, MQTT_PORT];
        if p.plain_listeners {
            ports.extend([OPENWIRE_PLAIN_PORT, STOMP_PLAIN_PORT, MQTT_PLAIN_PORT]);
        }
        let connections = statistics::connection_count(&ports) as f64;
        // STOMP+SSL as any client, trusting the deployment CA; the plain listener only when
        // that CA cannot be read and the broker serves plain listeners anyway.
        let at = match (&self.tls, p.plain_listeners) {
            (Some(tls), _) => statistics::Endpoint {
                address: p.address,
                port: STOMP_PORT,
                tls: Some(tls),
            },
            (None, true) => statistics::Endpoint {
                address: p.address,
                port: STOMP_PLAIN_PORT,
                tls: None,
            },
            (None, false) => anyhow::bail!(
                "no statistics: the deployment CA of broker {} cannot be read, so its STOMP+SSL listener cannot be checked",
                p.broker_id
            ),
        };
        let stats = statistics::query(at, AGENT_USER, &p.agent_password).await?;
        Ok(metrics(&stats, connections))
    }
}

/// Amazon MQ's ActiveMQ metrics from the statistics plugin's figures. The agent's own query
/// holds one consumer (its reply subscription) and one producer while the figures are taken:
/// they are left out of the totals.
fn metrics(stats: &statistics::Statistics, connections: f64) -> Vec<Sample> {
    let b = &stats.broker;
    let g = Sample::gauge;
    let c = Sample::counter;
    let mut out = vec![
        g("ferrymq_activemq_connection_count", "ConnectionCount: established client connections (OpenWire, STOMP, MQTT).", connections),
        g("ferrymq_activemq_total_message_count", "TotalMessageCount: messages stored in the broker's queues and topics.", b.get("size")),
        c("ferrymq_activemq_total_enqueue_count", "TotalEnqueueCount: messages sent to the broker since it started.", b.get("enqueueCount")),
        c("ferrymq_activemq_total_dequeue_count", "TotalDequeueCount: messages acknowledged by consumers since the broker started.", b.get("dequeueCount")),
        g("ferrymq_activemq_total_consumer_count", "TotalConsumerCount: message consumers.", (b.get("consumerCount") - 1.0).max(0.0)),
        g("ferrymq_activemq_total_producer_count", "TotalProducerCount: message producers.", (b.get("producerCount") - 1.0).max(0.0)),
        g("ferrymq_activemq_store_percent_usage", "StorePercentUsage: percent of the store limit used.", b.get("storePercentUsage")),
        g("ferrymq_activemq_temp_percent_usage", "TempPercentUsage: percent of the temp limit used.", b.get("tempPercentUsage")),
        g("ferrymq_activemq_memory_percent_usage", "Percent of the broker's memory limit (systemUsage memoryUsage, 70 % of the heap) used; Amazon MQ's HeapUsage needs JMX, which FerryMQ does not run.", b.get("memoryPercentUsage")),
    ];
    for (queue, f) in &stats.queues {
        let q = |name, help, value| g(name, help, value).label("queue", queue.clone());
        out.extend([
            q(
                "ferrymq_activemq_queue_size",
                "QueueSize: messages in the queue.",
                f.get("size"),
            ),
            q(
                "ferrymq_activemq_queue_consumer_count",
                "ConsumerCount (per queue).",
                f.get("consumerCount"),
            ),
            q(
                "ferrymq_activemq_queue_producer_count",
                "ProducerCount (per queue).",
                f.get("producerCount"),
            ),
            q(
                "ferrymq_activemq_queue_enqueue_count",
                "EnqueueCount (per queue): messages sent to it since the broker started.",
                f.get("enqueueCount"),
            ),
            q(
                "ferrymq_activemq_queue_dequeue_count",
                "DequeueCount (per queue): messages acknowledged from it since the broker started.",
                f.get("dequeueCount"),
            ),
            q(
                "ferrymq_activemq_queue_expired_count",
                "ExpiredCount (per queue).",
                f.get("expiredCount"),
            ),
            q(
                "ferrymq_activemq_queue_inflight_count",
                "InFlightCount (per queue): delivered, not yet acknowledged.",
                f.get("inflightCount"),
            ),
            q(
                "ferrymq_activemq_queue_memory_percent_usage",
                "MemoryUsage (per queue): percent of the memory limit the queue uses.",
                f.get("memoryPercentUsage"),
            ),
        ]);
    }
    out
}

/// `address` as the engine's configuration wants it: IPv6 in brackets.
/// Connect checks: a standby opens no port, so only the active passes them. A function of the
/// spec alone: a dedicated load-balancer host knows them without an engine.
pub fn listeners(plain_listeners: bool) -> Vec<Listener> {
    let mut ports = vec![
        ("openwire", OPENWIRE_PORT),
        ("stomp", STOMP_PORT),
        ("mqtt", MQTT_PORT),
    ];
    if plain_listeners {
        ports.extend([
            ("openwire_plain", OPENWIRE_PLAIN_PORT),
            ("stomp_plain", STOMP_PLAIN_PORT),
            ("mqtt_plain", MQTT_PLAIN_PORT),
        ]);
    }
    ports
        .into_iter()
        .map(|(name, port)| Listener {
            name,
            port,
            check: ListenerCheck::Connect,
        })
        .collect()
}

/// The client endpoints at `address` (an instance's, or the load balancer's virtual IP),
/// OpenWire first.
pub fn endpoints(address: IpAddr, plain_listeners: bool) -> Vec<String> {
    let socket = |port| SocketAddr::new(address, port);
    let mut endpoints = vec![
        format!("ssl://{}", socket(OPENWIRE_PORT)),
        format!("stomp+ssl://{}", socket(STOMP_PORT)),
        format!("mqtt+ssl://{}", socket(MQTT_PORT)),
    ];
    if plain_listeners {
        endpoints.extend([
            format!("tcp://{}", socket(OPENWIRE_PLAIN_PORT)),
            format!("stomp://{}", socket(STOMP_PLAIN_PORT)),
            format!("mqtt://{}", socket(MQTT_PLAIN_PORT)),
        ]);
    }
    endpoints
}

fn uri_host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ferrymq_api::catalogue::instance_type;

    pub fn user(name: &str, password: &str, console: bool, groups: &[&str]) -> User {
        User {
            username: name.into(),
            password: password.into(),
            console_access: console,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn placement(kind: &str) -> Placement {
        let address = "10.9.8.7".parse().expect("ip");
        Placement {
            broker_id: "b-1".into(),
            address,
            config_dir: "/state/b-1/engine".into(),
            data_dir: "/state/b-1/volume/activemq".into(),
            instance_type: instance_type(kind).expect("type"),
            volume_bytes: 0,
            users: vec![
                user("admin-user", "admin-password-1", true, &[]),
                user("app", "app-password-12", false, &["orders"]),
            ],
            agent_password: "agent-secret".into(),
            cookie: "COOKIE".into(),
            peers: vec![address],
            instance_index: 0,
            certificate: crate::certificates::CertificateFiles::in_dir(Path::new(
                "/state/b-1/engine/tls",
            )),
            node_certificate: crate::certificates::CertificateFiles::in_dir(Path::new(
                "/state/b-1/engine/node-tls",
            )),
            deployment_ca_pem: String::new(),
            plain_listeners: false,
            keystore_password: "keystore-secret".into(),
            passwords: [
                ("admin-user".to_string(), "admin-password-1".to_string()),
                ("app".to_string(), "app-password-12".to_string()),
            ]
            .into(),
            configuration: None,
            logs: Default::default(),
            engine_home: None,
        }
    }

    #[test]
    fn unit_runs_the_jar_with_the_heap_of_the_type() {
        let amq = ActiveMq::new(placement("mq.t3.micro")).expect("engine");
        let units = amq.units();
        assert_eq!(units.len(), 1);
        let u = &units[0];
        assert_eq!(u.name, "b-1-activemq");
        assert_eq!(u.user.as_deref(), Some("activemq"));
        assert!(u.program.ends_with("bin/java"));
        assert_eq!(u.args[..2], ["-Xms64m", "-Xmx512m"]);
        let joined = u.args.join(" ");
        for want in [
            "--add-opens java.base/java.lang=ALL-UNNAMED",
            "--add-opens java.base/java.net=ALL-UNNAMED",
            "-Dactivemq.home=/usr/share/activemq",
            "-Dactivemq.base=/state/b-1/engine",
            "-Dactivemq.conf=/state/b-1/engine",
            "-Dactivemq.data=/state/b-1/volume/activemq",
            "-Djava.security.auth.login.config=/state/b-1/engine/login.config",
            "-Dlog4j.configuration=file:/state/b-1/engine/log4j.properties",
            "-Dactivemq.classpath=/usr/share/java/xstream.jar:/usr/share/java/jettison.jar:",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
        assert!(joined.ends_with(
            "-jar /usr/share/activemq/bin/activemq.jar start xbean:file:/state/b-1/engine/activemq.xml"
        ));
        let env: Vec<_> = u.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(env, ["PATH", "HOME", "LANG"]);
        assert_eq!(u.working_dir, Path::new("/state/b-1/engine"));
        assert_eq!(u.console_log, Path::new("/state/b-1/engine/console.log"));

        let large = ActiveMq::new(placement("mq.m5.large")).expect("engine");
        assert_eq!(large.units()[0].args[1], "-Xmx4096m");
    }

    #[test]
    fn endpoints_openwire_first_and_no_console() {
        let amq = ActiveMq::new(placement("mq.m5.large")).expect("engine");
        assert_eq!(
            amq.endpoints(),
            [
                "ssl://10.9.8.7:61617",
                "stomp+ssl://10.9.8.7:61614",
                "mqtt+ssl://10.9.8.7:8883"
            ]
        );
        assert_eq!(amq.console_url(), "");
        assert_eq!(amq.system_user(), "activemq");
        assert_eq!(
            amq.data_dirs(),
            [
                PathBuf::from("/state/b-1/volume/activemq"),
                PathBuf::from("/state/b-1/volume/activemq/kahadb")
            ]
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(uri_host("fd00::1".parse().expect("ip")), "[fd00::1]");
        assert_eq!(uri_host("10.0.0.1".parse().expect("ip")), "10.0.0.1");
    }
}
