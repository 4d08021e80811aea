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

/// What the probe and metrics endpoints report. Ready means this replica can do its part: the
/// API server answered it, and its webhook (when it serves one) is listening with its
/// certificate loaded, so a Service sends admission requests only to replicas that answer them.
#[derive(Clone)]
pub struct AdminState {
    ready: Arc<AtomicBool>,
    webhook_pending: Arc<AtomicBool>,
    pub registry: Arc<Mutex<Registry>>,
}

impl AdminState {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("capssh");
        // A gauge of 1, not OpenMetrics' info type: Prometheus' text-format parsers (Cluster
        // API's e2e framework reads every provider's /metrics with one) refuse "info".
        let build = prometheus_client::metrics::family::Family::<Vec<(String, String)>, prometheus_client::metrics::gauge::Gauge>::default();
        build.get_or_create(&vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]).set(1);
        registry.register("build_info", "capssh build information (always 1)", build);
        Self { ready: Arc::new(AtomicBool::new(false)), webhook_pending: Arc::new(AtomicBool::new(false)), registry: Arc::new(Mutex::new(registry)) }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Readiness waits for the webhook from now until it listens.
    pub fn expect_webhook(&self) {
        self.webhook_pending.store(true, Ordering::Relaxed);
    }

    fn webhook_listening(&self) {
        self.webhook_pending.store(false, Ordering::Relaxed);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.webhook_pending.load(Ordering::Relaxed)
    }
}

pub async fn serve_health(addr: SocketAddr, state: AdminState) -> anyhow::Result<()> {
    let app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(state);
    let listener = TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
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

pub async fn serve_webhook(addr: SocketAddr, cert_dir: PathBuf, state: AdminState) -> anyhow::Result<()> {
    let certificate = ReloadingCertificate::load(cert_dir)?;
    let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()?));
    let app = crate::webhook::router();
    let listener = TcpListener::bind(addr).await?;
    state.webhook_listening();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_use_only_types_prometheus_text_parsers_know() {
        let state = AdminState::new();
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &state.registry.lock().unwrap()).unwrap();
        assert!(body.contains(&format!("capssh_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{body}");
        assert!(!body.lines().any(|l| l.starts_with("# TYPE") && l.ends_with(" info")), "{body}");
    }

    #[test]
    fn ready_needs_the_api_server_and_a_listening_webhook() {
        let state = AdminState::new();
        assert!(!state.is_ready(), "nothing checked yet");
        state.expect_webhook();
        state.set_ready(true);
        assert!(!state.is_ready(), "the API server answered, the webhook does not listen yet");
        state.webhook_listening();
        assert!(state.is_ready());
        let without_webhook = AdminState::new();
        without_webhook.set_ready(true);
        assert!(without_webhook.is_ready(), "a manager without a webhook is ready once the API server answers");
    }
}
