//! The metrics listener: `GET /metrics` over HTTP/1.1, one request per connection.
//!
//! Plain HTTP only on loopback (a Prometheus, or an exporter's proxy, on the same host); on
//! any other address HTTPS only, with a client certificate of the deployment CA required (see
//! [`super::tls`]): the figures carry no secret, but they name brokers and queues, which a
//! stranger on the network must not list. The agent API keeps its own mutual TLS. Leave
//! `--metrics-listen` unset for no listener.
//! A small hand-written server rather than a web framework: one path, no bodies to parse.

use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client gets to finish its TLS handshake and send its request line and headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests larger than this are refused (a scrape's request is a few hundred bytes).
const MAX_REQUEST: usize = 16 * 1024;

/// How the listener talks to scrapers.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP: loopback only.
    Plain,
    /// HTTPS with client certificates required.
    Tls(Arc<rustls::ServerConfig>),
}

impl Transport {
    /// Plain HTTP on a loopback address; HTTPS with client certificates of the deployment CA
    /// on any other (the host's address, or all addresses), from `tls_dir`.
    pub fn for_listen(listen: SocketAddr, tls_dir: &Path) -> Result<Transport> {
        if listen.ip().is_loopback() {
            return Ok(Transport::Plain);
        }
        let config = super::tls::server_config(tls_dir)
            .with_context(|| format!("TLS for the metrics listener {listen}"))?;
        Ok(Transport::Tls(config))
    }

    fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls(_) => "https (client certificates required)",
        }
    }
}

pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener {listen}"))
}

/// Serves `collect()`'s text on `GET /metrics` until the process ends.
pub async fn serve<F, Fut>(listener: TcpListener, transport: Transport, collect: F) -> Result<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, scheme = transport.scheme(), "metrics serving on /metrics");
    }
    let acceptor = match &transport {
        Transport::Plain => None,
        Transport::Tls(config) => Some(TlsAcceptor::from(config.clone())),
    };
    let collect = Arc::new(collect);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let collect = collect.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let served = match acceptor {
                None => handle(stream, collect.as_ref()).await,
                Some(acceptor) => {
                    match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => handle(stream, collect.as_ref()).await,
                        Ok(Err(e)) => Err(anyhow::Error::new(e).context("TLS handshake refused")),
                        Err(_) => Err(anyhow::anyhow!("TLS handshake timed out")),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "metrics request: {e:#}");
            }
        });
    }
}

/// Reads one request and answers it: the request must arrive within `REQUEST_TIMEOUT`, the
/// answer is collected after it (a scrape waits for the engines, not for a slow client).
async fn handle<S, F, Fut>(mut stream: S, collect: &F) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .context("request timed out")??;
    let (status, body) = match route(&head) {
        Route::Metrics => ("200 OK", collect().await),
        Route::NotFound => (
            "404 Not Found",
            "not found; metrics are at /metrics\n".into(),
        ),
        Route::BadMethod => ("405 Method Not Allowed", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(buf.len() <= MAX_REQUEST, "request too large");
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
}

fn route(head: &str) -> Route {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        (Some("GET"), "/metrics") => Route::Metrics,
        (Some("GET"), _) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(""), Route::BadMethod);
    }

    /// Serves "ferrymq_up 1" on a fresh loopback port with `transport`.
    async fn server(transport: Transport) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, transport, || async {
            "ferrymq_up 1\n".to_string()
        }));
        addr
    }

    /// Sends a scrape over `stream` and reads the whole answer; a refusal reads as an error.
    async fn scrape<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<String> {
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    }

    #[tokio::test]
    async fn a_scrape_gets_the_collected_text() {
        let addr = server(Transport::Plain).await;
        let s = TcpStream::connect(addr).await.expect("connect");
        let body = scrape(s).await.expect("scrape");
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.ends_with("\r\n\r\nferrymq_up 1\n"), "{body}");
    }

    #[test]
    fn plain_only_on_loopback() {
        let (pki_dir, host_dir) = super::super::tls::tests::pki_dirs("listen");
        let at = |a: &str| Transport::for_listen(a.parse().expect("addr"), &host_dir);
        assert!(matches!(at("127.0.0.1:9404"), Ok(Transport::Plain)));
        assert!(matches!(at("[::1]:9404"), Ok(Transport::Plain)));
        assert!(matches!(at("10.0.0.21:9404"), Ok(Transport::Tls(_))));
        assert!(matches!(at("0.0.0.0:9404"), Ok(Transport::Tls(_))));
        // Off loopback without the agent's certificate: no listener rather than a plain one.
        let e = Transport::for_listen("10.0.0.21:9404".parse().expect("addr"), &pki_dir)
            .err()
            .expect("no agent.pem in the pki dir");
        assert!(format!("{e:#}").contains("agent.pem"), "{e:#}");
        let _ = std::fs::remove_dir_all(pki_dir.parent().expect("root"));
    }

    #[tokio::test]
    async fn over_tls_only_a_client_of_the_deployment_ca_is_served() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let (pki_dir, host_dir) = super::super::tls::tests::pki_dirs("serve");
        let config = super::super::tls::server_config(&host_dir).expect("config");
        let addr = server(Transport::Tls(config)).await;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki_dir.join(crate::pki::CA_CERT)).expect("ca"))
            .expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let with_cert = builder
            .clone()
            .with_client_auth_cert(
                vec![
                    CertificateDer::from_pem_file(pki_dir.join(crate::pki::CLIENT_CERT))
                        .expect("client cert"),
                ],
                PrivateKeyDer::from_pem_file(pki_dir.join(crate::pki::CLIENT_KEY))
                    .expect("client key"),
            )
            .expect("client auth");
        let without_cert = builder.with_no_client_auth();
        let name = ServerName::IpAddress(addr.ip().into());
        let over_tls = |config: rustls::ClientConfig| {
            let name = name.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await?;
                scrape(tls).await
            }
        };

        let body = over_tls(with_cert)
            .await
            .expect("scrape with a client certificate");
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.ends_with("ferrymq_up 1\n"), "{body}");
        // No client certificate: the handshake or the first read fails, nothing is served.
        let refused = over_tls(without_cert).await;
        assert!(
            refused.as_ref().map_or(true, |b| !b.contains("ferrymq_up")),
            "{refused:?}"
        );
        // Plain HTTP to the TLS listener: no HTTP answer.
        let plain = scrape(TcpStream::connect(addr).await.expect("connect")).await;
        assert!(
            plain.as_ref().map_or(true, |b| !b.contains("HTTP/1.1")),
            "{plain:?}"
        );
        let _ = std::fs::remove_dir_all(pki_dir.parent().expect("root"));
    }
}
