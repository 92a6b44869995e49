//! ActiveMQ's figures for the agent's metrics, without JMX or Jolokia (Debian's 5.17.2 has no
//! web console, and JMX needs a Java client): the broker runs `statisticsBrokerPlugin`, and
//! the agent asks it over STOMP, as its own user, by sending to
//! `ActiveMQ.Statistics.Destination.>` and then `ActiveMQ.Statistics.Broker` with a reply-to
//! temporary queue. The plugin answers each with a map message (one per queue, then the
//! broker's), which STOMP delivers as XStream XML (`jms-map-xml`). Both answers are sent in
//! order on the one connection, so the broker's map marks the end of the queues' list.
//!
//! The agent connects to the broker's STOMP listener as a client would: over TLS (STOMP+SSL,
//! checking the broker's certificate against the deployment CA), the plain one only where no
//! TLS client configuration is at hand and the broker serves plain listeners.
//!
//! Connections are not in the plugin's figures: they are counted from the host's TCP table
//! (`/proc/net/tcp`, per network namespace), before the agent's own connection opens.

use crate::engine::connect::{connect, Io};
use anyhow::{anyhow, bail, Context, Result};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A whole query (connect, ask, read every answer) gets this long.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TO: &str = "/temp-queue/ferrymq-statistics";
/// Answers larger than this are refused (a map is a few kB).
const MAX_FRAME: usize = 1 << 20;

/// One statistics map: numbers by name (strings such as the destination name kept apart).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Figures {
    pub numbers: BTreeMap<String, f64>,
    pub strings: BTreeMap<String, String>,
}

impl Figures {
    pub fn get(&self, key: &str) -> f64 {
        self.numbers.get(key).copied().unwrap_or(0.0)
    }
}

#[derive(Debug, Default)]
pub struct Statistics {
    pub broker: Figures,
    /// Per queue, by the queue's name.
    pub queues: Vec<(String, Figures)>,
}

/// Where the agent asks: the STOMP listener at `address:port`, over TLS with `tls` (the client
/// configuration trusting the deployment CA), plain without.
pub struct Endpoint<'a> {
    pub address: IpAddr,
    pub port: u16,
    pub tls: Option<&'a Arc<rustls::ClientConfig>>,
}

pub async fn query(at: Endpoint<'_>, user: &str, password: &str) -> Result<Statistics> {
    let (address, port) = (at.address, at.port);
    tokio::time::timeout(QUERY_TIMEOUT, query_inner(at, user, password))
        .await
        .map_err(|_| anyhow!("no statistics from {address}:{port} within {QUERY_TIMEOUT:?}"))?
}

async fn query_inner(at: Endpoint<'_>, user: &str, password: &str) -> Result<Statistics> {
    let mut conn = Connection {
        stream: connect(at.address, at.port, at.tls, QUERY_TIMEOUT)
            .await
            .with_context(|| format!("connecting to STOMP on {}:{}", at.address, at.port))?,
        buf: Vec::new(),
    };
    conn.send(&format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\nlogin:{}\npasscode:{}\n\n",
        header(user),
        header(password)
    ))
    .await?;
    let connected = conn.frame().await?;
    if connected.command != "CONNECTED" {
        bail!("STOMP login refused: {}", connected.message());
    }
    conn.send(&format!(
        "SUBSCRIBE\nid:0\ndestination:{REPLY_TO}\nack:auto\ntransformation:jms-map-xml\nreceipt:subscribed\n\n"
    ))
    .await?;
    let receipt = conn.frame().await?;
    if receipt.command != "RECEIPT" {
        bail!("STOMP subscribe refused: {}", receipt.message());
    }
    for query in [
        "ActiveMQ.Statistics.Destination.>",
        "ActiveMQ.Statistics.Broker",
    ] {
        conn.send(&format!(
            "SEND\ndestination:/queue/{query}\nreply-to:{REPLY_TO}\n\n"
        ))
        .await?;
    }
    let mut stats = Statistics::default();
    loop {
        let frame = conn.frame().await?;
        if frame.command != "MESSAGE" {
            bail!("STOMP: {}", frame.message());
        }
        let figures = parse_map(&frame.body)?;
        if figures.numbers.contains_key("storeLimit") {
            stats.broker = figures;
            break;
        }
        let name = figures
            .strings
            .get("destinationName")
            .cloned()
            .unwrap_or_default();
        if let Some(queue) = name.strip_prefix("queue://") {
            stats.queues.push((queue.to_string(), figures));
        }
    }
    let _ = conn.send("DISCONNECT\n\n").await;
    Ok(stats)
}

/// STOMP 1.2 header escaping.
fn header(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace(':', "\\c")
}

struct Connection {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Frame {
    command: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Frame {
    fn message(&self) -> String {
        let m = self
            .headers
            .iter()
            .find(|(k, _)| k == "message")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        format!("{} {m} {}", self.command, self.body.trim())
    }
}

impl Connection {
    async fn send(&mut self, frame: &str) -> Result<()> {
        let mut bytes = frame.as_bytes().to_vec();
        bytes.push(0);
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    async fn frame(&mut self) -> Result<Frame> {
        loop {
            // Heart-beats and frame separators: newlines between frames.
            while matches!(self.buf.first(), Some(b'\n' | b'\r')) {
                self.buf.remove(0);
            }
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            if self.buf.len() > MAX_FRAME {
                bail!("STOMP frame larger than {MAX_FRAME} bytes");
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the broker closed the STOMP connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A complete frame at the start of `buf` and the bytes it used, or None if more is needed.
fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
    let Some(head_end) = buf.windows(2).position(|w| w == b"\n\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).replace('\r', "");
    let mut lines = head.lines();
    let command = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body_start = head_end + 2;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body_end = match length {
        // The body and its NUL.
        Some(n) if buf.len() > body_start + n => body_start + n,
        Some(_) => return Ok(None),
        None => match buf[body_start..].iter().position(|b| *b == 0) {
            Some(p) => body_start + p,
            None => return Ok(None),
        },
    };
    let body = String::from_utf8_lossy(&buf[body_start..body_end]).into_owned();
    Ok(Some((
        Frame {
            command,
            headers,
            body,
        },
        body_end + 1,
    )))
}

/// XStream's map: `<map><entry><string>KEY</string><long>VALUE</long></entry>…</map>`.
fn parse_map(xml: &str) -> Result<Figures> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut figures = Figures::default();
    // Within an entry: its children's names and texts, in order.
    let mut entry: Vec<(String, String)> = Vec::new();
    // The child being read and its text so far (entities split a text into several events).
    let mut text = String::new();
    loop {
        match reader.read_event().context("statistics XML")? {
            Event::Start(e) => {
                if e.name().as_ref() == b"entry" {
                    entry.clear();
                }
                text.clear();
            }
            Event::Empty(e) => {
                // <string/>: an empty value.
                entry.push((
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    String::new(),
                ));
            }
            Event::Text(t) => text.push_str(&t.xml10_content().context("statistics XML text")?),
            Event::GeneralRef(r) => text.push_str(
                match r.decode().context("statistics XML entity")?.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                },
            ),
            Event::End(e) => match e.name().as_ref() {
                b"entry" => {
                    if let [(_, key), (kind, value)] = entry.as_slice() {
                        match kind.as_str() {
                            "long" | "int" | "double" | "float" | "short" | "byte" => {
                                if let Ok(v) = value.parse::<f64>() {
                                    figures.numbers.insert(key.clone(), v);
                                }
                            }
                            _ => {
                                figures.strings.insert(key.clone(), value.clone());
                            }
                        }
                    }
                    entry.clear();
                }
                b"map" => {}
                name => {
                    entry.push((
                        String::from_utf8_lossy(name).into_owned(),
                        std::mem::take(&mut text),
                    ));
                }
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(figures)
}

/// Established TCP connections to the broker's client ports (IPv4 and IPv6).
pub fn connection_count(ports: &[u16]) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|table| established(&table, ports))
        .sum()
}

fn established(table: &str, ports: &[u16]) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                return false;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            *state == "01" && port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xstream_maps_parse_into_numbers_and_strings() {
        let xml = "<map>\n  <entry>\n    <string>size</string>\n    <long>5</long>\n  </entry>\n\
                   <entry><string>destinationName</string><string>queue://a&amp;b</string></entry>\
                   <entry><string>ssl</string><string></string></entry>\
                   <entry><string>storePercentUsage</string><int>3</int></entry>\
                   <entry><string>averageEnqueueTime</string><double>1.5</double></entry></map>";
        let f = parse_map(xml).expect("map");
        assert_eq!(f.get("size"), 5.0);
        assert_eq!(f.get("storePercentUsage"), 3.0);
        assert_eq!(f.get("averageEnqueueTime"), 1.5);
        assert_eq!(f.strings["destinationName"], "queue://a&b");
        assert_eq!(f.get("missing"), 0.0);
    }

    #[test]
    fn frames_split_on_nul_or_content_length() {
        let buf = b"MESSAGE\ndestination:/x\n\n<map/>\0\nRECEIPT\nreceipt-id:r\n\n\0";
        let (f, used) = parse_frame(buf).expect("parse").expect("frame");
        assert_eq!((f.command.as_str(), f.body.as_str()), ("MESSAGE", "<map/>"));
        let rest = &buf[used..];
        assert_eq!(rest[0], b'\n');
        let (f, _) = parse_frame(&rest[1..]).expect("parse").expect("frame");
        assert_eq!(f.command, "RECEIPT");
        let with_nul = b"MESSAGE\ncontent-length:3\n\na\0b\0";
        let (f, used) = parse_frame(with_nul).expect("parse").expect("frame");
        assert_eq!((f.body.as_str(), used), ("a\0b", with_nul.len()));
        assert!(parse_frame(b"MESSAGE\n\nno end").expect("parse").is_none());
        assert_eq!(header("a:b\nc"), "a\\cb\\nc");
    }

    #[test]
    fn established_connections_to_the_client_ports_are_counted() {
        // 61617 = F0B1, 61614 = F0AE, 8883 = 22B3; state 01 = established, 0A = listening.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0B074F0A:F0B1 00000000:0000 0A 00000000:00000000\n\
            1: 0B074F0A:F0B1 01074F0A:C350 01 00000000:00000000\n\
            2: 0B074F0A:F0AE 01074F0A:C351 01 00000000:00000000\n\
            3: 0B074F0A:22B3 01074F0A:C352 06 00000000:00000000\n\
            4: 0100007F:1F90 0100007F:C353 01 00000000:00000000\n";
        assert_eq!(established(table, &[61617, 61614, 8883]), 2);
    }
}
