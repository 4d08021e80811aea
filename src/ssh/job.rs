//! Host-side jobs: the heart of capssh's reliability.
//!
//! A job is a folder on the host, /var/lib/capssh/jobs/<id>/ (mode 0700), holding `script`,
//! `log` (its output), `pid` and, once it ended, `exit`. It is started detached (setsid), so it
//! survives the SSH connection dropping and capssh crashing; `mkdir run` is the atomic claim
//! that makes it start at most once, whoever asks and however often. A later reconcile — on
//! this replica, another one, or another management cluster after a move — finds the job by
//! its id and re-attaches instead of running it again.
//!
//! Every start is also appended to /var/lib/capssh/jobs/journal (`<UTC time> <id> started`),
//! which outlives the job folders: a person can see what capssh ran on a host, and when.

use super::session::shell_quote;
use super::{Session, SshError};
use std::time::Duration;

/// Where jobs live on a host.
pub const JOBS_DIR: &str = "/var/lib/capssh/jobs";

/// One line per job start, never rewritten by capssh.
pub const JOURNAL: &str = "/var/lib/capssh/jobs/journal";

/// A job to run on a host. The id must be stable for the work it names (the same bootstrap of
/// the same machine always gets the same id) and use only [A-Za-z0-9._-].
pub struct JobSpec<'a> {
    pub id: &'a str,
    pub script: &'a [u8],
}

/// Whether starting a job started it now or found it already started.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    AlreadyStarted,
}

/// What a job is doing, as seen on the host.
#[derive(Debug, PartialEq, Eq)]
pub enum JobState {
    /// Never started on this host.
    Absent,
    Running,
    Finished {
        exit_code: i32,
    },
    /// Started, not finished, and its process is gone (the host rebooted, or someone killed
    /// it). It is not started again: a person must look at the host.
    Lost,
}

/// A job's state, the files it was asked about, and the end of its log.
#[derive(Debug)]
pub struct JobStatus {
    pub state: JobState,
    /// For each path asked about (e.g. the Cluster API sentinel), whether it exists.
    pub present: Vec<bool>,
}

/// A stable job id: `<prefix>-<16 hex digits>` of the parts. The same work always gets the same
/// id (so a restarted or moved controller re-attaches), different work a different one.
pub fn stable_id(prefix: &str, parts: &[&str]) -> String {
    // FNV-1a: stable across runs, versions and platforms; it names a job, it guards nothing.
    let mut hash = 0xcbf29ce484222325u64;
    for byte in parts.join("\u{0}").bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x100000001b3);
    }
    format!("{prefix}-{hash:016x}")
}

fn job_dir(id: &str) -> Result<String, SshError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) || id.starts_with('.') {
        return Err(SshError::Protocol { target: "job".into(), reason: format!("invalid job id {id:?}") });
    }
    Ok(format!("{JOBS_DIR}/{id}"))
}

impl Session {
    /// Uploads the script (over stdin) and starts the job, unless it was started before.
    pub async fn start_job(&self, job: &JobSpec<'_>) -> Result<Start, SshError> {
        let dir = shell_quote(&job_dir(job.id)?);
        let id = job.id;
        // One command: the script arrives on stdin; `mkdir run` decides who starts it.
        let script = format!(
            r#"set -eu
d={dir}
umask 077
mkdir -p {JOBS_DIR}
chmod 0700 /var/lib/capssh {JOBS_DIR}
mkdir -p "$d"
if [ -d "$d/run" ]; then echo already-started; exit 0; fi
# Concurrent starters each write their own temp file; the rename is atomic and the content the same.
tmp="$d/script.tmp.$$"
cat > "$tmp"
if [ -d "$d/run" ]; then rm -f "$tmp"; echo already-started; exit 0; fi
mv -f "$tmp" "$d/script"
if ! mkdir "$d/run" 2>/dev/null; then echo already-started; exit 0; fi
setsid sh -c 'sh "$1/script" > "$1/log" 2>&1; echo $? > "$1/exit.tmp"; mv -f "$1/exit.tmp" "$1/exit"' capssh-job "$d" < /dev/null > /dev/null 2>&1 &
echo $! > "$d/pid"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) {id} started" >> {JOURNAL}
echo started"#
        );
        let output = self.run_checked(&script, Some(job.script), Duration::from_secs(60)).await?;
        Ok(if output.stdout_text().trim() == "started" { Start::Started } else { Start::AlreadyStarted })
    }

    /// The job's state, plus whether each of `paths` exists on the host.
    pub async fn job_status(&self, id: &str, paths: &[&str]) -> Result<JobStatus, SshError> {
        let dir = shell_quote(&job_dir(id)?);
        let mut script = format!(
            r#"d={dir}
if [ ! -d "$d/run" ]; then echo absent
elif [ -f "$d/exit" ]; then echo "exit $(cat "$d/exit")"
elif [ ! -s "$d/pid" ]; then echo running
else
  # Alive means a process in any state but zombie (an unreaped exit is not running).
  state=$(sed 's/.*) //' "/proc/$(cat "$d/pid")/stat" 2>/dev/null | cut -c1)
  if [ -n "$state" ] && [ "$state" != Z ]; then echo running
  elif [ -f "$d/exit" ]; then echo "exit $(cat "$d/exit")"
  else echo lost
  fi
fi
"#
        );
        for path in paths {
            script.push_str(&format!("if [ -e {} ]; then echo yes; else echo no; fi\n", shell_quote(path)));
        }
        let output = self.run_checked(&script, None, Duration::from_secs(30)).await?;
        let text = output.stdout_text();
        let mut lines = text.lines();
        let state = match lines.next().unwrap_or("") {
            "absent" => JobState::Absent,
            "running" => JobState::Running,
            "lost" => JobState::Lost,
            other => match other.strip_prefix("exit ").and_then(|code| code.trim().parse().ok()) {
                Some(exit_code) => JobState::Finished { exit_code },
                None => {
                    return Err(SshError::Protocol { target: self.target().to_string(), reason: format!("unexpected job status {other:?}") });
                }
            },
        };
        let present = lines.map(|line| line == "yes").collect();
        Ok(JobStatus { state, present })
    }

    /// Forgets a finished job: its folder goes (the journal keeps its start), so the same id
    /// could start again.
    pub async fn remove_job(&self, id: &str) -> Result<(), SshError> {
        let dir = shell_quote(&job_dir(id)?);
        self.run_checked(&format!("rm -rf {dir}"), None, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// The last `lines` lines of the job's log, as written (redact before showing anyone).
    pub async fn job_log_tail(&self, id: &str, lines: usize) -> Result<String, SshError> {
        let dir = shell_quote(&job_dir(id)?);
        let output = self.run_checked(&format!("tail -n {lines} {dir}/log 2>/dev/null || true"), None, Duration::from_secs(30)).await?;
        Ok(output.stdout_text())
    }
}

/// Where a job stands after [`Session::advance_job`].
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running (possibly just started).
    Running,
    /// Exit 0 and every required path exists.
    Succeeded,
    /// Ended without meeting the success criteria; `log_tail` is NOT redacted yet.
    Failed { reason: String, log_tail: String },
}

impl Session {
    /// Starts the job if it never ran on this host, otherwise re-attaches, and judges it:
    /// success is exit 0 **and** every path in `required` present (for a bootstrap, the
    /// Cluster API sentinel). Called again and again until it is no longer Running; never
    /// starts a job twice.
    pub async fn advance_job(&self, job: &JobSpec<'_>, required: &[&str], log_lines: usize) -> Result<Progress, SshError> {
        let mut status = self.job_status(job.id, required).await?;
        if status.state == JobState::Absent {
            self.start_job(job).await?;
            status = self.job_status(job.id, required).await?;
        }
        let failed = |reason: String, log_tail: String| Progress::Failed { reason, log_tail };
        Ok(match status.state {
            JobState::Absent | JobState::Running => Progress::Running,
            JobState::Finished { exit_code: 0 } => match required.iter().zip(&status.present).find(|(_, present)| !**present) {
                None => Progress::Succeeded,
                Some((path, _)) => failed(format!("the job exited 0 but {path} is missing"), self.job_log_tail(job.id, log_lines).await?),
            },
            JobState::Finished { exit_code } => {
                failed(format!("the job exited with status {exit_code}"), self.job_log_tail(job.id, log_lines).await?)
            }
            JobState::Lost => failed(
                format!(
                    "the job's process is gone without an exit status (host rebooted or process killed); inspect {JOBS_DIR}/{} on the host",
                    job.id
                ),
                self.job_log_tail(job.id, log_lines).await?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_cannot_escape_the_jobs_folder() {
        assert!(job_dir("bootstrap-3f2a.v1").is_ok());
        for bad in ["", "../etc", "a/b", ".hidden", "a b", "x;rm"] {
            assert!(job_dir(bad).is_err(), "{bad}");
        }
    }
}
