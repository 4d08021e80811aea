//! `capssh manager`: the long-running process. Wires the HTTP servers (health, metrics, webhook)
//! and the controllers; owns signals and shutdown.

mod api_log;
mod controllers;
mod http;
mod leader;
mod tls;

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `capssh manager`; names follow Cluster API's managers where they overlap.
#[derive(Args, Debug, Clone)]
pub struct ManagerArgs {
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9440")]
    pub health_addr: SocketAddr,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address the validating webhook listens on (HTTPS). Empty disables the webhook server.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_addr: String,
    /// Folder holding the webhook's serving certificate as tls.crt and tls.key (cert-manager
    /// writes them there through the mounted Secret; they are re-read when they change).
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    pub webhook_cert_dir: PathBuf,
    /// Watch only this namespace (default: all namespaces, as clusterctl installs providers).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only reconcile objects labelled `cluster.x-k8s.io/watch-filter=<value>` (Cluster API's
    /// convention for running several instances side by side).
    #[arg(long)]
    pub watch_filter: Option<String>,
    /// How long a deleted machine's host may stay unreachable or fail verification before it is
    /// quarantined (and the Machine's deletion completes), in seconds.
    #[arg(long, default_value_t = 300)]
    pub cleanup_give_up_seconds: u64,
    /// Run controllers only while holding the Lease `capssh-leader` (for several replicas).
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (default: POD_NAMESPACE, else capssh-system).
    #[arg(long, env = "POD_NAMESPACE", default_value = "capssh-system")]
    pub leader_election_namespace: String,
    /// How often unclaimed hosts are probed again, in seconds.
    #[arg(long, default_value_t = 300)]
    pub probe_interval_seconds: u64,
    /// How often a provisioned machine's host is checked over SSH, in seconds: a host that stops
    /// answering turns the SSHMachine's Ready condition (and the Machine's InfrastructureReady)
    /// False with the reason, and True again when it answers.
    #[arg(long, default_value_t = 60)]
    pub health_check_interval_seconds: u64,
    /// How many hosts capssh works on over SSH at once.
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_hosts: usize,
    /// How many SSHMachines are reconciled at once.
    #[arg(long, default_value_t = 32)]
    pub sshmachine_concurrency: u16,
    /// How many SSHHosts are reconciled (probed) at once.
    #[arg(long, default_value_t = 16)]
    pub sshhost_concurrency: u16,
    /// How many SSHClusters are reconciled at once.
    #[arg(long, default_value_t = 4)]
    pub sshcluster_concurrency: u16,
}

pub async fn run(args: ManagerArgs) -> anyhow::Result<()> {
    let state = http::AdminState::new();
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(http::serve_health(args.health_addr, state.clone()));
    servers.spawn(http::serve_metrics(args.metrics_addr, state.clone()));
    if !args.webhook_addr.is_empty() {
        let addr: SocketAddr = args.webhook_addr.parse()?;
        state.expect_webhook();
        servers.spawn(http::serve_webhook(addr, args.webhook_cert_dir.clone(), state.clone()));
    }
    let config = kube::Config::infer().await?;
    let client = kube::client::ClientBuilder::try_from(config)?.with_layer(&api_log::LogFailedCalls).build();
    // Probes and the webhook serve on every replica; controllers only on the leader. Ready once
    // the API server answers (with these credentials, through this Pod's network).
    let version = client.apiserver_version().await.map_err(|err| anyhow::anyhow!("the API server does not answer: {err}"))?;
    tracing::info!(server = %version.git_version, "API server reached");
    state.set_ready(true);
    let mut leadership = None;
    if args.leader_elect {
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("capssh-{}", std::process::id()));
        let election = std::sync::Arc::new(leader::LeaderElection::new(client.clone(), &args.leader_election_namespace, "capssh-leader", &identity));
        tokio::select! {
            _ = election.acquire() => {}
            _ = shutdown_signal() => return Ok(()),
            Some(result) = servers.join_next() => return result?,
        }
        let holder = election.clone();
        servers.spawn(async move { holder.hold().await });
        leadership = Some(election);
    }
    let metrics = {
        let mut registry = state.registry.lock().map_err(|_| anyhow::anyhow!("metrics registry poisoned"))?;
        crate::controllers::metrics::Metrics::register(&mut registry)
    };
    let timing = crate::controllers::Timing {
        probe_interval: std::time::Duration::from_secs(args.probe_interval_seconds),
        health_interval: std::time::Duration::from_secs(args.health_check_interval_seconds.max(1)),
        cleanup_give_up: std::time::Duration::from_secs(args.cleanup_give_up_seconds),
    };
    let mut ctx = crate::controllers::Context::new(client.clone(), args.max_concurrent_hosts, timing, metrics);
    ctx.watch_filter = args.watch_filter.clone();
    let ctx = std::sync::Arc::new(ctx);
    let concurrency = controllers::Concurrency {
        sshmachine: args.sshmachine_concurrency,
        sshhost: args.sshhost_concurrency,
        sshcluster: args.sshcluster_concurrency,
    };
    let scope = controllers::Scope { namespace: args.namespace.clone(), watch_filter: args.watch_filter.clone(), concurrency };
    servers.spawn(controllers::run_credentials_cache(client.clone(), scope.clone(), ctx.clone()));
    servers.spawn(controllers::run_hosts(client.clone(), scope.clone(), ctx.clone()));
    servers.spawn(controllers::run_clusters(client.clone(), scope.clone(), ctx.clone()));
    servers.spawn(controllers::run_machines(client, scope, ctx));
    tracing::info!(health = %args.health_addr, metrics = %args.metrics_addr, webhook = %args.webhook_addr, "manager started");

    let outcome = tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(result) = servers.join_next() => {
            // A server ending on its own is a failure (port taken, certificate unreadable...).
            result.map_err(anyhow::Error::from).and_then(|r| r)
        }
    };
    // The controllers stop (no reconcile runs any more) before the lease goes to another replica.
    servers.shutdown().await;
    if let Some(election) = leadership {
        election.release().await;
    }
    outcome
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
