//! Commands for people: check a host, prepare it, run bootstrap data on it and reset it with
//! the controller's own steps (`hosts::work`: same connection, same jobs, same success rules),
//! before or after Cluster API uses the host; build an artifact mirror for air-gapped sites.

pub mod artifacts;
pub mod bootstrap;
pub mod hosts;
pub mod prepare;
pub mod reset;

use crate::api::v1alpha1::conditions::reasons;
use crate::ssh::hostkey::HostKeyPolicy;
use crate::ssh::{Credentials, Endpoint, SshError, Target};
use clap::Args;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which SSHHost the host stands for, so that the CLI names it as the controller does
/// (providerID `ssh://<namespace>/<host-name>`, instance_id, job ids).
#[derive(Args, Debug, Clone)]
pub struct HostIdentity {
    /// The SSHHost's namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The SSHHost's name (default: --address).
    #[arg(long)]
    pub host_name: Option<String>,
}

impl HostIdentity {
    pub fn host_name(&self, connection: &ConnectionArgs) -> String {
        self.host_name.clone().unwrap_or_else(|| connection.address.clone())
    }
}

/// Takes `step` again every second while `running` says so, until `timeout_secs` pass; returns
/// the last answer. (The controller takes one step per reconcile instead.)
pub(crate) async fn until_done<T, Fut>(timeout_secs: u64, mut step: impl FnMut() -> Fut, running: impl Fn(&T) -> bool) -> Result<T, SshError>
where
    Fut: Future<Output = Result<T, SshError>>,
{
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let answer = step().await?;
        if !running(&answer) || Instant::now() >= deadline {
            return Ok(answer);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How to reach a host: the flags mirror SSHHost's spec.
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Address of the host.
    #[arg(long)]
    pub address: String,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Login user; anyone but root needs passwordless sudo.
    #[arg(long, default_value = "root")]
    pub user: String,
    /// Private key file (OpenSSH or PEM; ed25519, ecdsa or rsa).
    #[arg(long, conflicts_with = "password_file")]
    pub identity: Option<PathBuf>,
    /// File holding the private key's passphrase.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// File holding a password (password login is an explicit opt-in).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Accepted host key: 'TYPE BASE64', a known_hosts line or SHA256:... (repeatable).
    #[arg(long = "host-key")]
    pub host_keys: Vec<String>,
    /// Accept an unpinned host key (prints it, to pin from then on).
    #[arg(long)]
    pub trust_on_first_use: bool,
    /// Jump host address.
    #[arg(long)]
    pub bastion_address: Option<String>,
    #[arg(long, default_value_t = 22)]
    pub bastion_port: u16,
    #[arg(long, default_value = "root")]
    pub bastion_user: String,
    /// Private key for the jump host (defaults to --identity).
    #[arg(long)]
    pub bastion_identity: Option<PathBuf>,
    /// Accepted host key of the jump host (repeatable).
    #[arg(long = "bastion-host-key")]
    pub bastion_host_keys: Vec<String>,
}

/// Errors of the CLI, each with its own exit code.
#[derive(thiserror::Error, Debug)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    #[error("bootstrap failed: {0}")]
    BootstrapFailed(String),
    #[error(transparent)]
    Prepare(#[from] crate::bootstrap::prepare::PrepareError),
    #[error("preparation failed: {0}")]
    PreparationFailed(String),
    #[error("reset failed: {0}")]
    ResetFailed(String),
    #[error(transparent)]
    Artifacts(#[from] artifacts::ArtifactsError),
}

impl CliError {
    /// Exit codes: 2 usage (or unusable mirror inputs), 3 unreachable, 4 host key,
    /// 5 authentication, 6 sudo, 7 refused data, 8 bootstrap failed, 9 preparation refused or
    /// failed (a version mismatch included), 10 reset failed or host not clean, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Ssh(err) => match err.reason() {
                reasons::HOST_UNREACHABLE => 3,
                reasons::HOST_KEY_MISMATCH | reasons::HOST_KEY_NOT_PINNED | reasons::INVALID_HOST_KEY_PIN => 4,
                reasons::AUTHENTICATION_FAILED => 5,
                reasons::SUDO_NEEDS_PASSWORD => 6,
                _ => 1,
            },
            CliError::Bootstrap(_) => 7,
            CliError::BootstrapFailed(_) => 8,
            CliError::Prepare(_) | CliError::PreparationFailed(_) => 9,
            CliError::ResetFailed(_) => 10,
            CliError::Artifacts(artifacts::ArtifactsError::Io { .. }) => 1,
            CliError::Artifacts(_) => 2,
        }
    }
}

fn read_secret_file(path: &PathBuf, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|err| CliError::Usage(format!("cannot read {what} {}: {err}", path.display())))
}

impl ConnectionArgs {
    pub fn target(&self) -> Result<Target, CliError> {
        let credentials = |identity: Option<&PathBuf>| -> Result<Credentials, CliError> {
            if let Some(path) = &self.password_file {
                return Ok(Credentials::Password(read_secret_file(path, "password file")?.trim_end_matches('\n').to_string()));
            }
            let path = identity.ok_or_else(|| CliError::Usage("give --identity KEYFILE or --password-file FILE".into()))?;
            let passphrase = match &self.passphrase_file {
                Some(p) => Some(read_secret_file(p, "passphrase file")?.trim_end_matches('\n').to_string()),
                None => None,
            };
            Ok(Credentials::Key { private_key: read_secret_file(path, "identity")?, passphrase })
        };
        if self.host_keys.is_empty() && !self.trust_on_first_use {
            return Err(CliError::Usage("give the host's key with --host-key (or --trust-on-first-use)".into()));
        }
        let host = Endpoint {
            address: self.address.clone(),
            port: self.port,
            user: self.user.clone(),
            credentials: credentials(self.identity.as_ref())?,
            host_keys: HostKeyPolicy::parse(&self.host_keys, self.trust_on_first_use)?,
        };
        let bastion = match &self.bastion_address {
            None => None,
            Some(address) => Some(Endpoint {
                address: address.clone(),
                port: self.bastion_port,
                user: self.bastion_user.clone(),
                credentials: credentials(self.bastion_identity.as_ref().or(self.identity.as_ref()))?,
                host_keys: HostKeyPolicy::parse(&self.bastion_host_keys, false)?,
            }),
        };
        Ok(Target { host, bastion })
    }
}
