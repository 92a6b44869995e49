//! How the agent's probes reach a broker's listener: over TLS, checking the broker's
//! certificate against the deployment CA for the instance's address, as a client would; or
//! plain TCP for plain listeners.

use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A connected stream, TLS or not.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub async fn connect(
    address: IpAddr,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    limit: Duration,
) -> Result<Box<dyn Io>> {
    let tcp = timeout(limit, TcpStream::connect(SocketAddr::new(address, port)))
        .await
        .context("connect timed out")?
        .context("connect")?;
    let Some(config) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = rustls::pki_types::ServerName::IpAddress(address.into());
    let stream = timeout(
        limit,
        tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .context(
        "TLS handshake (is the broker's certificate issued for this address by the deployment CA?)",
    )?;
    Ok(Box::new(stream))
}
