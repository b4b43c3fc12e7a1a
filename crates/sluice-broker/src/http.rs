//! The HTTP side listener: `GET /metrics` (Prometheus text) and `GET /health`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Routes one HTTP request.
pub fn route(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/health") => respond(StatusCode::OK, "text/plain", "ok\n"),
        (_, "/metrics" | "/health") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Open HTTP connections at most. Without a cap, idle connections to the
/// metrics port (hyper keeps an idle keep-alive connection forever) could use
/// up the process's file descriptors, which the native listener and the
/// segment files need too.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// Serves HTTP until `shutdown` fires. HTTP connections are not waited for on shutdown.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    serve_limited(listener, metrics, shutdown, MAX_HTTP_CONNECTIONS).await
}

/// [`serve`] with at most `max_connections` open connections: once that many
/// are open, the next one is accepted only after one of them closes.
pub async fn serve_limited(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: CancellationToken,
    max_connections: usize,
) {
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    while let Some((permit, stream, peer)) =
        crate::server::accept_limited(&listener, &limit, &shutdown).await
    {
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = route(&metrics, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "http connection error");
                },
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        use std::time::Duration;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_limited(listener, Metrics::new(), shutdown.clone(), 2));
        async fn health(s: &mut TcpStream) -> String {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = vec![0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
        // Two served, kept open (keep-alive).
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(health(&mut a).await.starts_with("HTTP/1.1 200"));
        assert!(health(&mut b).await.starts_with("HTTP/1.1 200"));
        // A third connects (kernel backlog) but is not served while both stay open.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), health(&mut c)).await;
        assert!(waiting.is_err(), "served beyond the connection limit");
        // Closing one frees a slot: the third is answered.
        drop(a);
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("served once a slot is free")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        drop(b);
        shutdown.cancel();
        server.await.unwrap();
    }

    #[test]
    fn routes() {
        let m = Metrics::new();
        assert_eq!(route(&m, &Method::GET, "/health").status(), StatusCode::OK);
        assert_eq!(route(&m, &Method::GET, "/metrics").status(), StatusCode::OK);
        assert_eq!(
            route(&m, &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&m, &Method::POST, "/health").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
