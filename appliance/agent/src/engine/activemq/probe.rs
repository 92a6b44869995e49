//! Is the broker serving, waiting for the store's lock, or neither?
//!
//! Serving is tested the way an OpenWire client sees it: on connect the broker sends its
//! `WireFormatInfo` unasked (a 4-byte size, the type byte 1, the magic `ActiveMQ`), so a port
//! that merely accepts connections does not pass. A standby opens no port at all: it is told
//! apart from a stuck or dead broker by the line KahaDB's shared-file locker logs when it finds
//! the lock taken.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

const WIREFORMAT_INFO: u8 = 1;
const MAGIC: &[u8; 8] = b"ActiveMQ";
/// Size prefix, type, magic.
const HEAD: usize = 4 + 1 + 8;

/// What `SharedFileLocker` (activemq-broker 5.17.2) logs at INFO, once, when another broker
/// holds the lock: "Database <dir>/lock is locked by another server. This broker is now in
/// slave mode waiting a lock to be acquired".
pub const STANDBY_LINE: &str =
    "is locked by another server. This broker is now in slave mode waiting a lock to be acquired";
/// `BrokerService` lines ("Apache ActiveMQ 5.17.2 (name, id) is starting | started | is
/// shutting down | is shutdown", "Failed to start Apache ActiveMQ …"): the broker has moved on
/// from waiting once one of them follows the standby line.
const LIFECYCLE: &str = "Apache ActiveMQ ";
/// The standby line comes early in a run; the tail is enough, and cheap.
const TAIL_BYTES: u64 = 64 * 1024;

/// `tls`: the client configuration trusting the deployment CA (`ssl://`), None for `tcp://`.
pub async fn openwire(
    address: IpAddr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<()> {
    let limit = Duration::from_secs(3);
    let mut stream = crate::engine::connect::connect(address, port, tls, limit).await?;
    let mut head = [0u8; HEAD];
    timeout(limit, stream.read_exact(&mut head))
        .await
        .context("no WireFormatInfo within 3 s")?
        .context("reading WireFormatInfo")?;
    check_wireformat_info(&head)
}

fn check_wireformat_info(head: &[u8; HEAD]) -> Result<()> {
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if head[4] != WIREFORMAT_INFO || &head[5..] != MAGIC || (size as usize) < HEAD - 4 {
        bail!("answer is not an OpenWire WireFormatInfo ({head:02x?})");
    }
    Ok(())
}

/// Whether the broker logging to `log` is waiting for the store's lock: its log holds the
/// standby line and nothing of the broker's lifecycle after it. The log holds one run only
/// (the agent removes it before a start, and log4j truncates it), so a line of an earlier run
/// cannot be taken for this one.
pub fn waits_for_lock(log: &Path) -> bool {
    tail(log, TAIL_BYTES).is_ok_and(|t| standby_in(&t))
}

fn standby_in(log: &str) -> bool {
    let mut standby = false;
    for line in log.lines() {
        if line.contains(STANDBY_LINE) {
            standby = true;
        } else if line.contains(LIFECYCLE) {
            standby = false;
        }
    }
    standby
}

fn tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut buf = Vec::with_capacity(bytes.min(len) as usize);
    file.take(bytes).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes a 5.17.2 broker sent on connect (captured from the real engine).
    const CAPTURED: [u8; HEAD] = [
        0x00, 0x00, 0x01, 0x52, 0x01, b'A', b'c', b't', b'i', b'v', b'e', b'M', b'Q',
    ];

    #[test]
    fn recognises_wireformat_info() {
        assert!(check_wireformat_info(&CAPTURED).is_ok());
        let mut other_type = CAPTURED;
        other_type[4] = 2;
        assert!(check_wireformat_info(&other_type).is_err());
        // An AMQP or STOMP server answering something else.
        let amqp = *b"AMQP\x00\x00\x09\x01\x00\x00\x00\x00\x00";
        assert!(check_wireformat_info(&amqp).is_err());
        let mut short = CAPTURED;
        short[..4].copy_from_slice(&[0, 0, 0, 3]);
        assert!(check_wireformat_info(&short).is_err());
    }

    #[tokio::test]
    async fn a_closed_port_or_a_silent_server_is_not_serving() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(openwire(ip, port, None).await.is_err());

        // Answers like a broker.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(&CAPTURED).await;
                let _ = s.write_all(&[0u8; 0x152 - 9]).await;
            }
        });
        assert!(openwire(ip, port, None).await.is_ok());
    }

    const STARTING: &str = "2026-11-22 01:10:11,900 | INFO  | Using Persistence Adapter: \
        KahaDBPersistenceAdapter[/v/activemq/kahadb] | org.apache.activemq.broker.BrokerService | main\n";
    const WAITING: &str = "2026-11-22 01:10:12,001 | INFO  | Database /v/activemq/kahadb/lock \
        is locked by another server. This broker is now in slave mode waiting a lock to be \
        acquired | org.apache.activemq.store.SharedFileLocker | main\n";
    const TOOK_OVER: &str = "2026-11-22 01:12:40,120 | INFO  | Apache ActiveMQ 5.17.2 (b-1, \
        ID:h2-41-1:1) is starting | org.apache.activemq.broker.BrokerService | main\n";

    #[test]
    fn standby_is_the_lock_line_with_nothing_after_it() {
        assert!(!standby_in(""));
        assert!(!standby_in(STARTING));
        assert!(standby_in(&format!("{STARTING}{WAITING}")));
        assert!(!standby_in(&format!("{STARTING}{WAITING}{TOOK_OVER}")));
        let failed =
            "2026-11-22 | ERROR | Failed to start Apache ActiveMQ (b-1, ID:x) | x | main\n";
        assert!(!standby_in(&format!("{WAITING}{failed}")));
    }

    #[test]
    fn reads_the_standby_line_from_the_log_tail() {
        let dir = std::env::temp_dir().join(format!("ferrymq-amq-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("activemq.log");
        assert!(!waits_for_lock(&log), "no log, no standby");
        // A long log: only the tail is read, and the line is still found at its end.
        let filler = STARTING.repeat(2000);
        std::fs::write(&log, format!("{filler}{WAITING}")).expect("write");
        assert!(waits_for_lock(&log));
        std::fs::write(&log, format!("{WAITING}{TOOK_OVER}")).expect("write");
        assert!(!waits_for_lock(&log));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
