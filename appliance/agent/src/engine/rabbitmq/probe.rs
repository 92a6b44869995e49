//! "Accepts AMQP connections", tested the way a client would: the AMQP 0-9-1 protocol header
//! goes out and a `connection.start` method frame must come back. A port that is merely open
//! (the node still booting, a proxy) does not pass.

use crate::engine::connect::connect;
use anyhow::{bail, Context, Result};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const CLASS_CONNECTION: u16 = 10;
const METHOD_START: u16 = 10;

/// `tls`: the client configuration trusting the deployment CA (AMQPS), None for plain AMQP.
pub async fn amqp(
    address: IpAddr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<()> {
    let limit = Duration::from_secs(3);
    let mut stream = connect(address, port, tls, limit).await?;
    stream
        .write_all(PROTOCOL_HEADER)
        .await
        .context("send header")?;
    let mut frame = [0u8; 11];
    timeout(limit, stream.read_exact(&mut frame))
        .await
        .context("no answer to the protocol header")?
        .context("reading connection.start")?;
    check_start_frame(&frame)
}

fn check_start_frame(frame: &[u8; 11]) -> Result<()> {
    let class = u16::from_be_bytes([frame[7], frame[8]]);
    let method = u16::from_be_bytes([frame[9], frame[10]]);
    if frame[0] != FRAME_METHOD || class != CLASS_CONNECTION || method != METHOD_START {
        bail!("answer is not connection.start (frame {frame:02x?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_connection_start() {
        let ok = [1, 0, 0, 0, 0, 1, 0xf4, 0, 10, 0, 10];
        assert!(check_start_frame(&ok).is_ok());
        // The server's own protocol header when it wants another version.
        let header = *b"AMQP\x00\x00\x09\x01\x00\x00\x00";
        assert!(check_start_frame(&header).is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_not_serving() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        assert!(amqp("127.0.0.1".parse().expect("ip"), port, None)
            .await
            .is_err());
    }
}
