//! go-plugin's start-up handshake.
//!
//! Terraform starts the provider with a magic cookie and a few settings in
//! the environment, then reads one line from the provider's stdout that
//! says which protocol to speak, where to connect and which certificate the
//! server will present.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use base64::Engine;
use tokio::net::TcpListener;

/// Environment variable holding the magic cookie.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
/// Terraform's magic cookie value: not a secret, just proof that the
/// binary was started by Terraform rather than by a person. Taken from
/// what Terraform 1.0.3 actually sets (note `...4330efaf76d1...`).
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's own protocol version.
pub const CORE_PROTOCOL_VERSION: u32 = 1;
/// The Terraform plugin protocol this server speaks.
pub const APP_PROTOCOL_VERSION: u32 = 6;

/// Shown when someone runs the provider binary by hand.
pub const NOT_A_PLUGIN_MESSAGE: &str = "This binary is a plugin for Terraform. It is not meant to \
be executed directly.\nRun Terraform with a configuration that uses this provider, and Terraform \
will start it automatically.";

/// True when the process was started by Terraform.
pub fn cookie_matches(value: Option<&str>) -> bool {
    value == Some(MAGIC_COOKIE_VALUE)
}

/// Checks `PLUGIN_PROTOCOL_VERSIONS` (a comma-separated list offered by
/// Terraform). Absent means the host did not say, which go-plugin treats as
/// "use the server's version".
pub fn check_protocol_versions(offered: Option<&str>) -> anyhow::Result<()> {
    let Some(offered) = offered.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    let speaks = offered
        .split(',')
        .any(|version| version.trim().parse::<u32>().ok() == Some(APP_PROTOCOL_VERSION));
    if !speaks {
        bail!(
            "Terraform offers plugin protocol versions {offered}, but this provider speaks only \
             version {APP_PROTOCOL_VERSION}; use Terraform 1.0 or later"
        );
    }
    Ok(())
}

/// The port range from `PLUGIN_MIN_PORT`/`PLUGIN_MAX_PORT`, or `None` when
/// either is unset (any free port will do).
pub fn port_range(min: Option<&str>, max: Option<&str>) -> anyhow::Result<Option<(u16, u16)>> {
    let (Some(min), Some(max)) = (min, max) else {
        return Ok(None);
    };
    let min: u16 = min
        .trim()
        .parse()
        .with_context(|| format!("PLUGIN_MIN_PORT {min:?} is not a port number"))?;
    let max: u16 = max
        .trim()
        .parse()
        .with_context(|| format!("PLUGIN_MAX_PORT {max:?} is not a port number"))?;
    if min > max {
        bail!("PLUGIN_MIN_PORT {min} is above PLUGIN_MAX_PORT {max}");
    }
    Ok(Some((min, max)))
}

/// Binds a loopback listener on the first free port of `range`, or any
/// free port without a range.
pub async fn bind(range: Option<(u16, u16)>) -> anyhow::Result<TcpListener> {
    let Some((min, max)) = range else {
        return TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("cannot listen on 127.0.0.1");
    };
    for port in min..=max {
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            return Ok(listener);
        }
    }
    bail!("no free port on 127.0.0.1 between {min} and {max}")
}

/// The line go-plugin reads from stdout:
/// `CORE|APP|NETWORK|ADDRESS|PROTOCOL|SERVER_CERT`, the certificate as
/// standard base64 of its DER without padding.
pub fn handshake_line(address: SocketAddr, server_cert_der: &[u8]) -> String {
    let cert = base64::engine::general_purpose::STANDARD_NO_PAD.encode(server_cert_der);
    format!("{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|tcp|{address}|grpc|{cert}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie() {
        assert!(cookie_matches(Some(MAGIC_COOKIE_VALUE)));
        assert!(!cookie_matches(Some("nope")));
        assert!(!cookie_matches(None));
    }

    #[test]
    fn protocol_versions() {
        assert!(check_protocol_versions(None).is_ok());
        assert!(check_protocol_versions(Some("6,5")).is_ok());
        assert!(check_protocol_versions(Some(" 5 , 6 ")).is_ok());
        assert!(check_protocol_versions(Some("5")).is_err());
        assert!(check_protocol_versions(Some("")).is_ok());
    }

    #[test]
    fn ports() {
        assert_eq!(port_range(None, Some("2")).ok().flatten(), None);
        assert_eq!(
            port_range(Some("10000"), Some("25000")).ok().flatten(),
            Some((10000, 25000))
        );
        assert!(port_range(Some("x"), Some("1")).is_err());
        assert!(port_range(Some("5"), Some("1")).is_err());
    }

    #[tokio::test]
    async fn binds_inside_the_range() {
        let first = bind(None).await.expect("bind");
        let port = first.local_addr().expect("addr").port();
        // The first port of the range is taken, so the next one is used.
        let Some(next) = port.checked_add(1) else {
            return;
        };
        if let Ok(second) = bind(Some((port, next))).await {
            assert_eq!(second.local_addr().expect("addr").port(), next);
        }
        assert!(bind(Some((port, port))).await.is_err());
    }

    #[test]
    fn line_format() {
        let address: SocketAddr = "127.0.0.1:12345".parse().expect("addr");
        assert_eq!(
            handshake_line(address, &[0xff, 0x00, 0x10]),
            "1|6|tcp|127.0.0.1:12345|grpc|/wAQ"
        );
        // No padding even when the length is not a multiple of three.
        assert_eq!(
            handshake_line(address, &[1]),
            "1|6|tcp|127.0.0.1:12345|grpc|AQ"
        );
    }
}
