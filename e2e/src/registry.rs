//! A container registry as an air-gapped site runs one: distribution's `registry` (built by
//! hack/tools) serving TLS with a certificate of a throw-away CA, behind htpasswd basic auth
//! (bcrypt). The password is random and lives only in files: the htpasswd file the registry
//! reads, and a docker `config.json` crane reads through `DOCKER_CONFIG`. Never on a command line.

use crate::pki::Authority;
use crate::process::Daemon;
use crate::tools::{free_port, tool};
use anyhow::Context;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running registry on 127.0.0.1; stopped when dropped (its [`Daemon`] is).
pub struct Registry {
    daemon: Daemon,
    /// `127.0.0.1:<port>`: the host part of the references pushed to it.
    pub address: String,
    pub user: String,
    password: String,
    /// The CA that signed the serving certificate (PEM file).
    pub ca_file: PathBuf,
    /// The folder holding the `config.json` with this registry's credentials.
    pub docker_config: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    log: PathBuf,
}

/// An HTTP answer: status, headers (names lower-cased) and body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(content)?;
    Ok(())
}

/// A random password (144 bits, URL-safe base64).
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Registry {
    /// Starts a registry on 127.0.0.1, keeping its storage, certificates, credentials and log in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_on(dir, std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts a registry listening on `ip` (e.g. the node farm's gateway, where nodes reach it),
    /// its certificate naming that address.
    pub fn start_on(dir: &Path, ip: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let address = format!("{ip}:{}", free_port());
        let authority = Authority::new("capssh-e2e registry CA")?;
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, authority.cert_pem())?;
        authority.server("capssh-e2e registry", &[&ip.to_string()])?.write(dir, "registry")?;

        let user = "capssh".to_string();
        let password = random_password()?;
        let hash = bcrypt::hash(&password, 10).context("hashing the registry password")?;
        write_private(&dir.join("htpasswd"), format!("{user}:{hash}\n").as_bytes())?;
        let docker_config = dir.join("docker");
        std::fs::create_dir_all(&docker_config)?;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        write_private(
            &docker_config.join("config.json"),
            serde_json::to_string(&serde_json::json!({"auths": {&address: {"auth": auth}}}))?.as_bytes(),
        )?;

        let d = dir.display();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {d}/storage\nhttp:\n  addr: {address}\n  tls:\n    certificate: {d}/registry.crt\n    key: {d}/registry.key\nauth:\n  htpasswd:\n    realm: capssh-e2e\n    path: {d}/htpasswd\n"
        );
        std::fs::write(dir.join("config.yml"), config)?;
        let mut command = Command::new(tool("registry"));
        command.arg("serve").arg(dir.join("config.yml"));
        // Traces go nowhere: by default the registry would send them to an OTLP collector.
        command.env("OTEL_TRACES_EXPORTER", "none");
        let log = dir.join("registry.log");
        let daemon = Daemon::start("registry", command, &log)?;

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(authority.cert_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut registry = Self { daemon, address, user, password, ca_file, docker_config, tls: Arc::new(tls), log };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// Until `/v2/` answers (401 without credentials: the registry is up and guarded).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.get("/v2/", None) {
                Ok(answer) => {
                    anyhow::ensure!(answer.status == 401, "the registry answered /v2/ without credentials with {}", answer.status);
                    return Ok(());
                }
                Err(err) if Instant::now() > deadline || !self.daemon.is_running() => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    anyhow::bail!("the registry did not come up ({err:#}); its log:\n{log}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// What spec.preparation.registry reads in a namespace: a ConfigMap `ca_config_map` holding
    /// this registry's CA (`ca.crt`) and a basic-auth Secret `credentials_secret` with its
    /// credentials, marked for capssh.
    pub fn pull_objects(&self, ca_config_map: &str, credentials_secret: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let ca = std::fs::read_to_string(&self.ca_file)?;
        Ok(vec![
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ca_config_map}, "data": {"ca.crt": ca}}),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": credentials_secret, "labels": {"infrastructure.cluster.x-k8s.io/capssh-credentials": "true"}},
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": self.user, "password": self.password}
            }),
        ])
    }

    /// What crane needs to reach this registry, as environment variables naming files: its CA and
    /// the credentials.
    pub fn crane_env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("SSL_CERT_FILE", self.ca_file.clone()), ("DOCKER_CONFIG", self.docker_config.clone())]
    }

    /// One GET over TLS (the registry's certificate verified against its CA) with basic auth if
    /// `credentials` are given, asking for an OCI image manifest.
    pub fn get(&self, path: &str, credentials: Option<(&str, &str)>) -> anyhow::Result<Response> {
        let name = ServerName::try_from(self.address.split(':').next().unwrap_or_default().to_string())?;
        let connection = rustls::ClientConnection::new(self.tls.clone(), name)?;
        let tcp = TcpStream::connect(&self.address)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n", self.address);
        if let Some((user, password)) = credentials {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        let mut answer = Vec::new();
        match stream.read_to_end(&mut answer) {
            Ok(_) => {}
            // A peer that closes without a TLS close_notify after a complete answer.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(err) => return Err(err.into()),
        }
        parse_response(&answer)
    }
}

fn parse_response(answer: &[u8]) -> anyhow::Result<Response> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").context("an HTTP answer without the end of its headers")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("an HTTP status line: {status_line}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let mut body = answer[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut chunked: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|w| w == b"\r\n").context("a chunk size line")?;
        let size_text = String::from_utf8_lossy(&chunked[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).context("a chunk size")?;
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        anyhow::ensure!(chunked.len() >= size + 2, "a truncated chunk");
        body.extend_from_slice(&chunked[..size]);
        chunked = &chunked[size + 2..];
    }
}
