//! The metrics listener: `GET /metrics` over plain HTTP/1.1, one request per connection.
//!
//! Plain HTTP because that is what Prometheus scrapes by default and the figures carry no
//! secret (queue names and counts; never users or passwords); the agent API stays behind
//! mutual TLS. Bind it to a management address, or leave `--metrics-listen` unset for none.
//! A small hand-written server rather than a web framework: one path, no bodies to parse.

use anyhow::{Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client gets to send its request line and headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests larger than this are refused (a scrape's request is a few hundred bytes).
const MAX_REQUEST: usize = 16 * 1024;

pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener {listen}"))
}

/// Serves `collect()`'s text on `GET /metrics` until the process ends.
pub async fn serve<F, Fut>(listener: TcpListener, collect: F) -> Result<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    if let Ok(listen) = listener.local_addr() {
        tracing::info!(%listen, "metrics serving on /metrics");
    }
    let collect = Arc::new(collect);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let collect = collect.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, collect.as_ref()).await {
                tracing::debug!("metrics request: {e:#}");
            }
        });
    }
}

async fn handle<F, Fut>(mut stream: TcpStream, collect: &F) -> Result<()>
where
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

async fn read_head(stream: &mut TcpStream) -> Result<String> {
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

    #[tokio::test]
    async fn a_scrape_gets_the_collected_text() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, || async { "ferrymq_up 1\n".to_string() }));
        let mut body = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
                    .await
                    .expect("write");
                s.read_to_string(&mut body).await.expect("read");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
        assert!(body.ends_with("\r\n\r\nferrymq_up 1\n"), "{body}");
    }
}
