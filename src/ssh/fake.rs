//! An in-memory host for unit tests of decisions: jobs start when asked, finish when the test
//! says, and every call fails while the host is "down".

use super::SshError;
use super::job::{JobRecord, JobRecords, JobSpec, JobState, Start};
use super::ops::HostOps;
use crate::api::v1alpha1::HostFacts;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct FakeState {
    pub jobs: BTreeMap<String, JobRecord>,
    pub logs: BTreeMap<String, String>,
    pub files: BTreeSet<String>,
    /// Every job start, in order (the host's journal).
    pub journal: Vec<String>,
    /// What a check script prints, by the first line of the script that matches.
    pub check_output: String,
    pub down: bool,
    pub facts: HostFacts,
}

#[derive(Default)]
pub struct FakeHost {
    pub state: Mutex<FakeState>,
}

impl FakeHost {
    pub fn new() -> Self {
        let host = Self::default();
        host.with(|s| {
            s.facts = HostFacts { os: "debian".into(), os_version: "12".into(), arch: "amd64".into(), hostname: "fake".into(), ..Default::default() }
        });
        host
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Ends a started job with `exit_code`, creating `files`.
    pub fn finish(&self, id: &str, exit_code: i32, files: &[&str]) {
        self.with(|s| {
            s.jobs.insert(id.to_string(), JobRecord::new(JobState::Finished { exit_code }, Some(Duration::from_secs(1))));
            s.files.extend(files.iter().map(|f| f.to_string()));
        });
    }

    /// How often a job was started.
    pub fn starts(&self, id: &str) -> usize {
        self.with(|s| s.journal.iter().filter(|j| *j == id).count())
    }

    fn fail_if_down(&self) -> Result<(), SshError> {
        if self.with(|s| s.down) {
            return Err(SshError::Unreachable { target: "root@fake:22".into(), reason: "connection refused".into() });
        }
        Ok(())
    }
}

impl HostOps for FakeHost {
    fn target(&self) -> &str {
        "root@fake:22"
    }
    fn host_key_fingerprint(&self) -> String {
        "SHA256:fake".into()
    }
    async fn probe(&self) -> Result<HostFacts, SshError> {
        self.fail_if_down()?;
        Ok(self.with(|s| s.facts.clone()))
    }
    async fn job_records(&self, ids: &[&str], paths: &[&str]) -> Result<JobRecords, SshError> {
        self.fail_if_down()?;
        Ok(self.with(|s| JobRecords {
            jobs: ids.iter().map(|id| s.jobs.get(*id).copied().unwrap_or(JobRecord::ABSENT)).collect(),
            present: paths.iter().map(|p| s.files.contains(*p)).collect(),
        }))
    }
    async fn start_job(&self, job: &JobSpec<'_>) -> Result<Start, SshError> {
        self.fail_if_down()?;
        Ok(self.with(|s| {
            if s.jobs.contains_key(job.id) {
                return Start::AlreadyStarted;
            }
            s.jobs.insert(job.id.to_string(), JobRecord::new(JobState::Running, Some(Duration::ZERO)));
            s.journal.push(job.id.to_string());
            Start::Started
        }))
    }
    async fn job_log_tail(&self, id: &str, lines: usize, max_bytes: usize) -> Result<String, SshError> {
        self.fail_if_down()?;
        let log = self.with(|s| s.logs.get(id).cloned().unwrap_or_default());
        let tail: Vec<&str> = log.lines().rev().take(lines).collect::<Vec<_>>().into_iter().rev().collect();
        let tail = tail.join("\n");
        let start = tail.len().saturating_sub(max_bytes);
        Ok(tail.get(start..).unwrap_or_default().to_string())
    }
    async fn remove_job(&self, id: &str) -> Result<(), SshError> {
        self.fail_if_down()?;
        self.with(|s| s.jobs.remove(id));
        Ok(())
    }
    async fn mark_succeeded(&self, id: &str) -> Result<(), SshError> {
        self.fail_if_down()?;
        self.with(|s| s.jobs.get_mut(id).map(|j| j.succeeded = true));
        Ok(())
    }
    async fn stop_jobs(&self, _grace: Duration) -> Result<Vec<String>, SshError> {
        self.fail_if_down()?;
        Ok(self.with(|s| {
            let running: Vec<String> = s
                .jobs
                .iter()
                .filter(|(id, j)| j.state == JobState::Running && (id.starts_with("bootstrap-") || id.starts_with("prepare-")))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &running {
                s.jobs.insert(id.clone(), JobRecord::new(JobState::Finished { exit_code: 143 }, Some(Duration::from_secs(1))));
            }
            running
        }))
    }
    async fn check(&self, _script: &str) -> Result<String, SshError> {
        self.fail_if_down()?;
        Ok(self.with(|s| s.check_output.clone()))
    }
}
