//! The metrics listener: `GET /metrics` over HTTP/1.1, one request per connection.
//!
//! Plain HTTP only on loopback (a Prometheus, or an exporter's proxy, on the same host); on
//! any other address HTTPS only (see [`crate::tls`]), with the operator's or a monitoring client
//! certificate (`pki issue-monitoring`) required: the figures carry no secret, but they name
//! brokers and queues, which a stranger on the network, or another host, must not list. The agent API keeps its own mutual TLS. Leave
//! `--metrics-listen` unset for no listener.
//! A small hand-written server rather than a web framework: one path, no bodies to parse.

use crate::pki::identity::{Identities, Role};
use crate::tls::AgentCertificate;
use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
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
    /// HTTPS with client certificates required: the operator's or a monitoring one
    /// (`pki issue-monitoring`), issued by the deployment CA itself.
    Tls(Arc<rustls::ServerConfig>, Identities),
}

impl Transport {
    /// Plain HTTP on a loopback address; HTTPS with client certificates of the deployment CA
    /// on any other (the host's address, or all addresses), serving the agent's certificate.
    pub fn for_listen(
        listen: SocketAddr,
        certificate: Arc<AgentCertificate>,
        ca_pem: &str,
    ) -> Result<Transport> {
        if listen.ip().is_loopback() {
            return Ok(Transport::Plain);
        }
        let context = || format!("TLS for the metrics listener {listen}");
        let config = crate::tls::server_config(certificate, ca_pem, &[]).with_context(context)?;
        let identities = Identities::new(ca_pem).with_context(context)?;
        Ok(Transport::Tls(config, identities))
    }

    fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls(..) => "https (client certificates required)",
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
        Transport::Tls(config, identities) => {
            Some((TlsAcceptor::from(config.clone()), identities.clone()))
        }
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
                Some((acceptor, identities)) => {
                    match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => match scraper(&identities, &stream) {
                            Ok(()) => handle(stream, collect.as_ref()).await,
                            Err(why) => {
                                tracing::warn!(%peer, "metrics scrape refused: {why}");
                                Err(anyhow::anyhow!(why))
                            }
                        },
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

/// Who may scrape: the operator and monitoring certificates the deployment CA issued itself,
/// not a host's certificate nor anything a broker CA signed.
fn scraper<S>(identities: &Identities, stream: &TlsStream<S>) -> Result<(), String> {
    let certs = stream.get_ref().1.peer_certificates();
    match identities.role(certs) {
        Ok(Role::Operator | Role::Monitoring) => Ok(()),
        Ok(role) => Err(format!("{role} may not read metrics")),
        Err(e) => Err(e.to_string()),
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

    /// A host's TLS directory as `pki issue-host` makes it and the PKI directory with the
    /// operator's credentials and a monitoring certificate, in a fresh temporary directory.
    fn pki_dirs(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        use crate::pki;
        let root =
            std::env::temp_dir().join(format!("ferrymq-metrics-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (pki_dir, host_dir) = (root.join("pki"), root.join("host"));
        let year = "365d".parse().expect("lifetime");
        pki::init(&pki_dir, "20y".parse().expect("lifetime"), year).expect("pki init");
        pki::issue_host(
            &pki_dir,
            "127.0.0.1".parse().expect("ip"),
            &[],
            year,
            &host_dir,
        )
        .expect("issue host");
        pki::issue_monitoring(&pki_dir, &pki_dir, year).expect("issue monitoring");
        (pki_dir, host_dir)
    }

    fn transport(listen: &str, host_dir: &std::path::Path) -> Result<Transport> {
        let certificate = AgentCertificate::load(host_dir)?;
        let ca = std::fs::read_to_string(host_dir.join(crate::pki::CA_CERT))?;
        Transport::for_listen(listen.parse().expect("addr"), certificate, &ca)
    }

    #[test]
    fn plain_only_on_loopback() {
        let (pki_dir, host_dir) = pki_dirs("listen");
        let at = |a: &str| transport(a, &host_dir);
        assert!(matches!(at("127.0.0.1:9404"), Ok(Transport::Plain)));
        assert!(matches!(at("[::1]:9404"), Ok(Transport::Plain)));
        assert!(matches!(at("10.0.0.21:9404"), Ok(Transport::Tls(..))));
        assert!(matches!(at("0.0.0.0:9404"), Ok(Transport::Tls(..))));
        let _ = std::fs::remove_dir_all(pki_dir.parent().expect("root"));
    }

    #[tokio::test]
    async fn over_tls_only_the_operator_and_monitoring_are_served() {
        use crate::pki;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let (pki_dir, host_dir) = pki_dirs("serve");
        let addr = server(transport("10.0.0.21:9404", &host_dir).expect("transport")).await;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki_dir.join(pki::CA_CERT)).expect("ca"))
            .expect("root");
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let with = |dir: &std::path::Path, cert: &str, key: &str| {
            builder
                .clone()
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(dir.join(cert)).expect("cert")],
                    PrivateKeyDer::from_pem_file(dir.join(key)).expect("key"),
                )
                .expect("client auth")
        };
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
        for (who, config) in [
            (
                "operator",
                with(&pki_dir, pki::CLIENT_CERT, pki::CLIENT_KEY),
            ),
            (
                "monitoring",
                with(&pki_dir, pki::MONITORING_CERT, pki::MONITORING_KEY),
            ),
        ] {
            let body = over_tls(config).await.expect(who);
            assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{who}: {body}");
            assert!(body.ends_with("ferrymq_up 1\n"), "{who}: {body}");
        }
        // A host's certificate, no certificate, plain HTTP: nothing is served.
        for (who, config) in [
            ("host", with(&host_dir, pki::AGENT_CERT, pki::AGENT_KEY)),
            ("none", builder.clone().with_no_client_auth()),
        ] {
            let refused = over_tls(config).await;
            assert!(
                refused.as_ref().map_or(true, |b| !b.contains("ferrymq_up")),
                "{who}: {refused:?}"
            );
        }
        let plain = scrape(TcpStream::connect(addr).await.expect("connect")).await;
        assert!(
            plain.as_ref().map_or(true, |b| !b.contains("HTTP/1.1")),
            "{plain:?}"
        );
        let _ = std::fs::remove_dir_all(pki_dir.parent().expect("root"));
    }
}
