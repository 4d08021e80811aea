//! `capssh bootstrap run`: run bootstrap data on a host as a job, exactly as the SSHMachine
//! controller does, and print the redacted log and the result.

use super::{CliError, ConnectionArgs};
use crate::bootstrap::{Format, MachineMetadata, SENTINEL, plan};
use crate::redact::Redactor;
use crate::ssh::job::{JobSpec, Progress};
use crate::ssh::{Session, Timeouts};
use clap::Args;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The bootstrap data: a Cluster API bootstrap Secret's `value` (cloud-config or ignition).
    #[arg(long)]
    pub data: PathBuf,
    /// cloud-config (default) or ignition, as the Secret's `format` key.
    #[arg(long)]
    pub format: Option<String>,
    /// Job id on the host. Running again with the same id re-attaches instead of re-running.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Values for `## template: jinja` documents, e.g. --metadata provider_id=ssh://ns/host1
    /// (defaults: hostname and local_hostname from the host, instance_id and local_ipv4 from
    /// --address, provider_id ssh://cli/<address>).
    #[arg(long = "metadata", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// How long to wait for the job, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{text:?} is not key=value"))
}

pub async fn run(args: &BootstrapArgs) -> Result<(), CliError> {
    let data = std::fs::read(&args.data).map_err(|err| CliError::Usage(format!("cannot read {}: {err}", args.data.display())))?;
    let format = Format::from_secret(args.format.as_deref())?;
    let target = args.connection.target()?;
    let session = Session::connect(&target, &Timeouts::default()).await?;
    let facts = session.probe().await?;

    let address = &args.connection.address;
    let mut metadata = MachineMetadata::default();
    for (key, value) in [
        ("hostname", facts.hostname.as_str()),
        ("local_hostname", facts.hostname.as_str()),
        ("instance_id", address.as_str()),
        ("local_ipv4", address.as_str()),
    ] {
        metadata.values.insert(key.to_string(), value.to_string());
    }
    metadata.values.insert("provider_id".into(), format!("ssh://cli/{address}"));
    metadata.values.extend(args.metadata.iter().cloned());

    // Refused data never reaches the host: plan() runs before anything is uploaded.
    let job = plan(&data, format, &metadata)?;
    let redactor = Redactor::new(job.secrets.clone());
    let id = args.job_id.clone().unwrap_or_else(|| crate::ssh::job::stable_id("cli", &[&String::from_utf8_lossy(&data)]));
    let spec = JobSpec { id: &id, script: job.script.as_bytes() };
    eprintln!("job {id} on {}", session.target());

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let progress = loop {
        match session.advance_job(&spec, &[SENTINEL], 60).await? {
            Progress::Running if Instant::now() < deadline => tokio::time::sleep(Duration::from_secs(1)).await,
            Progress::Running => break Progress::Failed { reason: format!("still running after {}s", args.timeout), log_tail: String::new() },
            done => break done,
        }
    };
    let log = session.job_log_tail(&id, 200).await?;
    print!("{}", redactor.redact(&log));
    session.close().await;
    match progress {
        Progress::Succeeded => {
            eprintln!("bootstrap succeeded: exit 0 and {SENTINEL} present");
            Ok(())
        }
        Progress::Failed { reason, .. } => Err(CliError::BootstrapFailed(redactor.redact(&reason))),
        Progress::Running => unreachable!("the loop only ends when the job is done or timed out"),
    }
}
