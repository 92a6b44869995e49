//! Renders `activemq.xml` (with quick-xml), the JAAS login configuration, the user files and
//! the logging configuration from the placement.

use super::{
    uri_host, users, ActiveMq, MQTT_PLAIN_PORT, MQTT_PORT, OPENWIRE_PLAIN_PORT, OPENWIRE_PORT,
    STOMP_PLAIN_PORT, STOMP_PORT,
};
use crate::engine::RenderedFile;
use anyhow::{Context, Result};
use ferrymq_api::configuration::activemq::{self as user_config, ActiveMqConfig, Element};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use std::io;

pub const XML: &str = "activemq.xml";
pub const LOGIN_CONFIG: &str = "login.config";
pub const LOG4J: &str = "log4j.properties";
pub const LOG: &str = "activemq.log";
/// The audit log (`logs.audit`): connection, session, producer and consumer events.
pub const AUDIT_LOG: &str = "audit.log";
/// The logger of ActiveMQ's `loggingBrokerPlugin`.
const AUDIT_LOGGER: &str = "org.apache.activemq.broker.util.LoggingBrokerPlugin";
/// The JAAS application name the broker's authentication plugin logs in with.
const JAAS_APP: &str = "activemq";

/// Group of every user (advisory topics, temporary destinations).
pub const GROUP_USERS: &str = "users";
/// Full access to every destination: users who ask for it with the group `admins`.
pub const GROUP_ADMINS: &str = "admins";
/// Users with `console_access` (full access too).
pub const GROUP_CONSOLE: &str = "console";
/// Users without groups of their own: full access, as on Amazon MQ without an authorization map.
pub const GROUP_UNRESTRICTED: &str = "unrestricted";

const BEANS_NS: &str = "http://www.springframework.org/schema/beans";
const CORE_NS: &str = "http://activemq.apache.org/schema/core";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Both schemas resolve from the jars (`META-INF/spring.schemas`), never from the network.
const SCHEMA_LOCATION: &str = "http://www.springframework.org/schema/beans \
     http://www.springframework.org/schema/beans/spring-beans.xsd \
     http://activemq.apache.org/schema/core \
     http://activemq.apache.org/schema/core/activemq-core.xsd";

/// The protocols every TLS connector accepts.
pub const TLS_PROTOCOLS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];
/// The suites every TLS connector (OpenWire, STOMP and MQTT over TLS) accepts, JSSE's names.
///
/// Without a list Java 17 enables, besides these, the TLS 1.2 CBC suites (AES-CBC with SHA-1
/// and SHA-2 MACs: padding-oracle attacks, no AEAD). Left: TLS 1.3's AES-GCM and
/// ChaCha20-Poly1305 suites, and for TLS 1.2 ECDHE (forward secrecy) with AES-GCM or
/// ChaCha20-Poly1305, for ECDSA keys (the agent's certificates) and RSA keys (a supplied
/// certificate may have one).
pub const CIPHER_SUITES: [&str; 9] = [
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// ActiveMQ's own default frame limit (100 MiB), against a client announcing a huge frame.
const MAX_FRAME_SIZE: u64 = 104_857_600;
/// Store and temp limits when the volume's size is unknown (ActiveMQ's own examples' figures).
const STORE_LIMIT_UNKNOWN_VOLUME: &str = "1 gb";
const TEMP_LIMIT_UNKNOWN_VOLUME: &str = "1 gb";
/// Kept out of the store limit: two KahaDB journal files (32 MiB each by default). KahaDB
/// writes whole journal files and preallocates the next one, and its index and redo file sit
/// beside them, so the disk holds more than the usage ActiveMQ counts against the limit.
const STORE_HEADROOM: u64 = 64 << 20;

/// `storeUsage` and `tempUsage` limits in bytes for a volume of `volume_bytes` (None when
/// the size is unknown). When the store reaches its limit ActiveMQ's producer flow control
/// blocks persistent producers (or fails their sends with `sendFailIfNoSpace`) instead of
/// writing past what the disk holds; consuming frees journal space and producers resume.
///
/// - store (persistent messages, KahaDB): 80 % of the volume minus [`STORE_HEADROOM`], but at
///   least a quarter of the volume (on a tiny volume the headroom would eat it all);
/// - temp (non-persistent messages spooled off the heap, on the same volume): 10 %.
///
/// Together at most 90 % of the volume: the rest is for the filesystem's own use, the
/// broker's log and the journal file being preallocated.
pub fn disk_limits(volume_bytes: u64) -> Option<(u64, u64)> {
    if volume_bytes == 0 {
        return None;
    }
    let store = (volume_bytes / 10 * 8)
        .saturating_sub(STORE_HEADROOM)
        .max(volume_bytes / 4);
    Some((store, volume_bytes / 10))
}

/// A byte count as ActiveMQ's limit attributes take it, rounded down to whole MiB (its `mb`).
fn mib(bytes: u64) -> String {
    format!("{} mb", bytes >> 20)
}
/// Non-persistent messages may use this share of the heap before producers are slowed.
const MEMORY_PERCENT_OF_HEAP: u32 = 70;

pub fn render(amq: &ActiveMq) -> Result<Vec<RenderedFile>> {
    let p = &amq.placement;
    users::check_names(&p.users)?;
    let file = |name: &str, contents: String, secret: bool, restart_on_change: bool| RenderedFile {
        path: p.config_dir.join(name),
        contents,
        secret,
        restart_on_change,
    };
    let current = std::fs::read(amq.config_file(users::USERS))
        .map(|b| users::parse(&users::latin1(&b)))
        .unwrap_or_default();
    // Checked by the API already; checked again here so a stored spec from an older agent
    // can never put a forbidden element into the broker's configuration.
    let configuration = match &p.configuration {
        Some(c) => user_config::parse(&c.data)
            .map_err(|e| anyhow::anyhow!("configuration {} revision {}: {e}", c.id, c.revision))?,
        None => ActiveMqConfig::default(),
    };
    Ok(vec![
        // Secret: it holds the keystore's password.
        file(
            XML,
            activemq_xml(amq, &configuration).context("rendering activemq.xml")?,
            true,
            true,
        ),
        file(LOGIN_CONFIG, login_config(), false, true),
        file(LOG4J, log4j_properties(amq), false, true),
        // JAAS re-reads both on the next login after they change: no restart.
        file(
            users::USERS,
            users::users_properties(p, &current),
            true,
            false,
        ),
        file(users::GROUPS, users::groups_properties(p), true, false),
    ])
}

/// FerryMQ's `activemq.xml` with the configuration revision merged in: its `<broker>`
/// attributes, sections and plugins added, its `kahaDB` and `systemUsage` attributes added to
/// FerryMQ's elements (the allow-list keeps every name FerryMQ sets out of them).
fn activemq_xml(amq: &ActiveMq, conf: &ActiveMqConfig) -> io::Result<String> {
    let p = &amq.placement;
    let data = p.data_dir.display().to_string();
    let kahadb = amq.kahadb_dir().display().to_string();
    let host = uri_host(p.address);
    // Amazon MQ's quota of connections per wire-level protocol for the type (see `sizing`).
    let limit = crate::sizing::activemq_max_connections(p.instance_type);
    let connector = |scheme: &str, port: u16| {
        format!(
            "{scheme}://{host}:{port}?maximumConnections={limit}&wireFormat.maxFrameSize={MAX_FRAME_SIZE}"
        )
    };
    let tls_connector = |scheme: &str, port: u16| {
        format!(
            "{}&transport.enabledProtocols={}&transport.enabledCipherSuites={}",
            connector(scheme, port),
            TLS_PROTOCOLS.join(","),
            CIPHER_SUITES.join(",")
        )
    };
    let mut connectors = vec![
        ("openwire", tls_connector("ssl", OPENWIRE_PORT)),
        ("stomp", tls_connector("stomp+ssl", STOMP_PORT)),
        ("mqtt", tls_connector("mqtt+ssl", MQTT_PORT)),
    ];
    if p.plain_listeners {
        connectors.extend([
            ("openwire-plain", connector("tcp", OPENWIRE_PLAIN_PORT)),
            ("stomp-plain", connector("stomp", STOMP_PLAIN_PORT)),
            ("mqtt-plain", connector("mqtt", MQTT_PLAIN_PORT)),
        ]);
    }
    let keystore = format!("file:{}", amq.keystore().display());

    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.write_event(Event::Comment(BytesText::from_escaped(format!(
        " Managed by FerryMQ for broker {}; changes here are overwritten. ",
        sanitize_comment(&p.broker_id)
    ))))?;
    w.create_element("beans")
        .with_attributes([
            ("xmlns", BEANS_NS),
            ("xmlns:xsi", XSI_NS),
            ("xsi:schemaLocation", SCHEMA_LOCATION),
        ])
        .write_inner_content(|w| {
            w.create_element("broker")
                .with_attributes([
                    ("xmlns", CORE_NS),
                    ("brokerName", p.broker_id.as_str()),
                    ("dataDirectory", data.as_str()),
                    ("persistent", "true"),
                    ("useJmx", "false"),
                    ("schedulerSupport", "false"),
                ])
                .with_attributes(pairs(&conf.broker_attributes))
                .write_inner_content(|w| {
                    for section in &conf.sections {
                        copy(w, section)?;
                    }
                    // The store's lock decides which of two instances on shared storage is
                    // active; the other polls for it every second and opens no port meanwhile.
                    w.create_element("persistenceAdapter")
                        .write_inner_content(|w| {
                            w.create_element("kahaDB")
                                .with_attributes([
                                    ("directory", kahadb.as_str()),
                                    ("lockKeepAlivePeriod", "2000"),
                                ])
                                .with_attributes(pairs(&conf.kahadb_attributes))
                                .write_inner_content(|w| {
                                    w.create_element("locker").write_inner_content(|w| {
                                        w.create_element("shared-file-locker")
                                            .with_attribute(("lockAcquireSleepInterval", "1000"))
                                            .write_empty()?;
                                        Ok(())
                                    })?;
                                    Ok(())
                                })?;
                            Ok(())
                        })?;
                    w.create_element("plugins").write_inner_content(|w| {
                        w.create_element("jaasAuthenticationPlugin")
                            .with_attribute(("configuration", JAAS_APP))
                            .write_empty()?;
                        authorization(w, &users::group_names(&p.users))?;
                        // Answers the agent's metrics queries (ActiveMQ.Statistics.*).
                        w.create_element("statisticsBrokerPlugin").write_empty()?;
                        if p.logs.audit {
                            audit_plugin(w)?;
                        }
                        for plugin in &conf.plugins {
                            copy(w, plugin)?;
                        }
                        Ok(())
                    })?;
                    // Every listener serves the broker's certificate (PKCS12 made by the agent).
                    w.create_element("sslContext").write_inner_content(|w| {
                        w.create_element("sslContext")
                            .with_attributes([
                                ("keyStore", keystore.as_str()),
                                ("keyStorePassword", p.keystore_password.as_str()),
                                ("keyStoreType", "pkcs12"),
                            ])
                            .write_empty()?;
                        Ok(())
                    })?;
                    w.create_element("systemUsage").write_inner_content(|w| {
                        w.create_element("systemUsage")
                            .with_attributes(pairs(&conf.system_usage_attributes))
                            .write_inner_content(|w| {
                                let percent = MEMORY_PERCENT_OF_HEAP.to_string();
                                usage(w, "memoryUsage", ("percentOfJvmHeap", &percent))?;
                                let (store, temp) = match disk_limits(p.volume_bytes) {
                                    Some((store, temp)) => (mib(store), mib(temp)),
                                    None => (
                                        STORE_LIMIT_UNKNOWN_VOLUME.into(),
                                        TEMP_LIMIT_UNKNOWN_VOLUME.into(),
                                    ),
                                };
                                usage(w, "storeUsage", ("limit", &store))?;
                                usage(w, "tempUsage", ("limit", &temp))
                            })?;
                        Ok(())
                    })?;
                    w.create_element("transportConnectors")
                        .write_inner_content(|w| {
                            for (name, uri) in &connectors {
                                w.create_element("transportConnector")
                                    .with_attributes([("name", *name), ("uri", uri.as_str())])
                                    .write_empty()?;
                            }
                            Ok(())
                        })?;
                    Ok(())
                })?;
            Ok(())
        })?;
    let mut xml = String::from_utf8(w.into_inner()).map_err(io::Error::other)?;
    xml.push('\n');
    Ok(xml)
}

fn pairs(attributes: &[(String, String)]) -> impl Iterator<Item = (&str, &str)> {
    attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Writes an element of the configuration revision as it was given.
fn copy<W: io::Write>(w: &mut Writer<W>, element: &Element) -> io::Result<()> {
    for event in element.events() {
        w.write_event(event)?;
    }
    Ok(())
}

/// `logs.audit`: ActiveMQ's logging plugin records who connects, opens sessions, produces and
/// consumes (never message bodies) under [`AUDIT_LOGGER`], which `log4j.properties` sends to
/// [`AUDIT_LOG`].
fn audit_plugin<W: io::Write>(w: &mut Writer<W>) -> io::Result<()> {
    w.create_element("loggingBrokerPlugin")
        .with_attributes([
            ("logAll", "false"),
            ("logConnectionEvents", "true"),
            ("logSessionEvents", "true"),
            ("logProducerEvents", "true"),
            ("logConsumerEvents", "true"),
            ("logTransactionEvents", "true"),
            ("logInternalEvents", "false"),
        ])
        .write_empty()?;
    Ok(())
}

/// The authorization map, from groups. Each entry grants read, write and admin (create):
///
/// - `admins` (the group `admins`), `console` (`console_access`) and `unrestricted` (every
///   user with no group of their own): every queue and topic, as on Amazon MQ without an
///   authorization map;
/// - a user's own group `G`: only the queues and topics named `G` or `G.…`;
/// - `users` (everyone): the advisory topics and temporary destinations JMS clients need.
///
/// ActiveMQ grants the union of every entry that matches a destination, so a group's entry
/// adds to, and never narrows, what the `>` entries give.
fn authorization<W: io::Write>(w: &mut Writer<W>, groups: &[String]) -> io::Result<()> {
    let full = format!("{GROUP_ADMINS},{GROUP_CONSOLE},{GROUP_UNRESTRICTED}");
    let everyone = GROUP_USERS.to_string();
    let acl = |who: &str| {
        [
            ("read", who.to_string()),
            ("write", who.to_string()),
            ("admin", who.to_string()),
        ]
    };
    let mut entries: Vec<(&str, String, String)> = vec![
        ("queue", ">".into(), full.clone()),
        ("topic", ">".into(), full.clone()),
        ("topic", "ActiveMQ.Advisory.>".into(), everyone.clone()),
    ];
    for g in groups {
        for kind in ["queue", "topic"] {
            entries.push((kind, g.clone(), g.clone()));
            entries.push((kind, format!("{g}.>"), g.clone()));
        }
    }
    w.create_element("authorizationPlugin")
        .write_inner_content(|w| {
            w.create_element("map").write_inner_content(|w| {
                w.create_element("authorizationMap")
                    .write_inner_content(|w| {
                        w.create_element("authorizationEntries")
                            .write_inner_content(|w| {
                                for (kind, pattern, who) in &entries {
                                    let acl = acl(who);
                                    w.create_element("authorizationEntry")
                                        .with_attribute((*kind, pattern.as_str()))
                                        .with_attributes(acl.iter().map(|(k, v)| (*k, v.as_str())))
                                        .write_empty()?;
                                }
                                Ok(())
                            })?;
                        w.create_element("tempDestinationAuthorizationEntry")
                            .write_inner_content(|w| {
                                let acl = acl(&format!("{full},{everyone}"));
                                w.create_element("tempDestinationAuthorizationEntry")
                                    .with_attributes(acl.iter().map(|(k, v)| (*k, v.as_str())))
                                    .write_empty()?;
                                Ok(())
                            })?;
                        Ok(())
                    })?;
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// `<memoryUsage><memoryUsage limit=…/></memoryUsage>`: xbean's property-then-bean nesting.
fn usage<W: io::Write>(w: &mut Writer<W>, name: &str, attr: (&str, &str)) -> io::Result<()> {
    w.create_element(name).write_inner_content(|w| {
        w.create_element(name).with_attribute(attr).write_empty()?;
        Ok(())
    })?;
    Ok(())
}

/// `--` may not appear in an XML comment.
fn sanitize_comment(s: &str) -> String {
    let mut s = s.to_string();
    while s.contains("--") {
        s = s.replace("--", "- -");
    }
    s
}

fn login_config() -> String {
    // Relative names: PropertiesLoginModule resolves them against this file's directory
    // (an absolute path would be appended to that directory, not used as is).
    format!(
        "// Managed by FerryMQ; changes here are overwritten.\n\
         {JAAS_APP} {{\n    \
             org.apache.activemq.jaas.PropertiesLoginModule required\n        \
                 org.apache.activemq.jaas.properties.user=\"{}\"\n        \
                 org.apache.activemq.jaas.properties.group=\"{}\"\n        \
                 reload=true;\n\
         }};\n",
        users::USERS,
        users::GROUPS
    )
}

/// log4j 1.2 (the backend of Debian's package): the general log to stdout (the journal, or
/// `console.log` in the broker's directory under the direct supervisor: the history across
/// restarts), at INFO with `logs.general`, else warnings and errors only; this run's log to
/// `activemq.log` at INFO whatever `logs` says, truncated at start, which the agent reads to
/// tell a standby from a broker that is stuck; with `logs.audit`, the audit events also to
/// `audit.log` (kept across restarts).
fn log4j_properties(amq: &ActiveMq) -> String {
    let log = users::escape_value(&amq.log_file().display().to_string());
    let console_threshold = if amq.placement.logs.general {
        "INFO"
    } else {
        "WARN"
    };
    let mut out = format!(
        "# Managed by FerryMQ; changes here are overwritten.\n\
         log4j.rootLogger=INFO, console, logfile\n\
         log4j.logger.org.apache.activemq.spring=WARN\n\
         log4j.logger.org.springframework=WARN\n\
         log4j.logger.org.apache.xbean=WARN\n\
         log4j.appender.console=org.apache.log4j.ConsoleAppender\n\
         log4j.appender.console.Threshold={console_threshold}\n\
         log4j.appender.console.layout=org.apache.log4j.PatternLayout\n\
         log4j.appender.console.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n\n\
         log4j.appender.logfile=org.apache.log4j.RollingFileAppender\n\
         log4j.appender.logfile.File={log}\n\
         log4j.appender.logfile.Append=false\n\
         log4j.appender.logfile.MaxFileSize=10MB\n\
         log4j.appender.logfile.MaxBackupIndex=1\n\
         log4j.appender.logfile.layout=org.apache.log4j.PatternLayout\n\
         log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n\n"
    );
    if amq.placement.logs.audit {
        let audit = users::escape_value(&amq.config_file(AUDIT_LOG).display().to_string());
        out.push_str(&format!(
            "log4j.logger.{AUDIT_LOGGER}=INFO, audit\n\
             log4j.appender.audit=org.apache.log4j.RollingFileAppender\n\
             log4j.appender.audit.File={audit}\n\
             log4j.appender.audit.Append=true\n\
             log4j.appender.audit.MaxFileSize=10MB\n\
             log4j.appender.audit.MaxBackupIndex=5\n\
             log4j.appender.audit.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.audit.layout.ConversionPattern=%d | %m%n\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::placement;
    use super::*;
    use quick_xml::events::BytesStart;
    use quick_xml::{Reader, XmlVersion};
    use std::collections::BTreeMap;

    /// An element of the rendered XML: its path from the root and its attributes.
    #[derive(Debug)]
    struct Element {
        path: String,
        attrs: BTreeMap<String, String>,
    }

    fn parse(xml: &str) -> Vec<Element> {
        let mut reader = Reader::from_str(xml);
        let mut stack: Vec<String> = vec![];
        let mut out = vec![];
        let record = |stack: &[String], e: &BytesStart, out: &mut Vec<Element>| {
            let name = String::from_utf8(e.name().as_ref().to_vec()).expect("utf8");
            let attrs = e
                .attributes()
                .map(|a| {
                    let a = a.expect("attribute");
                    (
                        String::from_utf8(a.key.as_ref().to_vec()).expect("utf8"),
                        a.normalized_value(XmlVersion::Explicit1_0)
                            .expect("value")
                            .into_owned(),
                    )
                })
                .collect();
            let mut path = stack.join("/");
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&name);
            out.push(Element { path, attrs });
            name
        };
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) => {
                    let name = record(&stack, &e, &mut out);
                    stack.push(name);
                }
                Event::Empty(e) => {
                    record(&stack, &e, &mut out);
                }
                Event::End(_) => {
                    stack.pop();
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert!(stack.is_empty(), "unbalanced XML");
        out
    }

    fn find<'a>(elements: &'a [Element], path: &str) -> Vec<&'a Element> {
        elements.iter().filter(|e| e.path == path).collect()
    }

    fn one<'a>(elements: &'a [Element], path: &str) -> &'a Element {
        let found = find(elements, path);
        assert_eq!(found.len(), 1, "{path}: {found:?}");
        found[0]
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BROKER: &str = "beans/broker";

    #[test]
    fn broker_names_paths_and_switches() {
        let amq = ActiveMq::new(placement("mq.m5.large")).expect("engine");
        let xml = activemq_xml(&amq, &ActiveMqConfig::default()).expect("xml");
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- Managed by FerryMQ for broker b-1;"
        ));
        let el = parse(&xml);
        assert_eq!(
            one(&el, "beans").attrs["xsi:schemaLocation"],
            SCHEMA_LOCATION
        );
        assert_eq!(
            one(&el, BROKER).attrs,
            attrs(&[
                ("xmlns", CORE_NS),
                ("brokerName", "b-1"),
                ("dataDirectory", "/state/b-1/volume/activemq"),
                ("persistent", "true"),
                ("useJmx", "false"),
                ("schedulerSupport", "false"),
            ])
        );
        assert_eq!(
            one(&el, "beans/broker/persistenceAdapter/kahaDB").attrs,
            attrs(&[
                ("directory", "/state/b-1/volume/activemq/kahadb"),
                ("lockKeepAlivePeriod", "2000"),
            ])
        );
        assert_eq!(
            one(
                &el,
                "beans/broker/persistenceAdapter/kahaDB/locker/shared-file-locker"
            )
            .attrs,
            attrs(&[("lockAcquireSleepInterval", "1000")])
        );
        assert_eq!(
            one(
                &el,
                "beans/broker/systemUsage/systemUsage/storeUsage/storeUsage"
            )
            .attrs["limit"],
            "1 gb"
        );
        assert!(!xml.contains("admin:admin") && !xml.contains("password"));
    }

    #[test]
    fn disk_limits_follow_the_volume() {
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        assert_eq!(disk_limits(0), None);
        // 10 GiB: store 8 GiB - 64 MiB, temp 1 GiB.
        let (store, temp) = disk_limits(10 * GIB).expect("limits");
        assert_eq!(store, 8 * GIB - 64 * MIB);
        assert_eq!(temp, GIB);
        // 512 MiB: 409.6 - 64 MiB.
        let (store, temp) = disk_limits(512 * MIB).expect("limits");
        assert_eq!(store >> 20, 345);
        assert_eq!(temp >> 20, 51);
        // 64 MiB: the headroom would leave nothing; a quarter of the volume instead.
        assert_eq!(disk_limits(64 * MIB).expect("limits").0, 16 * MIB);
        for v in [64 * MIB, 256 * MIB, 3 * GIB, 5000 * GIB] {
            let (store, temp) = disk_limits(v).expect("limits");
            assert!(store + temp <= v / 10 * 9, "{v}: {store} + {temp}");
        }
        let mut p = placement("mq.m5.large");
        p.volume_bytes = 512 * MIB;
        let el = parse(
            &activemq_xml(
                &ActiveMq::new(p).expect("engine"),
                &ActiveMqConfig::default(),
            )
            .expect("xml"),
        );
        let limit = |name: &str| {
            one(
                &el,
                &format!("beans/broker/systemUsage/systemUsage/{name}/{name}"),
            )
            .attrs["limit"]
                .clone()
        };
        assert_eq!(limit("storeUsage"), "345 mb");
        assert_eq!(limit("tempUsage"), "51 mb");
    }

    #[test]
    fn connectors_bind_the_host_on_amazon_mq_ports() {
        let amq = ActiveMq::new(placement("mq.m5.large")).expect("engine");
        let el = parse(&activemq_xml(&amq, &ActiveMqConfig::default()).expect("xml"));
        let connectors: Vec<(String, String)> =
            find(&el, "beans/broker/transportConnectors/transportConnector")
                .into_iter()
                .map(|e| (e.attrs["name"].clone(), e.attrs["uri"].clone()))
                .collect();
        let q = "maximumConnections=2000&wireFormat.maxFrameSize=104857600\
                 &transport.enabledProtocols=TLSv1.2,TLSv1.3\
                 &transport.enabledCipherSuites=TLS_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256,\
                 TLS_CHACHA20_POLY1305_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,\
                 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,\
                 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,\
                 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,\
                 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";
        assert_eq!(
            connectors,
            [
                ("openwire".into(), format!("ssl://10.9.8.7:61617?{q}")),
                ("stomp".into(), format!("stomp+ssl://10.9.8.7:61614?{q}")),
                ("mqtt".into(), format!("mqtt+ssl://10.9.8.7:8883?{q}")),
            ]
        );
        for suite in CIPHER_SUITES {
            assert!(
                suite.ends_with("_GCM_SHA256")
                    || suite.ends_with("_GCM_SHA384")
                    || suite.ends_with("_CHACHA20_POLY1305_SHA256"),
                "{suite}"
            );
            assert!(!suite.contains("CBC") && !suite.contains("CCM"), "{suite}");
            assert!(suite.starts_with("TLS_ECDHE_") || !suite.contains("_WITH_"));
        }
        assert_eq!(
            one(&el, "beans/broker/sslContext/sslContext").attrs,
            attrs(&[
                ("keyStore", "file:/state/b-1/engine/tls/server.p12"),
                ("keyStorePassword", "keystore-secret"),
                ("keyStoreType", "pkcs12"),
            ])
        );
        // Plain listeners on ActiveMQ's own ports only when asked for, beside the TLS ones.
        let mut p = placement("mq.m5.large");
        p.plain_listeners = true;
        let xml = activemq_xml(
            &ActiveMq::new(p).expect("engine"),
            &ActiveMqConfig::default(),
        );
        let el = parse(&xml.expect("xml"));
        let uris: Vec<String> = find(&el, "beans/broker/transportConnectors/transportConnector")
            .into_iter()
            .map(|e| {
                e.attrs["uri"]
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            uris,
            [
                "ssl://10.9.8.7:61617",
                "stomp+ssl://10.9.8.7:61614",
                "mqtt+ssl://10.9.8.7:8883",
                "tcp://10.9.8.7:61616",
                "stomp://10.9.8.7:61613",
                "mqtt://10.9.8.7:1883",
            ]
        );
        // Connectors Debian's package cannot start would stop the broker.
        let xml = activemq_xml(&amq, &ActiveMqConfig::default()).expect("xml");
        assert!(!xml.contains("amqp://") && !xml.contains("ws://"));

        let micro = ActiveMq::new(placement("mq.t3.micro")).expect("engine");
        let el = parse(&activemq_xml(&micro, &ActiveMqConfig::default()).expect("xml"));
        for c in find(&el, "beans/broker/transportConnectors/transportConnector") {
            assert!(c.attrs["uri"].contains("maximumConnections=300&"));
        }
    }

    #[test]
    fn ipv6_connectors_are_bracketed() {
        let mut p = placement("mq.m5.large");
        p.address = "fd00::7".parse().expect("ip");
        let amq = ActiveMq::new(p).expect("engine");
        let el = parse(&activemq_xml(&amq, &ActiveMqConfig::default()).expect("xml"));
        let first = find(&el, "beans/broker/transportConnectors/transportConnector")[0];
        assert!(first.attrs["uri"].starts_with("ssl://[fd00::7]:61617?"));
    }

    #[test]
    fn jaas_and_authorization_map() {
        let amq = ActiveMq::new(placement("mq.m5.large")).expect("engine");
        let el = parse(&activemq_xml(&amq, &ActiveMqConfig::default()).expect("xml"));
        assert_eq!(
            one(&el, "beans/broker/plugins/jaasAuthenticationPlugin").attrs,
            attrs(&[("configuration", "activemq")])
        );
        let map = "beans/broker/plugins/authorizationPlugin/map/authorizationMap";
        let entries: Vec<_> = find(
            &el,
            &format!("{map}/authorizationEntries/authorizationEntry"),
        )
        .into_iter()
        .map(|e| e.attrs.clone())
        .collect();
        let grant = |kind: &str, pattern: &str, who: &str| {
            attrs(&[
                (kind, pattern),
                ("read", who),
                ("write", who),
                ("admin", who),
            ])
        };
        let full = "admins,console,unrestricted";
        // The placement's `app` is in group `orders`: it gets `orders` and `orders.…` only.
        assert_eq!(
            entries,
            [
                grant("queue", ">", full),
                grant("topic", ">", full),
                grant("topic", "ActiveMQ.Advisory.>", "users"),
                grant("queue", "orders", "orders"),
                grant("queue", "orders.>", "orders"),
                grant("topic", "orders", "orders"),
                grant("topic", "orders.>", "orders"),
            ]
        );
        let temp = one(
            &el,
            &format!("{map}/tempDestinationAuthorizationEntry/tempDestinationAuthorizationEntry"),
        );
        assert_eq!(temp.attrs["read"], "admins,console,unrestricted,users");
    }

    #[test]
    fn odd_names_are_escaped_not_injected() {
        let mut p = placement("mq.m5.large");
        p.broker_id = "b-<x>&\"---".into();
        p.data_dir = "/data/a&b\"<c>".into();
        let amq = ActiveMq::new(p).expect("engine");
        let xml = activemq_xml(&amq, &ActiveMqConfig::default()).expect("xml");
        let el = parse(&xml);
        let broker = one(&el, BROKER);
        assert_eq!(broker.attrs["brokerName"], "b-<x>&\"---");
        assert_eq!(broker.attrs["dataDirectory"], "/data/a&b\"<c>");
    }

    #[test]
    fn configuration_revision_is_merged_into_ferrymqs_elements() {
        let mut p = placement("mq.m5.large");
        p.configuration = Some(ferrymq_api::agent::ConfigurationRef {
            id: "c-1".into(),
            revision: 2,
            data: r#"<broker xmlns="http://activemq.apache.org/schema/core" schedulePeriodForDestinationPurge="10000">
  <destinationPolicy><policyMap><policyEntries>
    <policyEntry queue="&gt;" maxPageSize="150"/>
  </policyEntries></policyMap></destinationPolicy>
  <plugins><timeStampingBrokerPlugin zeroExpirationOverride="600000"/></plugins>
  <persistenceAdapter><kahaDB concurrentStoreAndDispatchQueues="false"/></persistenceAdapter>
  <systemUsage><systemUsage sendFailIfNoSpace="true"/></systemUsage>
</broker>"#
                .into(),
        });
        p.logs.audit = true;
        let amq = ActiveMq::new(p).expect("engine");
        let files = render(&amq).expect("render");
        let el = parse(&files[0].contents);
        let broker = one(&el, BROKER);
        assert_eq!(broker.attrs["schedulePeriodForDestinationPurge"], "10000");
        assert_eq!(broker.attrs["brokerName"], "b-1");
        assert_eq!(
            one(
                &el,
                "beans/broker/destinationPolicy/policyMap/policyEntries/policyEntry"
            )
            .attrs,
            attrs(&[("queue", ">"), ("maxPageSize", "150")])
        );
        let plugins: Vec<String> = el
            .iter()
            .filter(|e| {
                e.path.starts_with("beans/broker/plugins/") && e.path.matches('/').count() == 3
            })
            .map(|e| e.path.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            plugins,
            [
                "jaasAuthenticationPlugin",
                "authorizationPlugin",
                "statisticsBrokerPlugin",
                "loggingBrokerPlugin",
                "timeStampingBrokerPlugin"
            ]
        );
        let kahadb = one(&el, "beans/broker/persistenceAdapter/kahaDB");
        assert_eq!(kahadb.attrs["concurrentStoreAndDispatchQueues"], "false");
        assert_eq!(kahadb.attrs["lockKeepAlivePeriod"], "2000");
        assert_eq!(
            one(&el, "beans/broker/systemUsage/systemUsage").attrs["sendFailIfNoSpace"],
            "true"
        );
        let log4j = &files[2].contents;
        assert!(log4j.contains("log4j.appender.console.Threshold=WARN\n"));
        assert!(log4j.contains(
            "log4j.logger.org.apache.activemq.broker.util.LoggingBrokerPlugin=INFO, audit\n"
        ));
        assert!(log4j.contains("log4j.appender.audit.File=/state/b-1/engine/audit.log\n"));
    }

    #[test]
    fn files_secrets_and_restarts() {
        let amq = ActiveMq::new(placement("mq.m5.large")).expect("engine");
        let files = render(&amq).expect("render");
        let summary: Vec<(String, bool, bool)> = files
            .iter()
            .map(|f| (f.path.display().to_string(), f.secret, f.restart_on_change))
            .collect();
        let s = |p: &str, secret, restart| (format!("/state/b-1/engine/{p}"), secret, restart);
        assert_eq!(
            summary,
            [
                s("activemq.xml", true, true),
                s("login.config", false, true),
                s("log4j.properties", false, true),
                s("users.properties", true, false),
                s("groups.properties", true, false),
            ]
        );
        assert_eq!(
            files[1].contents,
            "// Managed by FerryMQ; changes here are overwritten.\n\
             activemq {\n    \
                 org.apache.activemq.jaas.PropertiesLoginModule required\n        \
                     org.apache.activemq.jaas.properties.user=\"users.properties\"\n        \
                     org.apache.activemq.jaas.properties.group=\"groups.properties\"\n        \
                     reload=true;\n\
             };\n"
        );
        let log4j = &files[2].contents;
        assert!(log4j.contains("log4j.appender.logfile.File=/state/b-1/engine/activemq.log\n"));
        assert!(log4j.contains("log4j.appender.logfile.Append=false\n"));
        for f in &files {
            assert!(!f.contents.contains("admin=admin") && !f.contents.contains("admin:admin"));
        }
    }
}
