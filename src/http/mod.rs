//! The small HTTP server of the controller and the agent: `/metrics` (Prometheus/OpenMetrics
//! text), `/healthz` (the process serves) and `/readyz` (set by the caller: for the controller,
//! the API server answered and the CRD is installed; for the agent, a first resync ran).
//!
//! Every controller replica serves, leader or not: a standby is healthy and ready to take over,
//! and its `lvs_operator_controller_leader` metric says 0.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

pub mod secure;
pub use secure::{Authorizer, Secure, Verdict};

/// Whatever renders the `/metrics` page.
pub trait Metrics: Clone + Send + Sync + 'static {
    /// The whole exposition, ending with `# EOF`.
    fn encode(&self) -> String;
}

/// Readiness shared between the run loop and the server.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Binds `addr` now (so a taken port fails the start) and serves in a background task: plain
/// HTTP, or with `secure` HTTPS and `/metrics` only for tokens allowed to get it.
pub async fn serve<M: Metrics>(
    addr: SocketAddr,
    metrics: M,
    health: Health,
    secure: Option<Secure>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let acceptor = secure
        .as_ref()
        .map(|s| tokio_rustls::TlsAcceptor::from(s.tls.clone()));
    let auth = secure.map(|s| s.auth);
    if auth.is_some() {
        info!(%local, "serving /healthz, /readyz and, to tokens allowed to get it, /metrics over HTTPS");
    } else {
        info!(%local, "serving /metrics, /healthz and /readyz over plain HTTP");
    }
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            let (auth, acceptor) = (auth.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (metrics, health, auth) = (metrics.clone(), health.clone(), auth.clone());
                    async move {
                        let response = respond(req, &metrics, &health, auth.as_deref()).await;
                        Ok::<_, Infallible>(response)
                    }
                });
                let served = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => {
                            http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await
                        }
                        Err(e) => {
                            debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                    },
                    None => {
                        http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(e) = served {
                    debug!(error = %e, "http connection ended with an error");
                }
            });
        }
    });
    Ok(local)
}

/// `/metrics` asks `auth` first, when there is one.
async fn respond<M: Metrics>(
    req: Request<Incoming>,
    metrics: &M,
    health: &Health,
    auth: Option<&Authorizer>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/metrics"
        && let Some(auth) = auth
    {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.check(header).await {
            Verdict::Allowed => {}
            Verdict::Unauthenticated(why) => return refusal(StatusCode::UNAUTHORIZED, why),
            Verdict::Forbidden(why) => return refusal(StatusCode::FORBIDDEN, why),
        }
    }
    route(&req, metrics, health)
}

fn refusal(status: StatusCode, why: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{why}\n"))))
        .expect("a plain response is valid")
}

fn route<M: Metrics>(
    req: &Request<Incoming>,
    metrics: &M,
    health: &Health,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .header(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("a static response is valid"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if health.is_ready() => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_server_answers_health_readiness_and_metrics() {
        let metrics = crate::controller::metrics::Metrics::default();
        metrics.reconciles.inc();
        let health = Health::default();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            health.clone(),
            None,
        )
        .await
        .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let body = get(addr, "/metrics").await;
        assert!(
            body.contains("lvs_operator_controller_reconciles_total 1"),
            "{body}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
