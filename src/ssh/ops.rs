//! The seam between deciding and touching a host: every operation the controllers and the CLI
//! perform on a host, as a trait. [`Session`] is the real one (SSH); the unit tests use an
//! in-memory host (`ssh::fake`), so that decisions are tested without root, sshd or an API server.

use super::job::{JobRecords, JobSpec, Start};
use super::{Session, SshError};
use crate::api::v1alpha1::HostFacts;
use std::future::Future;
use std::time::Duration;

pub trait HostOps: Send + Sync {
    /// Who this is, for messages (`user@address:port`).
    fn target(&self) -> &str;
    /// SHA256 fingerprint of the host key the connection was made with.
    fn host_key_fingerprint(&self) -> String;
    /// Facts for SSHHost.status.facts (and proof that commands run as root).
    fn probe(&self) -> impl Future<Output = Result<HostFacts, SshError>> + Send;
    /// The records of some jobs and whether some paths exist, in one round trip.
    fn job_records(&self, ids: &[&str], paths: &[&str]) -> impl Future<Output = Result<JobRecords, SshError>> + Send;
    /// Starts a job unless it was ever started on this host.
    fn start_job(&self, job: &JobSpec<'_>) -> impl Future<Output = Result<Start, SshError>> + Send;
    /// The end of a job's log: at most `lines` lines and `max_bytes` bytes, not redacted.
    fn job_log_tail(&self, id: &str, lines: usize, max_bytes: usize) -> impl Future<Output = Result<String, SshError>> + Send;
    /// Records on the host's disk that a job succeeded (its proof may live in /run).
    fn mark_succeeded(&self, id: &str) -> impl Future<Output = Result<(), SshError>> + Send;
    /// Stops every running bootstrap and preparation job and waits for them; their ids.
    fn stop_jobs(&self, grace: Duration) -> impl Future<Output = Result<Vec<String>, SshError>> + Send;
    /// Forgets a finished job (the journal keeps its start).
    fn remove_job(&self, id: &str) -> impl Future<Output = Result<(), SshError>> + Send;
    /// Runs a read-only script (a check) and returns what it printed.
    fn check(&self, script: &str) -> impl Future<Output = Result<String, SshError>> + Send;
}

/// How long a read-only check may run on a host.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

impl HostOps for Session {
    fn target(&self) -> &str {
        Session::target(self)
    }
    fn host_key_fingerprint(&self) -> String {
        Session::host_key_fingerprint(self)
    }
    async fn probe(&self) -> Result<HostFacts, SshError> {
        Session::probe(self).await
    }
    async fn job_records(&self, ids: &[&str], paths: &[&str]) -> Result<JobRecords, SshError> {
        Session::job_records(self, ids, paths).await
    }
    async fn start_job(&self, job: &JobSpec<'_>) -> Result<Start, SshError> {
        Session::start_job(self, job).await
    }
    async fn job_log_tail(&self, id: &str, lines: usize, max_bytes: usize) -> Result<String, SshError> {
        Session::job_log_tail_bounded(self, id, lines, max_bytes).await
    }
    async fn remove_job(&self, id: &str) -> Result<(), SshError> {
        Session::remove_job(self, id).await
    }
    async fn mark_succeeded(&self, id: &str) -> Result<(), SshError> {
        Session::mark_succeeded(self, id).await
    }
    async fn stop_jobs(&self, grace: Duration) -> Result<Vec<String>, SshError> {
        Session::stop_jobs(self, grace).await
    }
    async fn check(&self, script: &str) -> Result<String, SshError> {
        Ok(self.run_checked(script, None, CHECK_TIMEOUT).await?.stdout_text())
    }
}
