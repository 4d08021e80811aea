//! Cluster API's own managers as local processes against a harness management plane: core,
//! kubeadm bootstrap (CABPK) and kubeadm control plane (KCP), each serving its admission and
//! conversion webhooks on 127.0.0.1 with a certificate from the plane's CA, registered as a
//! release registers them (see [`crate::capi::install_provider`]). Beside them runs a
//! kube-controller-manager with only the garbage collector and the namespace controller: Cluster
//! API deletes by ownerReference cascade, and a namespace never finishes deleting without it.
//!
//! ```no_run
//! # async fn scenario() -> anyhow::Result<()> {
//! let plane = capssh_e2e::mgmt::ManagementPlane::start("my-suite").await?;
//! let capi = capssh_e2e::capi_managers::CapiManagers::start(&plane, "my-suite").await?;
//! // ... apply a Cluster; Cluster API's controllers and webhooks do their part ...
//! println!("Cluster API logs: {:?}", capi.logs());
//! # Ok(()) }
//! ```
//!
//! Everything stops when the [`CapiManagers`] is dropped (and dies with the test process anyway:
//! see [`crate::process`]). Drop it before the plane: its webhook configurations stay registered,
//! so writes of Cluster API kinds fail once the managers are gone.

use crate::capi::{self, CORE, KUBEADM_BOOTSTRAP, KUBEADM_CONTROL_PLANE, Provider};
use crate::manager::http_get;
use crate::mgmt::ManagementPlane;
use crate::process::Daemon;
use crate::tools::{artifacts_dir, free_port, tool};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a manager may take to serve its webhooks (it first syncs its caches and migrates
/// its CRDs' stored versions; on a busy 2-core machine that takes a while).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How each of Cluster API's managers is started.
struct ManagerKind {
    provider: Provider,
    binary: &'static str,
    /// ClusterTopology is alpha (off by default); core and KCP have it on in every real install
    /// that uses ClusterClass, and our topology flavor needs it.
    feature_gates: &'static str,
}

const MANAGER_KINDS: [ManagerKind; 3] = [
    ManagerKind { provider: CORE, binary: "capi-manager", feature_gates: "ClusterTopology=true" },
    ManagerKind { provider: KUBEADM_BOOTSTRAP, binary: "capi-kubeadm-bootstrap-manager", feature_gates: "" },
    ManagerKind { provider: KUBEADM_CONTROL_PLANE, binary: "capi-kubeadm-control-plane-manager", feature_gates: "ClusterTopology=true" },
];

/// One running Cluster API manager.
pub struct CapiManager {
    pub provider: Provider,
    pub daemon: Daemon,
    pub log: PathBuf,
    /// Its webhook server (admission and /convert), https on every interface; registered as
    /// https://127.0.0.1:<port>.
    pub webhook_port: u16,
    /// Its health server, http://127.0.0.1:<port>/readyz and /healthz.
    pub health_port: u16,
}

/// Cluster API's three managers and a kube-controller-manager (garbage collector and namespace
/// controller), against one management plane.
pub struct CapiManagers {
    /// Core, kubeadm bootstrap, kubeadm control plane, in that order (the order of webhook ports
    /// in [`CapiManagers::start_installed`]).
    pub managers: Vec<CapiManager>,
    pub kube_controller_manager: Daemon,
    pub kube_controller_manager_log: PathBuf,
}

impl CapiManagers {
    /// Installs Cluster API's CRDs (with conversion webhooks) and webhook configurations, starts
    /// the three managers and the kube-controller-manager with logs in the suite's artifacts
    /// folder, and waits until every one of them is ready.
    pub async fn start(plane: &ManagementPlane, suite: &str) -> anyhow::Result<Self> {
        Self::start_with(plane, suite, None).await
    }

    /// Starts the managers for providers that `clusterctl init` already installed from
    /// components wired to these webhook ports (core, kubeadm bootstrap, kubeadm control plane;
    /// see [`crate::release`]): nothing is installed here.
    pub async fn start_installed(plane: &ManagementPlane, suite: &str, webhook_ports: [u16; 3]) -> anyhow::Result<Self> {
        Self::start_with(plane, suite, Some(webhook_ports)).await
    }

    async fn start_with(plane: &ManagementPlane, suite: &str, installed: Option<[u16; 3]>) -> anyhow::Result<Self> {
        let dir = artifacts_dir(suite);
        let cert_dir = dir.join("capi-webhook-certs");
        std::fs::create_dir_all(&cert_dir)?;
        // One serving certificate for 127.0.0.1 does for all three; the plane's CA signs it.
        plane.ca.server("capi-webhooks", &[])?.write(&cert_dir, "tls")?;
        let client = plane.client().await?;
        let ca_pem = plane.ca.cert_pem();

        let kube_controller_manager_log = unique_log(&dir, "kube-controller-manager");
        let (kube_controller_manager, kcm_port) = start_kube_controller_manager(plane, &dir, &kube_controller_manager_log)?;

        let mut managers = Vec::new();
        for (i, kind) in MANAGER_KINDS.iter().enumerate() {
            let webhook_port = match installed {
                Some(ports) => ports[i],
                None => {
                    let port = free_port();
                    // The CRDs and webhooks come first: a manager exits if the kinds it watches are not served.
                    capi::install_provider(&client, kind.provider, &format!("https://127.0.0.1:{port}"), &ca_pem).await?;
                    port
                }
            };
            let health_port = free_port();
            // Two planes of one suite each run their own managers: their logs must not mix.
            let log = unique_log(&dir, kind.binary);
            let mut cmd = Command::new(tool(kind.binary));
            cmd.arg(format!("--kubeconfig={}", plane.kubeconfig.display()))
                .args(["--leader-elect=false", "--diagnostics-address=0"])
                .arg(format!("--webhook-port={webhook_port}"))
                .arg(format!("--webhook-cert-dir={}", cert_dir.display()))
                .arg(format!("--health-addr=127.0.0.1:{health_port}"));
            if !kind.feature_gates.is_empty() {
                cmd.arg(format!("--feature-gates={}", kind.feature_gates));
            }
            let daemon = Daemon::start(kind.binary, cmd, &log)?;
            managers.push(CapiManager { provider: kind.provider, daemon, log, webhook_port, health_port });
        }

        let mut started = Self { managers, kube_controller_manager, kube_controller_manager_log };
        for manager in &mut started.managers {
            let port = manager.health_port;
            wait_ready(&mut manager.daemon, &manager.log, || async move { http_get(port, "/readyz").ok().is_some_and(|body| body.trim() == "ok") })
                .await?;
        }
        let kcm_client = kube_controller_manager_client(plane, kcm_port).await?;
        wait_ready(&mut started.kube_controller_manager, &started.kube_controller_manager_log, || async {
            let request = http::Request::get("/healthz").body(Vec::new()).expect("a static request");
            kcm_client.request_text(request).await.is_ok_and(|body| body.trim() == "ok")
        })
        .await?;
        Ok(started)
    }

    /// The manager of one provider (`capi::CORE`, `capi::KUBEADM_BOOTSTRAP`, ...).
    pub fn manager(&self, provider: Provider) -> &CapiManager {
        self.managers.iter().find(|m| m.provider.label == provider.label).expect("every provider has a manager")
    }

    /// Every log file, for a scenario to point at (or copy) when it fails.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self.managers.iter().map(|m| m.log.clone()).collect();
        logs.push(self.kube_controller_manager_log.clone());
        logs
    }
}

impl Drop for CapiManagers {
    /// Asks every process to stop at once, then waits for each (a controller-runtime manager
    /// may take its time to shut down; one after another that would add up).
    fn drop(&mut self) {
        for daemon in self.managers.iter().map(|m| &m.daemon).chain([&self.kube_controller_manager]) {
            daemon.signal(libc::SIGTERM);
        }
        for manager in &mut self.managers {
            manager.daemon.stop(Duration::from_secs(5));
        }
        self.kube_controller_manager.stop(Duration::from_secs(5));
    }
}

/// kube-controller-manager with only the controllers Cluster API relies on. It serves /healthz
/// over https on 127.0.0.1 with a certificate from the plane's CA, so the harness can check it
/// with the admin kubeconfig's trust.
fn start_kube_controller_manager(plane: &ManagementPlane, dir: &Path, log: &Path) -> anyhow::Result<(Daemon, u16)> {
    let pki = dir.join("kube-controller-manager-pki");
    std::fs::create_dir_all(&pki)?;
    plane.ca.server("kube-controller-manager", &[])?.write(&pki, "serving")?;
    std::fs::write(pki.join("client-ca.crt"), plane.ca.cert_pem())?;
    let port = free_port();
    let kubeconfig = plane.kubeconfig.display();
    let mut cmd = Command::new(tool("kube-controller-manager"));
    cmd.args([
        format!("--kubeconfig={kubeconfig}"),
        // Who may call its own https server: client certificates from the plane's CA, given
        // here rather than looked up (the plane has no front-proxy CA to find, which it would
        // complain about every second); authorization is delegated to the API server.
        "--authentication-skip-lookup=true".into(),
        format!("--client-ca-file={}", pki.join("client-ca.crt").display()),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--controllers=garbage-collector-controller,namespace-controller".into(),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", pki.join("serving.crt").display()),
        format!("--tls-private-key-file={}", pki.join("serving.key").display()),
        "--use-service-account-credentials=false".into(),
    ]);
    Ok((Daemon::start("kube-controller-manager", cmd, log)?, port))
}

/// A client for the kube-controller-manager's own https server, authenticated as the admin.
async fn kube_controller_manager_client(plane: &ManagementPlane, port: u16) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.cluster_url = format!("https://127.0.0.1:{port}").parse()?;
    Ok(kube::Client::try_from(config)?)
}

/// Polls `ready` every 250 ms until it holds; fails at once if the process exits, and after
/// [`READY_TIMEOUT`] otherwise, quoting the end of its log either way.
async fn wait_ready<F, Fut>(daemon: &mut Daemon, log: &Path, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready().await {
            return Ok(());
        }
        let problem = if !daemon.is_running() {
            "exited"
        } else if Instant::now() > deadline {
            "is not ready in time"
        } else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        anyhow::bail!("{} {problem}; the end of {}:\n{}", daemon.name, log.display(), log_tail(log, 20));
    }
}

/// `<dir>/<name>.log`, or `<name>-2.log`, `-3`... when a process of that name logged there before.
fn unique_log(dir: &Path, name: &str) -> PathBuf {
    (1..)
        .map(|n| if n == 1 { dir.join(format!("{name}.log")) } else { dir.join(format!("{name}-{n}.log")) })
        .find(|p| !p.exists())
        .expect("a free name")
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
