//! `capssh bootstrap run`: run bootstrap data on a host as a job, with the same metadata, job
//! runner and success rule as the SSHMachine controller (`hosts::work`), and print the
//! redacted log and the result.

use super::{CliError, ConnectionArgs, HostIdentity, until_done};
use crate::bootstrap::{BootstrapError, Format, MAX_DATA_BYTES, SENTINEL, plan};
use crate::hosts::work::{machine_metadata, step_job};
use crate::redact::Redactor;
use crate::ssh::job::{JobSpec, Progress, stable_id};
use crate::ssh::{Session, Timeouts};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub identity: HostIdentity,
    /// The bootstrap data: a Cluster API bootstrap Secret's `value` (cloud-config or ignition).
    #[arg(long)]
    pub data: PathBuf,
    /// cloud-config (default) or ignition, as the Secret's `format` key.
    #[arg(long)]
    pub format: Option<String>,
    /// Job id on the host. Running again with the same id re-attaches instead of re-running.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Values for `## template: jinja` documents, over the controller's own (hostname and
    /// local_hostname from the host, instance_id and provider_id from --namespace and
    /// --host-name, local_ipv4 from --address), e.g. --metadata provider_id=ssh://ns/host1.
    #[arg(long = "metadata", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// How long to wait for the job, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{text:?} is not key=value"))
}

/// The data file, read no further than one byte past the limit: a huge file is refused without
/// being held in memory.
fn read_bounded(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let unreadable = |err: std::io::Error| CliError::Usage(format!("cannot read {}: {err}", path.display()));
    let mut data = Vec::new();
    std::fs::File::open(path).map_err(unreadable)?.take(MAX_DATA_BYTES as u64 + 1).read_to_end(&mut data).map_err(unreadable)?;
    if data.len() > MAX_DATA_BYTES {
        return Err(BootstrapError::DataTooLarge { what: "the bootstrap data", limit: MAX_DATA_BYTES }.into());
    }
    Ok(data)
}

pub async fn run(args: &BootstrapArgs) -> Result<(), CliError> {
    let data = read_bounded(&args.data)?;
    let format = Format::from_secret(args.format.as_deref())?;
    let session = Session::connect(&args.connection.target()?, &Timeouts::default()).await?;
    let facts = session.probe().await?;
    let host_name = args.identity.host_name(&args.connection);
    let mut metadata = machine_metadata(&args.identity.namespace, &host_name, &args.connection.address, Some(&facts.hostname));
    metadata.values.extend(args.metadata.iter().cloned());

    // Refused data never reaches the host: plan() runs before anything is uploaded.
    let job = plan(&data, format, &metadata)?;
    let redactor = Redactor::new(job.secrets.clone());
    let id = args.job_id.clone().unwrap_or_else(|| stable_id("bootstrap", &[&args.identity.namespace, &host_name, &String::from_utf8_lossy(&data)]));
    let spec = JobSpec { id: &id, script: job.script.as_bytes(), required: &[SENTINEL] };
    eprintln!("job {id} on {}", session.target());
    let progress = until_done(args.timeout, || step_job(&session, &spec, &[SENTINEL]), |p| *p == Progress::Running).await?;
    let log = session.job_log_tail(&id, 200).await?;
    print!("{}", redactor.redact(&log));
    session.close().await;
    match progress {
        Progress::Succeeded => {
            eprintln!("bootstrap succeeded: exit 0 and {SENTINEL} present");
            Ok(())
        }
        Progress::Failed { reason, .. } => Err(CliError::BootstrapFailed(redactor.redact(&reason))),
        Progress::Running => Err(CliError::BootstrapFailed(format!("job {id} still runs after {}s; it is left running", args.timeout))),
    }
}
