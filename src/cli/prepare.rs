//! `capssh prepare run`: prepare a host (or verify it, mode None) with the SSHMachine
//! controller's own step (`hosts::work::advance_prepare`), and print the redacted log and the result.

use super::{CliError, ConnectionArgs, until_done};
use crate::api::v1alpha1::{ArtifactsSource, PackagesSource, Preparation, PreparationMode, RegistryMirror, RegistryMirrors};
use crate::bootstrap::prepare::{RegistryInputs, Work, plan};
use crate::hosts::work::{PrepareContext, Preparing, advance_prepare};
use crate::ssh::job::stable_id;
use crate::ssh::{Session, Timeouts};
use clap::Args;

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The Kubernetes version to install or verify, as a Machine's spec.version (v1.36.3).
    #[arg(long)]
    pub kubernetes_version: String,
    /// None (verify only), Packages or Artifacts, as spec.preparation.mode.
    #[arg(long, value_parser = ["None", "Packages", "Artifacts"])]
    pub mode: String,
    /// Mode Artifacts: base URL of the mirror (spec.preparation.artifacts.url).
    #[arg(long)]
    pub artifacts_url: Option<String>,
    /// Mode Artifacts: SHA-256 of the mirror's SHA256SUMS (spec.preparation.artifacts.checksumsSHA256).
    #[arg(long)]
    pub checksums_sha256: Option<String>,
    /// Mode Packages: the Kubernetes package repository (default https://pkgs.k8s.io).
    #[arg(long)]
    pub repository_url: Option<String>,
    /// Mode Packages: a file holding the repository's ASCII-armored public key
    /// (spec.preparation.packages.signingKey); required for a plain http:// repository.
    #[arg(long)]
    pub signing_key_file: Option<std::path::PathBuf>,
    /// Mode Packages: the container runtime package.
    #[arg(long)]
    pub container_runtime_package: Option<String>,
    /// A registry mirror, REGISTRY=ENDPOINT (repeat for each upstream registry), e.g.
    /// registry.k8s.io=https://registry.example:5000.
    #[arg(long = "registry-mirror", value_parser = parse_mirror)]
    pub registry_mirrors: Vec<(String, String)>,
    /// The CA certificate (PEM) of the registry mirrors.
    #[arg(long, requires = "registry_mirrors")]
    pub registry_ca_file: Option<std::path::PathBuf>,
    /// A file holding the mirrors' pull credentials as `username:password` (one line).
    #[arg(long, requires = "registry_mirrors")]
    pub registry_credentials_file: Option<std::path::PathBuf>,
    /// Re-attach to this job instead of starting a new one (every run starts a new job by
    /// default: preparation is idempotent, and a prepared host takes the fast path).
    #[arg(long)]
    pub job_id: Option<String>,
    /// How long to wait for the job, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

impl PrepareArgs {
    fn preparation(&self) -> Result<Preparation, CliError> {
        let mode = match self.mode.as_str() {
            "None" => PreparationMode::None,
            "Packages" => PreparationMode::Packages,
            _ => PreparationMode::Artifacts,
        };
        let artifacts = match (&self.artifacts_url, mode) {
            (Some(url), PreparationMode::Artifacts) => Some(ArtifactsSource { url: url.clone(), checksums_sha256: self.checksums_sha256.clone() }),
            (None, PreparationMode::Artifacts) => return Err(CliError::Usage("--mode Artifacts needs --artifacts-url".into())),
            _ => None,
        };
        let signing_key = match &self.signing_key_file {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|err| CliError::Usage(format!("--signing-key-file {}: {err}", path.display())))?)
            }
            None => None,
        };
        let packages = (mode == PreparationMode::Packages).then(|| PackagesSource {
            repository_url: self.repository_url.clone(),
            signing_key,
            container_runtime_package: self.container_runtime_package.clone(),
        });
        let registry = (!self.registry_mirrors.is_empty()).then(|| RegistryMirrors {
            mirrors: self
                .registry_mirrors
                .iter()
                .map(|(registry, endpoint)| RegistryMirror { registry: registry.clone(), endpoint: endpoint.clone() })
                .collect(),
            ca_ref: None,
            credentials_secret_ref: None,
        });
        Ok(Preparation { mode, artifacts, packages, registry })
    }

    /// The registry settings with the CA and credentials files read.
    fn registry(&self) -> Result<Option<RegistryInputs>, CliError> {
        if self.registry_mirrors.is_empty() {
            return Ok(None);
        }
        let ca_pem = match &self.registry_ca_file {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|err| CliError::Usage(format!("--registry-ca-file {}: {err}", path.display())))?)
            }
            None => None,
        };
        let (credentials, credentials_source) = match &self.registry_credentials_file {
            Some(path) => {
                let text = super::read_secret_file(path, "registry credentials file")?;
                let (user, password) = text
                    .trim_end_matches('\n')
                    .split_once(':')
                    .ok_or_else(|| CliError::Usage(format!("--registry-credentials-file {}: expected username:password", path.display())))?;
                (Some((user.to_string(), password.to_string())), format!("file {}", path.display()))
            }
            None => (None, String::new()),
        };
        Ok(Some(RegistryInputs { mirrors: self.registry_mirrors.clone(), ca_pem, credentials, credentials_source }))
    }
}

fn parse_mirror(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(r, e)| (r.to_string(), e.to_string())).ok_or_else(|| format!("{text:?} is not REGISTRY=ENDPOINT"))
}

pub async fn run(args: &PrepareArgs) -> Result<(), CliError> {
    let preparation = args.preparation()?;
    let session = Session::connect(&args.connection.target()?, &Timeouts::default()).await?;
    let facts = session.probe().await?;
    let host = args.connection.address.as_str();
    let version = args.kubernetes_version.as_str();
    // Refused before anything runs on the host.
    let registry = args.registry()?;
    let work = plan(&preparation, registry.as_ref(), Some(version), host, &facts)?;
    let id = match &work {
        Work::Verify { .. } => None,
        Work::Job(job) => Some(args.job_id.clone().unwrap_or_else(|| {
            let started = jiff::Timestamp::now().as_nanosecond().to_string();
            let mut parts: Vec<&str> = vec![host, started.as_str()];
            parts.extend(job.identity.iter().map(String::as_str));
            stable_id("prepare", &parts)
        })),
    };
    if let Some(id) = &id {
        eprintln!("job {id} on {}", session.target());
    }
    let about = PrepareContext { host, version, mode: &args.mode, os: &facts.os, arch: &facts.arch };
    let step =
        until_done(args.timeout, || advance_prepare(&session, &work, id.as_deref(), &about), |s| matches!(s, Preparing::Running { .. })).await?;
    if let (Some(id), Work::Job(job)) = (&id, &work) {
        let log = session.job_log_tail(id, 200).await?;
        print!("{}", crate::redact::Redactor::new(job.secrets.clone()).redact(&log));
    }
    session.close().await;
    match step {
        Preparing::Done { .. } if preparation.mode == PreparationMode::None => {
            eprintln!("host verified: kubelet and kubeadm are at {version}");
            Ok(())
        }
        Preparing::Done { .. } => {
            eprintln!("host prepared: containerd and Kubernetes {version} (mode {})", args.mode);
            Ok(())
        }
        Preparing::Running { message } => Err(CliError::PreparationFailed(format!("still running after {}s: {message}", args.timeout))),
        Preparing::Mismatch { reason, message } => Err(CliError::PreparationFailed(format!("{reason}: {message}"))),
        Preparing::Failed { reason, message } => Err(CliError::PreparationFailed(format!("{reason}: {message}"))),
    }
}
