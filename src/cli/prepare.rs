//! `capssh prepare run`: prepare a host (or verify it, mode None) exactly as the SSHMachine
//! controller does, and print the redacted log and the result.

use super::{CliError, ConnectionArgs};
use crate::api::v1alpha1::{ArtifactsSource, PackagesSource, Preparation, PreparationMode};
use crate::bootstrap::prepare::{Work, failure, judge_versions, plan};
use crate::redact::Redactor;
use crate::ssh::job::{JobSpec, Progress, stable_id};
use crate::ssh::{Session, Timeouts};
use clap::Args;
use std::time::{Duration, Instant};

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
    /// Mode Packages: the container runtime package.
    #[arg(long)]
    pub container_runtime_package: Option<String>,
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
        let packages = (mode == PreparationMode::Packages).then(|| PackagesSource {
            repository_url: self.repository_url.clone(),
            container_runtime_package: self.container_runtime_package.clone(),
        });
        Ok(Preparation { mode, artifacts, packages })
    }
}

pub async fn run(args: &PrepareArgs) -> Result<(), CliError> {
    let preparation = args.preparation()?;
    let target = args.connection.target()?;
    let session = Session::connect(&target, &Timeouts::default()).await?;
    let facts = session.probe().await?;
    let host = args.connection.address.as_str();
    let version = args.kubernetes_version.as_str();
    // Refused before anything runs on the host.
    let work = plan(&preparation, Some(version), host, &facts)?;
    let result = match work {
        Work::Verify { script } => {
            let report = session.run_checked(&script, None, Duration::from_secs(60)).await?;
            print!("{}", report.stdout_text());
            judge_versions(&report.stdout_text(), host, version).map_err(CliError::from)
        }
        Work::Job(job) => {
            let redactor = Redactor::new(job.secrets.clone());
            let id = match &args.job_id {
                Some(id) => id.clone(),
                None => {
                    let started = jiff::Timestamp::now().as_nanosecond().to_string();
                    let mut parts: Vec<&str> = vec![host, started.as_str()];
                    parts.extend(job.identity.iter().map(String::as_str));
                    stable_id("prepare-cli", &parts)
                }
            };
            eprintln!("job {id} on {}", session.target());
            let spec = JobSpec { id: &id, script: job.script.as_bytes() };
            let deadline = Instant::now() + Duration::from_secs(args.timeout);
            let progress = loop {
                match session.advance_job(&spec, &[], 60).await? {
                    Progress::Running if Instant::now() < deadline => tokio::time::sleep(Duration::from_secs(1)).await,
                    Progress::Running => {
                        break Progress::Failed { reason: format!("still running after {}s", args.timeout), log_tail: String::new() };
                    }
                    done => break done,
                }
            };
            let log = session.job_log_tail(&id, 200).await?;
            print!("{}", redactor.redact(&log));
            match progress {
                Progress::Succeeded => Ok(()),
                Progress::Failed { reason, log_tail } => {
                    let (reason, message) = failure(&log_tail).unwrap_or_else(|| ("PreparationFailed".into(), reason));
                    Err(CliError::PreparationFailed(redactor.redact(&format!("{reason}: {message}"))))
                }
                Progress::Running => unreachable!("the loop only ends when the job is done or timed out"),
            }
        }
    };
    session.close().await;
    if result.is_ok() {
        match preparation.mode {
            PreparationMode::None => eprintln!("host verified: kubelet and kubeadm are at {version}"),
            _ => eprintln!("host prepared: containerd and Kubernetes {version} (mode {})", args.mode),
        }
    }
    result
}
