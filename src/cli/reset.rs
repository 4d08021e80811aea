//! `capssh reset run`: reset a host with the SSHMachine controller's own step
//! (`hosts::work::advance_reset`): the reset job, then the verification, and print the result.
//! Given the machine's namespace and name, it finishes (or repeats) the very reset the
//! controller started, e.g. on a quarantined host.

use super::{CliError, ConnectionArgs, HostIdentity, until_done};
use crate::hosts::work::{Resetting, advance_reset, reset_job_id};
use crate::ssh::{Session, Timeouts};
use clap::Args;

#[derive(Args, Debug)]
pub struct ResetArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub identity: HostIdentity,
    /// The SSHMachine whose reset this is (with --namespace and --host-name: the controller's
    /// job id). Without it, every run is a new reset (it is idempotent).
    #[arg(long)]
    pub machine: Option<String>,
    /// How long to wait for the reset, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

pub async fn run(args: &ResetArgs) -> Result<(), CliError> {
    let session = Session::connect(&args.connection.target()?, &Timeouts::default()).await?;
    let host_name = args.identity.host_name(&args.connection);
    let machine = args.machine.clone().unwrap_or_else(|| format!("cli-{}", jiff::Timestamp::now().as_nanosecond()));
    let id = reset_job_id(&args.identity.namespace, &machine, &host_name);
    eprintln!("job {id} on {}", session.target());
    let result = until_done(args.timeout, || advance_reset(&session, &id, &host_name), |r| *r == Resetting::Running).await;
    // A clean reset forgets its job (folder and log); otherwise the log is still there to show.
    if !matches!(result, Ok(Resetting::Clean)) {
        print!("{}", crate::redact::redact(&session.job_log_tail(&id, 200).await.unwrap_or_default()));
    }
    session.close().await;
    match result? {
        Resetting::Clean => {
            eprintln!("host reset and verified clean");
            Ok(())
        }
        Resetting::Dirty(problems) => Err(CliError::ResetFailed(problems)),
        Resetting::Running => Err(CliError::ResetFailed(format!("job {id} still runs after {}s; it is left running", args.timeout))),
    }
}
