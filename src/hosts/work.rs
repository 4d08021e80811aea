//! The work capssh does on a host for a machine — prepare, bootstrap, reset — one step at a
//! time over any [`HostOps`]. The SSHMachine controller takes one step per reconcile; the CLI
//! (`capssh prepare|bootstrap|reset run`) takes steps until the work is done. Both therefore
//! do exactly the same thing to a host.

use crate::api::v1alpha1::conditions::reasons;
use crate::bootstrap::prepare::{PrepareJob, Work, failure, judge_versions};
use crate::bootstrap::scripts::{RESET, VERIFY_RESET};
use crate::bootstrap::{MachineMetadata, SENTINEL};
use crate::redact::Redactor;
use crate::ssh::job::{JOBS_DIR, JobRecord, JobSpec, JobState, Progress, Verdict, judge, stable_id};
use crate::ssh::{HostOps, SshError};

/// How much of a failed job's log a condition message carries: its last lines, bounded in
/// bytes (the log may hold one endless line; the API server refuses oversized status).
pub const FAILURE_LOG_LINES: usize = 30;
pub const FAILURE_LOG_BYTES: usize = 4096;

/// The bootstrap and reset jobs of one machine on one host. Ids are stable (the same work
/// always gets the same id), so a restarted, failed-over or moved controller finds the same jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineJobs {
    pub bootstrap: String,
    pub reset: String,
}

impl MachineJobs {
    pub fn new(namespace: &str, machine: &str, host: &str, bootstrap_secret: &str) -> Self {
        Self { bootstrap: stable_id("bootstrap", &[namespace, machine, bootstrap_secret]), reset: reset_job_id(namespace, machine, host) }
    }
}

/// The id of a machine's preparation job; `identity` names the preparation (`PrepareJob::identity`).
pub fn prepare_job_id(namespace: &str, machine: &str, host: &str, identity: &[String]) -> String {
    let mut parts = vec![namespace, machine, host];
    parts.extend(identity.iter().map(String::as_str));
    stable_id("prepare", &parts)
}

/// The id of the reset of `host` for `machine`: stable across restarts and moves.
pub fn reset_job_id(namespace: &str, machine: &str, host: &str) -> String {
    stable_id("cleanup", &[namespace, machine, host])
}

/// `ssh://<namespace>/<sshhost>`: stable for the host, survives a move.
pub fn provider_id(namespace: &str, host: &str) -> String {
    format!("ssh://{namespace}/{host}")
}

/// What `## template: jinja` documents may use: the same values from the controller and the CLI.
pub fn machine_metadata(namespace: &str, host: &str, address: &str, hostname: Option<&str>) -> MachineMetadata {
    let hostname = hostname.filter(|h| !h.is_empty()).unwrap_or(host).to_string();
    let mut values = std::collections::BTreeMap::new();
    values.insert("hostname".to_string(), hostname.clone());
    values.insert("local_hostname".to_string(), hostname);
    values.insert("instance_id".to_string(), host.to_string());
    values.insert("provider_id".to_string(), provider_id(namespace, host));
    if address.parse::<std::net::Ipv4Addr>().is_ok() {
        values.insert("local_ipv4".to_string(), address.to_string());
    }
    MachineMetadata { values }
}

/// What the host holds of a machine's jobs, read in one round trip at every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineRecords {
    pub reset: JobRecord,
    pub bootstrap: JobRecord,
    /// Whether Cluster API's bootstrap sentinel exists.
    pub sentinel: bool,
}

pub async fn read_records(host: &impl HostOps, jobs: &MachineJobs) -> Result<MachineRecords, SshError> {
    let records = host.job_records(&[&jobs.reset, &jobs.bootstrap], &[SENTINEL]).await?;
    Ok(MachineRecords { reset: records.jobs[0], bootstrap: records.jobs[1], sentinel: records.present[0] })
}

/// What to do next for a machine on its host, from the host's own records.
#[derive(Debug, PartialEq, Eq)]
pub enum NextWork {
    /// A reset of this machine ran on the host (a deletion began before `clusterctl move` made
    /// this copy, and the reset removed the bootstrap's records): never bootstrap it again.
    AlreadyReset,
    /// Nothing of the bootstrap yet: prepare the host (or see that it needs nothing), then start it.
    Prepare,
    /// The bootstrap was started: preparation is behind it; follow the bootstrap.
    Bootstrap,
}

pub fn next_work(records: &MachineRecords) -> NextWork {
    if records.reset.state != JobState::Absent {
        NextWork::AlreadyReset
    } else if records.bootstrap.state != JobState::Absent {
        NextWork::Bootstrap
    } else {
        NextWork::Prepare
    }
}

/// One step of a job whose record was just read: start it if it never ran, else judge it. A
/// success proven by paths (the sentinel in /run) is recorded on the host's disk, so that it is
/// still a success after a reboot, for whoever judges it next (a moved or restarted controller).
pub async fn advance(host: &impl HostOps, job: &JobSpec<'_>, record: JobRecord, required: &[&str], present: &[bool]) -> Result<Progress, SshError> {
    Ok(match judge(job.id, record, required, present) {
        Verdict::Start => {
            host.start_job(job).await?;
            Progress::Running
        }
        Verdict::Running => Progress::Running,
        Verdict::Succeeded => {
            if !record.succeeded && !required.is_empty() {
                host.mark_succeeded(job.id).await?;
            }
            Progress::Succeeded
        }
        Verdict::Failed(reason) => Progress::Failed { reason, log_tail: host.job_log_tail(job.id, FAILURE_LOG_LINES, FAILURE_LOG_BYTES).await? },
    })
}

/// One step of the bootstrap job (its record read by [`read_records`]).
pub async fn advance_bootstrap(host: &impl HostOps, id: &str, script: &str, records: &MachineRecords) -> Result<Progress, SshError> {
    let job = JobSpec { id, script: script.as_bytes(), required: &[SENTINEL] };
    advance(host, &job, records.bootstrap, job.required, &[records.sentinel]).await
}

/// One step of a job whose record is not known yet (the CLI's loop): read it, then [`advance`].
pub async fn step_job(host: &impl HostOps, job: &JobSpec<'_>, required: &[&str]) -> Result<Progress, SshError> {
    let records = host.job_records(&[job.id], required).await?;
    advance(host, job, records.jobs[0], required, &records.present).await
}

/// Where preparing a host stands. Messages are redacted.
#[derive(Debug, PartialEq, Eq)]
pub enum Preparing {
    /// Prepared or verified: the bootstrap may run. `reason` is Prepared or Verified.
    Done {
        reason: &'static str,
        message: String,
    },
    Running {
        message: String,
    },
    /// Mode None, and the host does not match: checked again later, nothing changed on it.
    Mismatch {
        reason: &'static str,
        message: String,
    },
    /// The job failed: never run again by itself (the machine is replaced).
    Failed {
        reason: String,
        message: String,
    },
}

/// What a preparation step is about, for its messages.
pub struct PrepareContext<'a> {
    pub host: &'a str,
    pub version: &'a str,
    pub mode: &'a str,
    pub os: &'a str,
    pub arch: &'a str,
}

/// One step of preparing a host: mode None checks (read-only, every step until it matches);
/// Packages and Artifacts start their job `id` once and follow it. A job lost to a reboot is
/// started again (a failed one never is).
pub async fn advance_prepare(host: &impl HostOps, work: &Work, id: Option<&str>, about: &PrepareContext<'_>) -> Result<Preparing, SshError> {
    let PrepareContext { host: name, version, mode, .. } = about;
    match work {
        Work::Verify { script } => {
            let report = host.check(script).await?;
            Ok(match judge_versions(&report, name, version) {
                Ok(()) => Preparing::Done {
                    reason: reasons::VERIFIED,
                    message: format!("kubelet and kubeadm on host {name} are at {version} (mode None: nothing installed)"),
                },
                Err(err) => Preparing::Mismatch { reason: err.reason(), message: err.to_string() },
            })
        }
        Work::Job(PrepareJob { script, secrets, .. }) => {
            let id = id.unwrap_or_default();
            let redactor = Redactor::new(secrets.clone());
            let job = JobSpec { id, script: script.as_bytes(), required: &[] };
            let record = host.job_records(&[id], &[]).await?.jobs[0];
            if record.state == JobState::Lost {
                // A reboot (or a kill) is not the preparation failing, and preparing is
                // idempotent: unchanged files are left alone, new ones renamed into place.
                tracing::info!(host = name, job = id, "the preparation was lost (the host rebooted?): starting it again");
                host.remove_job(id).await?;
                host.start_job(&job).await?;
                return Ok(Preparing::Running {
                    message: redactor.redact(&format!(
                        "job {id} was lost (host {name} rebooted?) and started again: it installs containerd and Kubernetes {version} (mode {mode}); log: {JOBS_DIR}/{id}/log"
                    )),
                });
            }
            Ok(match advance(host, &job, record, &[], &[]).await? {
                Progress::Running => Preparing::Running {
                    message: redactor.redact(&format!(
                        "job {id} installs containerd and Kubernetes {version} ({}/{}) on host {name} (mode {mode}); log: {JOBS_DIR}/{id}/log",
                        about.os, about.arch
                    )),
                },
                Progress::Succeeded => Preparing::Done {
                    reason: reasons::PREPARED,
                    message: format!("host {name} has containerd and Kubernetes {version} (mode {mode}, job {id})"),
                },
                Progress::Failed { reason, log_tail } => {
                    let (reason, what) = failure(&log_tail).unwrap_or_else(|| (reasons::PREPARATION_FAILED.to_string(), reason));
                    let message = redactor.redact(&format!("{what} (host {name}); last lines of {JOBS_DIR}/{id}/log:\n{log_tail}"));
                    Preparing::Failed { reason, message }
                }
            })
        }
    }
}

/// Where resetting a host stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Resetting {
    Running,
    /// Verified clean, and the reset's record forgotten: the host may return to the pool.
    Clean,
    /// The reset ended but the host is not clean: what is left.
    Dirty(String),
}

/// How long a bootstrap or preparation job gets to end after TERM before the reset KILLs it.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// One step of resetting a host: stop the machine's running jobs (a `kubeadm join` must not
/// finish after the reset), start the reset job once, follow it, then judge the host by what is
/// on it now (whatever the job said). A reset lost to a reboot is started again: it is
/// idempotent. A verified-clean host forgets the reset, in the same session: while the claim
/// stands, the record tells a moved copy of the machine not to bootstrap the host again
/// (`NextWork::AlreadyReset`); once released, a new machine of the same name must not be
/// mistaken for it. A crash in between only repeats the reset.
pub async fn advance_reset(host: &impl HostOps, id: &str, host_name: &str) -> Result<Resetting, SshError> {
    let job = JobSpec { id, script: RESET.as_bytes(), required: &[] };
    let record = host.job_records(&[id], &[]).await?.jobs[0];
    match record.state {
        JobState::Absent => {
            let stopped = host.stop_jobs(STOP_GRACE).await?;
            if !stopped.is_empty() {
                tracing::info!(host = host_name, jobs = ?stopped, "stopped running jobs before the reset");
            }
        }
        JobState::Lost => {
            tracing::info!(host = host_name, job = id, "the reset was lost (the host rebooted?): starting it again");
            host.remove_job(id).await?;
            host.start_job(&job).await?;
            return Ok(Resetting::Running);
        }
        _ => {}
    }
    if advance(host, &job, record, &[], &[]).await? == Progress::Running {
        return Ok(Resetting::Running);
    }
    let problems = host.check(VERIFY_RESET).await?.trim().to_string();
    if !problems.is_empty() {
        return Ok(Resetting::Dirty(format!("host {host_name} is not clean after the reset job {id}: {problems}")));
    }
    host.remove_job(id).await?;
    Ok(Resetting::Clean)
}

#[cfg(test)]
mod tests;
