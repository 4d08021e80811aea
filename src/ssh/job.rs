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
//!
//! The scripts are in `bootstrap/scripts` (job-*.sh); what their output means is decided here,
//! by pure functions ([`parse_records`], [`judge`]) that the unit tests cover.

use super::{Session, SshError};
use crate::bootstrap::scripts::{self, with_inputs};
use std::time::Duration;

/// Where jobs live on a host.
pub const JOBS_DIR: &str = "/var/lib/capssh/jobs";

/// One line per job start, never rewritten by capssh.
pub const JOURNAL: &str = "/var/lib/capssh/jobs/journal";

/// The most of a job's log a person is shown at once (the CLI); what goes into conditions and
/// events is bounded further by the caller.
pub const LOG_TAIL_MAX_BYTES: usize = 64 * 1024;

/// A job to run on a host. The id must be stable for the work it names (the same bootstrap of
/// the same machine always gets the same id) and use only [A-Za-z0-9._-].
pub struct JobSpec<'a> {
    pub id: &'a str,
    pub script: &'a [u8],
    /// Paths that must exist when the job exits 0 for it to have succeeded (Cluster API's
    /// sentinel). The host checks them the moment the job exits and records success on disk:
    /// a path in /run is gone after a reboot, and the verdict must not depend on when capssh
    /// looked. Absolute, one per line.
    pub required: &'a [&'a str],
}

/// Whether starting a job started it now or found it already started.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    AlreadyStarted,
}

/// What a job is doing, as seen on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Ended, but its exit status could not be written (an empty exit file: a full disk).
    Unreadable,
}

/// A job as the host records it: its state and, once started, how long ago that was by the
/// host's own clock (so no clock of ours, nor a condition we wrote, is the job's clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobRecord {
    pub state: JobState,
    pub age: Option<Duration>,
    /// capssh recorded on the host's disk that the job succeeded (see [`judge`]).
    pub succeeded: bool,
}

impl JobRecord {
    pub const ABSENT: JobRecord = JobRecord { state: JobState::Absent, age: None, succeeded: false };

    pub fn new(state: JobState, age: Option<Duration>) -> Self {
        Self { state, age, succeeded: false }
    }
}

/// The line job-records.sh prints before its answer: what a login shell printed before it
/// (a banner, a profile's echo) is not taken for a job's state.
pub const RECORDS_MARKER: &str = "capssh-records";

/// The records of the jobs asked about, and whether each path asked about exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecords {
    pub jobs: Vec<JobRecord>,
    pub present: Vec<bool>,
}

/// A job's state and the files it was asked about (the single-job form of [`JobRecords`]).
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

fn check_id(id: &str) -> Result<&str, SshError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) || id.starts_with('.') {
        return Err(SshError::Protocol { target: "job".into(), reason: format!("invalid job id {id:?}") });
    }
    Ok(id)
}

/// Reads job-records.sh's output for `jobs` ids and `paths` paths.
pub fn parse_records(text: &str, jobs: usize, paths: usize) -> Result<JobRecords, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if !lines.any(|l| l == RECORDS_MARKER) {
        return Err("no job records in the host's answer".into());
    }
    let mut records = JobRecords { jobs: Vec::with_capacity(jobs), present: Vec::with_capacity(paths) };
    for _ in 0..jobs {
        let line = lines.next().ok_or("fewer job lines than jobs asked about")?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let age = |field: Option<&&str>| field.and_then(|f| f.parse::<u64>().ok()).map(Duration::from_secs);
        let record = match fields.as_slice() {
            ["absent"] => JobRecord::ABSENT,
            ["running", rest @ ..] => JobRecord::new(JobState::Running, age(rest.first())),
            ["lost", rest @ ..] => JobRecord::new(JobState::Lost, age(rest.first())),
            ["unreadable", rest @ ..] => JobRecord::new(JobState::Unreadable, age(rest.first())),
            ["exit", code, rest @ ..] => match code.parse() {
                Ok(exit_code) => {
                    JobRecord { succeeded: rest.get(1) == Some(&"succeeded"), ..JobRecord::new(JobState::Finished { exit_code }, age(rest.first())) }
                }
                Err(_) => return Err(format!("unexpected job status {line:?}")),
            },
            _ => return Err(format!("unexpected job status {line:?}")),
        };
        records.jobs.push(record);
    }
    for _ in 0..paths {
        match lines.next() {
            Some("yes") => records.present.push(true),
            Some("no") => records.present.push(false),
            other => return Err(format!("unexpected path status {other:?}")),
        }
    }
    Ok(records)
}

/// Where a job stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running (possibly just started).
    Running,
    /// Exit 0 and every required path exists.
    Succeeded,
    /// Ended without meeting the success criteria; `log_tail` is NOT redacted yet.
    Failed { reason: String, log_tail: String },
}

/// What a job's record says, before its log is read: success is exit 0 **and** every required
/// path present (for a bootstrap, the Cluster API sentinel) — or, once capssh saw that and
/// recorded it on disk, exit 0 and that record (the sentinel lives in /run, which a reboot
/// empties).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not started yet: start it.
    Start,
    Running,
    Succeeded,
    /// Failed for this reason; read the log for the rest.
    Failed(String),
}

pub fn judge(id: &str, record: JobRecord, required: &[&str], present: &[bool]) -> Verdict {
    match record.state {
        JobState::Absent => Verdict::Start,
        JobState::Running => Verdict::Running,
        JobState::Finished { exit_code: 0 } if record.succeeded => Verdict::Succeeded,
        JobState::Finished { exit_code: 0 } => match required.iter().zip(present.iter().chain(std::iter::repeat(&false))).find(|(_, p)| !**p) {
            None => Verdict::Succeeded,
            Some((path, _)) => Verdict::Failed(format!("the job exited 0 but {path} is missing")),
        },
        JobState::Finished { exit_code } => Verdict::Failed(format!("the job exited with status {exit_code}")),
        JobState::Lost => Verdict::Failed(format!(
            "the job's process is gone without an exit status (host rebooted or process killed); inspect {JOBS_DIR}/{id} on the host"
        )),
        JobState::Unreadable => Verdict::Failed(format!(
            "the job ended but its exit status could not be written (is the disk full? see df {JOBS_DIR}); inspect {JOBS_DIR}/{id} on the host"
        )),
    }
}

impl Session {
    /// Uploads the script (over stdin) and starts the job, unless it was started before.
    pub async fn start_job(&self, job: &JobSpec<'_>) -> Result<Start, SshError> {
        let required = job.required.join("\n");
        let inputs = [("JOBS_DIR", JOBS_DIR), ("JOB_ID", check_id(job.id)?), ("JOURNAL", JOURNAL), ("REQUIRED", required.as_str())];
        let script = with_inputs(scripts::JOB_START, &inputs);
        let output = self.run_checked(&script, Some(job.script), Duration::from_secs(60)).await?;
        // The last line: a login shell may have printed something before it.
        Ok(if output.stdout_text().lines().last().map(str::trim) == Some("started") { Start::Started } else { Start::AlreadyStarted })
    }

    /// The records of several jobs, and whether each of `paths` exists: one round trip.
    pub async fn job_records(&self, ids: &[&str], paths: &[&str]) -> Result<JobRecords, SshError> {
        let ids = ids.iter().map(|id| check_id(id)).collect::<Result<Vec<_>, _>>()?;
        let script = with_inputs(scripts::JOB_RECORDS, &[("JOBS_DIR", JOBS_DIR), ("JOB_IDS", &ids.join(" ")), ("PATHS", &paths.join("\n"))]);
        let output = self.run_checked(&script, None, Duration::from_secs(30)).await?;
        parse_records(&output.stdout_text(), ids.len(), paths.len())
            .map_err(|reason| SshError::Protocol { target: self.target().to_string(), reason })
    }

    /// The job's state, plus whether each of `paths` exists on the host.
    pub async fn job_status(&self, id: &str, paths: &[&str]) -> Result<JobStatus, SshError> {
        let records = self.job_records(&[id], paths).await?;
        Ok(JobStatus { state: records.jobs[0].state, present: records.present })
    }

    /// Records on the host's disk that the job succeeded.
    pub async fn mark_succeeded(&self, id: &str) -> Result<(), SshError> {
        let script = with_inputs(scripts::JOB_SUCCEEDED, &[("JOBS_DIR", JOBS_DIR), ("JOB_ID", check_id(id)?)]);
        self.run_checked(&script, None, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// Stops every running bootstrap and preparation job (process groups, TERM then KILL after
    /// `grace`) and waits for them; the ids of the jobs stopped.
    pub async fn stop_jobs(&self, grace: Duration) -> Result<Vec<String>, SshError> {
        let seconds = grace.as_secs().to_string();
        let script = with_inputs(scripts::JOB_STOP, &[("JOBS_DIR", JOBS_DIR), ("GRACE", &seconds)]);
        let output = self.run_checked(&script, None, grace + Duration::from_secs(60)).await?;
        Ok(output.stdout_text().lines().filter_map(|l| l.strip_prefix("stopped ")).map(str::to_string).collect())
    }

    /// Forgets a finished job: its folder goes (the journal keeps its start), so the same id
    /// could start again.
    pub async fn remove_job(&self, id: &str) -> Result<(), SshError> {
        let script = with_inputs(scripts::JOB_REMOVE, &[("JOBS_DIR", JOBS_DIR), ("JOB_ID", check_id(id)?)]);
        self.run_checked(&script, None, Duration::from_secs(30)).await?;
        Ok(())
    }

    /// The last `lines` lines of the job's log, at most [`LOG_TAIL_MAX_BYTES`], as written
    /// (redact before showing anyone).
    pub async fn job_log_tail(&self, id: &str, lines: usize) -> Result<String, SshError> {
        self.job_log_tail_bounded(id, lines, LOG_TAIL_MAX_BYTES).await
    }

    /// The last `lines` lines of the job's log, at most `max_bytes` of them.
    pub async fn job_log_tail_bounded(&self, id: &str, lines: usize, max_bytes: usize) -> Result<String, SshError> {
        let (lines, bytes) = (lines.to_string(), max_bytes.to_string());
        let script = with_inputs(scripts::JOB_LOG_TAIL, &[("JOBS_DIR", JOBS_DIR), ("JOB_ID", check_id(id)?), ("LINES", &lines), ("BYTES", &bytes)]);
        let output = self.run_checked(&script, None, Duration::from_secs(30)).await?;
        Ok(output.stdout_text())
    }

    /// Starts the job if it never ran on this host, otherwise re-attaches, and judges it (see
    /// [`judge`]). Called again and again until it is no longer Running; never starts a job twice.
    pub async fn advance_job(&self, job: &JobSpec<'_>, required: &[&str], log_lines: usize) -> Result<Progress, SshError> {
        let mut records = self.job_records(&[job.id], required).await?;
        if records.jobs[0].state == JobState::Absent {
            self.start_job(job).await?;
            records = self.job_records(&[job.id], required).await?;
        }
        Ok(match judge(job.id, records.jobs[0], required, &records.present) {
            Verdict::Start | Verdict::Running => Progress::Running,
            Verdict::Succeeded => Progress::Succeeded,
            Verdict::Failed(reason) => Progress::Failed { reason, log_tail: self.job_log_tail(job.id, log_lines).await? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_cannot_escape_the_jobs_folder() {
        assert!(check_id("bootstrap-3f2a.v1").is_ok());
        for bad in ["", "../etc", "a/b", ".hidden", "a b", "x;rm"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_are_parsed_in_order() {
        let text = "Welcome to rack1-07!\nyes\ncapssh-records\nabsent\nrunning 12\nexit 0 30 succeeded\nexit 2 5\nlost 700\nunreadable 3\nyes\nno\n";
        let records = parse_records(text, 6, 2).unwrap();
        assert_eq!(records.jobs[0], JobRecord::ABSENT);
        assert_eq!(records.jobs[1], JobRecord::new(JobState::Running, Some(Duration::from_secs(12))));
        assert_eq!(records.jobs[2].state, JobState::Finished { exit_code: 0 });
        assert!(records.jobs[2].succeeded);
        assert_eq!(records.jobs[3].state, JobState::Finished { exit_code: 2 });
        assert!(!records.jobs[3].succeeded);
        assert_eq!(records.jobs[4], JobRecord::new(JobState::Lost, Some(Duration::from_secs(700))));
        assert_eq!(records.jobs[5].state, JobState::Unreadable);
        assert_eq!(records.present, vec![true, false]);
    }

    #[test]
    fn short_or_strange_output_is_an_error_not_a_guess() {
        assert!(parse_records("capssh-records\nabsent\n", 2, 0).is_err());
        assert!(parse_records("capssh-records\nexit x 3\n", 1, 0).is_err());
        assert!(parse_records("Welcome to host!\nabsent\n", 1, 0).is_err(), "no marker: not an answer");
        assert!(parse_records("capssh-records\nabsent\nmaybe\n", 1, 1).is_err());
    }

    #[test]
    fn success_needs_exit_zero_and_every_required_path() {
        let sentinel = ["/run/cluster-api/bootstrap-success.complete"];
        let record = |state| JobRecord::new(state, None);
        let exit_0 = record(JobState::Finished { exit_code: 0 });
        assert_eq!(judge("j", record(JobState::Absent), &sentinel, &[false]), Verdict::Start);
        assert_eq!(judge("j", record(JobState::Running), &sentinel, &[false]), Verdict::Running);
        assert_eq!(judge("j", exit_0, &sentinel, &[true]), Verdict::Succeeded);
        assert!(matches!(judge("j", exit_0, &sentinel, &[false]), Verdict::Failed(r) if r.contains("is missing")));
        assert!(matches!(judge("j", exit_0, &sentinel, &[]), Verdict::Failed(_)));
        assert!(matches!(judge("j", record(JobState::Finished { exit_code: 1 }), &[], &[]), Verdict::Failed(r) if r.contains("status 1")));
        assert!(matches!(judge("j", record(JobState::Lost), &[], &[]), Verdict::Failed(r) if r.contains("process is gone")));
        assert!(matches!(judge("j", record(JobState::Unreadable), &[], &[]), Verdict::Failed(r) if r.contains("disk full")));
    }

    #[test]
    fn a_success_recorded_on_disk_outlives_the_sentinel_in_run() {
        let sentinel = ["/run/cluster-api/bootstrap-success.complete"];
        let recorded = JobRecord { succeeded: true, ..JobRecord::new(JobState::Finished { exit_code: 0 }, None) };
        assert_eq!(judge("j", recorded, &sentinel, &[false]), Verdict::Succeeded, "after a reboot emptied /run");
        let recorded_failure = JobRecord { succeeded: true, ..JobRecord::new(JobState::Finished { exit_code: 1 }, None) };
        assert!(matches!(judge("j", recorded_failure, &sentinel, &[true]), Verdict::Failed(_)));
    }

    /// job-records.sh run by the local `sh` over job folders made as job-start.sh makes them.
    #[test]
    fn the_records_script_tells_running_from_lost_after_a_reboot_or_a_reused_pid() {
        let root = std::env::temp_dir().join(format!("capssh-records-{}", std::process::id()));
        let jobs = root.join("jobs");
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = sleeper.id().to_string();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let started = stat.rsplit(") ").next().unwrap().split(' ').nth(19).unwrap().to_string();
        let job = |name: &str, files: &[(&str, &str)]| {
            std::fs::create_dir_all(jobs.join(name).join("run")).unwrap();
            for (file, content) in files {
                std::fs::write(jobs.join(name).join(file), content).unwrap();
            }
        };
        job("done", &[("exit", "3\n")]);
        job("proven", &[("exit", "0\n"), ("succeeded", "")]);
        job("full-disk", &[("exit", "")]);
        job("gone", &[("pid", "999999999\n")]);
        job("alive", &[("pid", &pid), ("boot", &boot), ("started", &started)]);
        job("other-boot", &[("pid", &pid), ("boot", "00000000-0000-0000-0000-000000000000\n"), ("started", &started)]);
        job("reused-pid", &[("pid", &pid), ("boot", &boot), ("started", "1\n")]);
        let ids = "done proven full-disk gone alive other-boot reused-pid never";
        let paths = format!("{}\n{}", jobs.join("done/exit").display(), jobs.join("nothing").display());
        let script = with_inputs(scripts::JOB_RECORDS, &[("JOBS_DIR", &jobs.to_string_lossy()), ("JOB_IDS", ids), ("PATHS", &paths)]);
        let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
        sleeper.kill().unwrap();
        let _ = sleeper.wait();
        std::fs::remove_dir_all(&root).unwrap();
        let records = parse_records(&String::from_utf8_lossy(&out.stdout), 8, 2).unwrap();
        let states: Vec<JobState> = records.jobs.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            vec![
                JobState::Finished { exit_code: 3 },
                JobState::Finished { exit_code: 0 },
                JobState::Unreadable,
                JobState::Lost,
                JobState::Running,
                JobState::Lost,
                JobState::Lost,
                JobState::Absent
            ]
        );
        assert!(records.jobs[1].succeeded && !records.jobs[0].succeeded);
        assert_eq!(records.present, vec![true, false]);
    }

    /// job-stop.sh by the local `sh` (dash on Debian) against a real job: a session whose leader
    /// started a child in the background; the whole group goes, and the exit is recorded.
    #[test]
    fn the_stop_script_stops_a_jobs_whole_process_group() {
        let root = std::env::temp_dir().join(format!("capssh-stop-{}", std::process::id()));
        let job = root.join("jobs/bootstrap-x");
        std::fs::create_dir_all(job.join("run")).unwrap();
        let mut leader = std::process::Command::new("setsid").args(["sh", "-c", "sleep 401 & sleep 402; wait"]).spawn().unwrap();
        let pid = leader.id();
        // Reaped as soon as it ends (on a host, init reaps the job's leader).
        let reaper = std::thread::spawn(move || leader.wait());
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(job.join("pid"), format!("{pid}\n")).unwrap();
        let script = with_inputs(scripts::JOB_STOP, &[("JOBS_DIR", &root.join("jobs").to_string_lossy()), ("GRACE", "5")]);
        let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
        let _ = reaper.join();
        let group_left = std::process::Command::new("pgrep").args(["-g", &pid.to_string()]).output().unwrap();
        let exit = std::fs::read_to_string(job.join("exit")).unwrap_or_default();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "stopped bootstrap-x\n", "{}", String::from_utf8_lossy(&out.stderr));
        assert!(group_left.stdout.is_empty(), "left: {}", String::from_utf8_lossy(&group_left.stdout));
        assert_eq!(exit.trim(), "143");
    }
}
