//! The manager's HTTP endpoints: probes and metrics in plain HTTP, the webhook over TLS.

use super::tls::ReloadingCertificate;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the probe and metrics endpoints report.
#[derive(Clone)]
pub struct AdminState {
    ready: Arc<AtomicBool>,
    pub registry: Arc<Mutex<Registry>>,
}

impl AdminState {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("capssh");
        let build = prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register("build", "capssh build information", build);
        Self { ready: Arc::new(AtomicBool::new(false)), registry: Arc::new(Mutex::new(registry)) }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

pub async fn serve_health(addr: SocketAddr, state: AdminState) -> anyhow::Result<()> {
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(state);
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

pub async fn serve_metrics(addr: SocketAddr, state: AdminState) -> anyhow::Result<()> {
    let app = Router::new().route("/metrics", get(metrics)).with_state(state);
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn metrics(State(state): State<AdminState>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut body = String::new();
    let encoded = match state.registry.lock() {
        Ok(registry) => prometheus_client::encoding::text::encode(&mut body, &registry).is_ok(),
        Err(_) => false,
    };
    let status = if encoded { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

pub async fn serve_webhook(addr: SocketAddr, cert_dir: PathBuf) -> anyhow::Result<()> {
    let certificate = ReloadingCertificate::load(cert_dir)?;
    let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()?));
    let app = crate::webhook::router();
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (tcp, peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "webhook TLS handshake failed");
                    return;
                }
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %err, "webhook connection ended with an error");
            }
        });
    }
}
