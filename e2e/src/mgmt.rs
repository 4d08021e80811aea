//! A real management plane: etcd and kube-apiserver (built by hack/tools) on 127.0.0.1, with
//! throw-away certificates and an admin kubeconfig. Torn down on drop.

use crate::pki::{Authority, key_pair};
use crate::process::Daemon;
use crate::tools::{artifacts_dir, free_port, tool};
use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct ManagementPlane {
    /// Working folder: logs, certificates, kubeconfig (kept after the run).
    pub dir: PathBuf,
    /// Admin kubeconfig (client certificate in group system:masters).
    pub kubeconfig: PathBuf,
    /// https://127.0.0.1:<port>
    pub server: String,
    /// The CA that signed the serving and client certificates; tests sign webhook certs with it.
    pub ca: Authority,
    apiserver: Daemon,
    /// kube-apiserver's command line, to start it again.
    apiserver_args: Vec<String>,
    etcd: Daemon,
}

impl ManagementPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    pub async fn start(suite: &str) -> anyhow::Result<Self> {
        Self::start_with(suite, &[]).await
    }

    /// [`start`](Self::start) with extra kube-apiserver flags (e.g. an audit log).
    pub async fn start_with(suite: &str, extra_apiserver_args: &[String]) -> anyhow::Result<Self> {
        let dir = artifacts_dir(suite);
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;

        let ca = Authority::new("capssh-e2e-ca")?;
        std::fs::write(pki.join("ca.crt"), ca.cert_pem())?;
        ca.server("kube-apiserver", &["kubernetes", "kubernetes.default", "kubernetes.default.svc"])?.write(&pki, "apiserver")?;
        let admin = ca.client("capssh-e2e-admin", Some("system:masters"))?;
        admin.write(&pki, "admin")?;
        let (sa_public, sa_private) = key_pair()?;
        std::fs::write(pki.join("sa.pub"), sa_public)?;
        std::fs::write(pki.join("sa.key"), sa_private)?;

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd_cmd = Command::new(tool("etcd"));
        etcd_cmd.args([
            "--name=e2e",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=e2e={peer_url}"),
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]);
        let etcd = Daemon::start("etcd", etcd_cmd, &dir.join("etcd.log"))?;

        let server = format!("https://127.0.0.1:{api_port}");
        let p = |name: &str| pki.join(name).display().to_string();
        let mut api_cmd = Command::new(tool("kube-apiserver"));
        api_cmd.args([
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // Nothing routes to the kubernetes Service here; don't try to maintain its endpoints.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", p("apiserver-generated")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--authorization-mode=RBAC".into(),
            // Service IPs are only allocated, never routed; keep them in the test range anyway.
            "--service-cluster-ip-range=198.19.255.0/24".into(),
            "--allow-privileged=true".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
        ]);
        api_cmd.args(extra_apiserver_args);
        let apiserver_args: Vec<String> = api_cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let apiserver = Daemon::start("kube-apiserver", api_cmd, &dir.join("kube-apiserver.log"))?;

        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, None, &ca.cert_pem(), &admin.cert_pem, &admin.key_pem))?;

        let plane = Self { dir, kubeconfig, server, ca, apiserver, apiserver_args, etcd };
        plane.wait_ready(Duration::from_secs(90)).await?;
        Ok(plane)
    }

    /// A client with admin rights.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig for another identity (client certificate CN `user`, organization `group`),
    /// written to `<dir>/<user>.kubeconfig`: tells one process's requests apart in an audit log.
    pub fn kubeconfig_for(&self, user: &str, group: Option<&str>) -> anyhow::Result<PathBuf> {
        let pair = self.ca.client(user, group)?;
        let path = self.dir.join(format!("{user}.kubeconfig"));
        std::fs::write(&path, kubeconfig_yaml(&self.server, None, &self.ca.cert_pem(), &pair.cert_pem, &pair.key_pem))?;
        Ok(path)
    }

    /// The PIDs of kube-apiserver and etcd (to read what they cost).
    pub fn pids(&self) -> (u32, u32) {
        (self.apiserver.pid(), self.etcd.pid())
    }

    /// Stops kube-apiserver (as an upgrade of the management cluster's control plane would),
    /// keeps it down for `down`, starts it again on the same port and storage, and waits until
    /// it is ready. Clients see refused connections, then the same server again.
    pub async fn restart_apiserver(&mut self, down: Duration) -> anyhow::Result<()> {
        self.apiserver.stop(Duration::from_secs(10));
        tokio::time::sleep(down).await;
        let mut cmd = Command::new(tool("kube-apiserver"));
        cmd.args(&self.apiserver_args);
        self.apiserver = Daemon::start("kube-apiserver", cmd, &self.dir.join("kube-apiserver.log"))?;
        self.wait_ready(Duration::from_secs(90)).await
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + timeout;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_error = body,
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!(
            "kube-apiserver not ready after {timeout:?} ({last_error}); etcd pid {}, apiserver pid {}; logs in {}",
            self.etcd.pid(),
            self.apiserver.pid(),
            self.dir.display()
        )
    }
}

impl Drop for ManagementPlane {
    /// Stops the API server, then etcd, and removes etcd's data (tens of MB per plane, a
    /// gigabyte or more per suite run); logs, certificates and the kubeconfig stay for debugging.
    fn drop(&mut self) {
        self.apiserver.stop(std::time::Duration::from_secs(5));
        self.etcd.stop(std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(self.dir.join("etcd"));
    }
}

/// A kubeconfig for `server` with a client certificate; `tls_server_name` when the address
/// reached is not a name the serving certificate carries.
pub fn kubeconfig_yaml(server: &str, tls_server_name: Option<&str>, ca: &str, cert: &str, key: &str) -> String {
    let server_name = tls_server_name.map(|name| format!("\n    tls-server-name: {name}")).unwrap_or_default();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}{server_name}
    certificate-authority-data: {}
users:
- name: admin
  user:
    client-certificate-data: {}
    client-key-data: {}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
current-context: e2e
",
        b64(ca),
        b64(cert),
        b64(key)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kubeconfig_names_the_tls_server_only_when_asked() {
        let parse = |text: &str| serde_saphyr::from_str::<serde_json::Value>(text).unwrap();
        let plain = parse(&super::kubeconfig_yaml("https://127.0.0.1:6443", None, "ca", "cert", "key"));
        let cluster = &plain["clusters"][0]["cluster"];
        assert_eq!(cluster["server"], "https://127.0.0.1:6443");
        assert!(cluster.get("tls-server-name").is_none());
        let named = parse(&super::kubeconfig_yaml("https://198.18.0.1:6443", Some("localhost"), "ca", "cert", "key"));
        assert_eq!(named["clusters"][0]["cluster"]["tls-server-name"], "localhost");
        assert_eq!(named["users"][0]["user"]["client-key-data"], "a2V5");
    }
}
